"""N:M masks, Wanda N:M pruning, the FLOW integer program, the N:M schedule and `strata flow`.

References here are independent of the code under test: masks against a per-group Python
sort, the MILP against enumeration of every assignment, statistics against O(n^2) loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import sim
from sim.cli import main
from sim.config import ConfigError, load_model
from sim.config.nm_schedule import load_nm_schedule, parse_pattern, schedule_to_yaml
from sim.io.flow_inputs import block_stats_from_weights, flow
from sim.numerics.flow import (BlockStats, block_stats_from_arrays, mean_pair_distance,
                               solve_flow)
from sim.numerics.nm import check_nm, nm_mask, prune_nm, sparsity_of, wanda_scores

TINY = {"name": "tiny-flow", "description": "tiny", "source": "test", "hidden_size": 32,
        "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "head_dim": 8,
        "intermediate_size": 48, "ffn": "gated", "vocab_size": 100, "max_position": 64,
        "norm": "rmsnorm", "qkv_bias": False, "precision": {"wbits": 8, "abits": 8}}


# --------------------------------------------------------------------------------------------
# N:M masks
# --------------------------------------------------------------------------------------------

def _brute_mask(s: np.ndarray, n: int, m: int) -> np.ndarray:
    keep = np.zeros(s.shape, dtype=bool)
    for col in range(s.shape[1]):
        for g0 in range(0, s.shape[0], m):
            idx = sorted(range(g0, g0 + m), key=lambda k: (-s[k, col], k))[:n]
            keep[idx, col] = True
    return keep


def test_nm_mask_matches_brute_force_with_ties():
    rng = np.random.default_rng(7)
    for case in range(60):
        m = int(rng.integers(1, 17))
        n = int(rng.integers(1, m + 1))
        k = m * int(rng.integers(1, 4))
        cols = int(rng.integers(1, 6))
        # small integer scores: many ties
        s = rng.integers(0, 3, size=(k, cols)).astype(float) if case % 2 else \
            rng.standard_normal((k, cols))
        got = nm_mask(s, (n, m))
        want = _brute_mask(s, n, m) if n < m else np.ones_like(got)
        assert np.array_equal(got, want), (n, m, case)
        assert check_nm(got, (n, m))
        g = s.reshape(k // m, m, cols)
        gm = got.reshape(k // m, m, cols)
        kept_min = np.where(gm, g, np.inf).min(axis=1)
        dropped_max = np.where(gm, -np.inf, g).max(axis=1)
        assert (kept_min >= dropped_max).all()
        assert sparsity_of(got) == pytest.approx(1 - n / m)


def test_wanda_prune():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 5)).astype(np.float32)
    a = rng.random(16) * 3
    s = wanda_scores(w, a)
    assert np.allclose(s, np.abs(w) * a[:, None])
    pruned, mask = prune_nm(w, a, "2:8")
    assert np.array_equal(mask, _brute_mask(s, 2, 8))
    assert np.array_equal(pruned[mask], w[mask]) and (pruned[~mask] == 0).all()
    assert pruned.dtype == w.dtype
    # activation norms change what is kept: channel 0 dominates its groups
    a2 = np.ones(16)
    a2[0] = 1e6
    _, mask2 = prune_nm(w, a2, "1:4")
    assert mask2[0].all()


@pytest.mark.parametrize("bad", ["5:4", "0:4", "1:17", "x", "2:4:8", (3, 2), 7])
def test_bad_patterns(bad):
    with pytest.raises(ConfigError) as e:
        parse_pattern(bad, key="pattern")
    assert "\n" not in str(e.value) and "pattern" in str(e.value)


def test_mask_shape_checks():
    with pytest.raises(ConfigError, match="multiple of M = 4"):
        nm_mask(np.ones((6, 2)), "2:4")
    with pytest.raises(ConfigError, match="length K"):
        wanda_scores(np.ones((8, 2)), np.ones(3))


# --------------------------------------------------------------------------------------------
# The integer program against enumeration
# --------------------------------------------------------------------------------------------

def _minmax(x):
    x = np.asarray(x, float)
    return np.full(x.shape, 0.5) if x.max() == x.min() else (x - x.min()) / (x.max() - x.min())


def _brute_flow(o, d, pats, target, edges_dense, alpha=1.0, beta=4.0):
    scale = max([8] + [m for n, m in pats if n != m])
    on, dn = _minmax(o), _minmax(d)
    L = len(o)
    best = None
    for combo in itertools.product(range(len(pats)), repeat=L):
        if edges_dense and (pats[combo[0]][0] != pats[combo[0]][1]
                            or pats[combo[-1]][0] != pats[combo[-1]][1]):
            continue
        sp = sum(1 - pats[j][0] / pats[j][1] for j in combo) / L
        cost = 0.0
        for i, j in enumerate(combo):
            n, m = pats[j]
            if n == m:
                n = m = scale
            cost += alpha * abs(n - scale * on[i]) + beta * abs(m - scale * (1 - dn[i]))
        key = (round(abs(sp - target), 9), round(cost, 9))
        if best is None or key < best[0]:
            best = (key, sp)
    return best


def test_milp_matches_enumeration():
    rng = np.random.default_rng(3)
    pool = [(1, 4), (2, 4), (2, 8), (4, 8), (1, 2), (1, 1), (3, 8), (1, 16)]
    for case in range(40):
        L = int(rng.integers(1, 6))
        k = int(rng.integers(2, 5))
        pats = [pool[j] for j in rng.choice(len(pool), size=k, replace=False)]
        edges = bool(case % 3 == 0)
        if edges and (1, 1) not in pats:
            pats.append((1, 1))
        o, d = rng.random(L), rng.random(L)
        target = float(rng.choice([0.0, 0.5, 0.6, 0.7, 0.75, round(float(rng.random()) * 0.99, 3)]))
        sol = solve_flow(BlockStats(o, d, "t"), target, candidates=[f"{n}:{m}" for n, m in pats],
                         edges_dense=edges)
        (gap, cost), sp = _brute_flow(o, d, pats, target, edges)
        assert sol.gap == pytest.approx(gap, abs=1e-9), case
        assert sol.objective == pytest.approx(cost, abs=1e-6), case
        assert sol.achieved == pytest.approx(np.mean([p.sparsity for p in sol.patterns]))
        if edges:
            assert sol.patterns[0].dense and sol.patterns[-1].dense


def test_nearest_feasible_and_exact():
    st = BlockStats(np.linspace(0, 1, 4), np.linspace(1, 0, 4), "t")
    sol = solve_flow(st, 0.74, candidates=["2:4", "dense"])
    assert [str(p) for p in sol.patterns] == ["2:4"] * 4
    assert sol.achieved == 0.5 and sol.gap == pytest.approx(0.24) and not sol.exact
    sol = solve_flow(st, 0.25, candidates=["2:4", "dense"], edges_dense=False)
    assert sol.exact and sorted(str(p) for p in sol.patterns) == ["2:4", "2:4", "dense", "dense"]
    sol = solve_flow(st, 0.5, candidates=["1:4", "dense"])   # 3 x 0.75 / 4 is nearest
    assert sol.achieved == 0.5625 and sol.gap == pytest.approx(0.0625)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        solve_flow(st, 1.0)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        solve_flow(st, -0.1)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------

def test_mean_pair_distance_and_block_stats():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 1000, size=37)
    pairs = [abs(int(a) - int(b)) for a, b in itertools.combinations(x, 2)]
    assert mean_pair_distance(x) == pytest.approx(np.mean(pairs))
    mats = [rng.random((3, 8)) ** 4, rng.random((2, 8)) ** 4]
    st = block_stats_from_arrays([mats], hyper_m=2.0, max_outliers=5)
    flat = np.concatenate([m.ravel() for m in mats])
    hit = np.flatnonzero(flat > 2.0 * flat.mean())
    assert st.outlier_ratio[0] == pytest.approx(hit.size / flat.size)
    pos = hit[:5]
    want = 1 / np.mean([abs(a - b) for a, b in itertools.combinations(pos, 2)])
    assert st.locality[0] == pytest.approx(want)


def _write_tiny_weights(tmp_path, rng, layers=4):
    model = load_model(dict(TINY))
    shapes = {"self_attn.q_proj": (32, 32), "self_attn.k_proj": (16, 32),
              "self_attn.v_proj": (16, 32), "self_attn.o_proj": (32, 32),
              "mlp.gate_proj": (48, 32), "mlp.up_proj": (48, 32), "mlp.down_proj": (32, 48)}
    w, a = {}, {}
    for i in range(layers):
        for name, (out, inp) in shapes.items():
            w[f"model.layers.{i}.{name}.weight"] = rng.standard_normal((out, inp)) * (1 + i)
            a[f"model.layers.{i}.{name}"] = rng.random(inp) + 0.1
    np.savez(tmp_path / "w.npz", **w)
    np.savez(tmp_path / "norms.npz", **a)
    return model, w, a


def test_flow_on_real_weights(tmp_path):
    rng = np.random.default_rng(11)
    model, w, a = _write_tiny_weights(tmp_path, rng)
    st = block_stats_from_weights(tmp_path / "w.npz", model, tmp_path / "norms.npz")
    # block 2 by hand: names sorted, scores |W| * norm over input channels
    names = sorted(k for k in w if ".layers.2." in k)
    flat = np.concatenate([(np.abs(w[k]) * a[k[:-len(".weight")]][None, :]).ravel()
                           for k in names])
    assert st.outlier_ratio[2] == pytest.approx(np.mean(flat > 0.5 * flat.mean()), rel=1e-5)
    s = flow(model, 0.5, weights=tmp_path / "w.npz", act_norms=tmp_path / "norms.npz",
             out=tmp_path / "s.yaml")
    assert s.num_layers == 4 and s.seed is None and "w.npz" in s.source
    assert load_nm_schedule(tmp_path / "s.yaml", model).patterns() == s.patterns()
    # a missing activation-norm vector is a one-line error naming the file
    np.savez(tmp_path / "few.npz", **{k: v for k, v in a.items() if ".layers.3." not in k})
    with pytest.raises(ConfigError) as e:
        flow(model, 0.5, weights=tmp_path / "w.npz", act_norms=tmp_path / "few.npz")
    assert "few.npz" in str(e.value) and "layer 3" in str(e.value)
    with pytest.raises(ConfigError, match="activation-norm"):
        flow(model, 0.5, weights=tmp_path / "w.npz")


def test_flow_synthetic_deterministic_and_edges(tmp_path):
    a = flow("llama-2-7b", 0.6, out=tmp_path / "a.yaml")
    b = flow("llama-2-7b", 0.6, out=tmp_path / "b.yaml")
    assert (tmp_path / "a.yaml").read_bytes() == (tmp_path / "b.yaml").read_bytes()
    assert a.patterns()[0] == "dense" and a.patterns()[-1] == "dense"
    assert a.achieved_sparsity == pytest.approx(19.25 / 32) and a.gap == pytest.approx(0.05 / 32)
    c = flow("llama-2-7b", 0.6, edges_dense=False, extra=["3:8"])
    assert "3:8" in c.candidates and c.gap <= a.gap
    # a model without a shipped profile runs on the seeded synthetic one
    m = load_model(dict(TINY))
    s0, s1 = flow(m, 0.5, seed=1), flow(m, 0.5, seed=1)
    assert s0 == s1 and s0.seed == 1 and "synthetic" in s0.source


# --------------------------------------------------------------------------------------------
# Schedule files and the CLI: one-line errors
# --------------------------------------------------------------------------------------------

GOOD = """model: "tiny"
num_layers: 2
target_sparsity: 0.5
achieved_sparsity: 0.5
gap: 0.0
candidates: ["2:4", "dense"]
source: "test"
layers:
  - {layer: 0, pattern: "2:4"}
  - {layer: 1, pattern: "2:4"}
"""


@pytest.mark.parametrize("edit, key", [
    (("\"2:4\"}\n  - {layer: 1", "\"3:x\"}\n  - {layer: 1"), "layers.0.pattern"),
    (("\"2:4\"}\n  - {layer: 1", "\"8:4\"}\n  - {layer: 1"), "layers.0.pattern"),
    (("\"2:4\"}\n  - {layer: 1", "\"1:4\"}\n  - {layer: 1"), "layers.0.pattern"),
    (("\"2:4\"}\n  - {layer: 1", "2:4}\n  - {layer: 1"), "layers.0.pattern"),
    (("num_layers: 2", "num_layers: 3"), "layers"),
    (("target_sparsity: 0.5", "target_sparsity: 1.0"), "target_sparsity"),
    (("target_sparsity: 0.5", "target_sparsity: -0.1"), "target_sparsity"),
    (("achieved_sparsity: 0.5", "achieved_sparsity: 0.25"), "achieved_sparsity"),
    (("gap: 0.0", "gap: 0.0\nspeed: 3"), "speed"),
    (('candidates: ["2:4", "dense"]', 'candidates: ["2:4", "17:32"]'), "candidates.1"),
])
def test_bad_schedule_files(tmp_path, edit, key):
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD.replace(*edit))
    with pytest.raises(ConfigError) as e:
        load_nm_schedule(p)
    msg = str(e.value)
    assert "\n" not in msg and "bad.yaml" in msg and key in msg, msg


def test_schedule_round_trip_and_layer_count(tmp_path):
    p = tmp_path / "good.yaml"
    p.write_text(GOOD)
    s = load_nm_schedule(p)
    assert s.nm(1) == (2, 4) and s.counts() == {"2:4": 2}
    q = tmp_path / "again.yaml"
    q.write_text(schedule_to_yaml(s))
    assert load_nm_schedule(q).model_dump() == s.model_dump()
    with pytest.raises(ConfigError) as e:
        load_nm_schedule(p, load_model(dict(TINY)))
    assert "good.yaml" in str(e.value) and "num_layers" in str(e.value)


def test_cli_flow(tmp_path, capsys):
    out = tmp_path / "sched.yaml"
    assert main(["flow", "llama-2-7b", "--sparsity", "0.5", "-o", str(out)]) == 0
    assert "sparsity 0.5000" in capsys.readouterr().out
    assert load_nm_schedule(out, "llama-2-7b").model_dump() == \
        sim.flow("llama-2-7b", sparsity=0.5).model_dump()
    for args, words in [(["--sparsity", "1.5"], "[0, 1)"), (["--patterns", "9:8"], "N <= M"),
                        (["--patterns", "2:4,x"], "candidates.1"),
                        (["--act-norms", str(out)], "weights")]:
        assert main(["flow", "llama-2-7b", "-o", str(tmp_path / "x.yaml")] + args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert main(["flow", "no-such-model", "-o", str(tmp_path / "x.yaml")]) == 2
    assert main(["flow", "llama-2-7b", "-o", str(tmp_path)]) == 2
    capsys.readouterr()
