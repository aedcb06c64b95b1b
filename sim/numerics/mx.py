"""MicroScopiQ weight format: MX-INT inliers, MX-FP outliers split into pruned slots.

Functional model only (pure numpy, no timing). ``quantize(W)`` turns a float weight matrix into
an :class:`MXWeights` container holding exactly what the accelerator stores and multiplies;
``MXWeights.dequantize()`` is the float64 matrix the hardware *effectively* multiplies.

Orientation and blocking
------------------------
GEMM ``O[M, N] = A[M, K] @ W[K, N]``: K = input features, N = output features. Groups run along
N for a fixed input ``k`` (one "weight row"): the macro-block (MaB) ``W[k, n0:n0+macro]``
(default 128) shares one inlier scale; the micro-block (uB) ``W[k, u*micro:(u+1)*micro]``
(default 8) is the outlier group. ``N`` must be a multiple of ``macro`` and ``macro`` a multiple
of ``micro``. A uB therefore sits on one PE row of a weight-stationary array, and both halves of
an outlier lie in two columns of that row.

Quantization steps
------------------
1. *Outlier detection* (k-sigma per MaB): with mu, sigma the mean and population std
   (``ddof=0``) of the MaB, ``w`` is a candidate iff ``|w - mu| > k_sigma * sigma`` and
   ``w != 0`` (a zero cannot carry the hidden bit). At most ``micro // 2`` candidates per uB
   become outliers: the largest ``|w|`` win (ties: lower column first). Losers are *demoted*
   to inliers (they would clip at the inlier range edge) -- but a uB that hits the cap has
   ``micro/2`` outliers and so prunes all ``micro/2`` of its inliers, demoted ones included:
   in practice a demoted candidate ends as a pruned slot (dequantized 0). ``n_demoted``
   counts them.
2. *Inliers (MX-INT-bb)*: ``inlier_exp[k, b] = floor(log2(max |inlier|)) - (bb - 2)`` over the
   MaB's non-candidates (OCP-MX convention for INT elements, as the released MicroScopiQ
   quantizer does), clamped to the 8-bit scale range ``[-127, 127]``; 0 for a MaB without nonzero
   inliers. ``q = clip(rint(w / 2**inlier_exp), -2**(bb-1), 2**(bb-1) - 1)`` (round half to even,
   two's complement). With this scale the largest inlier lies in [2**(bb-2), 2**(bb-1)) LSBs,
   so values above ``(2**(bb-1) - 0.5)`` LSBs clip to ``2**(bb-1) - 1`` (negatives never clip).
3. *Outliers (MX-FP, 2x inlier precision: e1m2 for bb=2, e3m4 for bb=4)*: after sharing the
   exponent, an outlier is ``sign`` + ``m = 2*(bb-1)`` mantissa bits ``M`` (hidden bit 1)::

        value = sign * (1 + M / 2**m) * 2**outlier_exp,   M = (U << (bb-1)) | L

   ``U`` (top bb-1 bits) and ``L`` (low bb-1 bits) are unsigned. The exponent comes from the
   per-uB 8-bit MXScale field ``outlier_osf`` (= level-1 scale || micro-exponent uX, 1 bit for
   bb=2, 3 bits for bb=4; concatenated it is simply a signed 8-bit exponent). Two modes:

   * ``micro_exp="shared"`` (default, the paper's hardware format): one exponent per uB,
     ``outlier_exp = inlier_exp + outlier_osf`` for every outlier of the uB, set by the uB's
     largest outlier (``floor(log2 max|o|)``, +1 if its mantissa rounds up to 2). Smaller
     outliers of the same uB below ``2**outlier_exp`` become ``sign * 2**outlier_exp``
     (``M = 0``): the price of sharing uX (on heavy-tailed Student-t weights about 12 % of
     outliers at bb=2 and 4 % at bb=4 land there; on Gaussian weights with planted outliers
     almost none).
   * ``micro_exp="per_outlier"`` (the released PyTorch quantizer's element-wise behaviour):
     ``outlier_osf`` is the level-1 exponent ``l1`` (relative to ``inlier_exp``) and each
     outlier keeps its own uX in ``[0, 2**ux_bits - 1]``:
     ``outlier_exp = inlier_exp + outlier_osf + uX``. Costs ux_bits per outlier of metadata
     that Eq. 4 does not count.

   The paper "pre-multiplies outliers by 2**I_sf" and later adds I_sf back; we store the outlier
   exponent *relative to the inlier exponent* (``outlier_osf``), which is the same thing up to
   the sign convention of the stored field, keeps it small, and is exactly the shift the output
   path needs to align outlier and inlier partial sums. Dequantization is exact either way
   (powers of two).
4. *Pruning and split*: a uB with ``n`` outliers prunes its ``n`` least salient inliers
   (saliency ``w**2 / hinv[k, n]`` with a calibration Hessian-inverse diagonal, ``w**2``
   otherwise, measured on the float weights; ties: lower column first; demoted candidates are
   ordinary inliers here). The j-th outlier (ascending column) is paired with the j-th pruned
   slot (ascending column). No GPTQ-style error compensation is done.

Container semantics (what ReCoN consumes)
-----------------------------------------
``q`` int8 [K, N]: the bb-bit two's-complement integer in every PE slot.

* inlier slot: the MX-INT value; contributes ``q * 2**inlier_exp[k, n // macro]``;
* outlier's own slot ("Upper"): ``q = sign * U``;
* pruned slot ("Lower"):      ``q = sign * L`` (the pruned inlier itself is gone, weight 0).

``perm`` int8 [K, N//micro, micro//2, 2]: entry ``perm[k, u, j] = (upper_loc, lower_loc)``,
local column indices in ``0..micro-1`` of uB ``u`` (global column ``u*micro + loc``). The first
``n`` entries are valid, sorted by ``upper_loc``; unused entries are ``(-1, -1)``.
``has_outlier`` bool [K, N//micro] = ``perm[k, u, 0, 0] >= 0``.

``outlier_sign`` int8 [K, N//micro, micro//2]: ``+1`` / ``-1`` for entry j (0 if unused). It is
kept separately because ``q = sign * 0`` loses the sign when U or L is 0.
``outlier_exp`` int16 [K, N//micro, micro//2]: the absolute exponent of entry j (0 if unused).
``outlier_osf`` int8 [K, N//micro]: the uB's 8-bit MXScale field (0 if no outlier): shared
mode ``outlier_exp - inlier_exp``; per-outlier mode the level-1 part (uX = the rest).
``inlier_exp`` int16 [K, N//macro] (values fit the 8-bit field). ``n_candidates`` /
``n_demoted``: k-sigma candidates before the cap / candidates that lost to it.
``outliers()`` returns the same information as a flat table (k, columns, sign, exp, U, L,
value); ``outlier_mask()`` / ``pruned_mask()`` mark the Upper / Lower slots.

Reconstruction of outlier j of uB (k, u) from the slots (what ``dequantize`` does)::

    s = outlier_sign[k, u, j]
    U = s * q[k, u*micro + perm[k, u, j, 0]]        # >= 0
    L = s * q[k, u*micro + perm[k, u, j, 1]]        # >= 0
    W_hat[k, upper] = s * (2**m + U * 2**(bb-1) + L) * 2**(outlier_exp - m),  m = 2*(bb-1)
    W_hat[k, lower] = 0

In the PE array (activation ``a`` integer): ``U_res = q_upper * a``, ``L_res = q_lower * a``;
ReCoN merges ``(U_res << (bb-1)) + L_res + ((s * a) << m)`` (= ``s*(2**m + U*2**(bb-1) + L)*a``,
:func:`merged_outlier_product`), which is scaled by ``2**(outlier_exp - m)`` against inlier
products scaled by ``2**inlier_exp``. The paper's bb=2 merge ``(U >> 1) + (L >> 2) + a`` is this
divided by 4.

Effective bit width (Eq. 4): a uB without outliers costs ``bb`` bits/element, with outliers
``(perm_bits + bb*micro + osf_bits) / micro`` (``perm_bits = micro/2 * 2*ceil(log2 micro)``
= 24 for micro 8, ``osf_bits = 8``); the inlier scale, the 1-bit flag and (our convention) the
outlier sign bits are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

__all__ = [
    "MICRO_EXP_MODES",
    "MXStats",
    "MXWeights",
    "SUPPORTED_BB",
    "UPPER_LOC",
    "LOWER_LOC",
    "ebw_formula",
    "merged_outlier_product",
    "model_ebw",
    "outlier_value",
    "perm_bits_for",
    "quantize",
    "split_mantissa",
    "join_mantissa",
]

SUPPORTED_BB = (2, 4)
MICRO_EXP_MODES = ("shared", "per_outlier")
#: micro-exponent width of the outlier element format (e1m2 for bb=2, e3m4 for bb=4)
UX_BITS = {2: 1, 4: 3}
#: 8-bit power-of-two inlier scale (E8M0-like: 255 finite exponents, no NaN code used)
INLIER_EXP_MIN, INLIER_EXP_MAX = -127, 127
#: 8-bit two's-complement MXScale field of an outlier uB
OSF_MIN, OSF_MAX = -128, 127
PACK_FORMAT = "strata-mx-microscopiq"
PACK_VERSION = 1
#: fields of a permutation entry ``perm[k, u, j]``: the outlier's own slot, its pruned slot
UPPER_LOC, LOWER_LOC = 0, 1


# ----------------------------------------------------------------------------------------------
# Small format helpers (scalars or arrays)


def mantissa_bits(bb: int) -> int:
    """Outlier mantissa bits after the shared exponent: 2*(bb-1)."""
    return 2 * (bb - 1)


def split_mantissa(mantissa, bb: int):
    """Split an outlier mantissa ``M`` (2*(bb-1) bits) into (Upper, Lower), each bb-1 bits."""
    mantissa = np.asarray(mantissa)
    half = bb - 1
    return mantissa >> half, mantissa & ((1 << half) - 1)


def join_mantissa(upper, lower, bb: int):
    """Inverse of :func:`split_mantissa`."""
    return (np.asarray(upper) << (bb - 1)) | np.asarray(lower)


def outlier_value(sign, upper, lower, exp, bb: int):
    """Float64 value ``sign * (1 + (U*2**(bb-1) + L) / 2**m) * 2**exp`` (exact)."""
    m = mantissa_bits(bb)
    sig = (1 << m) + np.asarray(upper, dtype=np.int64) * (1 << (bb - 1)) \
        + np.asarray(lower, dtype=np.int64)
    return np.asarray(sign, dtype=np.float64) * np.ldexp(
        sig.astype(np.float64), np.asarray(exp, dtype=np.int64) - m)


def merged_outlier_product(u_res, l_res, act, sign, bb: int):
    """ReCoN's exact integer merge for one outlier, scaled by 2**m (m = 2*(bb-1)).

    ``u_res = q_upper * act`` and ``l_res = q_lower * act`` are the two PE products;
    the result equals ``sign * (2**m + U*2**(bb-1) + L) * act``. Multiply by
    ``2**(outlier_exp - m)`` for the real-valued product.
    """
    m = mantissa_bits(bb)
    u_res = np.asarray(u_res, dtype=np.int64)
    l_res = np.asarray(l_res, dtype=np.int64)
    hidden = np.asarray(sign, dtype=np.int64) * np.asarray(act, dtype=np.int64)
    return u_res * (1 << (bb - 1)) + l_res + hidden * (1 << m)


def perm_bits_for(micro: int) -> int:
    """Permutation-list bits per outlier uB: micro/2 entries of 2*ceil(log2 micro) bits."""
    return (micro // 2) * 2 * max(1, math.ceil(math.log2(micro)))


def ebw_formula(frac_ub_with_outliers: float, bb: int, micro: int = 8, perm_bits: int = 24,
                osf_bits: int = 8) -> float:
    """Eq. 4: ``x * (perm_bits + bb*micro + osf_bits)/micro + (1 - x) * bb``."""
    x = float(frac_ub_with_outliers)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"ebw_formula: frac_ub_with_outliers must be in [0, 1], got {x}")
    ebw_o = (perm_bits + bb * micro + osf_bits) / micro
    return x * ebw_o + (1.0 - x) * bb


def model_ebw(layers: Iterable, by_size: bool = False) -> float:
    """Model EBW: the average of the layers' EBW (paper: plain layer average).

    ``layers`` holds :class:`MXWeights` or plain EBW floats. ``by_size=True`` weights each
    MXWeights by its element count instead (floats then count as weight 1).
    """
    values, weights = [], []
    for layer in layers:
        if isinstance(layer, MXWeights):
            values.append(layer.effective_bits())
            weights.append(layer.q.size if by_size else 1)
        else:
            values.append(float(layer))
            weights.append(1)
    if not values:
        raise ValueError("model_ebw: no layers given")
    return float(np.average(values, weights=weights))


def _floor_log2(x):
    """floor(log2(x)) for x > 0, exact (via frexp); int64."""
    _, e = np.frexp(x)
    return e.astype(np.int64) - 1


def _round_mantissa(mag, exp, m):
    """Mantissa M of ``mag`` at exponent ``exp`` (hidden bit 1), clipped to [0, 2**m - 1]."""
    r = np.ldexp(mag, -exp)            # exact
    return np.clip(np.rint((r - 1.0) * (1 << m)), 0, (1 << m) - 1).astype(np.int64)


def _fp_exponent(mag, m):
    """Exponent of ``mag`` > 0 as an m-bit-mantissa float (+1 when the mantissa rounds to 2)."""
    e = _floor_log2(mag)
    rounded_up = np.rint((np.ldexp(mag, -e) - 1.0) * (1 << m)) >= (1 << m)
    return e + rounded_up


# ----------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class MXStats:
    """Outlier statistics of one quantized layer."""

    frac_ub_with_outliers: float
    outliers_per_ub_hist: np.ndarray     # counts of uBs with 0, 1, ..., micro/2 outliers
    frac_outlier_weights: float          # outliers / (K*N)
    frac_row_segments_with_outliers: float   # (k, row_width-col tile) segments, >=1 outlier uB
    row_width: int
    n_outliers: int
    n_candidates: int                    # k-sigma candidates before the micro/2 cap
    n_demoted: int                       # candidates that lost to the cap (end up pruned)
    ebw: float

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["outliers_per_ub_hist"] = self.outliers_per_ub_hist.tolist()
        return d


# ----------------------------------------------------------------------------------------------
# Container


@dataclass(eq=False)
class MXWeights:
    """A quantized weight matrix in MicroScopiQ format (see the module docstring)."""

    bb: int
    macro: int
    micro: int
    q: np.ndarray              # int8 [K, N]      bb-bit slot integers
    inlier_exp: np.ndarray     # int16 [K, N//macro]
    has_outlier: np.ndarray    # bool [K, N//micro]
    perm: np.ndarray           # int8 [K, N//micro, micro//2, 2]  (upper_loc, lower_loc) / -1
    outlier_sign: np.ndarray   # int8 [K, N//micro, micro//2]     +1 / -1 / 0 unused
    outlier_exp: np.ndarray    # int16 [K, N//micro, micro//2]    absolute exponent / 0 unused
    outlier_osf: np.ndarray    # int8 [K, N//micro]   8-bit MXScale field (rel. to inlier_exp)
    micro_exp: str = "shared"
    k_sigma: float = 3.0
    n_candidates: int = 0
    n_demoted: int = 0

    # -- shape helpers -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)

    @property
    def mantissa_bits(self) -> int:
        return mantissa_bits(self.bb)

    @property
    def ux_bits(self) -> int:
        return UX_BITS[self.bb]

    @property
    def n_outliers(self) -> int:
        return int(np.count_nonzero(self.perm[..., UPPER_LOC] >= 0))

    def outliers(self) -> dict:
        """Flat table of outliers in (k, uB, entry) order: columns and encoded fields.

        Keys: ``k``, ``ub``, ``upper_col``, ``lower_col`` (global columns), ``sign``, ``exp``,
        ``U``, ``L`` (unsigned halves), ``value`` (float64).
        """
        kk, uu, jj = np.nonzero(self.perm[..., UPPER_LOC] >= 0)
        up = uu * self.micro + self.perm[kk, uu, jj, UPPER_LOC].astype(np.int64)
        lo = uu * self.micro + self.perm[kk, uu, jj, LOWER_LOC].astype(np.int64)
        s = self.outlier_sign[kk, uu, jj].astype(np.int64)
        e = self.outlier_exp[kk, uu, jj].astype(np.int64)
        U = self.q[kk, up].astype(np.int64) * s
        L = self.q[kk, lo].astype(np.int64) * s
        return {"k": kk, "ub": uu, "upper_col": up, "lower_col": lo, "sign": s, "exp": e,
                "U": U, "L": L, "value": outlier_value(s, U, L, e, self.bb)}

    def outlier_mask(self) -> np.ndarray:
        """bool [K, N]: True at each outlier's own (Upper) slot."""
        t = self.outliers()
        mask = np.zeros(self.q.shape, dtype=bool)
        mask[t["k"], t["upper_col"]] = True
        return mask

    def pruned_mask(self) -> np.ndarray:
        """bool [K, N]: True at pruned slots (holding a Lower half)."""
        t = self.outliers()
        mask = np.zeros(self.q.shape, dtype=bool)
        mask[t["k"], t["lower_col"]] = True
        return mask

    # -- values --------------------------------------------------------------------------------
    def inlier_scale(self) -> np.ndarray:
        """float64 [K, N]: 2**inlier_exp of every column's macro-block."""
        s = np.ldexp(1.0, self.inlier_exp.astype(np.int64))
        return np.repeat(s, self.macro, axis=1)

    def dequantize(self) -> np.ndarray:
        """The float64 [K, N] matrix the hardware multiplies (pruned inliers are 0)."""
        K, N = self.q.shape
        nmab = N // self.macro
        scale = np.ldexp(1.0, self.inlier_exp.astype(np.int64))
        out = (self.q.reshape(K, nmab, self.macro).astype(np.float64)
               * scale[:, :, None]).reshape(K, N)
        t = self.outliers()
        out[t["k"], t["lower_col"]] = 0.0
        out[t["k"], t["upper_col"]] = t["value"]
        return out

    # -- bit width and statistics --------------------------------------------------------------
    def effective_bits(self, perm_bits: int | None = None, osf_bits: int = 8) -> float:
        """EBW of this layer per Eq. 4 at its measured fraction of outlier uBs."""
        pb = perm_bits_for(self.micro) if perm_bits is None else perm_bits
        frac = float(self.has_outlier.mean()) if self.has_outlier.size else 0.0
        return ebw_formula(frac, self.bb, self.micro, pb, osf_bits)

    def footprint_bits(self, *, inlier_scales: bool = False, flags: bool = False,
                       sign_bits: bool = False, perm_bits: int | None = None,
                       osf_bits: int = 8) -> int:
        """Storage in bits. Defaults count what Eq. 4 counts (slots + perm + MXScale);
        the keyword switches add the 8-bit inlier scales, the 1-bit uB flags and the
        outlier sign bits (and, in ``per_outlier`` mode, the per-outlier uX bits go with
        ``sign_bits``)."""
        pb = perm_bits_for(self.micro) if perm_bits is None else perm_bits
        n_flag = int(np.count_nonzero(self.has_outlier))
        bits = self.q.size * self.bb + n_flag * (pb + osf_bits)
        if inlier_scales:
            bits += self.inlier_exp.size * 8
        if flags:
            bits += self.has_outlier.size
        if sign_bits:
            per = 1 + (self.ux_bits if self.micro_exp == "per_outlier" else 0)
            bits += self.n_outliers * per
        return int(bits)

    def stats(self, row_width: int = 64) -> MXStats:
        """Outlier statistics; ``row_width`` columns form one (k, tile) row segment."""
        if row_width <= 0 or row_width % self.micro:
            raise ValueError(f"stats: row_width must be a positive multiple of micro "
                             f"({self.micro}), got {row_width}")
        K, nub = self.has_outlier.shape
        per_ub = np.count_nonzero(self.perm[..., UPPER_LOC] >= 0, axis=-1)
        hist = np.bincount(per_ub.ravel(), minlength=self.micro // 2 + 1)
        ub_per_tile = row_width // self.micro
        ntiles = -(-nub // ub_per_tile)
        padded = np.zeros((K, ntiles * ub_per_tile), dtype=bool)
        padded[:, :nub] = self.has_outlier
        seg = padded.reshape(K, ntiles, ub_per_tile).any(axis=-1)
        n_out = int(per_ub.sum())
        total = self.q.size
        return MXStats(
            frac_ub_with_outliers=float(self.has_outlier.mean()),
            outliers_per_ub_hist=hist,
            frac_outlier_weights=n_out / total,
            frac_row_segments_with_outliers=float(seg.mean()),
            row_width=row_width,
            n_outliers=n_out,
            n_candidates=int(self.n_candidates),
            n_demoted=int(self.n_demoted),
            ebw=self.effective_bits(),
        )

    # -- packing -------------------------------------------------------------------------------
    def pack(self) -> tuple[bytes, dict]:
        """Serialize: (slot bytes, metadata dict).

        Bytes: the K*N bb-bit two's-complement slots in row-major order, ``8 // bb`` per byte,
        element i of a byte in bits ``[i*bb, (i+1)*bb)`` (LSB first).
        Metadata (numpy arrays + scalars): ``inlier_exp`` int8 [K, N//macro]; ``outlier_flags``
        packbits (LSB first) of has_outlier; for the F flagged uBs in row-major order:
        ``perm`` [F, micro//2] codes ``upper*micro + lower`` (an unused entry has
        ``upper == lower``, written 0), ``osf`` int8 [F]; per valid outlier in (k, uB, entry)
        order: ``sign_bits`` packbits (1 = negative) and, in ``per_outlier`` mode, ``ux`` uint8.
        """
        K, N = self.q.shape
        per = 8 // self.bb
        mask = (1 << self.bb) - 1
        u = (self.q.astype(np.int16) & mask).astype(np.uint8).reshape(-1, per)
        shifts = (np.arange(per) * self.bb).astype(np.uint8)
        slots = np.bitwise_or.reduce(u << shifts[None, :], axis=1).astype(np.uint8)

        fk, fu = np.nonzero(self.has_outlier)
        pf = self.perm[fk, fu].astype(np.int64)            # [F, cap, 2]
        valid = pf[..., UPPER_LOC] >= 0
        code_dtype = np.uint8 if self.micro * self.micro <= 256 else np.uint16
        codes = np.where(valid, pf[..., UPPER_LOC] * self.micro + pf[..., LOWER_LOC], 0).astype(code_dtype)
        signs = self.outlier_sign[fk, fu][valid]
        meta = {
            "format": PACK_FORMAT,
            "version": PACK_VERSION,
            "bb": int(self.bb),
            "macro": int(self.macro),
            "micro": int(self.micro),
            "shape": (int(K), int(N)),
            "micro_exp": self.micro_exp,
            "k_sigma": float(self.k_sigma),
            "n_candidates": int(self.n_candidates),
            "n_demoted": int(self.n_demoted),
            "inlier_exp": self.inlier_exp.astype(np.int8),
            "outlier_flags": np.packbits(self.has_outlier.ravel(), bitorder="little"),
            "perm": codes,
            "osf": self.outlier_osf[fk, fu].astype(np.int8),
            "sign_bits": np.packbits(signs < 0, bitorder="little"),
        }
        if self.micro_exp == "per_outlier":
            base = (self.inlier_exp[fk, fu // (self.macro // self.micro)].astype(np.int64)
                    + self.outlier_osf[fk, fu].astype(np.int64))
            ux = self.outlier_exp[fk, fu].astype(np.int64) - base[:, None]
            meta["ux"] = ux[valid].astype(np.uint8)
        return slots.tobytes(), meta

    @classmethod
    def unpack(cls, buf: bytes, meta: dict) -> "MXWeights":
        """Rebuild the container from :meth:`pack`'s output (validated)."""
        if meta.get("format") != PACK_FORMAT or meta.get("version") != PACK_VERSION:
            raise ValueError(f"unpack: expected format {PACK_FORMAT!r} version {PACK_VERSION}, "
                             f"got {meta.get('format')!r} version {meta.get('version')!r}")
        bb, macro, micro = int(meta["bb"]), int(meta["macro"]), int(meta["micro"])
        K, N = (int(x) for x in meta["shape"])
        micro_exp = meta["micro_exp"]
        _check_params(bb, macro, micro, float(meta["k_sigma"]), micro_exp, N)
        per = 8 // bb
        raw = np.frombuffer(bytes(buf), dtype=np.uint8)
        if raw.size * per != K * N:
            raise ValueError(f"unpack: slot buffer holds {raw.size * per} slots, "
                             f"expected K*N = {K * N}")
        shifts = (np.arange(per) * bb).astype(np.uint8)
        v = ((raw[:, None] >> shifts[None, :]) & ((1 << bb) - 1)).astype(np.int16).ravel()
        q = (v - ((v >> (bb - 1)) << bb)).astype(np.int8).reshape(K, N)

        nmab, nub, cap = N // macro, N // micro, micro // 2
        inlier_exp = np.asarray(meta["inlier_exp"]).astype(np.int16)
        if inlier_exp.shape != (K, nmab):
            raise ValueError(f"unpack: inlier_exp has shape {inlier_exp.shape}, "
                             f"expected {(K, nmab)}")
        flags = np.unpackbits(np.asarray(meta["outlier_flags"], dtype=np.uint8),
                              count=K * nub, bitorder="little").astype(bool).reshape(K, nub)
        fk, fu = np.nonzero(flags)
        F = fk.size
        codes = np.asarray(meta["perm"]).astype(np.int64)
        osf_f = np.asarray(meta["osf"]).astype(np.int64)
        if codes.shape != (F, cap) or osf_f.shape != (F,):
            raise ValueError(f"unpack: perm/osf shapes {codes.shape}/{osf_f.shape} do not "
                             f"match {F} flagged micro-blocks")
        upper, lower = codes // micro, codes % micro
        valid = upper != lower
        nval = int(valid.sum())
        if F and not valid[:, 0].all():          # valid entries come first: entry 0 is one
            raise ValueError("unpack: a flagged micro-block has no valid permutation entry")
        neg = np.unpackbits(np.asarray(meta["sign_bits"], dtype=np.uint8), count=nval,
                            bitorder="little").astype(bool)
        sign_f = np.zeros((F, cap), dtype=np.int8)
        sign_f[valid] = np.where(neg, -1, 1)
        base = inlier_exp[fk, fu // (macro // micro)].astype(np.int64) + osf_f
        exp_f = np.zeros((F, cap), dtype=np.int64)
        if micro_exp == "per_outlier":
            ux = np.asarray(meta["ux"]).astype(np.int64)
            if ux.shape != (nval,):
                raise ValueError(f"unpack: ux has shape {ux.shape}, expected ({nval},)")
            exp_f[valid] = (np.broadcast_to(base[:, None], (F, cap))[valid] + ux)
        else:
            exp_f[valid] = np.broadcast_to(base[:, None], (F, cap))[valid]

        perm = np.full((K, nub, cap, 2), -1, dtype=np.int8)
        # entry fields in the order UPPER_LOC, LOWER_LOC
        perm[fk, fu] = np.where(valid[..., None], np.stack([upper, lower], -1), -1)
        outlier_sign = np.zeros((K, nub, cap), dtype=np.int8)
        outlier_sign[fk, fu] = sign_f
        outlier_exp = np.zeros((K, nub, cap), dtype=np.int16)
        outlier_exp[fk, fu] = exp_f
        outlier_osf = np.zeros((K, nub), dtype=np.int8)
        outlier_osf[fk, fu] = osf_f
        w = cls(bb=bb, macro=macro, micro=micro, q=q, inlier_exp=inlier_exp,
                has_outlier=flags, perm=perm, outlier_sign=outlier_sign,
                outlier_exp=outlier_exp, outlier_osf=outlier_osf, micro_exp=micro_exp,
                k_sigma=float(meta["k_sigma"]), n_candidates=int(meta["n_candidates"]),
                n_demoted=int(meta["n_demoted"]))
        w.validate()
        return w

    def validate(self) -> None:
        """Check internal consistency (shapes, perm structure, slot signs); ValueError if not."""
        K, N = self.q.shape
        nmab, nub, cap = N // self.macro, N // self.micro, self.micro // 2
        expected = {"q": (K, N), "inlier_exp": (K, nmab), "has_outlier": (K, nub),
                    "perm": (K, nub, cap, 2), "outlier_sign": (K, nub, cap),
                    "outlier_exp": (K, nub, cap), "outlier_osf": (K, nub)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"MXWeights: {name} has shape {getattr(self, name).shape}, "
                                 f"expected {shape}")
        if (self.perm[~self.has_outlier] != -1).any():
            raise ValueError("MXWeights: a micro-block without the outlier flag has "
                             "permutation entries")
        fk, fu = np.nonzero(self.has_outlier)
        p = self.perm[fk, fu].astype(np.int64)                       # [F, cap, 2]
        valid = p[..., UPPER_LOC] >= 0
        n = valid.sum(-1)
        if not np.array_equal(valid, np.arange(cap)[None, :] < n[:, None]) or (n == 0).any():
            raise ValueError("MXWeights: each flagged micro-block needs >= 1 valid permutation "
                             "entry, valid entries first")
        if not np.array_equal(p[..., LOWER_LOC] >= 0, valid) or (p >= self.micro).any():
            raise ValueError("MXWeights: permutation locations must lie in [0, micro)")
        filler = self.micro + np.arange(2 * cap)[None, :]
        locs = np.where(np.concatenate([valid, valid], -1),
                        np.concatenate([p[..., UPPER_LOC], p[..., LOWER_LOC]], -1), filler)
        if (np.diff(np.sort(locs, axis=-1), axis=-1) == 0).any():
            raise ValueError("MXWeights: permutation locations of a micro-block must be distinct")
        t = self.outliers()
        if (np.abs(t["sign"]) != 1).any():
            raise ValueError("MXWeights: outlier_sign must be +1 or -1 for valid entries")
        hi = (1 << (self.bb - 1)) - 1
        if ((t["U"] < 0) | (t["U"] > hi) | (t["L"] < 0) | (t["L"] > hi)).any():
            raise ValueError("MXWeights: an outlier's slot integers disagree with its sign")

    def equals(self, other: "MXWeights") -> bool:
        """Field-by-field equality (arrays compared exactly)."""
        names = ("bb", "macro", "micro", "micro_exp", "n_candidates", "n_demoted")
        if any(getattr(self, a) != getattr(other, a) for a in names):
            return False
        arrays = ("q", "inlier_exp", "has_outlier", "perm", "outlier_sign", "outlier_exp",
                  "outlier_osf")
        return all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays)


# ----------------------------------------------------------------------------------------------
# Quantization


def _check_params(bb, macro, micro, k_sigma, micro_exp, N) -> None:
    if bb not in SUPPORTED_BB:
        raise ValueError(f"quantize: bb (bit budget) must be one of {SUPPORTED_BB}, got {bb!r}")
    if not isinstance(micro, (int, np.integer)) or micro < 2 or micro % 2:
        raise ValueError(f"quantize: micro (micro-block size) must be an even integer >= 2, "
                         f"got {micro!r}")
    if not isinstance(macro, (int, np.integer)) or macro <= 0 or macro % micro:
        raise ValueError(f"quantize: macro (macro-block size) must be a positive multiple of "
                         f"micro ({micro}), got {macro!r}")
    if not (np.isfinite(k_sigma) and k_sigma > 0):
        raise ValueError(f"quantize: k_sigma must be a finite number > 0, got {k_sigma!r}")
    if micro_exp not in MICRO_EXP_MODES:
        raise ValueError(f"quantize: micro_exp must be one of {MICRO_EXP_MODES}, "
                         f"got {micro_exp!r}")
    if N <= 0 or N % macro:
        raise ValueError(f"quantize: N (columns of W[K, N], the output features) must be a "
                         f"positive multiple of the macro-block size {macro}, got N = {N}")


def _hessian_inv(h, shape) -> np.ndarray:
    K, N = shape
    h = np.asarray(h, dtype=np.float64)
    if h.ndim == 1:
        if h.shape[0] != K:
            raise ValueError(f"quantize: a 1-D hessian_inv_diag is per input feature k and "
                             f"must have length K = {K}, got {h.shape[0]}")
        h = h[:, None]
    try:
        h = np.broadcast_to(h, shape)
    except ValueError:
        raise ValueError(f"quantize: hessian_inv_diag of shape {h.shape} does not broadcast "
                         f"to W's shape {shape}") from None
    if not (np.isfinite(h).all() and (h > 0).all()):
        raise ValueError("quantize: hessian_inv_diag must be finite and > 0 everywhere")
    return h


def quantize(W, bb: int = 4, macro: int = 128, micro: int = 8, k_sigma: float = 3.0,
             hessian_inv_diag=None, micro_exp: str = "shared") -> MXWeights:
    """Quantize a float matrix ``W[K, N]`` into MicroScopiQ format (see module docstring).

    Args:
        W: real matrix [K, N] (K input features, N output features); N a multiple of ``macro``.
        bb: bit budget per slot, 2 or 4 (outliers: e1m2 resp. e3m4, 2*(bb-1) mantissa bits).
        macro: macro-block size along N (inlier scale group), a multiple of ``micro``.
        micro: micro-block size along N (outlier group), even; at most micro/2 outliers.
        k_sigma: outlier threshold in standard deviations of the macro-block.
        hessian_inv_diag: optional calibration ``[H^-1]_pp`` for the pruning saliency
            ``w**2 / hinv``: shape [K, N], anything numpy-broadcastable to it (e.g. [K, 1]), or
            1-D of length K (one value per input feature, the GPTQ case). Must be finite, > 0.
        micro_exp: ``"shared"`` (one outlier exponent per uB, the paper's format) or
            ``"per_outlier"`` (level-1 scale per uB plus a uX per outlier).

    Raises:
        ValueError: bad shape, parameter or non-finite input, with a message naming it.
    """
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"quantize: W must be a 2-D matrix [K, N], got shape {W.shape}")
    if not np.issubdtype(W.dtype, np.number) or np.iscomplexobj(W):
        raise ValueError(f"quantize: W must hold real numbers, got dtype {W.dtype}")
    W = W.astype(np.float64, copy=False)
    K, N = W.shape
    _check_params(bb, macro, micro, k_sigma, micro_exp, N)
    if K == 0:
        raise ValueError("quantize: W must have at least one row (K >= 1)")
    if not np.isfinite(W).all():
        raise ValueError("quantize: W contains NaN or infinity")
    h = None if hessian_inv_diag is None else _hessian_inv(hessian_inv_diag, W.shape)

    cap = micro // 2
    nmab, nub, ub_per_mab = N // macro, N // micro, macro // micro
    qmin, qmax = -(1 << (bb - 1)), (1 << (bb - 1)) - 1
    m = mantissa_bits(bb)

    # 1. k-sigma candidates per macro-block
    blocks = W.reshape(K, nmab, macro)
    mu = blocks.mean(axis=-1, keepdims=True)
    sd = blocks.std(axis=-1, keepdims=True)
    cand = (np.abs(blocks - mu) > k_sigma * sd) & (blocks != 0)
    cand_u = cand.reshape(K, nub, micro)
    n_cand = cand_u.sum(axis=-1)
    is_out = cand_u.copy()
    over_k, over_u = np.nonzero(n_cand > cap)
    if over_k.size:
        wsub = W.reshape(K, nub, micro)[over_k, over_u]
        csub = cand_u[over_k, over_u]
        score = np.where(csub, np.abs(wsub), -1.0)
        order = np.argsort(-score, axis=-1, kind="stable")
        keep = np.zeros_like(csub)
        np.put_along_axis(keep, order[:, :cap], True, axis=-1)
        is_out[over_k, over_u] = keep & csub
    n_out = is_out.sum(axis=-1)                                         # [K, nub]

    # 2. MX-INT inliers: scale from the non-candidates of each macro-block
    amax = np.where(cand, 0.0, np.abs(blocks)).max(axis=-1)             # [K, nmab]
    inlier_exp = np.where(amax > 0, _floor_log2(np.where(amax > 0, amax, 1.0)) - (bb - 2), 0)
    inlier_exp = np.clip(inlier_exp, INLIER_EXP_MIN, INLIER_EXP_MAX).astype(np.int16)
    scale = np.ldexp(1.0, inlier_exp.astype(np.int64))
    q = np.clip(np.rint(blocks / scale[:, :, None]), qmin, qmax).astype(np.int8).reshape(K, N)

    # 3.+4. outlier uBs: pruning, pairing, MX-FP encoding (only the flagged uBs are touched)
    fk, fu = np.nonzero(n_out > 0)
    F = fk.size
    perm = np.full((K, nub, cap, 2), -1, dtype=np.int8)
    outlier_sign = np.zeros((K, nub, cap), dtype=np.int8)
    outlier_exp = np.zeros((K, nub, cap), dtype=np.int16)
    outlier_osf = np.zeros((K, nub), dtype=np.int8)
    if F:
        cols = np.arange(micro)
        wf = W.reshape(K, nub, micro)[fk, fu]                           # [F, micro]
        of = is_out[fk, fu]
        nf = n_out[fk, fu]
        sal = wf * wf
        if h is not None:
            sal = sal / h.reshape(K, nub, micro)[fk, fu]
        sal = np.where(of, np.inf, sal)
        order = np.argsort(sal, axis=-1, kind="stable")                 # least salient first
        slot = np.arange(cap)[None, :]
        valid = slot < nf[:, None]                                      # [F, cap]
        lower = np.sort(np.where(valid, order[:, :cap], micro), axis=-1)
        upper = np.sort(np.where(of, cols, micro), axis=-1)[:, :cap]

        ov = np.take_along_axis(wf, np.minimum(upper, micro - 1), axis=-1)
        mag = np.where(valid, np.abs(ov), 0.0)
        sgn = np.where(ov < 0, -1, 1)
        I_f = inlier_exp[fk, fu // ub_per_mab].astype(np.int64)
        e_top = _fp_exponent(mag.max(axis=-1), m)                      # [F]
        if micro_exp == "shared":
            osf = np.clip(e_top - I_f, OSF_MIN, OSF_MAX)
            exp = np.broadcast_to((I_f + osf)[:, None], (F, cap))
        else:
            span = (1 << UX_BITS[bb]) - 1
            osf = np.clip(e_top - span - I_f, OSF_MIN, OSF_MAX)
            l1 = (I_f + osf)[:, None]
            e_own = _fp_exponent(np.where(valid, mag, 1.0), m)
            exp = np.clip(e_own, l1, l1 + span)
        M = _round_mantissa(np.where(valid, mag, 1.0), exp, m)
        U, L = split_mantissa(M, bb)

        vi, vj = np.nonzero(valid)
        kk, uu = fk[vi], fu[vi]
        q3 = q.reshape(K, nub, micro)
        q3[kk, uu, upper[vi, vj]] = (sgn * U)[vi, vj]
        q3[kk, uu, lower[vi, vj]] = (sgn * L)[vi, vj]
        # entry fields in the order UPPER_LOC, LOWER_LOC
        perm[fk, fu] = np.where(valid[..., None], np.stack([upper, lower], axis=-1), -1)
        outlier_sign[fk, fu] = np.where(valid, sgn, 0)
        outlier_exp[fk, fu] = np.where(valid, exp, 0)
        outlier_osf[fk, fu] = osf

    n_candidates = int(n_cand.sum())
    return MXWeights(bb=bb, macro=macro, micro=micro, q=q, inlier_exp=inlier_exp,
                     has_outlier=n_out > 0, perm=perm, outlier_sign=outlier_sign,
                     outlier_exp=outlier_exp, outlier_osf=outlier_osf, micro_exp=micro_exp,
                     k_sigma=float(k_sigma), n_candidates=n_candidates,
                     n_demoted=n_candidates - int(n_out.sum()))
