"""The MicroScopiQ accelerator: ReCoN in the fold schedule, EBW storage, energy, area, configs."""
import math

import pytest

import sim
from sim.api import accelerator_for
from sim.config import ConfigError, load_arch, load_model
from sim.hw.accelerator import WeightOutliers
from sim.hw.recon import recon_depth

NONE = WeightOutliers(0.0, ((64, 0.0), (128, 0.0)))


def msq(**overrides):
    return accelerator_for(load_arch("microscopiq-64x64", overrides=overrides))


def plain():
    # the same array, memory and PE modes as a plain systolic accelerator
    a = load_arch("microscopiq-64x64").model_dump()
    a.update(type="systolic", recon=None, mx=None)
    return accelerator_for(a)


def outliers(frac_ub, p64, p128=None):
    return WeightOutliers(frac_ub, ((64, p64), (128, p64 if p128 is None else p128)))


@pytest.mark.parametrize("M,K,N,wbits", [(512, 4096, 4096, 4), (1, 4096, 11008, 2),
                                         (77, 1000, 640, 4)])
def test_no_outliers_is_exactly_the_plain_array(M, K, N, wbits):
    a = msq().gemm(M, K, N, wbits=wbits, abits=8, outliers=NONE)
    b = plain().gemm(M, K, N, wbits=wbits, abits=8)
    assert (a.cycles, a.compute_cycles, a.dram_read_bytes) == (b.cycles, b.compute_cycles,
                                                               b.dram_read_bytes)
    assert a.energy_pj["recon"] == 0 and a.counters["recon_accesses"] == 0


def test_outlier_rows_cost_cycles_and_recon_energy():
    base = msq().gemm(256, 4096, 4096, wbits=4, abits=4, outliers=NONE)
    r = msq().gemm(256, 4096, 4096, wbits=4, abits=4, outliers=outliers(0.02, 0.05))
    assert r.compute_cycles > base.compute_cycles
    assert r.counters["recon_accesses"] > 0 and r.energy_pj["recon"] > 0
    # every row pass moves C values through depth stages
    cols = 64
    assert r.energy.by_action()[("recon", "switch_op")] == pytest.approx(
        r.counters["recon_accesses"] * cols * recon_depth(cols) * msq().recon_tech.switch_pj)
    r.check()


def test_more_units_never_slower_more_outliers_never_faster():
    w = outliers(0.09, 0.5, 0.8)
    cyc = [msq(**{"recon.units": u}).gemm(512, 4096, 4096, wbits=4, abits=4, outliers=w).cycles
           for u in (1, 2, 4, 8)]
    assert cyc == sorted(cyc, reverse=True) and cyc[-1] < cyc[0]
    by_frac = [msq().gemm(512, 4096, 4096, wbits=4, abits=4, outliers=outliers(f, f)).cycles
               for f in (0.0, 0.05, 0.2, 0.6)]
    assert by_frac == sorted(by_frac)


def test_decode_gemv_pays_recon_depth_once_not_per_fold():
    # one streamed token: outlier rows never contend (their requests are staggered by the
    # sync/network depth), so only the last fold's extra depth shows
    base = msq().gemm(1, 4096, 4096, wbits=4, abits=4, outliers=NONE)
    r = msq().gemm(1, 4096, 4096, wbits=4, abits=4, outliers=outliers(0.09, 0.5))
    assert r.counters["recon_stall_cycles"] == 0
    delta = 63 + recon_depth(64)
    assert 0 < r.compute_cycles - base.compute_cycles <= 64 * delta


def test_weights_are_stored_at_their_effective_bit_width():
    # decode GEMV: weight bytes dominate DRAM reads; EBW(bb=2, x) = 2 + x * (6 - 2)
    x = 0.09
    r = msq().gemm(1, 4096, 4096, wbits=2, abits=8, outliers=outliers(x, 0.3, 0.5))
    b = msq().gemm(1, 4096, 4096, wbits=2, abits=8, outliers=NONE)
    ebw = 2 + x * ((24 + 2 * 8 + 8) / 8 - 2)
    assert ebw == pytest.approx(2.36)
    weights_before = 4096 * 4096 * 2 / 8
    assert r.dram_read_bytes - b.dram_read_bytes == pytest.approx(
        weights_before * (ebw / 2 - 1), rel=0.01)


def test_results_are_deterministic_across_fresh_models():
    w = outliers(0.09, 0.5, 0.8)
    a = msq().gemm(300, 2048, 1024, wbits=4, abits=4, outliers=w)
    arch = load_arch("microscopiq-64x64")
    fresh = type(msq())(arch)
    b = fresh.gemm(300, 2048, 1024, wbits=4, abits=4, outliers=w)
    assert (a.cycles, a.counters) == (b.cycles, b.counters)


def test_row_tile_fraction_for_widths_the_profile_does_not_store():
    w = outliers(0.09, 0.5, 0.8)
    assert w.rowtile_frac(64) == 0.5 and w.rowtile_frac(128) == 0.8
    assert w.rowtile_frac(32) == pytest.approx(1 - 0.5 ** 0.5)      # from width 64
    assert w.rowtile_frac(256) == pytest.approx(1 - 0.2 ** 2)       # from width 128
    r = msq(**{"array.rows": 8, "array.cols": 8}).gemm(64, 512, 512, wbits=2, abits=8,
                                                       outliers=w)
    assert r.counters["recon_accesses"] > 0


def test_recon_area_scales_with_units():
    areas = [msq(**{"recon.units": u}).area_um2() for u in (1, 2, 4, 8)]
    t = msq().recon_tech
    one = 64 * recon_depth(64) * t.switch_area_um2 + 64 * t.sync_buffer_area_um2_per_col
    assert [a["recon"] for a in areas] == pytest.approx([one * u for u in (1, 2, 4, 8)])
    assert "recon" not in plain().area_um2()
    assert math.isclose(areas[0]["recon"], 204.68 + 20.45, rel_tol=0.01)   # paper Table 5


def test_model_run_uses_the_profile_and_sums_counters_over_steps():
    model = load_model("llama-3-8b", overrides=["precision.wbits=4", "precision.abits=4"])
    one = sim.simulate_model("microscopiq-64x64", model, phase="decode", context=100)
    two = sim.simulate_model("microscopiq-64x64", model, phase="decode", context=100, steps=2)
    assert one.ops.recon_accesses.sum() > 0
    assert two.ops.recon_accesses.sum() == 2 * one.ops.recon_accesses.sum()
    attn = one.ops[one.ops.op.isin(["qk", "av"])]
    assert (attn.recon_accesses == 0).all()          # KV-cache GEMMs carry no weight outliers
    assert one.energy_pj["recon"] > 0


def test_model_without_profile_runs_with_a_synthetic_one():
    # More in tests/test_synthetic_profile.py (issue 7, defect 9).
    model = load_model("mistral-7b", overrides=["precision.wbits=4", "precision.abits=4",
                                                "num_layers=2"])
    m = sim.simulate_model("microscopiq-64x64", model, phase="decode", context=10)
    assert m.outlier_profile["generated_for_this_run"] and m.ops.recon_accesses.sum() > 0


@pytest.mark.parametrize("overrides, key", [
    (["recon.units=3"], "recon.units"),
    (["recon.units=8", "array.rows=4"], "recon.units"),
    (["array.dataflow=os"], "array.dataflow"),
])
def test_bad_recon_config(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_arch("microscopiq-64x64", overrides=overrides)
    assert e.value.key == key


def test_recon_section_only_for_microscopiq():
    with pytest.raises(ConfigError) as e:
        load_arch("quickstart", overrides={"recon": {"units": 1}})
    assert e.value.key == "recon"
    a = load_arch("microscopiq-64x64").model_dump()
    a["recon"] = None
    with pytest.raises(ConfigError) as e:
        load_arch(a)
    assert e.value.key == "recon"


@pytest.mark.parametrize("M,units", [(64, 1), (256, 1), (256, 4), (16, 2)])
def test_a_unit_serves_at_most_one_row_vector_per_cycle(M, units):
    # back-to-back folds must not overlap their ReCoN work beyond the units' capacity: every
    # access is one row vector and a unit takes one per cycle, so cycles >= accesses / units
    w = outliers(0.09, 0.6, 0.85)
    r = msq(**{"recon.units": units}).gemm(M, 4096, 4096, wbits=4, abits=4, outliers=w)
    assert r.compute_cycles >= r.counters["recon_accesses"] / units
    assert r.counters["recon_busy_cycles"] <= r.cycles
    if units == 1:
        assert r.counters["recon_busy_cycles"] == r.counters["recon_accesses"]
    r.check()


def test_throttles_in_a_decode_gemv():
    # one token per fold, loader-bound: with one throttle for all folds nothing waits; with
    # each fold's own throttle, folds wait behind their predecessor's slower tail (bubbles)
    w = outliers(0.09, 0.6)
    union = msq(**{"recon.throttle": "union"}).gemm(1, 4096, 4096, wbits=4, abits=4, outliers=w)
    own = msq(**{"recon.throttle": "per_fold"}).gemm(1, 4096, 4096, wbits=4, abits=4,
                                                     outliers=w)
    assert union.counters["recon_stall_cycles"] == union.counters["recon_bubble_cycles"] == 0
    assert own.counters["recon_bubble_cycles"] > 0 and own.cycles > 2 * union.cycles
    assert union.counters["recon_accesses"] == own.counters["recon_accesses"]


@pytest.mark.parametrize("M,K,N,wbits,throttle", [(64, 1024, 4096, 4, "per_fold"),
                                                  (1, 4096, 2048, 2, "union"),
                                                  (200, 1000, 3000, 4, "union"),
                                                  (16, 512, 8192, 4, "per_fold")])
def test_long_streams_are_extended_exactly(monkeypatch, M, K, N, wbits, throttle):
    # pricing the first column groups and extending them equals pricing the whole stream:
    # two fresh accelerators (no shared memo), one extending, one pricing every fold
    import sim.hw.microscopiq as msq_module
    from sim.hw.registry import build_accelerator
    extended = []

    def probe(*args, **kw):
        g = exact_prefix_groups(*args, **kw)
        extended.append(g)
        return g

    exact_prefix_groups = msq_module.exact_prefix_groups
    monkeypatch.setattr(msq_module, "exact_prefix_groups", probe)
    w = outliers(0.1, 0.5, 0.75)
    arch = load_arch("microscopiq-64x64", overrides={"recon.throttle": throttle})
    short = build_accelerator(arch).gemm(M, K, N, wbits=wbits, abits=4, outliers=w)
    assert extended and all(g is not None for g in extended)     # the extension engaged
    probed = len(extended)
    whole = build_accelerator(arch).gemm(M, K, N, wbits=wbits, abits=4, outliers=w,
                                         compress=False)
    assert len(extended) == probed                  # the whole stream was priced fold by fold
    assert (short.cycles, short.counters) == (whole.cycles, whole.counters)
    assert short.energy_pj == whole.energy_pj
    assert short.counters["recon_accesses"] > 0


def test_channel_share_sets_the_row_tile_fraction():
    x = 0.1
    spread = WeightOutliers(x, ((64, 0.9),), channel_share=1.0)
    assert spread.rowtile_frac(64) == pytest.approx(1 - (1 - x) ** 8)     # 8 uBs per row tile
    assert spread.rowtile_frac(128) == pytest.approx(1 - (1 - x) ** 16)
    packed = WeightOutliers(x, ((64, 0.9),), channel_share=0.01)           # below x: x rows
    assert packed.rowtile_frac(64) == pytest.approx(x)
    shares = [1.0, 0.5, 0.3, 0.2, 0.1]
    fr = [WeightOutliers(x, ((64, 0.9),), channel_share=s).rowtile_frac(64) for s in shares]
    assert fr == sorted(fr, reverse=True) and fr[-1] == pytest.approx(x)
    assert WeightOutliers(0.0, ((64, 0.9),), channel_share=0.5).rowtile_frac(64) == 0.0
    cyc = [msq().gemm(256, 4096, 4096, wbits=4, abits=4,
                      outliers=WeightOutliers(x, ((64, 0.9),), channel_share=s)).cycles
           for s in shares]
    assert cyc == sorted(cyc, reverse=True) and cyc[-1] < cyc[0]


def test_model_channel_share_reaches_the_accelerator():
    model = load_model("llama-3-8b", overrides=["precision.wbits=4", "precision.abits=4"])
    packed = model.model_copy(update={"outlier_channel_share": 0.01})
    a = sim.simulate_model("microscopiq-64x64", model, phase="prefill", seq_len=64)
    b = sim.simulate_model("microscopiq-64x64", packed, phase="prefill", seq_len=64)
    assert b.ops.recon_accesses.sum() < a.ops.recon_accesses.sum() and b.cycles < a.cycles
    # storage follows the fraction of outlier micro-blocks, not where they sit
    assert b.ops.dram_read_bytes.sum() == a.ops.dram_read_bytes.sum()


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "nan", "lots"])
def test_bad_channel_share_is_a_config_error(value):
    with pytest.raises(ConfigError, match="outlier_channel_share"):
        load_model("llama-3-8b", overrides=[f"outlier_channel_share={value}"])
