"""FLOW: per-decoder-block N:M selection from outlier density and locality (ISLPED'25).

Facts from the released solver (``sw/solver/ilp_solver.py``, research notes §2.2); what
Strata adds or changes is marked *Strata*.

Per decoder block i (one pattern for all its linear ops):

* **Outlier ratio** ``O_i``: fraction of the block's Wanda scores ``|W| * ||x||`` above
  ``hyper_m`` times their mean (all linear ops of the block, flattened ``[out, in]`` row-major
  and concatenated). :func:`block_stats_from_arrays`.
* **Locality** ``D_i``: 1 / (mean pairwise 1-D index distance between the first
  :data:`MAX_OUTLIERS` outlier positions of that flattened tensor). Larger = more clustered.
  Fewer than 2 outliers: ``D_i = 0`` (*Strata*: the released code would divide by zero).
* Both are min-max scaled to ``[0, λ]``, mean-centred and min-max normalised again to
  ``[0, 1]``. Min-max is invariant to affine maps, so the net effect is one min-max to
  ``[0, 1]`` and λ does not matter (:func:`normalise`). A constant vector (every block alike)
  becomes 0.5 (*Strata*: the released code gives 0/0).

The integer program (*Strata* generalises the released equality constraint): binary
``z[i, p]``, one pattern per block, cost

    c[i, p] = alpha * |n_p - scale * O_i| + beta * |m_p - scale * (1 - D_i)|

(alpha = 1, beta = 4, scale = 8 released; dense counts as ``scale:scale``, as the released
8:8). The released code demands mean block sparsity == target exactly, which most targets
cannot meet (candidate sparsities are a few fixed fractions). Strata solves it in two stages:

1. the smallest reachable gap ``g* = min |mean_i s(z_i) - target|``, exactly, from the set
   of reachable sums of block sparsities in integer units (``1 - N/M`` times the lcm of the
   candidates' M; a set per block, at most ``L * lcm + 1`` values);
2. the least-cost assignment (``scipy.optimize.milp``, HiGHS) whose summed sparsity, in those
   integer units, is one of the nearest reachable sums.

Stage 2 runs at most ``time_limit`` seconds (default 20); past it the best assignment found
is kept (``FlowSolution.optimal`` is False; this happened only for 80 blocks with several
x:16 candidates at low targets). So when an exact mix exists the answer is the released solver's; otherwise it is the nearest
feasible mix, and :class:`FlowSolution` reports the achieved sparsity and the gap.
``edges_dense`` fixes the first and last blocks to dense *inside* the program, so the other
blocks make up for them (the released code forces them dense after solving, which lowers the
realised sparsity below the target).

The released code's sign convention is kept: a high locality (clustered outliers) pushes the M
target *down*, which reads opposite to the README's case 3 (research notes §2.2).

Per-block statistics from an outlier profile (:func:`block_stats_from_profile`, *Strata*):
the shipped and run-time synthetic profiles (:mod:`sim.config.outliers`) store k-sigma
outliers per op, not Wanda-score outliers, so ``O_i`` is the block's outlier fraction
(``frac_weights_outliers``, weighted by weights) and ``D_i`` its adjacency (outliers with an
outlier neighbour / outliers, weighted by outliers). Only their ranking across blocks reaches
the solver (min-max), which is what these proxies are for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from sim.config.errors import ConfigError, short_repr
from sim.config.nm_schedule import DENSE, Pattern, parse_pattern

__all__ = ["DEFAULT_CANDIDATES", "MAX_OUTLIERS", "ALPHA", "BETA", "BlockStats", "FlowSolution",
           "candidate_patterns", "normalise", "cost_matrix", "solve_flow", "mean_pair_distance",
           "block_stats_from_arrays", "block_stats_from_profile"]

# The candidate set; the released solver's was {2:4, 2:8, 4:4, 4:8, 8:8}.
DEFAULT_CANDIDATES = ("1:4", "2:4", "2:8", "4:8", "1:2", "dense")
MAX_OUTLIERS = 10_000  # the released locality uses at most the first 10,000 outliers
ALPHA, BETA = 1.0, 4.0  # released objective weights
_MAX_SUMS = 4_000_000  # bound on the exact search of reachable sparsity sums
HYPER_M = 0.5  # the README's solver example (--Hyper_m 0.5); pruning examples use 3.0


@dataclass(frozen=True)
class BlockStats:
    """Raw per-block statistics: outlier ratio and locality, one value per decoder block."""

    outlier_ratio: np.ndarray
    locality: np.ndarray
    source: str

    def __post_init__(self) -> None:
        o = np.asarray(self.outlier_ratio, dtype=np.float64)
        d = np.asarray(self.locality, dtype=np.float64)
        if o.ndim != 1 or o.shape != d.shape or o.size == 0:
            raise ConfigError("outlier_ratio and locality vectors of one equal length >= 1",
                              key="stats", got=f"shapes {o.shape} and {d.shape}")
        if not (np.isfinite(o).all() and np.isfinite(d).all()):
            raise ConfigError("finite block statistics", key="stats", got="NaN or inf")
        object.__setattr__(self, "outlier_ratio", o)
        object.__setattr__(self, "locality", d)

    @property
    def num_layers(self) -> int:
        return int(self.outlier_ratio.size)


@dataclass(frozen=True)
class FlowSolution:
    patterns: tuple[Pattern, ...]
    candidates: tuple[Pattern, ...]
    target: float
    achieved: float
    gap: float
    objective: float
    o_norm: np.ndarray = field(repr=False)
    d_norm: np.ndarray = field(repr=False)
    optimal: bool = True  # False: HiGHS hit time_limit; the best assignment found is kept

    @property
    def exact(self) -> bool:
        return self.gap <= 1e-9


def candidate_patterns(candidates: Iterable | None = None, extra: Iterable = (),
                       need_dense: bool = False) -> tuple[Pattern, ...]:
    """The candidate set: ``candidates`` (default :data:`DEFAULT_CANDIDATES`) plus ``extra``,
    parsed, de-duplicated in order; dense is appended when ``need_dense`` and absent."""
    base = DEFAULT_CANDIDATES if candidates is None else tuple(candidates)
    out: list[Pattern] = []
    for where, items in (("candidates", base), ("extra", tuple(extra))):
        for i, c in enumerate(items):
            p = parse_pattern(c, key=f"{where}.{i}")
            if p not in out:
                out.append(p)
    if need_dense and DENSE not in out:
        out.append(DENSE)
    if not out:
        raise ConfigError("at least one candidate pattern", key="candidates", got="none")
    return tuple(out)


def normalise(x: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant vector becomes 0.5 everywhere."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-15 * max(1.0, abs(hi)):
        return np.full(x.shape, 0.5)
    return (x - lo) / (hi - lo)


def cost_matrix(o_norm: np.ndarray, d_norm: np.ndarray, candidates: Sequence[Pattern],
                alpha: float = ALPHA, beta: float = BETA, scale: float = 8.0) -> np.ndarray:
    """``c[i, p]`` of the objective (module docstring); dense counts as ``scale:scale``."""
    n = np.array([scale if p.dense else p.n for p in candidates], dtype=np.float64)
    m = np.array([scale if p.dense else p.m for p in candidates], dtype=np.float64)
    o = np.asarray(o_norm, dtype=np.float64)[:, None]
    d = np.asarray(d_norm, dtype=np.float64)[:, None]
    return alpha * np.abs(n[None, :] - scale * o) + beta * np.abs(m[None, :] - scale * (1 - d))


def _milp(c, integrality, bounds, constraints, time_limit: float):
    """(x, proven optimal). Past ``time_limit`` seconds the best assignment found is kept."""
    from scipy.optimize import milp

    opts = {"time_limit": float(time_limit)}
    res = milp(c, integrality=integrality, bounds=bounds, constraints=constraints, options=opts)
    if res.status == 4:   # HiGHS numerical trouble: retry without presolve
        res = milp(c, integrality=integrality, bounds=bounds, constraints=constraints,
                   options={**opts, "presolve": False})
    if res.status not in (0, 1) or res.x is None:
        raise ConfigError("a solvable FLOW integer program", key="solver",
                          got=f"scipy.optimize.milp status {res.status}: {res.message}")
    return res.x, res.status == 0


def solve_flow(stats: BlockStats, target: float, *, candidates: Iterable | None = None,
               extra: Iterable = (), edges_dense: bool = False, alpha: float = ALPHA,
               beta: float = BETA, scale: float | None = None,
               time_limit: float = 20.0) -> FlowSolution:
    """Choose one pattern per block (module docstring). ``scale`` defaults to 8 (released)
    or the largest M among the candidates when that is larger."""
    from scipy.optimize import Bounds, LinearConstraint

    if isinstance(target, bool) or not isinstance(target, (int, float)) \
            or not 0 <= float(target) < 1:
        raise ConfigError("a target sparsity in [0, 1)", key="sparsity", got=short_repr(target))
    target = float(target)
    cands = candidate_patterns(candidates, extra, need_dense=edges_dense)
    if scale is None:
        scale = float(max([8] + [p.m for p in cands if not p.dense]))
    L, P = stats.num_layers, len(cands)
    o_n, d_n = normalise(stats.outlier_ratio), normalise(stats.locality)
    cost = cost_matrix(o_n, d_n, cands, alpha, beta, scale)
    s = np.array([p.sparsity for p in cands])

    # Integer units: pattern p prunes v_p = (m_p - n_p) * lcm / m_p of every lcm weights, so
    # sums of sparsities are exact integers (no float ties between mixes).
    lcm = int(np.lcm.reduce([p.m for p in cands]))
    v = np.array([(p.m - p.n) * (lcm // p.m) for p in cands], dtype=np.int64)
    if L * int(v.max()) > _MAX_SUMS:
        raise ConfigError(f"candidate M values whose lcm ({lcm}) times the {L} blocks stays "
                          f"under {_MAX_SUMS} (sparsity sums are searched exactly)",
                          key="candidates", got=", ".join(map(str, cands)))
    nz = L * P  # z[i, p] at i * P + p
    lo, hi = np.zeros(nz), np.ones(nz)
    allowed = [list(range(P)) for _ in range(L)]
    if edges_dense:
        dense = cands.index(DENSE)
        for i in {0, L - 1}:
            hi[i * P:(i + 1) * P] = 0
            lo[i * P + dense] = hi[i * P + dense] = 1
            allowed[i] = [dense]
    # stage 1: the reachable sums, exactly (one set per block; at most L * lcm + 1 values)
    sums = {0}
    for i in range(L):
        vals = {int(v[j]) for j in allowed[i]}
        sums = {x + y for x in sums for y in vals}
    goal = target * L * lcm
    best = min(abs(x - goal) for x in sums)
    lo_sum = min(x for x in sums if abs(x - goal) <= best + 1e-9)
    hi_sum = max(x for x in sums if abs(x - goal) <= best + 1e-9)
    # stage 2: the least-cost assignment whose sum is one of the nearest reachable sums
    one = np.zeros((L, nz))
    for i in range(L):
        one[i, i * P:(i + 1) * P] = 1
    band = LinearConstraint(np.tile(v, L)[None, :].astype(np.float64), lo_sum, hi_sum)
    x2, optimal = _milp(cost.ravel(), np.ones(nz), Bounds(lo, hi),
                        [LinearConstraint(one, 1, 1), band], time_limit)
    z = np.round(x2[:nz]).reshape(L, P).astype(int)
    if not (z.sum(axis=1) == 1).all():
        raise ConfigError("one pattern per block from the FLOW integer program", key="solver",
                          got="a fractional solution")
    choice = z.argmax(axis=1)
    patterns = tuple(cands[j] for j in choice)
    achieved = float(np.mean([p.sparsity for p in patterns]))
    return FlowSolution(patterns=patterns, candidates=cands, target=target, achieved=achieved,
                        gap=abs(achieved - target),
                        objective=float(cost[np.arange(L), choice].sum()),
                        o_norm=o_n, d_norm=d_n, optimal=optimal)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def mean_pair_distance(pos: np.ndarray) -> float:
    """Mean |x_i - x_j| over pairs i < j, in O(n log n): with x sorted,
    sum over pairs = sum_j (2j - n + 1) x_j."""
    x = np.sort(np.asarray(pos, dtype=np.float64))
    n = x.size
    if n < 2:
        return 0.0
    coef = 2 * np.arange(n) - n + 1
    return float((coef * x).sum() / (n * (n - 1) / 2))


def block_stats_from_arrays(blocks: Sequence[Sequence[np.ndarray]], *,
                            hyper_m: float = HYPER_M, max_outliers: int = MAX_OUTLIERS,
                            source: str = "arrays") -> BlockStats:
    """Per-block statistics from Wanda score matrices: ``blocks[i]`` lists the score arrays
    (``[out, in]``, as HF stores them) of block i's linear ops, in op order."""
    o, d = [], []
    for i, mats in enumerate(blocks):
        mats = [np.asarray(a, dtype=np.float64) for a in mats]
        if not mats:
            raise ConfigError("at least one weight per block", key=f"blocks.{i}", got="none")
        total = sum(a.size for a in mats)
        mean = sum(float(a.sum()) for a in mats) / total
        thr = hyper_m * mean
        count, pos, offset = 0, [], 0
        for a in mats:
            flat = a.ravel()
            hit = np.flatnonzero(flat > thr)
            count += hit.size
            room = max_outliers - sum(p.size for p in pos)
            if room > 0:
                pos.append(hit[:room] + offset)
            offset += flat.size
        o.append(count / total)
        positions = np.concatenate(pos) if pos else np.zeros(0)
        dist = mean_pair_distance(positions)
        d.append(1.0 / dist if dist > 0 else 0.0)
    return BlockStats(np.array(o), np.array(d), source)


def block_stats_from_profile(profile) -> BlockStats:
    """Per-block proxies from an :class:`~sim.config.outliers.OutlierProfile` (module
    docstring): O_i = weighted outlier fraction, D_i = weighted adjacency."""
    o, d = [], []
    for i in range(profile.num_layers):
        ops = profile.layers[i].present().values()
        w = np.array([s.num_weights for s in ops], dtype=np.float64)
        f = np.array([s.frac_weights_outliers for s in ops])
        a = np.array([s.adjacency for s in ops])
        o.append(float((w * f).sum() / w.sum()))
        wo = w * f
        d.append(float((wo * a).sum() / wo.sum()) if wo.sum() > 0 else 0.0)
    return BlockStats(np.array(o), np.array(d), f"outlier profile {profile.name!r}")
