"""Ragged continuous-batching steps (sim.simulate_step) and the precision a run chooses."""
from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import pydantic
import pytest
import yaml

import sim
from sim.config import ConfigError, load_arch, load_model
from sim.workload import graph_ops, build_graph, build_ragged_graph, step as step_mod
from sim.workload.precision import PrecisionFallback, native_precision, parse_precision

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    """llama-3-8b shapes (GQA 32/8) cut to 2 blocks: fast, and every op kind is there."""
    return load_model("llama-3-8b", overrides={"num_layers": 2})


@pytest.fixture(scope="module")
def arch():
    return load_arch("quickstart")


def same(a, b):
    """Equal cycles and equal energy by component (exactly: the same ops, summed alike)."""
    assert a.cycles == b.cycles
    assert dict(a.energy_pj) == dict(b.energy_pj)


# ----------------------------------------------------------------- old phases, reproduced ----
@pytest.mark.parametrize("b,L", [(1, 96), (3, 40)])
def test_full_square_prefill_equals_prefill_phase(arch, model, b, L):
    s = sim.simulate_step(arch, model, prefill=[(L, 0)] * b, causal=False)
    m = sim.simulate_model(arch, model, phase="prefill", batch=b, seq_len=L)
    same(s, m)
    assert s.tokens == m.tokens == b * L


@pytest.mark.parametrize("b,c", [(1, 0), (5, 300)])
def test_uniform_decode_equals_decode_phase(arch, model, b, c):
    s = sim.simulate_step(arch, model, decode=[c] * b)
    same(s, sim.simulate_model(arch, model, phase="decode", batch=b, context=c))


def test_mixed_step_equals_mixed_phase_where_shapes_coincide(arch, model):
    s = sim.simulate_step(arch, model, prefill=[(48, 16)] * 2, decode=[16] * 3, causal=False)
    same(s, sim.simulate_model(arch, model, phase="mixed", batch=2, seq_len=48, context=16,
                               decode_batch=3))


def test_ragged_graph_is_a_dag_with_one_attention_node_per_shape(model):
    g = build_ragged_graph(model, prefill=[(70, 5), (70, 5), (8, 0)], decode=[9, 3, 9],
                           causal_block=32)
    ops = graph_ops(g)
    qk = [o for o in ops if o["layer"] == 0 and o["op"] == "qk"]
    # chunk (70, 5) -> query blocks of 32, 32, 6 attending 37, 69, 75 keys (two sequences
    # each); (8, 0) -> one block of 8 on 8 keys; decodes at 3 and 9 -> 4 and 10 keys
    got = sorted((o["part"], o["M"] // 4, o["N"], o["count"] // model.num_kv_heads) for o in qk)
    assert got == sorted([("prefill", 32, 37, 2), ("prefill", 32, 69, 2), ("prefill", 6, 75, 2),
                          ("prefill", 8, 8, 1), ("decode", 1, 4, 1), ("decode", 1, 10, 2)])
    q = next(o for o in ops if o["name"] == "L0.q_proj")
    assert q["M"] == 70 + 70 + 8 + 3      # linear layers: every token of the step, once
    lm = next(o for o in ops if o["name"] == "lm_head")
    assert lm["M"] == 6                   # one logits row per sequence
    assert g.graph["decode"] == (3, 9, 9)


def test_old_phase_graphs_unchanged_by_the_ragged_builder(model):
    # step_ops and build_graph share the builder: same nodes, same order
    from sim.workload import step_ops
    for phase, kw in [("prefill", dict(batch=2, seq_len=17, context=3)),
                      ("decode", dict(batch=3, context=40)),
                      ("mixed", dict(batch=1, seq_len=9, context=2, decode_batch=2))]:
        assert step_ops(model, phase, **kw) == graph_ops(build_graph(model, phase, **kw))


# ---------------------------------------------------------------------------- causality ----
def _attention_macs(res, op: str) -> int:
    ops = res.ops
    return int(ops[(ops.layer == 0) & (ops.op == op)].macs.sum())


def _causal_reference(model, chunks, block: int) -> int:
    """Q·Kᵀ MACs of layer 0, query by query: query i of a chunk with past p computes the keys
    up to the end of its query block (``block`` = 1: exactly the p + i + 1 it attends)."""
    hd = model.hidden_size // model.num_heads
    total = 0
    for n, p in chunks:
        for i in range(n):
            end = min((i // block + 1) * block, n)
            total += (p + end) * hd * model.num_heads
    return total


@pytest.mark.parametrize("block", [1, 16, None])
def test_causal_prefill_macs_match_the_causal_count(arch, model, block):
    chunks = [(40, 0), (23, 57)]
    r = sim.simulate_step(arch, model, prefill=chunks, causal_block=block)
    b = block or arch.array.cols
    assert r.causal_block == b
    ref = _causal_reference(model, chunks, b)
    assert _attention_macs(r, "qk") == ref == _attention_macs(r, "av")
    if block == 1:   # closed form of the exact causal count
        hd = model.hidden_size // model.num_heads
        exact = sum(n * p + n * (n + 1) // 2 for n, p in chunks) * hd * model.num_heads
        assert ref == exact


def test_causal_saves_work_and_time_over_the_full_square(arch, model):
    c = sim.simulate_step(arch, model, prefill=[(512, 0)])
    f = sim.simulate_step(arch, model, prefill=[(512, 0)], causal=False)
    assert _attention_macs(c, "qk") < 0.6 * _attention_macs(f, "qk")
    assert c.cycles < f.cycles and c.energy_total_pj < f.energy_total_pj
    # the linear layers are the same work either way
    lin = lambda r: int(r.ops[r.ops.kind == "gemm"].macs.sum())
    assert lin(c) == lin(f)


def test_decode_attention_is_priced_per_sequence(arch, model):
    r = sim.simulate_step(arch, model, decode=[10, 1000, 3])
    hd = model.hidden_size // model.num_heads
    assert _attention_macs(r, "qk") == (11 + 1001 + 4) * hd * model.num_heads
    # one long sequence among short ones costs less than all at the long context
    assert r.cycles < sim.simulate_step(arch, model, decode=[1000] * 3).cycles


def test_permutations_hit_the_same_entry_and_results_are_identical(arch, model):
    step_mod.clear_step_cache()
    a = sim.simulate_step(arch, model, prefill=[(20, 4), (5, 0)], decode=[7, 2, 9])
    b = sim.simulate_step(arch, model, prefill=[(5, 0), (20, 4)], decode=[9, 7, 2])
    assert a is b
    step_mod.clear_step_cache()
    c = sim.simulate_step(arch, model, prefill=[(5, 0), (20, 4)], decode=[2, 9, 7])
    assert c is not a and c == a            # recomputed, equal in every field
    assert a.prefill == ((5, 0), (20, 4)) and a.decode == (2, 7, 9)


# -------------------------------------------------------------------- frozen, honest memo ----
def test_results_are_frozen_and_ops_are_copies(arch, model):
    r = sim.simulate_step(arch, model, decode=[64, 65])
    with pytest.raises(TypeError):
        r.energy_pj["dram"] = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.cycles = 1
    ops = r.ops
    ops["cycles"] = 0
    again = sim.simulate_step(arch, model, decode=[65, 64])
    assert again is r and again.ops.cycles.sum() == r.cycles > 0
    assert again.energy_pj["dram"] > 0


def test_names_paths_dicts_and_objects_agree(arch, model):
    obj = sim.simulate_step("quickstart", "llama-3-8b", decode=[5, 6])
    by_path = sim.simulate_step(str(ROOT / "arch" / "quickstart.yaml"),
                                str(ROOT / "workloads" / "llama-3-8b.yaml"), decode=[6, 5])
    by_dict = sim.simulate_step(load_arch("quickstart").model_dump(), "llama-3-8b", decode=[5, 6])
    assert obj.cycles == by_path.cycles == by_dict.cycles


def test_configs_are_frozen_and_another_config_is_another_key(model):
    a = load_arch("quickstart")
    before = sim.simulate_step(a, model, prefill=[(128, 0)])
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        a.array.rows = 32       # frozen: nothing a caller holds can change a cached answer
    other = load_arch("quickstart", overrides={"array.rows": 32})
    after = sim.simulate_step(other, model, prefill=[(128, 0)])
    assert after.cycles != before.cycles
    assert sim.simulate_step(a, model, prefill=[(128, 0)]).cycles == before.cycles


def test_edited_files_are_noticed_through_the_extends_chain(tmp_path, arch):
    base = yaml.safe_load((ROOT / "workloads" / "llama-3-8b.yaml").read_text())
    base["num_layers"] = 1
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\n")
    one = sim.simulate_step(arch, str(tmp_path / "child.yaml"), decode=[10])
    base["num_layers"] = 2
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base) + "\n# edited\n")
    two = sim.simulate_step(arch, str(tmp_path / "child.yaml"), decode=[10])
    assert two.cycles > one.cycles


def test_memo_is_bounded(monkeypatch, arch, model):
    monkeypatch.setattr(step_mod, "MEMO_SIZE", 5)
    for c in range(12):
        sim.simulate_step(arch, model, decode=[c])
    assert step_mod.step_cache_info()["entries"] <= 5


def test_per_op_tables_are_bounded_and_recomputed_identically(monkeypatch, arch, model):
    r = sim.simulate_step(arch, model, prefill=[(33, 3)], decode=[11, 12])
    first = r.ops
    monkeypatch.setattr(step_mod, "FRAME_ROWS", 10)
    for c in range(3):                   # push r's table out of the row budget
        sim.simulate_step(arch, model, decode=[100 + c])
    info = step_mod.step_cache_info()
    assert info["frames"] == 1 and info["frame_rows"] < 2 * len(first)
    again = sim.simulate_step(arch, model, decode=[12, 11], prefill=[(33, 3)])
    assert again is r
    assert again.ops.equals(first) and int(first.cycles.sum()) == r.cycles


def test_warm_calls_are_cheap(arch, model):
    """The benchmark asks >= 20,000/s; here only an order of magnitude, on a loaded machine."""
    import time
    sim.simulate_step(arch, model, prefill=[(100, 0)], decode=[50, 60, 70])
    t = time.process_time()
    for _ in range(2000):
        sim.simulate_step(arch, model, prefill=[(100, 0)], decode=[70, 60, 50])
    assert (time.process_time() - t) / 2000 < 500e-6


# --------------------------------------------------------------------------- bad inputs ----
BAD = [
    (dict(), "prefill", "both empty"),
    (dict(prefill=[], decode=[]), "prefill", "both empty"),
    (dict(decode=[-1]), "decode.0", ">= 0"),
    (dict(decode=[3, True]), "decode.1", "integer"),
    (dict(decode=[64.0]), "decode.0", "integer"),
    (dict(decode=["64"]), "decode.0", "integer"),
    (dict(decode=5), "decode", "a list"),
    (dict(decode="5"), "decode", "a list"),
    (dict(prefill=[(0, 0)]), "prefill.0.new_tokens", ">= 1"),
    (dict(prefill=[(8, -2)]), "prefill.0.past_tokens", ">= 0"),
    (dict(prefill=[(8.5, 0)]), "prefill.0.new_tokens", "integer"),
    (dict(prefill=[(8, False)]), "prefill.0.past_tokens", "integer"),
    (dict(prefill=[8]), "prefill.0", "pair"),
    (dict(prefill=[(1, 2, 3)]), "prefill.0", "pair"),
    (dict(prefill=[(8, 8190)]), "prefill.0", "max_position (8192)"),
    (dict(decode=[8192]), "decode.0", "max_position (8192)"),
    (dict(decode=[1], causal="yes"), "causal", "True or False"),
    (dict(decode=[1], seed=-1), "seed", ">= 0"),
    (dict(decode=[1], seed=1.5), "seed", "integer"),
    (dict(prefill=[(4, 0)], causal_block=0), "causal_block", ">= 1"),
    (dict(prefill=[(4, 0)], causal=False, causal_block=8), "causal_block", "causal=False"),
    (dict(decode=[1], precision="int4"), "precision", "w4a8"),
    (dict(decode=[1], precision=(4, 8, 8)), "precision", "w4a8"),
    (dict(decode=[1], precision={"wbits": 4}), "precision", "w4a8"),
    (dict(decode=[1], precision=(64, 8)), "precision", "w4a8"),
    (dict(decode=[1], precision="w2a4"), "precision", "quickstart"),  # not a PE mode
]


@pytest.mark.parametrize("kwargs,key,words", BAD)
def test_bad_steps_are_one_line_errors_naming_the_argument(arch, model, kwargs, key, words):
    with pytest.raises(ConfigError) as e:
        sim.simulate_step(arch, model, **kwargs)
    assert e.value.key == key and words in str(e.value)
    assert "\n" not in str(e.value) and e.value.file == "<simulate_step>"


# ---------------------------------------------------------------------------- precision ----
def test_precision_forms_agree_and_change_the_result(arch, model):
    forms = ["w4a8", "W4A8", (4, 8), [4, 8], {"wbits": 4, "abits": 8}]
    res = [sim.simulate_step(arch, model, prefill=[(64, 0)], precision=p) for p in forms]
    assert all(r is res[0] for r in res) and res[0].precision == (4, 8)
    d = sim.simulate_step(arch, model, prefill=[(64, 0)])
    assert d.precision == (8, 8) and d.energy_total_pj != res[0].energy_total_pj
    ops = res[0].ops
    assert set(ops[ops.kind == "gemm"].wbits) == {4}
    m = sim.simulate_model(arch, model, phase="decode", batch=2, context=9, precision="w4a8")
    same(m, sim.simulate_step(arch, model, decode=[9, 9], precision=(4, 8)))
    assert parse_precision(None) is None


def test_layer_precision_rules_still_apply_over_the_chosen_precision(arch):
    m = load_model("llama-3-8b", overrides={
        "num_layers": 2, "layer_precision": [{"layers": [1], "ops": ["q_proj", "up_proj"],
                                              "wbits": 8, "abits": 16}]})
    ops = sim.simulate_step(arch, m, decode=[4], precision="w4a8").ops
    gemm = ops[ops.kind == "gemm"].set_index("name")
    assert set(gemm[gemm.layer == 0].wbits) == {4}
    assert gemm.loc["L1.up_proj", "abits"] == 16 and gemm.loc["L1.down_proj", "wbits"] == 4


@pytest.fixture(scope="module")
def gobo_model():
    return load_model("llama-2-7b", overrides={"num_layers": 2})


def test_unsupported_model_precision_falls_back_to_native_with_a_note(gobo_model):
    gobo = load_arch("gobo-64x64")
    assert (gobo_model.precision.wbits, gobo_model.precision.abits) == (8, 8)   # gobo lacks it
    step_mod.clear_step_cache()
    with pytest.warns(PrecisionFallback) as w:
        r = sim.simulate_step(gobo, gobo_model, decode=[16])
    assert len(w) == 1 and "\n" not in str(w[0].message)
    assert "(wbits=8, abits=8) is not supported" in str(w[0].message)
    assert "native precision (wbits=4, abits=4)" in str(w[0].message)
    assert r.precision == (4, 4) and r.notes == (str(w[0].message),)
    explicit = sim.simulate_step(gobo, gobo_model, decode=[16], precision="w4a4")
    same(r, explicit)
    assert explicit.notes == ()
    with pytest.warns(PrecisionFallback):
        m = sim.simulate_model(gobo, gobo_model, phase="decode", batch=1, context=16)
    same(m, r)


def test_native_precision_is_declared_or_the_first_mode():
    from sim.api import accelerator_for
    assert native_precision(accelerator_for("gobo-64x64")) == (4, 4)          # declared
    declared = load_arch("quickstart", overrides={"native_precision": {"wbits": 4, "abits": 8}})
    assert native_precision(accelerator_for(declared)) == (4, 8)
    undeclared = load_arch("quickstart", overrides={"native_precision": None})
    assert native_precision(accelerator_for(undeclared)) == (8, 8)           # first pe mode
    with pytest.raises(ConfigError) as e:                # must be one of the PE modes
        load_arch("quickstart", overrides={"native_precision": {"wbits": 2, "abits": 2}})
    assert e.value.key == "native_precision"


def test_an_asked_precision_is_never_replaced_and_the_error_names_it(gobo_model):
    gobo = load_arch("gobo-64x64")
    with pytest.raises(ConfigError) as e:
        sim.simulate_step(gobo, gobo_model, decode=[16], precision="w8a8")
    assert e.value.key == "precision" and "gobo-64x64" in str(e.value)
    with pytest.raises(ConfigError) as e:
        sim.simulate_model(gobo, gobo_model, phase="decode", context=3, precision="w4a8")
    assert e.value.key == "precision" and "attention" in str(e.value)   # KV cache at a8


def test_an_unsupported_layer_precision_rule_names_the_rule_in_the_model_file(tmp_path, arch):
    data = yaml.safe_load((ROOT / "workloads" / "llama-3-8b.yaml").read_text())
    data.update(num_layers=2, layer_precision=[{"layers": "all", "wbits": 8, "abits": 8},
                                               {"layers": [1], "ops": ["up_proj"], "wbits": 2,
                                                "abits": 4}])
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        sim.simulate_step(arch, str(path), decode=[3])
    assert e.value.key == "layer_precision.1" and e.value.file.endswith("m.yaml")
    assert "up_proj in layer 1" in str(e.value) and "pe.modes" not in str(e.value)


def test_experiment_runs_choose_a_precision(tmp_path):
    exp = {"name": "p", "arch": "quickstart",
           "model": {"extends": "llama-3-8b", "num_layers": 2},
           "runs": [{"name": "a", "phase": "decode", "context": 8},
                    {"name": "b", "phase": "decode", "context": 8, "precision": "w4a8"},
                    {"name": "c", "phase": "decode", "context": 8,
                     "precision": {"wbits": 4, "abits": 8}}]}
    res = sim.run(exp)
    e = res.runs.set_index("run").energy_total_j
    assert e["b"] == e["c"] != e["a"]
    ops = res.ops[(res.ops.run == "b") & (res.ops.kind == "gemm")]
    assert set(ops.wbits) == {4}
    bad = dict(exp, runs=[{"name": "a", "phase": "decode", "context": 8, "precision": "w4"}])
    with pytest.raises(ConfigError) as err:
        sim.run(bad)
    assert err.value.key == "runs.0.precision"
    unsupported = dict(exp, runs=[{"name": "a", "phase": "decode", "context": 8,
                                   "precision": "w2a4"}])
    with pytest.raises(ConfigError) as err:
        sim.run(unsupported)
    assert err.value.key == "runs.0.precision"
