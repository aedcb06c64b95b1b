"""FlexCiM DCiM macro: fast model == cycle-stepped reference, functional mode == numpy, mapping
invariants, the technology section and one-line errors for what cannot map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from sim.config import ConfigError
from sim.config.loader import load_validated
from sim.config.tech import load_tech
from sim.hw.dcim import (DEFAULT_PATTERNS, DCiMMacro, DCiMTech, macro_area_um2, map_gemm,
                         map_pattern, parse_pattern, pass_energy_pj, place_tile,
                         sequence_cycles, uniform_sequence_cycles)
from sim.hw.dcim_ref import RefTile, gemm_reference, run_reference


def _nm_weights(rng, k, n_out, n, m, lo=-128, hi=128):
    """Random INT8 weights with a per-output-channel N:M mask (short last block: min(N, rest))."""
    w = rng.integers(lo, hi, (k, n_out))
    w[w == 0] = 1
    keep = np.zeros((k, n_out), bool)
    for b in range(0, k, m):
        size = min(m, k - b)
        for c in range(n_out):
            keep[b + rng.choice(size, min(n, size), replace=False), c] = True
    return np.where(keep, w, 0)


def _row_scope_weights(rng, macro, pat, k, n_out):
    """Masks the RTL's shared per-(row, sub-macro) pair select can hold: per pass and block the
    columns share a multiset of N pairs and choose freely inside each pair."""
    mp = map_pattern(macro, pat)
    w = np.zeros((k, n_out), np.int64)
    for j0 in range(0, n_out, macro.cols):
        cols = range(j0, min(n_out, j0 + macro.cols))
        for b in range(0, k, pat.m):
            size = min(pat.m, k - b)
            cap = [min(2, size - 2 * q) for q in range(math.ceil(size / 2))]
            labels = []
            while len(labels) < min(pat.n, size):
                q = int(rng.integers(len(cap)))
                if labels.count(q) < cap[q]:
                    labels.append(q)
            for c in cols:
                for q in set(labels):
                    members = [2 * q + e for e in range(cap[q])]
                    pick = rng.choice(members, labels.count(q), replace=False)
                    w[b + pick, c] = rng.integers(1, 128) * rng.choice([-1, 1])
    assert mp.k_tile > 0
    return w


def _random_macro(rng, **over):
    kw = dict(sub_macros=int(rng.integers(1, 5)), rows=int(rng.integers(1, 7)),
              cols=int(rng.integers(1, 5)),
              input_mode=str(rng.choice(["parallel", "serial"])),
              reload_overlap=bool(rng.integers(2)),
              distribution_stages=int(rng.integers(0, 3)),
              select_scope="cell", pairs_per_mux=8,
              abits=int(rng.integers(2, 6)))
    kw.update(over)
    return DCiMMacro(**kw, patterns=("1:2",))


def _random_pattern(rng, macro):
    while True:
        m = int(rng.integers(1, 17))
        pat = parse_pattern((int(rng.integers(1, m + 1)), m))     # N = M is dense = 2:2
        if math.ceil(pat.n / macro.sub_macros) <= macro.rows:
            return pat


# --------------------------------------------------------------------------------------------
# one model, two speeds
# --------------------------------------------------------------------------------------------

def test_fast_model_equals_reference_on_random_sequences():
    rng = np.random.default_rng(8)
    cases = 0
    seen = set()
    for _ in range(320):
        base = _random_macro(rng)
        pat = _random_pattern(rng, base)
        macro = base.model_copy(update={"patterns": (pat.name,)})
        mp = map_pattern(macro, pat)
        tiles, truth = [], []
        for _ in range(int(rng.integers(1, 6))):
            t = int(rng.integers(1, 6))
            cols = int(rng.integers(1, macro.cols + 1))
            k = int(rng.integers(1, mp.k_tile + 1))
            w = _nm_weights(rng, k, cols, pat.n, pat.m)
            lim = 1 << (macro.abits - 1)
            x = rng.integers(-lim, lim, (t, k))
            tiles.append(RefTile(place_tile(macro, pat, w), x, cols))
            truth.append(x @ w)
        res = run_reference(macro, tiles)
        fast = sequence_cycles(macro, [(tl.x.shape[0], tl.cols) for tl in tiles])
        assert res.cycles == fast, (macro, pat, [(tl.x.shape, tl.cols) for tl in tiles])
        for got, want in zip(res.outputs, truth):
            np.testing.assert_array_equal(got, want)
        assert res.max_psum_occupancy <= 1 and res.barrier_waits == 0
        seen.add((macro.input_mode, macro.reload_overlap, pat.dense))
        cases += 1
    assert cases >= 300
    assert len(seen) == 8          # both bit modes x both reload modes x sparse/dense


def test_rtl_defaults_latency_and_reload_figures():
    """research/flexcim.md 3.4: fill latency 11 cycles, 32-cycle reload, 1 vector a cycle."""
    macro = DCiMMacro()
    assert macro.tail_cycles == 11
    assert sequence_cycles(macro, [(1, 32)]) == 32 + 11 - 1 + 1   # e0 = 32, last write + 1
    # steady state: T vectors a tile, reload not overlapped: T + 32 per tile
    a, b = sequence_cycles(macro, [(10, 32)] * 3), sequence_cycles(macro, [(10, 32)] * 4)
    assert b - a == 10 + 32
    over = macro.model_copy(update={"reload_overlap": True})
    a, b = sequence_cycles(over, [(50, 32)] * 3), sequence_cycles(over, [(50, 32)] * 4)
    assert b - a == 50                      # compute-bound: reload hidden
    a, b = sequence_cycles(over, [(5, 32)] * 3), sequence_cycles(over, [(5, 32)] * 4)
    assert b - a == 32                      # reload-bound (decode): one column a cycle
    serial = macro.model_copy(update={"input_mode": "serial"})
    a, b = sequence_cycles(serial, [(10, 32)] * 3), sequence_cycles(serial, [(10, 32)] * 4)
    assert b - a == 10 * 8 + 32


def test_uniform_sequence_closed_form_equals_the_recurrence():
    rng = np.random.default_rng(11)
    for _ in range(400):
        macro = _random_macro(rng, cols=int(rng.integers(1, 40)))
        t, cols, n = int(rng.integers(1, 60)), int(rng.integers(1, macro.cols + 1)), int(rng.integers(1, 40))
        assert uniform_sequence_cycles(macro, t, cols, n) == sequence_cycles(macro, [(t, cols)] * n)


# --------------------------------------------------------------------------------------------
# functional mode
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["cell", "row"])
@pytest.mark.parametrize("mode", ["parallel", "serial"])
def test_gemm_through_macro_equals_numpy_for_every_pattern(scope, mode):
    rng = np.random.default_rng(hash((scope, mode)) % 2**32)
    macro = DCiMMacro(rows=4, cols=3, input_mode=mode, select_scope=scope,
                      reload_overlap=mode == "serial")
    for pat_name in DEFAULT_PATTERNS:
        pat = parse_pattern(pat_name)
        for _ in range(2):
            t, k, n_out = (int(rng.integers(1, 4)), int(rng.integers(1, 70)),
                           int(rng.integers(1, 8)))
            w = (_row_scope_weights(rng, macro, pat, k, n_out) if scope == "row"
                 else _nm_weights(rng, k, n_out, pat.n, pat.m))
            x = rng.integers(-128, 128, (t, k))
            y, res = gemm_reference(macro, pat_name, x, w)
            np.testing.assert_array_equal(y, x @ w)
            g = map_gemm(macro, t, k, n_out, pat_name)
            assert res.cycles == g.cycles
            assert g.kept_macs == t * np.count_nonzero(w)


def test_row_scope_rejects_masks_the_shared_select_cannot_hold():
    macro = DCiMMacro(rows=2, cols=2, select_scope="row")
    w = np.zeros((4, 2), np.int64)
    w[[0, 2], 0] = 5          # column 0 keeps pairs {0, 1}
    w[[0, 1], 1] = 7          # column 1 keeps pair 0 twice: 3 slots needed > N = 2
    with pytest.raises(ConfigError, match="shared per-\\(row, sub-macro\\) pair select"):
        place_tile(macro, "2:4", w)
    cell = macro.model_copy(update={"select_scope": "cell"})
    y, _ = gemm_reference(cell, "2:4", np.array([[1, 2, 3, 4]]), w)
    np.testing.assert_array_equal(y, np.array([[1, 2, 3, 4]]) @ w)


# --------------------------------------------------------------------------------------------
# mapping invariants
# --------------------------------------------------------------------------------------------

def test_k_tile_for_the_rtl_defaults():
    """research/flexcim.md 3.5 table: K_tile = R * P * M / N on 4 sub-macros of 32 rows."""
    want = {"1:2": 256, "2:4": 256, "4:8": 256, "2:8": 512, "1:4": 512, "dense": 128}
    macro = DCiMMacro()
    for pat, k in want.items():
        assert map_pattern(macro, pat).k_tile == k


def test_every_kept_weight_is_computed_exactly_once_and_utilization_bounded():
    rng = np.random.default_rng(3)
    for _ in range(60):
        base = _random_macro(rng, select_scope=str(rng.choice(["cell", "row"])))
        pat = _random_pattern(rng, base)
        macro = base.model_copy(update={"patterns": (pat.name,)})
        mp = map_pattern(macro, pat)
        k, n_out, t = int(rng.integers(1, 3 * mp.k_tile + 2)), int(rng.integers(1, 9)), 2
        w = (_row_scope_weights(rng, macro, pat, k, n_out) if macro.select_scope == "row"
             else _nm_weights(rng, k, n_out, pat.n, pat.m))
        hits = np.zeros_like(w)
        for j0 in range(0, n_out, macro.cols):
            for k0 in range(0, k, mp.k_tile):
                wt = w[k0:k0 + mp.k_tile, j0:j0 + macro.cols]
                pl = place_tile(macro, pat, wt)
                r, p, c = np.nonzero(pl.source >= 0)
                np.add.at(hits, (k0 + pl.source[r, p, c], j0 + c), 1)
                np.testing.assert_array_equal(pl.weight[r, p, c], wt[pl.source[r, p, c], c])
                assert np.all(pl.weight[pl.source < 0] == 0)
        np.testing.assert_array_equal(hits, (w != 0).astype(hits.dtype))
        g = map_gemm(macro, t, k, n_out, pat)
        assert g.kept_macs == t * np.count_nonzero(w)
        assert 0 < g.utilization <= 1
        assert mp.cell_utilization <= 1
        assert g.passes == math.ceil(k / mp.k_tile) * math.ceil(n_out / macro.cols)
        assert g.psum_adds == (g.k_passes - 1) * n_out * t


def test_metadata_bits_are_what_the_pattern_needs():
    macro = DCiMMacro()
    for pat_name in DEFAULT_PATTERNS:
        pat = parse_pattern(pat_name)
        g = map_gemm(macro, 1, 1024, 64, pat_name)
        kept = 1024 // pat.m * pat.n * 64
        pairs = math.ceil(pat.m / 2)
        sel = math.ceil(math.log2(pairs)) if pairs > 1 else 0
        assert g.metadata_bits == kept * (1 + sel)          # cell scope: per kept weight
        assert g.compressed_weight_bits == kept * 8 + g.metadata_bits
        assert g.write_port_bits == sum(g.tile_cols) * 32 * 4 * 9
    row = macro.model_copy(update={"select_scope": "row"})
    g = map_gemm(row, 1, 1024, 64, "2:8")        # 2 passes of K, 2 of columns
    # every (row, sub-macro) is used in each of the 2 K passes, once per column pass; 2 bits each
    assert g.metadata_bits == 1024 // 8 * 2 * 64 + 4 * 32 * 2 * 2 * 2


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["3:2", "0:4", "2:17", "two:four", "2-4", (5, 3), 4, None])
def test_bad_patterns_one_line_error(spec):
    with pytest.raises(ConfigError) as exc:
        parse_pattern(spec)
    assert "\n" not in str(exc.value)


def test_patterns_that_cannot_map_are_rejected():
    macro = DCiMMacro()
    with pytest.raises(ConfigError, match="stage-1 mux") as exc:
        map_pattern(macro, "2:16")             # 8 pairs > the RTL's 4 inputs per stage-1 mux
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="lists"):
        map_pattern(macro, "3:8")              # mappable, but not in the config's list
    with pytest.raises(ConfigError) as exc:
        load_validated({"patterns": ["2:4", "1:16"]}, DCiMMacro)
    assert "patterns" in str(exc.value) and "\n" not in str(exc.value)
    wide = load_validated({"pairs_per_mux": 8, "patterns": ["1:16", "8:16", "16:16"]}, DCiMMacro)
    assert map_pattern(wide, "1:16").k_tile == 32 * 4 * 16
    assert map_pattern(wide, "8:16").rows_per_block == 2
    small = DCiMMacro(sub_macros=2, rows=2, patterns=("dense",), pairs_per_mux=8)
    with pytest.raises(ConfigError, match="N <="):
        map_pattern(small, "5:16")
    w = np.ones((4, 1), np.int64)
    with pytest.raises(ConfigError, match="at most 2 non-zeros"):
        place_tile(macro, "2:4", w)
    with pytest.raises(ConfigError):
        map_gemm(macro, 0, 8, 8, "2:4")
    with pytest.raises(ConfigError):
        sequence_cycles(macro, [(1, 33)])


# --------------------------------------------------------------------------------------------
# technology section
# --------------------------------------------------------------------------------------------

def test_dcim_tech_section_at_both_nodes():
    t7 = load_tech("7nm").section("dcim", DCiMTech)
    t28 = load_tech("28nm").section("dcim", DCiMTech)
    assert t7.cell_mac_pj < t28.cell_mac_pj and t7.cell_area_um2 < t28.cell_area_um2
    macro = DCiMMacro()
    for tech in (t7, t28):
        area = macro_area_um2(macro, tech)
        assert area["cells"] == pytest.approx(4096 * tech.cell_area_um2)
        # distribution: 32 rows x 8 four-to-one muxes of an 18-bit pair (research 3.7)
        assert area["distribution"] == pytest.approx(256 * 16 * tech.mux_area_um2_per_bit)
        e = pass_energy_pj(macro, tech, map_pattern(macro, "2:8"), 4, 32)
        assert e["cells"] == pytest.approx(4096 * 4 * tech.cell_mac_pj)   # 2:8 fills every cell
        assert all(v > 0 for v in e.values())


def test_bad_dcim_section_is_a_one_line_error(tmp_path):
    base = yaml.safe_load(open(load_tech("7nm").origin))
    base["dcim"]["cell_mac_pj"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError) as exc:
        load_tech(path).section("dcim", DCiMTech)
    msg = str(exc.value)
    assert "dcim.cell_mac_pj" in msg and "\n" not in msg
