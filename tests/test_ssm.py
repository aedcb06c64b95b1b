"""The Mamba (selective state-space) workload: shapes, op counts, state traffic, steps, FLOW.

References are independent of sim.workload.graph: GEMM shapes and parameter counts from the
tensor shapes of the published state-spaces/mamba-2.8b checkpoint (written out below), vector
op counts from a tiny numpy Mamba block that runs the published recurrence and counts every
element-wise operation it executes.
"""
import math
import warnings

import numpy as np
import pytest

import sim
from sim.config import ConfigError, load_model
from sim.workload.graph import build_graph, build_ragged_graph, graph_ops
from sim.workload.summary import model_summary

ARCH = "int8-64x64"

# state-spaces/mamba-2.8b config.json: d_model 2560, n_layer 64, vocab 50277 padded to a
# multiple of 8; Mamba defaults d_state 16, d_conv 4, expand 2, dt_rank ceil(d_model / 16).
H, L, VOCAB, N_STATE, K_CONV, EXPAND = 2560, 64, 50280, 16, 4, 2
D_INNER, DT_RANK = EXPAND * H, math.ceil(H / 16)

# The tensors of one block of the checkpoint (PyTorch layouts), and the ones outside blocks.
CHECKPOINT_BLOCK = {
    "mixer.in_proj.weight": (2 * D_INNER, H),
    "mixer.conv1d.weight": (D_INNER, 1, K_CONV),
    "mixer.conv1d.bias": (D_INNER,),
    "mixer.x_proj.weight": (DT_RANK + 2 * N_STATE, D_INNER),
    "mixer.dt_proj.weight": (D_INNER, DT_RANK),
    "mixer.dt_proj.bias": (D_INNER,),
    "mixer.A_log": (D_INNER, N_STATE),
    "mixer.D": (D_INNER,),
    "mixer.out_proj.weight": (H, D_INNER),
    "norm.weight": (H,),
}
CHECKPOINT_OUTSIDE = {"embedding.weight": (VOCAB, H), "norm_f.weight": (H,)}  # lm_head tied

TINY = {"name": "tiny-mamba", "source": "test", "architecture": "mamba", "hidden_size": 8,
        "num_layers": 2, "vocab_size": 32, "max_position": 4096, "norm": "rmsnorm",
        "tie_embeddings": True, "ssm": {"d_state": 4, "d_conv": 3, "expand": 2, "dt_rank": 2}}


def _ops(g, layer=0):
    return {o["op"]: o for o in graph_ops(g) if o["layer"] == layer}


# ------------------------------------------------------------------ a counting numpy block ----
class Counted:
    """Runs numpy element-wise operations and counts one op per output element."""

    def __init__(self):
        self.n = 0

    def __call__(self, arr):
        self.n += np.asarray(arr).size
        return arr

    def silu(self, v):                      # v / (1 + exp(-v)): negate, exp, add, divide
        return self(v / self(1 + self(np.exp(self(-v)))))


def numpy_mamba_mixer(x, z, dt_low, B, C, p, *, conv_bias=True, dt_bias=True):
    """The mixer of Gu & Dao (2023), token by token, on a fresh state; returns (out, conv ops,
    scan ops). x, z: [T, D]; dt_low: [T, D] (after dt_proj, before its bias); B, C: [T, n]."""
    T, D = x.shape
    k = p["conv_w"].shape[1]
    conv, scan = Counted(), Counted()
    window = np.zeros((k - 1, D))
    h = np.zeros((D, B.shape[1]))
    out = np.empty((T, D))
    for t in range(T):
        taps = np.vstack([window, x[t]])            # oldest first, current input last
        acc = conv(p["conv_w"][:, k - 1] * taps[k - 1])
        for j in range(1, k):
            acc = conv(acc + conv(p["conv_w"][:, k - 1 - j] * taps[k - 1 - j]))
        if conv_bias:
            acc = conv(acc + p["conv_b"])
        xc = conv.silu(acc)
        window = taps[1:]
        v = scan(dt_low[t] + p["dt_b"]) if dt_bias else dt_low[t]
        dt = scan(np.log(scan(1 + scan(np.exp(v)))))                  # softplus
        dtx = scan(dt * xc)
        dA = scan(np.exp(scan(dt[:, None] * p["A"])))
        h = scan(scan(dA * h) + scan(dtx[:, None] * B[t][None, :]))
        ch = scan(h * C[t][None, :])
        y = ch.sum(axis=1)
        scan.n += D * (ch.shape[1] - 1)                                # the sum's adds
        y = scan(y + scan(p["D"] * xc))
        out[t] = scan(y * scan.silu(z[t]))
    return out, conv.n, scan.n


def _tiny_params(rng, D, n, k):
    return {"conv_w": rng.standard_normal((D, k)), "conv_b": rng.standard_normal(D),
            "dt_b": rng.standard_normal(D), "A": -np.exp(rng.standard_normal((D, n))),
            "D": rng.standard_normal(D)}


def test_numpy_block_matches_the_parallel_form():
    """The counting block computes the published recurrence (checked against its unrolled
    form), so the counts below come from the right equations."""
    rng = np.random.default_rng(0)
    T, D, n, k = 6, 4, 3, 3
    p = _tiny_params(rng, D, n, k)
    x, z, dtl = (rng.standard_normal((T, D)) for _ in range(3))
    B, C = rng.standard_normal((T, n)), rng.standard_normal((T, n))
    out, _, _ = numpy_mamba_mixer(x, z, dtl, B, C, p)
    xpad = np.vstack([np.zeros((k - 1, D)), x])
    xc = np.stack([(p["conv_w"] * xpad[t:t + k].T).sum(1) + p["conv_b"] for t in range(T)])
    xc = xc / (1 + np.exp(-xc))
    dt = np.log1p(np.exp(dtl + p["dt_b"]))
    ref = np.empty((T, D))
    for t in range(T):
        y = p["D"] * xc[t]
        for s in range(t + 1):
            decay = np.exp(p["A"] * dt[s + 1:t + 1].sum(0)[:, None])
            y = y + (decay * dt[s][:, None] * B[s] * xc[s][:, None] * C[t]).sum(1)
        ref[t] = y * z[t] / (1 + np.exp(-z[t]))
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tokens", [1, 5])
@pytest.mark.parametrize("ssm", [{"d_state": 4, "d_conv": 3},
                                 {"d_state": 16, "d_conv": 4, "conv_bias": False,
                                  "dt_bias": False}])
def test_vector_op_counts_equal_a_counting_numpy_block(tokens, ssm):
    cfg = {**TINY, "ssm": {**TINY["ssm"], **ssm}}
    model = load_model(cfg)
    D, n, k = 2 * cfg["hidden_size"], ssm["d_state"], ssm["d_conv"]
    rng = np.random.default_rng(1)
    p = _tiny_params(rng, D, n, k)
    x, z, dtl = (rng.standard_normal((tokens, D)) for _ in range(3))
    B, C = rng.standard_normal((tokens, n)), rng.standard_normal((tokens, n))
    _, conv_ops, scan_ops = numpy_mamba_mixer(
        x, z, dtl, B, C, p, conv_bias=ssm.get("conv_bias", True),
        dt_bias=ssm.get("dt_bias", True))
    ops = _ops(build_graph(model, "prefill", seq_len=tokens))
    assert ops["conv1d"]["elements"] * ops["conv1d"]["ops_per_element"] == conv_ops
    assert ops["scan"]["elements"] * ops["scan"]["ops_per_element"] == scan_ops


def test_mamba_2_8b_gemm_shapes_and_parameters_match_the_checkpoint():
    model = load_model("mamba-2.8b")
    T = 7
    ops = _ops(build_graph(model, "prefill", seq_len=T))
    # nn.Linear weights are [out, in]; Strata's GEMMs are [K = in, N = out]
    for op in ("in_proj", "x_proj", "dt_proj", "out_proj"):
        out_f, in_f = CHECKPOINT_BLOCK[f"mixer.{op}.weight"]
        o = ops[op]
        assert (o["M"], o["K"], o["N"]) == (T, in_f, out_f)
        assert o["flops"] == 2 * T * in_f * out_f
        assert o["w_bytes"] == in_f * out_f + (2 * D_INNER if op == "dt_proj" else 0)  # 8-bit, fp16 bias
    assert not [o for o in graph_ops(build_graph(model, "decode", context=9))
                if o["kind"] == "attention" or o["kv_write_bytes"]]
    s = model_summary(model)
    per_block = sum(math.prod(v) for v in CHECKPOINT_BLOCK.values())
    assert s["per_layer"] == per_block
    assert s["total"] == L * per_block + sum(math.prod(v) for v in CHECKPOINT_OUTSIDE.values())
    assert s["kv_bytes_per_token"] == 0
    assert s["state_bytes_per_sequence"] == L * 2 * (D_INNER * (K_CONV - 1) + D_INNER * N_STATE)


def test_state_traffic_per_sequence_and_none_for_a_fresh_prefill():
    model = load_model("mamba-2.8b")
    state = 2 * (D_INNER * (K_CONV - 1) + D_INNER * N_STATE)       # bytes, fp16 state
    dec = _ops(build_graph(model, "decode", batch=3, context=50))
    assert dec["state_load"]["bytes"] == dec["state_store"]["bytes"] == 3 * state
    fresh = _ops(build_graph(model, "prefill", batch=2, seq_len=64))
    assert "state_load" not in fresh and fresh["state_store"]["bytes"] == 2 * state
    resumed = _ops(build_graph(model, "prefill", batch=2, seq_len=64, context=100))
    assert resumed["state_load"]["bytes"] == 2 * state
    rag = _ops(build_ragged_graph(model, prefill=[(8, 0), (8, 30)], decode=[4, 900]))
    assert rag["state_load"]["bytes"] == 3 * state and rag["state_store"]["bytes"] == 4 * state
    r = sim.simulate_model(ARCH, model, phase="decode", batch=3, context=50)
    row = r.ops.set_index("name")
    assert row.loc["L5.state_load", "dram_read_bytes"] == 3 * state
    assert row.loc["L5.state_store", "dram_write_bytes"] == 3 * state


def test_decode_cost_does_not_grow_with_context():
    results = [sim.simulate_model(ARCH, "mamba-2.8b", phase="decode", batch=2, context=c)
               for c in (1, 1000, 500_000)]
    base = results[0].summary()
    for r in results[1:]:
        s = r.summary()
        assert s["cycles"] == base["cycles"] and s["energy_total_j"] == base["energy_total_j"]
    a = sim.simulate_step(ARCH, "mamba-2.8b", decode=[3, 7])
    b = sim.simulate_step(ARCH, "mamba-2.8b", decode=[4000, 200_000])
    assert (a.cycles, a.energy_pj) == (b.cycles, b.energy_pj)
    # a transformer's decode does grow (the contrast the SSM is about)
    t = [sim.simulate_step(ARCH, "llama-3-8b", decode=[c]).cycles for c in (16, 4096)]
    assert t[1] > t[0]


def test_prefill_scales_with_tokens_state_with_sequences():
    model = load_model("mamba-2.8b")
    one, two = (_ops(build_graph(model, "prefill", seq_len=s)) for s in (128, 256))
    for op in ("in_proj", "x_proj", "dt_proj", "out_proj"):
        assert two[op]["flops"] == 2 * one[op]["flops"]
    for op in ("conv1d", "scan", "norm", "residual"):
        assert two[op]["elements"] == 2 * one[op]["elements"]
    assert two["state_store"]["bytes"] == one["state_store"]["bytes"]
    c1, c2 = (sim.simulate_model(ARCH, model, phase="prefill", seq_len=s).summary()["cycles"]
              for s in (128, 256))
    assert 1.5 * c1 < c2 <= 2.1 * c1


def test_ragged_step_is_the_sum_of_its_sequences_where_it_must_be():
    model = load_model("mamba-2.8b")
    parts = [dict(prefill=[(32, 0)]), dict(prefill=[(16, 40)]), dict(decode=[5]),
             dict(decode=[700])]
    whole = graph_ops(build_ragged_graph(model, prefill=[(32, 0), (16, 40)], decode=[5, 700]))
    pieces = [graph_ops(build_ragged_graph(model, **p)) for p in parts]

    def total(ops, key, op):
        return sum(o[key] for o in ops if o["op"] == op)
    for op, key in [("in_proj", "flops"), ("x_proj", "flops"), ("dt_proj", "flops"),
                    ("out_proj", "flops"), ("lm_head", "flops"), ("conv1d", "elements"),
                    ("scan", "elements"), ("state_load", "bytes"), ("state_store", "bytes"),
                    ("embed", "bytes")]:
        assert total(whole, key, op) == sum(total(p, key, op) for p in pieces), op
    # the step API prices a one-chunk step as the prefill phase, and past context is free
    step = sim.simulate_step(ARCH, model, prefill=[(48, 0)])
    phase = sim.simulate_model(ARCH, model, phase="prefill", seq_len=48)
    assert step.cycles == phase.summary()["cycles"] and step.causal_block is None
    near, far = (sim.simulate_step(ARCH, model, prefill=[(48, p)]) for p in (1, 90_000))
    assert near.cycles == far.cycles > step.cycles          # resuming reads the state once


def test_every_accelerator_type_runs_the_ssm():
    from sim.hw.registry import accelerator_types
    archs = {"systolic": "int8-64x64", "microscopiq": "microscopiq-64x64",
             "gobo": "gobo-64x64", "olive": "olive-64x64", "ant": "ant-64x64",
             "olaccel": "olaccel-64x64", "adaptivfloat": "adaptivfloat-64x64",
             "sparse_systolic": "vegeta-64x64", "flexcim": "flexcim", "gpu": "h200-sxm"}
    assert set(accelerator_types()) <= set(archs)
    model = dict(TINY, hidden_size=64, num_layers=3)       # small: outlier profiles are quick
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # precision fallbacks
        for kind in accelerator_types():
            p = sim.simulate_model(archs[kind], model, phase="prefill", seq_len=16)
            d = sim.simulate_step(archs[kind], model, prefill=[(4, 8)], decode=[3, 9])
            assert p.summary()["cycles"] > 0 and d.cycles > 0, kind
    r = sim.simulate_model("microscopiq-64x64", model, phase="decode", context=5)
    assert (r.ops.kind == "gemm").sum() == 3 * 4 + 1


def test_experiment_runs_the_ssm():
    res = sim.run({"name": "ssm", "arch": ARCH, "model": TINY,
                   "runs": [{"name": "p", "phase": "prefill", "seq_len": 32},
                            {"name": "d", "phase": "decode", "context": 100, "steps": 3}]})
    assert len(res.runs) == 2


@pytest.mark.parametrize("change, key", [
    ({"ssm": {"d_state": 0, "d_conv": 4, "expand": 2}}, "ssm.d_state"),
    ({"ssm": {"d_state": 16, "d_conv": 4, "expand": 2, "dstate": 3}}, "ssm.dstate"),
    ({"ssm": {"d_state": 16, "expand": 2}}, "ssm.d_conv"),
    ({"ssm": {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "big"}}, "ssm.dt_rank"),
    ({"ssm": None}, "ssm"),
    ({"num_heads": 32}, "num_heads"),
    ({"ffn": "gated"}, "ffn"),
    ({"architecture": "rwkv"}, "architecture"),
])
def test_bad_ssm_keys_give_one_line_errors(change, key):
    cfg = {k: v for k, v in {**TINY, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as e:
        load_model(cfg)
    assert e.value.key == key and "\n" not in str(e.value)


def test_transformer_keys_unchanged_and_ssm_refused_there():
    m = load_model("llama-3-8b")
    assert (m.architecture, m.ssm, m.position_embedding, m.qkv_bias) == \
        ("transformer", None, "rope", False)
    with pytest.raises(ConfigError) as e:
        load_model("llama-3-8b", overrides=[("ssm", {"d_state": 16, "d_conv": 4, "expand": 2})])
    assert e.value.key == "ssm"
    with pytest.raises(ConfigError) as e:
        load_model({k: v for k, v in m.model_dump().items()
                    if v is not None and k != "num_kv_heads"})
    assert e.value.key == "num_kv_heads" and "required" in str(e.value)
    with pytest.raises(ConfigError) as e:
        sim.simulate_step(ARCH, "mamba-2.8b", decode=[3], causal_block=8)
    assert e.value.key == "causal_block"


def test_flow_schedules_every_block_of_the_ssm(tmp_path):
    sched = sim.flow("mamba-2.8b", sparsity=0.6)
    assert sched.num_layers == len(sched.layers) == L
    assert abs(sched.achieved_sparsity - 0.6) < 0.02
    from sim.config.nm_schedule import load_nm_schedule
    from sim.cli import main
    out = tmp_path / "ssm.yaml"
    assert main(["flow", "mamba-2.8b", "--sparsity", "0.6", "-o", str(out)]) in (0, None)
    assert load_nm_schedule(out, model="mamba-2.8b").num_layers == L


def test_step_table_of_an_ssm_is_exact_on_grid_points_and_close_between():
    table = sim.StepTable(ARCH, TINY, max_tokens=64, max_chunk=32, points_per_octave=1,
                          tol=0.01)
    assert table.grid_info()["contexts"] == 1          # nothing priced by context
    rng = np.random.default_rng(3)
    for i in range(12):
        pre = [(int(rng.integers(1, 20)), int(rng.choice([0, rng.integers(1, 3000)])))
               for _ in range(rng.integers(0, 3))]
        dec = [int(rng.integers(0, 4000)) for _ in range(rng.integers(0 if pre else 1, 8))]
        est = table.estimate(prefill=pre, decode=dec)
        got = sim.simulate_step(ARCH, TINY, prefill=pre, decode=dec)
        assert est.cycles == pytest.approx(got.cycles, rel=0.03)
        assert est.energy_total_pj == pytest.approx(got.energy_total_pj, rel=0.03)
    # grid points: T = S = R = 4 decodes, and a step with the same T, S, R at other contexts
    exact = sim.simulate_step(ARCH, TINY, decode=[10, 20, 30, 40])
    assert table.estimate(decode=[1, 2, 3, 3999]).cycles == pytest.approx(exact.cycles,
                                                                         rel=1e-12)


def _tiny_checkpoint(tmp_path, model_cfg, rng):
    """A Mamba checkpoint in the reference's names and [out, in] layouts, with its
    calibration activation norms (one vector of input channels per projection)."""
    H, L = model_cfg["hidden_size"], model_cfg["num_layers"]
    s = model_cfg["ssm"]
    D, r, n = s["expand"] * H, s["dt_rank"], s["d_state"]
    shapes = {"in_proj": (2 * D, H), "x_proj": (r + 2 * n, D), "dt_proj": (D, r),
              "out_proj": (H, D)}
    weights, norms = {"backbone.embedding.weight": rng.standard_normal((32, H))}, {}
    for i in range(L):
        p = f"backbone.layers.{i}.mixer."
        weights[p + "conv1d.weight"] = rng.standard_normal((D, 1, s["d_conv"]))
        weights[p + "dt_proj.bias"] = rng.standard_normal(D)
        for op, shape in shapes.items():
            w = rng.standard_normal(shape)
            w[rng.random(shape) < 0.01] *= 20                    # a few outliers
            weights[p + op + ".weight"] = w
            norms[p + op + ".weight"] = np.abs(rng.standard_normal(shape[1]))
    np.savez(tmp_path / "w.npz", **weights)
    np.savez(tmp_path / "norms.npz", **norms)
    return tmp_path / "w.npz", tmp_path / "norms.npz"


def test_real_weights_profile_and_flow_for_the_ssm(tmp_path):
    from sim.io.profiles import profile_from_weights
    cfg = dict(TINY, hidden_size=64, num_layers=4)
    w, norms = _tiny_checkpoint(tmp_path, cfg, np.random.default_rng(5))
    prof = profile_from_weights(w, cfg)
    assert prof.ops() == ["in_proj", "x_proj", "dt_proj", "out_proj"]
    assert prof.stats(2, "x_proj").shape == [128, 2 + 2 * 4]           # [K = D, N = r + 2n]
    sched = sim.flow(cfg, sparsity=0.5, weights=w, act_norms=norms)
    assert len(sched.layers) == 4 and sched.source.startswith("weights")


def test_family_keys_enter_the_content_key_only_where_they_say_something():
    import json
    t, m = load_model("llama-3-8b"), load_model("mamba-2.8b")
    text = json.loads(t.canonical_json())
    # a transformer's content key (cache and result-store key) is what it was before the
    # family key existed; a mamba model's carries its family and mixer
    assert "architecture" not in text and "ssm" not in text and text["num_heads"] == 32
    mt = json.loads(m.canonical_json())
    assert mt["architecture"] == "mamba" and mt["ssm"]["d_state"] == N_STATE
    assert load_model(TINY).hash() != load_model({**TINY, "ssm": {**TINY["ssm"],
                                                                    "state_bits": 32}}).hash()
