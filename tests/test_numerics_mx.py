"""Tests of the MicroScopiQ weight format (sim.numerics.mx): detection, MX-INT inliers, MX-FP
outliers split into pruned slots, permutation lists, EBW, packing and the GEMM it implies."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sim.numerics import (
    MXWeights,
    ebw_formula,
    merged_outlier_product,
    model_ebw,
    outlier_value,
    perm_bits_for,
    quantize,
    split_mantissa,
)

BBS = (2, 4)
MODES = ("shared", "per_outlier")


def gaussian(K=64, N=512, seed=0, sigma=0.02):
    return np.random.default_rng(seed).standard_normal((K, N)) * sigma


def planted(K=64, N=512, frac=0.004, seed=1, sigma=0.02, lo=25.0, hi=35.0):
    """Gaussian weights with outliers of lo..hi sigma planted at a known fraction."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((K, N)) * sigma
    plant = rng.random((K, N)) < frac
    n = int(plant.sum())
    W[plant] = rng.choice([-1.0, 1.0], size=n) * rng.uniform(lo, hi, size=n) * sigma
    return W, plant


def heavy(K=32, N=256, seed=2):
    """Student-t weights: many outliers, several per micro-block, mixed magnitudes."""
    return np.random.default_rng(seed).standard_t(2.0, size=(K, N)) * 0.01


def reference_outliers(W, k_sigma=3.0, macro=128, micro=8):
    """Independent k-sigma detection with the micro/2 cap, one block at a time."""
    K, N = W.shape
    out = np.zeros(W.shape, dtype=bool)
    cand_all = np.zeros(W.shape, dtype=bool)
    for k in range(K):
        for b in range(N // macro):
            x = W[k, b * macro:(b + 1) * macro]
            cand = (np.abs(x - x.mean()) > k_sigma * x.std()) & (x != 0)
            cand_all[k, b * macro:(b + 1) * macro] = cand
            for u in range(macro // micro):
                idx = [u * micro + i for i in range(micro) if cand[u * micro + i]]
                idx = sorted(idx, key=lambda i: (-abs(x[i]), i))[: micro // 2]
                out[k, [b * macro + i for i in idx]] = True
    return out, cand_all


def outlier_floor(mx):
    """Per outlier: the smallest magnitude its (shared or level-1) exponent can represent."""
    t = mx.outliers()
    base = mx.inlier_exp[t["k"], t["upper_col"] // mx.macro].astype(np.int64) \
        + mx.outlier_osf[t["k"], t["ub"]].astype(np.int64)
    return t, np.ldexp(1.0, base)


# --------------------------------------------------------------------------------------------
# Packing


@pytest.mark.parametrize("bb", BBS)
@pytest.mark.parametrize("mode", MODES)
def test_pack_unpack_round_trip_is_exact(bb, mode):
    W = heavy(K=24, N=384, seed=bb)
    hinv = np.random.default_rng(5).uniform(0.5, 2.0, size=W.shape)
    mx = quantize(W, bb=bb, hessian_inv_diag=hinv, micro_exp=mode)
    mx.validate()
    assert mx.n_outliers > 50
    buf, meta = mx.pack()
    assert isinstance(buf, bytes) and len(buf) == W.size * bb // 8
    back = MXWeights.unpack(buf, meta)
    assert back.equals(mx)
    assert np.array_equal(back.dequantize(), mx.dequantize())
    assert meta["perm"].shape == (int(mx.has_outlier.sum()), 4)


def test_unpack_rejects_corrupt_input():
    mx = quantize(heavy(K=4, N=128), bb=4)
    buf, meta = mx.pack()
    with pytest.raises(ValueError, match="slot buffer"):
        MXWeights.unpack(buf[:-1], meta)
    with pytest.raises(ValueError, match="format"):
        MXWeights.unpack(buf, dict(meta, version=99))
    bad = dict(meta, osf=meta["osf"][:-1])
    with pytest.raises(ValueError, match="perm/osf"):
        MXWeights.unpack(buf, bad)


def test_slot_byte_layout_is_lsb_first_twos_complement():
    mx = quantize(heavy(K=2, N=128), bb=2)
    buf, _ = mx.pack()
    raw = np.frombuffer(buf, dtype=np.uint8)
    first = [int(v) for v in mx.q.ravel()[:4]]
    expect = sum(((v & 3) << (2 * i)) for i, v in enumerate(first))
    assert raw[0] == expect


# --------------------------------------------------------------------------------------------
# Inliers and outliers: error bounds


@pytest.mark.parametrize("bb", BBS)
def test_inliers_within_half_lsb_or_clipped(bb):
    W, _ = planted(seed=10 + bb)
    mx = quantize(W, bb=bb)
    deq = mx.dequantize()
    inl = ~(mx.outlier_mask() | mx.pruned_mask())
    step = mx.inlier_scale()
    qmax, qmin = 2 ** (bb - 1) - 1, -(2 ** (bb - 1))
    within = np.abs(deq - W) <= 0.5 * step
    clipped = ((mx.q == qmax) & (W > (qmax + 0.5) * step)) | \
              ((mx.q == qmin) & (W < (qmin - 0.5) * step))
    assert (within | clipped)[inl].all()
    assert within[inl].mean() > 0.99
    # the inlier scale is the OCP-MX power of two of the macro-block's largest non-candidate
    _, cand = reference_outliers(W)
    blocks = np.where(cand, 0.0, np.abs(W)).reshape(W.shape[0], -1, 128).max(-1)
    assert np.array_equal(mx.inlier_exp, np.floor(np.log2(blocks)).astype(int) - (bb - 2))


@pytest.mark.parametrize("bb", BBS)
@pytest.mark.parametrize("mode", MODES)
def test_outliers_within_mantissa_relative_error(bb, mode):
    W = heavy(K=64, N=256, seed=20 + bb)
    mx = quantize(W, bb=bb, micro_exp=mode)
    t, floor = outlier_floor(mx)
    o = W[t["k"], t["upper_col"]]
    m = 2 * (bb - 1)
    rel = np.abs(t["value"] - o) / np.abs(o)
    assert np.array_equal(np.sign(t["value"]), np.sign(o))
    representable = np.abs(o) >= floor
    assert (rel[representable] <= 2.0 ** -(m + 1)).all()
    # below the exponent range: the smallest normal of the block, sign kept
    assert np.array_equal(t["value"][~representable], np.sign(o[~representable]) *
                          floor[~representable])
    # the largest outlier of every micro-block is always within the bound
    top = np.zeros(len(o), dtype=bool)
    key = t["k"] * 10**6 + t["ub"]
    for kk in np.unique(key):
        idx = np.flatnonzero(key == kk)
        top[idx[np.argmax(np.abs(o[idx]))]] = True
    assert (rel[top] <= 2.0 ** -(m + 1)).all()
    if mode == "per_outlier" and bb == 4:      # 8 binades under the level-1 scale: no clamping
        assert representable.all()
    assert (~representable).sum() < 0.2 * len(o)


def test_shared_exponent_is_one_per_micro_block():
    mx = quantize(heavy(seed=3), bb=4, micro_exp="shared")
    t = mx.outliers()
    exp_ub = mx.inlier_exp[t["k"], t["upper_col"] // 128] + mx.outlier_osf[t["k"], t["ub"]]
    assert np.array_equal(t["exp"], exp_ub)
    px = quantize(heavy(seed=3), bb=4, micro_exp="per_outlier")
    tp = px.outliers()
    ux = tp["exp"] - (px.inlier_exp[tp["k"], tp["upper_col"] // 128]
                      + px.outlier_osf[tp["k"], tp["ub"]])
    assert ux.min() >= 0 and ux.max() <= 7 and len(np.unique(ux)) > 1


# --------------------------------------------------------------------------------------------
# Detection, cap, pruning, permutation list


@pytest.mark.parametrize("k_sigma", [3.0, 2.0])
def test_detection_matches_independent_k_sigma(k_sigma):
    W = heavy(K=24, N=256, seed=7)
    mx = quantize(W, bb=4, k_sigma=k_sigma)
    ref, cand = reference_outliers(W, k_sigma=k_sigma)
    assert np.array_equal(mx.outlier_mask(), ref)
    assert mx.n_candidates == int(cand.sum())
    assert mx.n_demoted == int(cand.sum() - ref.sum())


def test_cap_keeps_largest_and_clips_the_rest():
    W = gaussian(K=1, N=128, seed=3) * 0.5
    W[0, 8:14] = [10.0, -11.0, 12.0, -13.0, 14.0, 15.0]        # six candidates in uB 1
    mx = quantize(W, bb=4)
    assert mx.n_candidates == 6 and mx.n_demoted == 2
    assert np.flatnonzero(mx.outlier_mask()[0]).tolist() == [10, 11, 12, 13]
    assert mx.perm[0, 1, :, 0].tolist() == [2, 3, 4, 5]          # local columns in uB 1
    # a full uB (micro/2 outliers) prunes all its micro/2 inliers, demoted candidates included:
    # they hold Lower halves and dequantize to 0 rather than to a clipped inlier
    assert mx.perm[0, 1, :, 1].tolist() == [0, 1, 6, 7]
    assert (mx.dequantize()[0, [8, 9, 14, 15]] == 0).all()
    assert np.allclose(mx.dequantize()[0, 10:14], W[0, 10:14], rtol=2.0 ** -7)


def test_never_more_than_half_a_micro_block():
    W = heavy(K=32, N=256, seed=4)
    mx = quantize(W, bb=2, k_sigma=0.5)                          # flood of candidates
    per_ub = (mx.perm[..., 0] >= 0).sum(-1)
    assert per_ub.max() == 4 and mx.n_demoted > 0
    assert mx.stats().outliers_per_ub_hist.shape == (5,)
    mx.validate()


def _check_least_salient(mx, W, saliency):
    outl, pruned = mx.outlier_mask(), mx.pruned_mask()
    K, N = W.shape
    checked = 0
    for k, u in zip(*np.nonzero(mx.has_outlier)):
        cols = slice(u * 8, u * 8 + 8)
        o, p, s = outl[k, cols], pruned[k, cols], saliency[k, cols]
        assert p.sum() == o.sum() and not (o & p).any()
        kept = ~o & ~p
        assert s[p].max() <= s[kept].min()
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("bb", BBS)
def test_pruned_slots_are_least_salient_by_magnitude(bb):
    W = heavy(K=32, N=256, seed=30)
    mx = quantize(W, bb=bb)
    _check_least_salient(mx, W, W * W)


def test_pruned_slots_are_least_salient_by_hessian():
    W = heavy(K=32, N=256, seed=31)
    hinv = np.random.default_rng(8).uniform(0.05, 20.0, size=W.shape)
    mx = quantize(W, bb=4, hessian_inv_diag=hinv)
    _check_least_salient(mx, W, W * W / hinv)
    plain = quantize(W, bb=4)
    assert not np.array_equal(mx.pruned_mask(), plain.pruned_mask())
    assert np.array_equal(mx.outlier_mask(), plain.outlier_mask())
    # a per-input-feature diagonal (the GPTQ case) is constant along a micro-block
    per_k = quantize(W, bb=4, hessian_inv_diag=np.linspace(0.1, 3.0, W.shape[0]))
    assert per_k.equals(plain)


@pytest.mark.parametrize("bb", BBS)
def test_perm_and_slots_encode_upper_and_lower(bb):
    W = heavy(K=32, N=256, seed=40 + bb)
    mx = quantize(W, bb=bb)
    mx.validate()
    m = 2 * (bb - 1)
    t = mx.outliers()
    o = W[t["k"], t["upper_col"]]
    # independent encoding at the stored exponent
    M = np.clip(np.rint((np.abs(o) / np.ldexp(1.0, t["exp"]) - 1) * 2**m), 0, 2**m - 1)
    U, L = split_mantissa(M.astype(np.int64), bb)
    assert np.array_equal(mx.q[t["k"], t["upper_col"]], t["sign"] * U)
    assert np.array_equal(mx.q[t["k"], t["lower_col"]], t["sign"] * L)
    assert np.array_equal(t["sign"], np.where(o < 0, -1, 1))
    # entries sorted by upper column; pruned slots assigned in ascending order
    p = mx.perm[mx.has_outlier]
    for row in p:
        v = row[row[:, 0] >= 0]
        assert (np.diff(v[:, 0]) > 0).all() and (np.diff(v[:, 1]) > 0).all()
        assert (row[len(v):] == -1).all()
    assert np.array_equal(mx.has_outlier, (mx.perm[..., 0, 0] >= 0))
    deq = mx.dequantize()
    assert (deq[mx.pruned_mask()] == 0).all()
    assert np.array_equal(deq[t["k"], t["upper_col"]], outlier_value(t["sign"], U, L, t["exp"],
                                                                     bb))


def test_fig8_example_split_and_merge():
    """The MicroScopiQ paper's Fig. 8 worked example: outlier 1.10b = 1.5 -> Upper 01, Lower 00;
    psum 56."""
    W = np.tile([0.03, -0.05, 0.04, 0.02, -0.06, 0.05, -0.04, 0.06], 16)[None, :].copy()
    W[0, 2] = 1.5
    W[0, 3] = 0.01                      # least salient inlier of uB 0 -> the pruned slot
    mx = quantize(W, bb=2)
    assert mx.perm[0, 0].tolist() == [[2, 3], [-1, -1], [-1, -1], [-1, -1]]
    assert mx.outlier_exp[0, 0, 0] == 0 and mx.outlier_sign[0, 0, 0] == 1
    assert mx.q[0, 2] == 0b01 and mx.q[0, 3] == 0b00
    assert mx.dequantize()[0, 2] == 1.5 and mx.dequantize()[0, 3] == 0.0
    assert [int(x) for x in split_mantissa(0b10, 2)] == [0b1, 0b0]
    i_act, i_acc = 32, 8
    u_res, l_res = int(mx.q[0, 2]) * i_act, int(mx.q[0, 3]) * i_act
    assert u_res == 32 and l_res == 0
    merged = merged_outlier_product(u_res, l_res, i_act, 1, bb=2)   # scaled by 2**m = 4
    assert merged / 4 + i_acc == 56
    assert (u_res >> 1) + (l_res >> 2) + i_acc + i_act == 56        # the paper's form
    # the negative outlier keeps its sign although Lower = 0
    Wn = W.copy()
    Wn[0, 2] = -1.5
    mn = quantize(Wn, bb=2)
    assert mn.q[0, 2] == -1 and mn.q[0, 3] == 0 and mn.outlier_sign[0, 0, 0] == -1
    assert mn.dequantize()[0, 2] == -1.5
    assert [int(x) for x in split_mantissa(0b101011, 4)] == [0b101, 0b011]


# --------------------------------------------------------------------------------------------
# Effective bit width and statistics


def test_ebw_formula_paper_numbers():
    assert perm_bits_for(8) == 24
    assert ebw_formula(1.0, 2) == (24 + 16 + 8) / 8 == 6.0
    assert ebw_formula(1.0, 4) == 8.0
    assert ebw_formula(0.0, 2) == 2.0 and ebw_formula(0.0, 4) == 4.0
    assert ebw_formula(0.09, 2) == pytest.approx(2.36)
    assert ebw_formula(0.0375, 4) == pytest.approx(4.15)
    with pytest.raises(ValueError):
        ebw_formula(1.5, 2)


@pytest.mark.parametrize("bb", BBS)
def test_layer_ebw_matches_formula_at_measured_fraction(bb):
    W, _ = planted(K=64, N=512, seed=50)
    mx = quantize(W, bb=bb)
    st = mx.stats()
    assert 0 < st.frac_ub_with_outliers < 0.2
    assert mx.effective_bits() == pytest.approx(ebw_formula(st.frac_ub_with_outliers, bb))
    assert mx.effective_bits() * W.size == pytest.approx(mx.footprint_bits())
    other = quantize(gaussian(K=16, N=128), bb=bb)
    assert model_ebw([mx, other]) == pytest.approx(
        (mx.effective_bits() + other.effective_bits()) / 2)
    assert model_ebw([mx, 5.0]) == pytest.approx((mx.effective_bits() + 5.0) / 2)


def test_statistics_against_loops():
    W = heavy(K=16, N=384, seed=60)
    mx = quantize(W, bb=4)
    for row_width in (32, 64, 256):
        st = mx.stats(row_width=row_width)
        segs = []
        for k in range(16):
            for c0 in range(0, 384, row_width):
                segs.append(mx.has_outlier[k, c0 // 8: (c0 + row_width) // 8].any())
        assert st.frac_row_segments_with_outliers == pytest.approx(np.mean(segs))
    st = mx.stats()
    per_ub = (mx.perm[..., 0] >= 0).sum(-1).ravel()
    assert st.outliers_per_ub_hist.tolist() == [int((per_ub == i).sum()) for i in range(5)]
    assert st.frac_outlier_weights == per_ub.sum() / W.size
    assert st.frac_ub_with_outliers == (per_ub > 0).mean()
    assert st.as_dict()["n_outliers"] == per_ub.sum()
    with pytest.raises(ValueError, match="row_width"):
        mx.stats(row_width=12)


def test_planted_outlier_fraction():
    W, plant = planted(K=256, N=1024, frac=0.004, seed=70)
    mx = quantize(W, bb=4)
    found = mx.outlier_mask()
    assert found[plant].all()                               # every planted outlier is found
    st = mx.stats()
    # planted ones, plus the natural 3-sigma tail (0.27 %) of macro-blocks without a plant
    # (a plant inflates its block's sigma enough to hide the natural tail)
    clean_blocks = ~plant.reshape(256, 8, 128).any(-1)
    expect = plant.mean() + 0.0027 * clean_blocks.mean()
    assert st.frac_outlier_weights == pytest.approx(expect, abs=3e-4)
    expect_ub = 1 - (1 - expect) ** 8
    assert st.frac_ub_with_outliers == pytest.approx(expect_ub, rel=0.1)
    # a clean Gaussian under the 3-sigma rule: about 0.27 % of weights
    g = quantize(gaussian(K=256, N=1024, seed=71), bb=4).stats()
    assert 0.0020 < g.frac_outlier_weights < 0.0035


# --------------------------------------------------------------------------------------------
# GEMM against numpy


def _elementwise_error_bound(mx, W):
    bb = mx.bb
    m = 2 * (bb - 1)
    step = mx.inlier_scale()
    qmax, qmin = 2 ** (bb - 1) - 1, -(2 ** (bb - 1))
    E = np.maximum(0.5 * step, np.maximum(W - qmax * step, qmin * step - W))   # inliers
    E[mx.pruned_mask()] = np.abs(W[mx.pruned_mask()])
    t, floor = outlier_floor(mx)
    o = np.abs(W[t["k"], t["upper_col"]])
    E[t["k"], t["upper_col"]] = np.maximum(o * 2.0 ** -(m + 1), floor - o)
    return E


@pytest.mark.parametrize("bb", BBS)
@pytest.mark.parametrize("mode", MODES)
def test_gemm_error_is_bounded(bb, mode):
    W, _ = planted(K=128, N=256, seed=80 + bb)
    A = np.random.default_rng(81).standard_normal((16, 128))
    mx = quantize(W, bb=bb, micro_exp=mode)
    E = _elementwise_error_bound(mx, W)
    assert (np.abs(mx.dequantize() - W) <= E).all()
    err = np.abs(A @ mx.dequantize() - A @ W)
    bound = np.abs(A) @ E
    assert (err <= bound * (1 + 1e-9) + 1e-12).all()
    rel = np.linalg.norm(A @ mx.dequantize() - A @ W) / np.linalg.norm(A @ W)
    assert rel < (0.15 if bb == 4 else 0.6)


@pytest.mark.parametrize("bb", BBS)
def test_integer_datapath_equals_dequantized_gemm(bb):
    """Inlier slots x 2**inlier_exp plus ReCoN merges x 2**(exp - m) == A @ dequantize()."""
    W = heavy(K=64, N=256, seed=90 + bb)
    mx = quantize(W, bb=bb)
    A = np.random.default_rng(91).integers(-128, 128, size=(8, 64))
    m = 2 * (bb - 1)
    t = mx.outliers()
    q_in = mx.q.astype(np.int64).copy()
    q_in[t["k"], t["upper_col"]] = 0
    q_in[t["k"], t["lower_col"]] = 0
    O = (A @ (q_in * mx.inlier_scale())).astype(np.float64)
    u_res = mx.q[t["k"], t["upper_col"]][None, :] * A[:, t["k"]]
    l_res = mx.q[t["k"], t["lower_col"]][None, :] * A[:, t["k"]]
    merged = merged_outlier_product(u_res, l_res, A[:, t["k"]], t["sign"][None, :], bb)
    contrib = np.ldexp(merged.astype(np.float64), (t["exp"] - m)[None, :])
    for r in range(A.shape[0]):
        np.add.at(O[r], t["upper_col"], contrib[r])
    assert np.array_equal(O, A.astype(np.float64) @ mx.dequantize())


# --------------------------------------------------------------------------------------------
# Shapes, options, determinism, speed


def test_small_blocks_and_degenerate_inputs():
    W = heavy(K=8, N=128, seed=100)
    mx = quantize(W, bb=2, macro=64, micro=4)
    assert mx.perm.shape == (8, 32, 2, 2) and mx.inlier_exp.shape == (8, 2)
    assert (mx.perm[..., 0] >= 0).sum(-1).max() <= 2
    assert perm_bits_for(4) == 8
    assert mx.effective_bits() == pytest.approx(ebw_formula(mx.has_outlier.mean(), 2, 4, 8))
    back = MXWeights.unpack(*mx.pack())
    assert np.array_equal(back.dequantize(), mx.dequantize())
    zero = quantize(np.zeros((3, 128)), bb=4)
    assert zero.n_outliers == 0 and not zero.dequantize().any() and zero.effective_bits() == 4
    const = quantize(np.full((2, 256), 0.25), bb=2)
    assert const.n_outliers == 0
    assert np.array_equal(const.dequantize(), np.full((2, 256), 0.25))


def test_determinism():
    W = heavy(K=32, N=256, seed=110)
    a, b = quantize(W, bb=2), quantize(W.copy(), bb=2)
    assert a.equals(b)
    (ba, ma), (bb_, mb) = a.pack(), b.pack()
    assert ba == bb_
    for key in ma:
        assert np.array_equal(np.asarray(ma[key]), np.asarray(mb[key]))
    assert quantize(W.astype(np.float32), bb=2).equals(quantize(W.astype(np.float32), bb=2))


@pytest.mark.parametrize("kwargs, match", [
    (dict(W=np.zeros((4, 100))), "multiple of the macro-block size 128"),
    (dict(W=np.zeros((4, 192))), "multiple of the macro-block size 128"),
    (dict(W=np.zeros(128)), "2-D"),
    (dict(W=np.zeros((2, 2, 128))), "2-D"),
    (dict(W=np.zeros((0, 128))), "at least one row"),
    (dict(W=np.zeros((2, 128)), bb=3), "bb"),
    (dict(W=np.zeros((2, 128)), bb=8), "bb"),
    (dict(W=np.zeros((2, 128)), micro=7), "micro"),
    (dict(W=np.zeros((2, 128)), macro=100), "macro"),
    (dict(W=np.zeros((2, 128)), k_sigma=0.0), "k_sigma"),
    (dict(W=np.zeros((2, 128)), k_sigma=float("nan")), "k_sigma"),
    (dict(W=np.zeros((2, 128)), micro_exp="none"), "micro_exp"),
    (dict(W=np.full((2, 128), np.nan)), "NaN"),
    (dict(W=np.zeros((2, 128)), hessian_inv_diag=np.ones(3)), "length K"),
    (dict(W=np.zeros((2, 128)), hessian_inv_diag=np.ones((2, 64))), "broadcast"),
    (dict(W=np.zeros((2, 128)), hessian_inv_diag=-np.ones((2, 128))), "> 0"),
])
def test_bad_input_raises_value_error(kwargs, match):
    kwargs = dict(kwargs)
    W = kwargs.pop("W")
    with pytest.raises(ValueError, match=match):
        quantize(W, **kwargs)


def test_full_layer_speed():
    W = np.random.default_rng(120).standard_normal((4096, 4096)).astype(np.float32) * 0.02
    t0 = time.perf_counter()
    mx = quantize(W, bb=4)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"4096x4096 quantize took {elapsed:.2f} s"
    assert 0.01 < mx.stats().frac_ub_with_outliers < 0.05
