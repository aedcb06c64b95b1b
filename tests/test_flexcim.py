"""The FlexCiM chip (type ``flexcim``) and its DCiM baselines.

Cycle counts are checked against the macro's own closed form (itself equal to the
cycle-stepped reference, tests/test_dcim.py) and a plain tile-by-tile loop; traffic and bounds
against hand computations from the macro mapping."""
from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.api import accelerator_for
from sim.config import ConfigError, load_arch
from sim.hw.dcim import DCiMMacro, map_gemm, macro_area_um2, sequence_cycles
from sim.hw.dcim_ref import RefTile, run_reference
from sim.hw.flexcim import chip_cycles, chip_cycles_loop
from sim.hw.memory_plan import OperandPlacement


def _macro(rng) -> DCiMMacro:
    return DCiMMacro(sub_macros=int(rng.choice([1, 2, 4])), rows=int(rng.choice([4, 8, 32])),
                     cols=int(rng.choice([4, 8, 32])),
                     input_mode=str(rng.choice(["parallel", "serial"])),
                     reload_overlap=bool(rng.integers(2)),
                     distribution_stages=int(rng.integers(0, 3)), abits=int(rng.integers(2, 9)),
                     patterns=("dense",))


def test_run_jumps_equal_the_tile_by_tile_loop():
    rng = np.random.default_rng(3)
    for _ in range(300):
        m = _macro(rng)
        runs = [(int(rng.integers(1, 40)), int(rng.integers(1, m.cols + 1)),
                 int(rng.choice([0, 0, rng.integers(1, 200)])), int(rng.integers(1, 60)))
                for _ in range(int(rng.integers(1, 4)))]
        vc = int(rng.integers(m.cycles_per_vector, m.cycles_per_vector + 3))
        staging, start = int(rng.integers(1, 4)), int(rng.integers(0, 50))
        tiles = [(v, c, d) for v, c, d, n in runs for _ in range(n)]
        assert chip_cycles(m, runs, vector_cycles=vc, staging=staging, start=start) == \
            chip_cycles_loop(m, tiles, vector_cycles=vc, staging=staging, start=start)


def test_unlimited_delivery_is_the_macro_model_and_the_reference():
    rng = np.random.default_rng(5)
    for _ in range(200):
        m = _macro(rng)
        runs = [(int(rng.integers(1, 9)), int(rng.integers(1, m.cols + 1)), 0,
                 int(rng.integers(1, 5))) for _ in range(int(rng.integers(1, 4)))]
        tiles = [(v, c) for v, c, _, n in runs for _ in range(n)]
        assert chip_cycles(m, runs) == sequence_cycles(m, tiles)
    # and directly against the cycle-stepped reference on a few zero-weight tiles
    m = DCiMMacro(sub_macros=4, rows=8, cols=8, patterns=("dense",))
    from sim.hw.dcim import place_tile
    for vecs, cols in ((1, 8), (5, 3), (2, 8)):
        w = np.zeros((16, cols), np.int64)
        tile = RefTile(place_tile(m, "dense", w), np.zeros((vecs, 16), np.int64), cols)
        assert run_reference(m, [tile, tile]).cycles == chip_cycles(m, [(vecs, cols, 0, 2)])


def _ideal(arch: str, **over):
    """The arch with unlimited memory (huge bandwidths, tiny latencies, big buffers)."""
    a = load_arch(arch).model_dump()
    a["name"] = arch + "-ideal"
    a["memory"]["dram"].update(bandwidth_gbps=1e9, latency_ns=0)
    a["memory"]["l2"].update(bytes_per_cycle=1e9, latency_cycles=0)
    a["memory"]["sram"].update(bytes_per_cycle=1e9)
    a.update(over)
    return load_arch(a)


def test_one_macro_ideal_memory_equals_the_tile_sequence():
    acc = accelerator_for(_ideal("flexcim", staging_tiles=1))
    m = acc.arch.macro
    for M, K, N, nm in ((1, 4096, 4096, "2:4"), (7, 1000, 100, "1:4"), (64, 512, 96, None),
                        (3, 300, 33, "2:8")):
        r = acc.gemm(M, K, N, nm=nm)
        gm = map_gemm(m, M, K, N, nm or "dense")
        # one macro: every (K pass, column tile) with all M tokens, column tiles of full width
        # (the critical-macro rule) unless N < C
        want = chip_cycles(m, [(M, min(m.cols, N), 0, gm.passes)])
        assert r.compute_cycles == want
        # with unlimited memory the delivery adds only its rounding (<= 1 cycle per tile)
        assert 0 <= r.stall_memory <= gm.passes


def test_decode_is_bounded_by_the_compressed_weight_bytes_over_dram():
    acc = accelerator_for(load_arch("flexcim"))
    bw = acc.dram_bytes_per_cycle
    for nm in (None, "2:4", "1:4", "2:8", "4:8"):
        r = acc.gemm(1, 4096, 4096, nm=nm, place=OperandPlacement("l2", "dram", "l2"))
        gm = map_gemm(acc.arch.macro, 1, 4096, 4096, nm or "dense")
        w_bytes = math.ceil(gm.compressed_weight_bits / 8)
        assert r.dram_read_bytes == w_bytes
        assert r.cycles >= w_bytes / bw
        assert r.cycles >= r.compute_cycles


def test_sparser_patterns_are_never_slower_and_2of8_is_twice_4of8_in_prefill():
    acc = accelerator_for(load_arch("flexcim"))
    order = [None, "4:8", "2:4", "2:8", "1:4"]
    for M in (1, 64, 512):
        cyc = [acc.gemm(M, 4096, 4096, nm=p).cycles for p in order]
        assert all(a >= b for a, b in zip(cyc, cyc[1:])), (M, cyc)
    big = {p: acc.gemm(2048, 4096, 4096, nm=p).compute_cycles for p in ("4:8", "2:8")}
    assert big["4:8"] / big["2:8"] == pytest.approx(2.0, rel=0.02)


def test_many_macros_split_columns_then_k():
    one = accelerator_for(_ideal("flexcim"))
    for macros in (2, 4, 16, 256):
        acc = accelerator_for(_ideal("flexcim", macros=macros))
        r1, rn = one.gemm(1, 4096, 1024, nm="2:4"), acc.gemm(1, 4096, 1024, nm="2:4")
        gm = map_gemm(acc.arch.macro, 1, 4096, 1024, "2:4")
        n_tiles = gm.n_passes
        g = min(gm.k_passes, macros // n_tiles) if n_tiles < macros else 1
        per_macro = math.ceil(n_tiles / (macros // g)) * math.ceil(gm.k_passes / g)
        assert rn.compute_cycles == chip_cycles(acc.arch.macro, [(1, 32, 0, per_macro)])
        assert rn.compute_cycles <= r1.compute_cycles
        assert rn.macs == r1.macs                      # the same kept MACs, spread out


def test_flow_schedule_reaches_the_gemms_and_the_fixed_design_falls_back():
    model = sim.load_model("llama-2-7b")
    flex = accelerator_for(load_arch("flexcim"))
    fixed = accelerator_for(load_arch("dcim-2of4"))
    lf, lx = flex.layer_patterns(model), fixed.layer_patterns(model)
    assert lf.requested == lx.requested                 # both from FLOW at 60 %
    assert abs(lf.mean_sparsity() - 0.6) < 0.02
    for req, run in zip(lx.requested, lx.run):
        assert str(run) in ("2:4", "dense")
        if str(req) in ("1:4", "2:8", "1:2", "2:4"):
            assert str(run) == "2:4"
        else:
            assert str(run) == "dense"
    r = sim.simulate_step("flexcim", "llama-2-7b", prefill=[(64, 0)], decode=[100, 300])
    ops = r.ops
    for layer in (0, 5, 31):
        row = ops[(ops.layer == layer) & (ops.op == "q_proj")].iloc[0]
        gm = map_gemm(flex.arch.macro, int(row.M), int(row.K), int(row.N), str(lf.run[layer]))
        assert row.macs == gm.kept_macs
    att = ops[ops.kind == "attention"]
    assert (att.macs == att.M * att.K * att.N * att["count"].clip(lower=1)).all()   # dense


def test_whole_model_ranking_and_invariants():
    res = {a: sim.simulate_model(a, "llama-2-7b", phase="decode", batch=1, context=256)
           for a in ("flexcim", "dcim-2of4", "dcim-dense")}
    sec = {a: r.seconds for a, r in res.items()}
    assert sec["flexcim"] < sec["dcim-2of4"] < sec["dcim-dense"]
    for r in res.values():
        ops = r.ops
        assert (ops.stall_cycles >= 0).all() and (ops.utilization <= 1).all()
        assert (ops.filter(like="energy_").fillna(0) >= 0).all().all()


def test_dense_dcim_is_equal_area_to_flexcim():
    flex, dense = load_arch("flexcim"), load_arch("dcim-dense")
    t = accelerator_for(flex).dtech
    a_flex = sum(macro_area_um2(flex.macro, t).values()) * flex.macros
    a_dense = sum(macro_area_um2(dense.macro, t).values())
    assert dense.macros == math.floor(a_flex / a_dense)
    assert dense.macro.cells == flex.macro.cells


def test_same_config_same_numbers():
    a = sim.simulate_model("flexcim", "qwen2.5-3b", phase="prefill", batch=1, seq_len=128)
    b = sim.simulate_model("flexcim", "qwen2.5-3b", phase="prefill", batch=1, seq_len=128)
    assert a.seconds == b.seconds and a.ops.energy_pj.sum() == b.ops.energy_pj.sum()


@pytest.mark.parametrize("over, key, words", [
    ({"macro": {"patterns": ["3:3:3"]}}, "macro.patterns", "N:M"),
    ({"macro": {"patterns": ["5:4"]}}, "macro.patterns", "N <= M"),
    ({"sparsity": {"pattern": "9:4"}}, "sparsity.pattern", "N <= M"),
    ({"sparsity": {"target": 1.0}}, "sparsity.target", "< 1"),
    ({"sparsity": {"target": -0.1}}, "sparsity.target", ">= 0"),
    ({"macros": 0}, "macros", ">= 1"),
    ({"macros": "four"}, "macros", "integer"),
    ({"macros": 10 ** 9}, "macros", "<= 65536"),
    ({"staging_tiles": 0}, "staging_tiles", ">= 1"),
    ({"staging_tiles": 2.5}, "staging_tiles", "integer"),
    ({"weights_in_l2": "sometimes"}, "weights_in_l2", "true or false"),
    ({"macro": {"rows": 0}}, "macro.rows", ">= 1"),
    ({"macro": {"select_scope": "column"}}, "macro.select_scope", "cell"),
])
def test_bad_flexcim_configs_are_one_line_errors(over, key, words):
    a = load_arch("flexcim").model_dump()
    for k, v in over.items():
        a[k] = {**a[k], **v} if isinstance(v, dict) else v
    a["sparsity"] = {k: v for k, v in a["sparsity"].items() if v is not None} \
        if "sparsity" not in over else over["sparsity"]
    with pytest.raises(ConfigError) as e:
        load_arch(a)
    msg = str(e.value)
    assert "\n" not in msg and key in msg and words in msg, msg


def test_a_flexcim_arch_without_macros_names_the_key():
    a = load_arch("flexcim").model_dump()
    del a["macros"]
    with pytest.raises(ConfigError) as e:
        load_arch(a)
    assert "\n" not in str(e.value) and "macros" in str(e.value)


def test_schedule_for_the_wrong_layer_count_is_a_one_line_error(tmp_path):
    sched = sim.flow("qwen2.5-3b", sparsity=0.5)
    from sim.io.flow_inputs import write_schedule
    path = write_schedule(sched, tmp_path / "qwen.yaml")
    a = load_arch("flexcim").model_dump()
    a["name"] = "flexcim-qwen-schedule"
    a["sparsity"] = {"schedule": str(path)}
    with pytest.raises(ConfigError) as e:
        sim.simulate_model(a, "llama-2-7b", phase="decode", batch=1, context=16)
    msg = str(e.value)
    assert "\n" not in msg and "num_layers" in msg and "qwen.yaml" in msg


def test_an_edited_outlier_profile_is_not_answered_from_the_flow_memo(tmp_path):
    import os
    import shutil
    from sim.hw import nm_sparsity
    src = sim.load_model("llama-2-7b").outlier_profile
    from sim.config.outliers import _PROFILES
    prof = tmp_path / "prof.yaml"
    shutil.copy(_PROFILES.resolve(src), prof)
    model = sim.load_model("llama-2-7b", overrides=[f"outlier_profile={prof}"])
    acc = accelerator_for(load_arch("flexcim"))
    acc.layer_patterns(model)
    before = nm_sparsity._flow_patterns.cache_info().misses
    acc.layer_patterns(model)                               # unchanged: a memo hit
    assert nm_sparsity._flow_patterns.cache_info().misses == before
    st = prof.stat()
    os.utime(prof, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))   # the file changed
    acc.layer_patterns(model)
    assert nm_sparsity._flow_patterns.cache_info().misses == before + 1
