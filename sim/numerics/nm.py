"""N:M structured sparsity: patterns, masks and Wanda-style N:M pruning. Pure numpy.

Orientation (Strata's): a weight is ``W[K, N]`` with K = input features, N = output features
(HF ``nn.Linear`` stores ``[out, in]``; transpose first). N:M groups run along the **input**
dimension, as FLOW and Wanda prune: for every output channel ``n`` and every group of ``M``
consecutive input rows ``W[g*M:(g+1)*M, n]``, exactly ``N`` weights are kept.

Pattern rules (:func:`parse_pattern`): ``1 <= N <= M <= 16`` (:data:`MAX_M`); ``"dense"`` is
the pattern with no pruning. ``N == M`` (``"4:4"``) is allowed and keeps everything.

Wanda score (Sun et al., 2023, as FLOW's released ``prune_all.py`` uses it): ``|W[k, n]| *
||X_k||_2``, the weight magnitude times the L2 norm of input channel ``k`` over the
calibration tokens (:func:`wanda_scores`).

Ties (equal scores in a group) are broken toward the lower input index: the weight nearer the
start of the group is kept. The result is a function of the inputs alone.
"""

from __future__ import annotations

import numpy as np

from sim.config.errors import ConfigError
from sim.config.nm_schedule import DENSE, MAX_M, Pattern, parse_pattern

__all__ = ["MAX_M", "Pattern", "DENSE", "parse_pattern", "nm_mask", "wanda_scores", "prune_nm",
           "sparsity_of", "check_nm"]

def _groups(a: np.ndarray, m: int, what: str) -> np.ndarray:
    """``a[K, N]`` -> ``[K // m, m, N]``; K must be a multiple of m."""
    if a.ndim != 2:
        raise ConfigError(f"a 2-D {what} [K, N]", key=what, got=f"shape {tuple(a.shape)}")
    k, n = a.shape
    if k % m:
        raise ConfigError(f"an input dimension K that is a multiple of M = {m}", key=what,
                          got=f"K = {k}")
    return a.reshape(k // m, m, n)


def nm_mask(scores: np.ndarray, pattern) -> np.ndarray:
    """Boolean keep-mask of ``scores[K, N]``: in each group of M consecutive input rows of
    each output column, the N highest scores are kept (ties: lower input index kept).
    NaN scores are rejected."""
    p = parse_pattern(pattern, key="pattern")
    s = np.asarray(scores, dtype=np.float64)
    if np.isnan(s).any():
        raise ConfigError("scores without NaN", key="scores", got="NaN")
    if p.dense:
        if s.ndim != 2:
            raise ConfigError("a 2-D scores [K, N]", key="scores", got=f"shape {tuple(s.shape)}")
        return np.ones(s.shape, dtype=bool)
    g = _groups(s, p.m, "scores")
    # rank within each group: stable argsort of -score puts the highest first and, among
    # equal scores, the lower index first.
    order = np.argsort(-g, axis=1, kind="stable")
    keep = np.zeros(g.shape, dtype=bool)
    np.put_along_axis(keep, order[:, : p.n, :], True, axis=1)
    return keep.reshape(s.shape)


def wanda_scores(w: np.ndarray, act_norm: np.ndarray) -> np.ndarray:
    """``|W[k, n]| * act_norm[k]``: Wanda's importance of each weight of ``W[K, N]``, where
    ``act_norm[k]`` is the L2 norm of input channel k over the calibration tokens."""
    w = np.asarray(w)
    a = np.asarray(act_norm, dtype=np.float64)
    if w.ndim != 2:
        raise ConfigError("a 2-D weight [K, N]", key="weight", got=f"shape {tuple(w.shape)}")
    if a.shape != (w.shape[0],):
        raise ConfigError(f"an activation-norm vector of length K = {w.shape[0]}",
                          key="act_norm", got=f"shape {tuple(a.shape)}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ConfigError("finite activation norms >= 0", key="act_norm",
                          got="a negative or non-finite value")
    return np.abs(w.astype(np.float64)) * a[:, None]


def prune_nm(w: np.ndarray, act_norm: np.ndarray | None, pattern) -> tuple[np.ndarray, np.ndarray]:
    """Wanda-style N:M pruning of ``W[K, N]``: (pruned copy, keep-mask). ``act_norm=None``
    scores by magnitude alone."""
    w = np.asarray(w)
    a = np.ones(w.shape[0]) if act_norm is None else act_norm
    mask = nm_mask(wanda_scores(w, a), pattern)
    return np.where(mask, w, np.zeros((), dtype=w.dtype)), mask


def sparsity_of(mask: np.ndarray) -> float:
    """Fraction of pruned (False) entries of a keep-mask."""
    mask = np.asarray(mask, dtype=bool)
    return float(1.0 - mask.mean()) if mask.size else 0.0


def check_nm(mask: np.ndarray, pattern) -> bool:
    """True when every group of M input rows of every column keeps exactly N entries."""
    p = parse_pattern(pattern, key="pattern")
    mask = np.asarray(mask, dtype=bool)
    if p.dense:
        return bool(mask.all())
    return bool((_groups(mask, p.m, "mask").sum(axis=1) == p.n).all())
