"""Baseline accelerators (INT8, OliVe, ANT, GOBO, OLAccel, AdaptivFloat): configs, timing of the
outlier path, DRAM footprints, decoder and datapath energy, Table 5 areas, config errors."""
import math

import pytest

import sim
from sim.api import accelerator_for
from sim.config import ConfigError, load_arch, load_model
from sim.hw.accelerator import WeightOutliers
from sim.hw.registry import accelerator_types

# design -> (type, a precision it runs natively)
DESIGNS = {
    "int8": ("systolic", (8, 8)),
    "olive": ("olive", (4, 4)),
    "ant": ("ant", (4, 4)),
    "gobo": ("gobo", (4, 4)),
    "olaccel": ("olaccel", (4, 4)),
    "adaptivfloat": ("adaptivfloat", (8, 8)),
}
OUTLIER_BLIND = ("int8", "olive", "ant", "adaptivfloat")
OUTLIER_PATH = ("gobo", "olaccel")


def accel(design, **overrides):
    return accelerator_for(load_arch(f"{design}-64x64", overrides=overrides or None))


def outliers(frac_weights, frac_ub=0.1, rowtile=0.5):
    return WeightOutliers(frac_ub, ((64, rowtile), (128, rowtile)), frac_weights)


def test_every_design_is_registered_under_its_type():
    types = accelerator_types()
    for design, (kind, _) in DESIGNS.items():
        assert kind in types
        a = accel(design)
        assert a.arch.type == kind
        assert a.uses_outlier_profile == (design in OUTLIER_PATH)


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("M,K,N", [(77, 1000, 640), (1, 4096, 4096)])
def test_small_gemm_invariants(design, M, K, N):
    wbits, abits = DESIGNS[design][1]
    for w in (None, outliers(0.03)):
        r = accel(design).gemm(M, K, N, wbits=wbits, abits=abits, outliers=w)
        r.check()
        assert r.stall_cycles >= 0 and r.cycles >= r.compute_cycles > 0
        assert all(v >= 0 for v in r.energy_pj.values()) and r.energy_pj["pe_array"] > 0
        assert r.macs == M * K * N


@pytest.mark.parametrize("design", DESIGNS)
def test_two_layer_model_runs(design):
    model = load_model("llama-2-7b", overrides=["num_layers=2", "precision.wbits=4",
                                                "precision.abits=4"])
    for phase, kw in (("prefill", {"seq_len": 64}), ("decode", {"context": 64})):
        r = sim.simulate_model(f"{design}-64x64", model, phase=phase, **kw)
        ops = r.ops
        assert r.cycles > 0 and r.stall_cycles >= 0 and (ops.stall_cycles >= 0).all()
        assert (ops.cycles == ops.compute_cycles + ops.stall_cycles).all()
        assert all(v >= 0 for v in r.energy_pj.values()) and r.energy_total_pj > 0
        assert 0 < r.utilization <= 1
        if design in OUTLIER_PATH:
            attn = ops[ops.op.isin(["qk", "av"])]
            weights = ops[ops.op.isin(["q_proj", "down_proj"])]
            assert (attn.outlier_macs == 0).all()       # the KV cache carries no weight outliers
            assert (weights.outlier_macs > 0).all()


@pytest.mark.parametrize("design", OUTLIER_BLIND)
def test_designs_without_outlier_handling_ignore_outlier_stats(design):
    wbits, abits = DESIGNS[design][1]
    a = accel(design)
    for M in (1, 300):
        plain = a.gemm(M, 2048, 1024, wbits=wbits, abits=abits)
        heavy = a.gemm(M, 2048, 1024, wbits=wbits, abits=abits, outliers=outliers(0.2, 0.9, 1.0))
        assert (plain.cycles, plain.compute_cycles, plain.dram_read_bytes) == \
               (heavy.cycles, heavy.compute_cycles, heavy.dram_read_bytes)
        assert plain.energy_pj == pytest.approx(heavy.energy_pj)


@pytest.mark.parametrize("design", OUTLIER_PATH)
def test_outlier_path_designs_slow_down_as_outliers_grow(design):
    a = accel(design)
    none = a.gemm(512, 4096, 4096, wbits=4, abits=4)
    zero = a.gemm(512, 4096, 4096, wbits=4, abits=4, outliers=outliers(0.0))
    assert zero.cycles == none.cycles and zero.dram_read_bytes == none.dram_read_bytes
    cyc = [a.gemm(512, 4096, 4096, wbits=4, abits=4, outliers=outliers(f)).compute_cycles
           for f in (0.0, 0.01, 0.05, 0.1, 0.2, 0.4)]
    assert cyc == sorted(cyc) and cyc[-1] > cyc[0]
    energy = [a.gemm(512, 4096, 4096, wbits=4, abits=4,
                     outliers=outliers(f)).energy_pj["pe_array"] for f in (0.0, 0.05, 0.2)]
    assert energy == sorted(energy) and energy[-1] > energy[0]


@pytest.mark.parametrize("design, frac", [("gobo", 0.05), ("gobo", 0.01), ("olaccel", 0.1),
                                          ("olaccel", 0.05)])
def test_outlier_stall_per_fold_formula(design, frac):
    # 512 x 4096 x 4096 at w4a4 on 64x64 WS: 4096 full folds of 64 x 64 weights, T = 512
    a = accel(design)
    path = a.arch.baseline.outlier_path
    base = a.gemm(512, 4096, 4096, wbits=4, abits=4)
    r = a.gemm(512, 4096, 4096, wbits=4, abits=4, outliers=outliers(frac))
    per_fold = max(0, math.ceil(frac * 64 * 64 * 512 / (path.pes * path.macs_per_cycle)) - 512)
    assert r.counters["outlier_stall_cycles"] == 4096 * per_fold
    assert r.compute_cycles - base.compute_cycles == 4096 * per_fold
    assert r.counters["outlier_macs"] == round(frac * 512 * 4096 * 4096)
    assert r.energy.by_action()[("pe_array", "outlier_mac")] == pytest.approx(
        r.counters["outlier_macs"] * a.outlier_mac_pj(4))
    if design == "olaccel" and frac <= 1 / 16:
        assert per_fold == 0          # one outlier MAC per 16 PEs absorbs up to 6.25 %


def stored_bits(design, wbits, w):
    """Each design's weight footprint in bits, written out from its arch file's rule."""
    if design in OUTLIER_BLIND or w is None:
        return wbits                                     # dense, in place (EBW = wbits)
    path = {"gobo": (32, 32), "olaccel": (16, 8)}[design]  # (value_bits, index_bits)
    return wbits + w.frac_weights * sum(path)


@pytest.mark.parametrize("design", DESIGNS)
def test_gemv_dram_bytes_follow_the_stored_bits(design):
    # a decode GEMV reads every weight once and the activation vector once
    wbits, abits = DESIGNS[design][1]
    K, N, w = 4096, 4096, outliers(0.03)
    a = accel(design)
    r = a.gemm(1, K, N, wbits=wbits, abits=abits, outliers=w)
    bits = stored_bits(design, wbits, w)
    assert a.stored_weight_bits(wbits, w) == pytest.approx(bits)
    assert r.dram_read_bytes == pytest.approx(K * N * bits / 8 + K * abits / 8, rel=1e-3)
    plain = a.gemm(1, K, N, wbits=wbits, abits=abits)
    assert plain.dram_read_bytes == K * N * wbits // 8 + K * abits // 8


def test_gobo_footprint_can_be_pinned_to_the_papers_ebw():
    a = accel("gobo", **{"baseline.outlier_path.stored_bits": {2: 15.6, 4: 18.17}})
    w = outliers(0.02)
    assert a.stored_weight_bits(4, w) == 18.17 and a.stored_weight_bits(2, w) == 15.6
    assert a.stored_weight_bits(4, None) == 4          # attention GEMMs: the KV cache as is
    r = a.gemm(1, 4096, 4096, wbits=4, abits=4, outliers=w)
    assert r.dram_read_bytes == pytest.approx(4096 * 4096 * 18.17 / 8 + 2048, rel=1e-3)


@pytest.mark.parametrize("wbits, abits, unit, fused", [(4, 4, "decoder_4b", 1),
                                                       (8, 8, "decoder_8b", 4)])
def test_olive_decodes_every_operand_entering_the_array(wbits, abits, unit, fused):
    a = accel("olive")
    M, K, N = 300, 1000, 640
    r = a.gemm(M, K, N, wbits=wbits, abits=abits)
    col_folds = math.ceil(N / (64 // fused))              # fused PEs: 64 / q logical columns
    decoded = K * N + M * K * col_folds                  # WS: weights once, activations per group
    assert r.counters[f"{unit}_decodes"] == decoded
    pj = {u.name: u.pj_per_value for u in a.arch.baseline.units}[unit]
    assert r.energy.by_action()[("pe_array", f"{unit}_decode")] == pytest.approx(decoded * pj)
    # OliVe is the INT array's timing with its own modes: same cycles as a plain systolic twin
    twin = load_arch("olive-64x64").model_dump()
    twin.update(type="systolic", baseline=None)
    t = accelerator_for(twin).gemm(M, K, N, wbits=wbits, abits=abits)
    assert (r.cycles, r.dram_read_bytes) == (t.cycles, t.dram_read_bytes)


def test_float_datapath_costs_energy_scale_times_the_int_mac():
    fp = accel("adaptivfloat").gemm(256, 1024, 1024, wbits=8, abits=8)
    int8 = accel("int8").gemm(256, 1024, 1024, wbits=8, abits=8)
    assert fp.cycles == int8.cycles and fp.dram_read_bytes == int8.dram_read_bytes
    assert fp.energy_pj["pe_array"] == pytest.approx(1.14 * int8.energy_pj["pe_array"])
    gobo = accel("gobo").gemm(256, 1024, 1024, wbits=4, abits=4)
    olive = accel("olive").gemm(256, 1024, 1024, wbits=4, abits=4)
    macs = olive.energy.by_action()[("pe_array", "mac_w4a4")]
    assert gobo.energy.by_action()[("pe_array", "mac_datapath_extra")] == pytest.approx(2 * macs)


def test_table5_areas_are_reproduced():
    # MicroScopiQ Table 5 (7 nm, 64 x 64): per-unit area x count for each component
    olive = accel("olive").area_um2()
    assert olive["pe_array"] == pytest.approx(2.51 * 4096)
    assert olive["multi_precision"] == pytest.approx(0.68 * 1024)
    assert olive["decoder_4b"] == pytest.approx(1.86 * 128)
    assert olive["decoder_8b"] == pytest.approx(2.47 * 64)
    assert olive["control"] == pytest.approx(95.49)
    compute = sum(olive[k] for k in ("pe_array", "multi_precision", "decoder_4b",
                                     "decoder_8b", "control"))
    assert compute * 1e-6 == pytest.approx(0.011, abs=0.001)   # Table 5: 0.011 mm^2
    gobo = accel("gobo").area_um2()
    assert gobo["pe_array"] == pytest.approx(36.56 * 4096)
    assert gobo["outlier_pes"] == pytest.approx(96.42 * 64)
    assert gobo["control"] == pytest.approx(115.36)


@pytest.mark.parametrize("design", DESIGNS)
def test_area_and_leakage_breakdowns_are_positive(design):
    a = accel(design)
    area, leak = a.area_um2(), a.leakage_uw()
    assert all(v > 0 for v in area.values())
    assert all(v > 0 for v in leak.values())
    assert {"pe_array", "sram", "l2", "vector", "control"} <= set(area)
    if design in OUTLIER_PATH:
        assert area["outlier_pes"] > 0 and leak["outlier_pes"] > 0
    if design == "adaptivfloat":
        assert area["pe_array"] == pytest.approx(1.14 * accel("int8").area_um2()["pe_array"])


def test_outlier_path_design_without_a_profile_gets_a_synthetic_one():
    model = load_model("mistral-7b", overrides=["num_layers=1", "precision.wbits=4",
                                                "precision.abits=4"])
    gobo = sim.simulate_model("gobo-64x64", model, phase="decode", context=8)
    assert gobo.outlier_profile["generated_for_this_run"]      # tests/test_synthetic_profile.py
    olive = sim.simulate_model("olive-64x64", model, phase="decode", context=8)
    assert olive.outlier_profile is None                        # no profile needed


def test_unsupported_precision_names_the_modes():
    with pytest.raises(ConfigError) as e:
        accel("gobo").gemm(16, 64, 64, wbits=8, abits=8)
    assert e.value.key == "pe.modes"


def key_of(ref, overrides=None):
    with pytest.raises(ConfigError) as e:
        load_arch(ref, overrides=overrides)
    return e.value.key


def without(design, *path):
    a = load_arch(f"{design}-64x64").model_dump()
    node = a
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = None
    return a


def test_baseline_section_required_and_rejected_by_type():
    assert key_of(without("olive", "baseline")) == "baseline"
    assert key_of(without("gobo", "baseline", "outlier_path")) == "baseline.outlier_path"
    assert key_of(without("olaccel", "baseline", "outlier_path")) == "baseline.outlier_path"
    assert key_of("olive-64x64", {"baseline": {"outlier_path": {
        "pes": 4, "value_bits": 16, "index_bits": 8}}}) == "baseline.outlier_path"
    assert key_of("quickstart", {"baseline": {}}) == "baseline"
    assert key_of("microscopiq-64x64", {"baseline": {}}) == "baseline"


@pytest.mark.parametrize("overrides, key", [
    (["baseline.outlier_path.pes=0"], "baseline.outlier_path.pes"),
    (["baseline.outlier_path.pe=4"], "baseline.outlier_path.pe"),
    (["baseline.outlier_path.value_bits=-1"], "baseline.outlier_path.value_bits"),
    (["baseline.outlier_path.stored_bits={3: 4.5}"], "baseline.outlier_path.stored_bits.3"),
    (["baseline.pe.energy_scale=0.5"], "baseline.pe.energy_scale"),
    (["baseline.pe.area_scale=2"], "baseline.pe.area_scale"),   # gobo pins pe.area_um2
])
def test_bad_gobo_sections_name_the_key(overrides, key):
    got = key_of("gobo-64x64", overrides)
    assert got == key or got.startswith(key + ".")     # a dict key's loc may add "[key]"


@pytest.mark.parametrize("units, key", [
    ([{"name": "dec", "count": 2, "area_um2": 1.0, "decodes": ["weights"]}], "baseline.units.0.bits"),
    ([{"name": "pe_array", "count": 2, "area_um2": 1.0}], "baseline.units.0.name"),
    ([{"name": "x", "count": 2, "area_um2": 1.0}, {"name": "x", "count": 1, "area_um2": 1.0}],
     "baseline.units.1.name"),
    ([{"name": "x", "count": 0, "area_um2": 1.0}], "baseline.units.0.count"),
    ([{"name": "x", "count": 1, "area_um2": 1.0, "decodes": ["psums"], "bits": 4}],
     "baseline.units.0.decodes.0"),
])
def test_bad_units_name_the_key(units, key):
    assert key_of("ant-64x64", [f"baseline.units={units}"]) == key
