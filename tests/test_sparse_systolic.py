"""The VEGETA-style sparse systolic array (sim.hw.sparse_systolic) against the dense INT8 array
it is built from, hand counts of folds and bytes, the shared ``sparsity:`` section
(sim.hw.nm_sparsity) and its errors."""
from __future__ import annotations

import math

import pytest

import sim
from sim.config import ConfigError, load_arch
from sim.config.nm_schedule import DENSE, Pattern, NMSchedule, schedule_to_yaml
from sim.hw.memory_plan import OperandPlacement
from sim.hw.nm_sparsity import NMSparsityConfig, nm_annotations, resolve_layers
from sim.hw.registry import build_accelerator

ROWS = COLS = 64
SHAPES = [(1, 4096, 4096), (512, 4096, 11008), (70, 1000, 130), (64, 256, 64)]
ON_CHIP = OperandPlacement(a_src="l2", w_src="dram", o_dst="l2")


def vegeta(**over):
    return build_accelerator(load_arch({"extends": "vegeta-64x64", **over}))


@pytest.fixture(scope="module")
def sparse():
    return vegeta()


@pytest.fixture(scope="module")
def dense():
    return build_accelerator(load_arch("int8-64x64"))


def count(result, comp, action):
    """How many times the ledger charged one action (counts, not pJ)."""
    df = result.energy.frame()
    return df[(df.component == comp) & (df.action == action)]["count"].sum()


def static_items(result):
    return {a: v for (c, a), v in result.energy.by_action().items() if c == "static"}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nm", [None, "dense", Pattern(4, 4)])
def test_dense_pattern_is_the_plain_int8_array_plus_reported_sparse_pe_overheads(
        sparse, dense, shape, nm):
    s, d = sparse.gemm(*shape, nm=nm), dense.gemm(*shape)
    for f in ("cycles", "compute_cycles", "stall_cycles", "stall_memory", "stall_sram",
              "stall_drain", "macs", "folds", "tiles", "dram_read_bytes", "dram_write_bytes",
              "dram_busy_cycles", "l2_busy_cycles"):
        assert getattr(s, f) == getattr(d, f), f
    for comp, pj in d.energy_pj.items():
        if comp != "static":
            assert s.energy_pj[comp] == pytest.approx(pj, rel=1e-12), comp
    # the only differences: the mux path (component sparse_pe) and its leakage (one item)
    assert s.energy_pj["sparse_pe"] > 0
    si, di = static_items(s), static_items(d)
    assert set(si) - set(di) == {"leakage_sparse_pe"} and si["leakage_sparse_pe"] > 0
    assert all(si[k] == pytest.approx(v, rel=1e-12) for k, v in di.items())
    assert "sparse_pe" in sparse.area_um2() and "sparse_pe" not in dense.area_um2()


def test_dense_model_step_equals_the_plain_array(dense):
    model = sim.load_model({"extends": "llama-2-7b", "num_layers": 2})
    a = sim.simulate_step("vegeta-64x64", model, decode=[64], prefill=[(16, 0)])
    b = sim.simulate_step("int8-64x64", model, decode=[64], prefill=[(16, 0)])
    assert a.cycles == b.cycles and a.macs == b.macs


def independent_folds(K, N, n, m):
    """Row folds over the kept weights (blocks of m along K keep n each) x column folds."""
    kept_rows = sum(n for _ in range(0, K, m)) if n < m else K
    return math.ceil(kept_rows / ROWS) * math.ceil(N / COLS)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nm,share", [("2:4", 2), ("1:4", 4)])
def test_sparse_patterns_divide_the_folds_along_k(sparse, dense, shape, nm, share):
    M, K, N = shape
    n, m = map(int, nm.split(":"))
    r = sparse.gemm(M, K, N, nm=nm)
    assert r.folds == independent_folds(K, N, n, m)
    d = dense.gemm(M, K, N)
    if K % (ROWS * share) == 0:
        assert r.folds * share == d.folds
    assert r.macs == M * math.ceil(K / m) * n * N        # executed MACs
    assert r.compute_cycles < d.compute_cycles and r.cycles <= d.cycles


@pytest.mark.parametrize("nm", ["2:4", "1:4", "dense"])
@pytest.mark.parametrize("K,N", [(4096, 4096), (512, 192)])
def test_weight_dram_bytes_are_kept_weights_times_value_plus_index_bits(sparse, nm, K, N):
    r = sparse.gemm(1, K, N, nm=nm, place=ON_CHIP)     # only the weights come from DRAM
    if nm == "dense":
        assert r.dram_read_bytes == K * N
        return
    n, m = map(int, nm.split(":"))
    kept = (K // m) * n * N
    assert r.dram_read_bytes * 8 == kept * (8 + int(math.log2(m)))   # 8-bit value + index
    assert r.dram_read_bytes == K * N * n // m + kept * int(math.log2(m)) // 8


def test_activation_demand_grows_by_m_over_n_per_kept_weight_and_hits_the_sram_port():
    M, K, N = 512, 4096, 256
    acts = M * K                              # int8 activations, read once per column group
    base = vegeta()
    reads = {nm: count(base.gemm(M, K, N, nm=nm, place=ON_CHIP), "sram", "ifmap_read_byte")
             for nm in ("dense", "2:4", "1:4")}
    # the same activation bytes in total (N/M of the folds, M/N of the bytes each)
    assert reads["2:4"] == reads["1:4"] == reads["dense"]
    assert reads["dense"] % acts == 0
    # a narrower array-side SRAM port: per fold (T = 512 streamed rows) the port moves 64x64
    # weights, 512x64 psums in and out (4 B) and the activations: 512 x 64 B dense (~577 B a
    # cycle, fits 680), 2x that at 2:4 (~641 B, fits), 4x at 1:4 (~769 B, does not)
    narrow = vegeta(memory={"sram": {"bytes_per_cycle": 680}})
    d, h, q = (narrow.gemm(M, K, N, nm=nm) for nm in ("dense", "2:4", "1:4"))
    assert d.stall_sram == h.stall_sram == 0 < q.stall_sram
    assert vegeta().gemm(M, K, N, nm="1:4").stall_sram == 0      # the shipped 1024 B port


def test_pe_energy_scales_with_kept_weights_and_overheads_are_priced(sparse):
    d = sparse.gemm(512, 4096, 4096, nm="dense")
    h = sparse.gemm(512, 4096, 4096, nm="2:4")
    assert h.energy_pj["pe_array"] == pytest.approx(d.energy_pj["pe_array"] / 2)
    t = sparse.tech
    macs = 512 * 2048 * 4096
    mux = macs * 8 * 2 * sparse.sp.mux_pj_per_bit_level         # log2(4) levels, 8 bits
    assert h.energy_pj["sparse_pe"] == pytest.approx(mux + macs * 3 * t.mac.operand_pj)
    assert d.energy_pj["sparse_pe"] == pytest.approx(2 * mux)    # twice the MACs, no bus


def test_unsupported_pattern_on_a_direct_gemm_is_a_config_error(sparse):
    with pytest.raises(ConfigError, match="nm.*supports"):
        sparse.gemm(64, 256, 64, nm="2:8")


@pytest.mark.parametrize("rule,requested,runs", [
    ("mask", "2:8", "2:4"), ("mask", "4:8", "dense"), ("mask", "1:2", "2:4"),
    ("mask", "1:8", "1:4"), ("density", "4:8", "2:4"), ("density", "1:8", "1:4")])
def test_fallback_to_the_patterns_the_array_has(rule, requested, runs):
    acc = vegeta(sparsity={"pattern": requested, "fallback": rule})
    model = sim.load_model({"extends": "llama-2-7b", "num_layers": 3})
    lp = acc.layer_patterns(model)
    assert [str(p) for p in lp.requested] == [requested] * 3
    assert [str(p) for p in lp.run] == [runs] * 3


def write_schedule(path, patterns, model="llama-2-7b"):
    from sim.config.nm_schedule import pattern_sparsity
    mean = sum(pattern_sparsity(p) for p in patterns) / len(patterns)
    sched = NMSchedule.model_validate({
        "model": model, "num_layers": len(patterns), "target_sparsity": mean,
        "achieved_sparsity": mean, "gap": 0.0,
        "candidates": ["1:4", "2:4", "2:8", "4:8", "dense"], "source": "test",
        "layers": [{"layer": i, "pattern": p} for i, p in enumerate(patterns)]})
    path.write_text(schedule_to_yaml(sched))
    return path


def test_per_layer_schedule_reaches_every_weight_gemm(tmp_path):
    pats = ["1:4", "2:4", "2:8", "4:8"]              # 2:8 -> 2:4, 4:8 -> dense (mask)
    sched = write_schedule(tmp_path / "s.yaml", pats)
    model = sim.load_model({"extends": "llama-2-7b", "num_layers": 4})
    arch = {"extends": "vegeta-64x64", "name": "veg-sched",
            "sparsity": {"schedule": str(sched)}}
    step = sim.simulate_step(arch, model, decode=[64])
    dense = sim.simulate_step("vegeta-64x64", model, decode=[64])
    ops, dops = step.ops, dense.ops
    runs = {0: (1, 4), 1: (2, 4), 2: (2, 4), 3: (1, 1)}
    gemms = ops[ops.kind == "gemm"]
    assert set(gemms.layer) == {-1, 0, 1, 2, 3}
    for r in gemms.itertuples():
        n, m = runs.get(r.layer, (1, 1))
        assert r.macs == r.M * math.ceil(r.K / m) * n * r.N, (r.layer, r.op)
    assert (ops[ops.kind == "attention"].macs.values ==
            dops[dops.kind == "attention"].macs.values).all()
    assert step.cycles < dense.cycles
    # a changed schedule is not answered from the memo
    write_schedule(sched, ["dense"] * 4)
    again = sim.simulate_step(arch, model, decode=[64])
    assert again.macs == dense.macs


def test_schedule_for_another_layer_count_is_one_line_error(tmp_path):
    sched = write_schedule(tmp_path / "s.yaml", ["2:4"] * 3)
    acc = vegeta(sparsity={"schedule": str(sched)})
    model = sim.load_model({"extends": "llama-2-7b", "num_layers": 4})
    with pytest.raises(ConfigError) as e:
        acc.op_annotations(model)
    assert "num_layers" in str(e.value) and "s.yaml" in str(e.value)
    assert "\n" not in str(e.value)


def test_flow_target_gives_a_deterministic_schedule_on_the_supported_patterns():
    model = sim.load_model("llama-2-7b")
    acc = vegeta(sparsity={"target": 0.6})
    lp = acc.layer_patterns(model, seed=0)
    assert lp.num_layers == 32 and set(map(str, lp.run)) <= {"1:4", "2:4", "dense"}
    assert abs(lp.mean_sparsity("requested") - 0.6) < 0.05
    assert lp.mean_sparsity("run") <= lp.mean_sparsity("requested") + 1e-12   # mask: denser
    assert vegeta(sparsity={"target": 0.6}).layer_patterns(model, seed=0) == lp
    ann = acc.op_annotations(model)
    assert ann(-1, "lm_head") == ()
    for i, p in enumerate(lp.run):
        assert ann(i, "q_proj") == (() if p.dense else (("nm", p),))


def test_shared_section_resolves_for_any_supported_set():
    model = sim.load_model({"extends": "llama-2-7b", "num_layers": 2})
    lp = resolve_layers(NMSparsityConfig(pattern="4:8"), model, ["4:8", "dense"])
    assert lp.run == (Pattern(4, 8),) * 2 and not lp.fell_back()
    none = resolve_layers(None, model, ["2:4"])
    assert none.run == (DENSE, DENSE) and nm_annotations(none) is None


@pytest.mark.parametrize("over,words", [
    ({"sparsity": {"target": 1.2}}, "sparsity.target"),
    ({"sparsity": {"pattern": 124}}, "sparsity.pattern"),
    ({"sparsity": {"pattern": "5:4"}}, "sparsity.pattern"),
    ({"sparsity": {"pattern": "2:32"}}, "sparsity.pattern"),
    ({"sparsity": {"fallback": "nearest"}}, "sparsity.fallback"),
    ({"sparsity": {"tagret": 0.5}}, "sparsity"),
    ({"sparsity": {"pattern": "2:4", "target": 0.5}}, "sparsity"),
    ({"sparsity": {"candidates": ["2:4"]}}, "sparsity.candidates"),
    ({"sparse_array": {"patterns": ["2:4", "2:4"]}}, "sparse_array.patterns"),
    ({"sparse_array": {"patterns": ["3:2"]}}, "sparse_array.patterns"),
    ({"array": {"dataflow": "os"}}, "array.dataflow"),
])
def test_bad_sparsity_keys_are_one_line_errors(over, words):
    with pytest.raises(ConfigError) as e:
        load_arch({"extends": "vegeta-64x64", **over})
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "expected" in msg


def test_missing_schedule_file_is_one_line_error(tmp_path):
    acc = vegeta(sparsity={"schedule": str(tmp_path / "nope.yaml")})
    with pytest.raises(ConfigError) as e:
        acc.op_annotations(sim.load_model("llama-2-7b"))
    assert "nope.yaml" in str(e.value) and "\n" not in str(e.value)
