"""Measuring and generating per-layer outlier profiles (MicroScopiQ's outlier statistics).

Pure numpy on arrays; files are :mod:`sim.io`'s business (``sim.io.profiles`` reads weight
checkpoints and writes profiles). Two ways to a :class:`~sim.config.outliers.OutlierProfile`
here:

* :func:`measure_matrix` — the statistics of one weight matrix ``W[K, N]`` (Strata orientation:
  K = input features, N = output features), grouped as the issue-3 conventions say: for each
  input row k, macro-blocks of ``macro`` (128) and micro-blocks of ``micro`` (8) consecutive
  output channels; an outlier is a weight with ``|w - mean| > k_sigma * sd`` of its macro-block
  (population sd). Definitions of every statistic are in :mod:`sim.config.outliers`.
  :func:`sim.io.profiles.profile_from_weights` applies it to every op of a checkpoint.
* :func:`synthetic_profile` — a seeded generator of heavy-tailed weights, calibrated to the
  published statistics, measured like real ones. Its recipes (knobs, model, seed, sources) are
  data in ``workloads/outliers/recipes/`` (:class:`~sim.config.outliers.SyntheticRecipe`):
  :func:`recipe_profile` applies one, :func:`shipped_profile` rebuilds a shipped profile, and
  :func:`run_profile` is the profile an outlier-aware accelerator uses for a model that names
  none (the ``default`` recipe, the model's shapes, the experiment's seed).

Synthetic weights (one op). Measuring at full size would be slow (32 layers x 7 ops of up to
4096 x 11008), and the statistics are intensive (fractions), so each op is generated and
measured on a ``sample_rows x sample_cols`` slice (default 128 x 1024: 8 macro-blocks per
row, 16384 micro-blocks and 1024 row tiles of 128 per op); ``shape`` in the profile still holds the full ``[K, N]``. A
weight is a Gaussian body value (sd 1) unless a spike run covers it:

* a run starts at ``(k, n)`` with probability ``base_rate * op_rate[op] * f_layer * f_row[k] *
  f_col[n]`` (capped at 0.5), where ``f_layer`` is ``edge_boost`` on the first ``edge_first`` and
  last ``edge_last`` layers times a lognormal jitter per (layer, op) of sd ``layer_sigma``, and
  ``f_row`` / ``f_col`` are lognormal factors (mean 1) per input / output channel of sd
  ``row_sigma`` / ``col_sigma`` — LLM outliers cluster in input channels, which concentrates
  them on fewer PE rows (lower ``frac_rowtile_with_outliers`` for the same uB fraction);
* the run covers ``1 + G`` consecutive output channels, ``G`` geometric with continuation
  probability ``run_continue``, at most ``max_run`` long: this sets the adjacency;
* each covered weight is ``+-(spike_min + Exp(spike_scale))``.

Whether a spike counts as an outlier is decided by measuring, as for real weights (a macro-block
with many spikes has a larger sd, which hides some of them), so calibration is done by
measurement: :func:`calibrate_base_rate` bisects ``base_rate`` until the model-average
``frac_ub_with_outliers`` meets ``target_frac_ub``.

Randomness: every op draws from ``numpy.random.default_rng([seed, layer + 1, op index])`` and the
per-(layer, op) jitter from ``default_rng([seed, 0, 0])``, so a profile is a function of
(model shapes, params, seed, grouping) alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections import OrderedDict
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from sim.config.errors import ConfigError, did_you_mean, short_repr
from sim.config.loader import load_model
from sim.config.outliers import (
    DEFAULT_RECIPE,
    PROFILE_OPS,
    SSM_BLOCK_OPS,
    TRANSFORMER_PROFILE_OPS,
    OpOutlierStats,
    OutlierProfile,
    SyntheticParams,
    SyntheticRecipe,
    available_recipes,
    load_synthetic_recipe,
    shipped_recipes,
)
from sim.config.schema import ModelConfig

__all__ = [
    "DEFAULT_WIDTHS",
    "outlier_mask",
    "OutlierCounts",
    "TileCount",
    "count_outliers",
    "check_grouping",
    "measure_matrix",
    "op_shapes",
    "assemble_profile",
    "synthetic_matrix",
    "synthetic_profile",
    "calibrate_base_rate",
    "recipe_profile",
    "shipped_profile",
    "run_profile",
]

SIG_DIGITS = 6  # significant digits kept for stored fractions
DEFAULT_WIDTHS = (64, 128)


# ============================================================================================
# Measuring one matrix
# ============================================================================================


def _starts(n: int, size: int) -> np.ndarray:
    return np.arange(0, n, size)


def outlier_mask(w: np.ndarray, k_sigma: float = 3.0, macro: int = 128) -> np.ndarray:
    """Boolean mask of the k-sigma outliers of ``w[K, N]``: per row, per macro-block of
    ``macro`` consecutive columns (a shorter last block when N is not a multiple),
    ``|w - mean| > k_sigma * sd`` with the block's population sd (ddof = 0), and ``w != 0``
    (a zero cannot carry the hidden bit) -- the candidate rule of :mod:`sim.numerics.mx`.
    A constant block has none."""
    x = np.asarray(w, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"outlier_mask needs a 2-D matrix, got shape {x.shape}")
    rows, n = x.shape
    if n == 0 or rows == 0:
        return np.zeros(x.shape, dtype=bool)
    if n % macro == 0:
        blocks = x.reshape(rows, n // macro, macro)
        dev = blocks - blocks.mean(axis=-1, keepdims=True)
        sd = np.sqrt(np.mean(dev * dev, axis=-1, keepdims=True))
        return ((np.abs(dev) > k_sigma * sd) & (blocks != 0)).reshape(rows, n)
    starts = _starts(n, macro)
    sizes = np.diff(np.append(starts, n))
    mean = np.add.reduceat(x, starts, axis=1) / sizes
    dev = x - np.repeat(mean, sizes, axis=1)
    sd = np.sqrt(np.add.reduceat(dev * dev, starts, axis=1) / sizes)
    return (np.abs(dev) > k_sigma * np.repeat(sd, sizes, axis=1)) & (x != 0)


def _segment_sum(a: np.ndarray, size: int) -> np.ndarray:
    """Sums over consecutive column segments of ``size`` (a shorter last one)."""
    rows, n = a.shape
    if n % size == 0:
        return a.reshape(rows, n // size, size).sum(axis=-1)
    return np.add.reduceat(a.astype(np.int32), _starts(n, size), axis=1)


class TileCount(NamedTuple):
    """Row tiles of one width: how many hold an outlier micro-block, out of how many."""

    with_outliers: int
    total: int


@dataclass
class OutlierCounts:
    """Integer counts behind the statistics; counts of row chunks add up exactly."""

    micro: int
    widths: tuple[int, ...]
    weights: int = 0
    outliers: int = 0
    ubs: int = 0
    ubs_with: int = 0
    per_ub: np.ndarray = None  # type: ignore[assignment]  # [cap + 1]: uBs by capped count
    over_cap: int = 0
    candidates: int = 0  # k-sigma candidates before the micro/2 cap
    adjacent: int = 0  # candidates with a candidate neighbour in their uB
    tiles: dict[int, TileCount] = field(default_factory=dict)  # row-tile width -> counts

    def __post_init__(self) -> None:
        if self.per_ub is None:
            self.per_ub = np.zeros(self.micro // 2 + 1, dtype=np.int64)
        for w in self.widths:
            self.tiles.setdefault(w, TileCount(0, 0))

    def add(self, other: "OutlierCounts") -> None:
        self.weights += other.weights
        self.outliers += other.outliers
        self.ubs += other.ubs
        self.ubs_with += other.ubs_with
        self.per_ub += other.per_ub
        self.over_cap += other.over_cap
        self.candidates += other.candidates
        self.adjacent += other.adjacent
        for w in self.widths:
            mine, theirs = self.tiles[w], other.tiles[w]
            self.tiles[w] = TileCount(mine.with_outliers + theirs.with_outliers,
                                      mine.total + theirs.total)


def check_grouping(micro: int, macro: int, widths: Sequence[int], k_sigma: float) -> None:
    """ConfigError unless micro >= 2, macro and every row-tile width are multiples of micro,
    and k_sigma > 0."""
    if not (isinstance(micro, int) and micro >= 2):
        raise ConfigError("an integer >= 2", key="micro", got=short_repr(micro))
    if not (isinstance(macro, int) and macro > 0 and macro % micro == 0):
        raise ConfigError(f"a positive multiple of micro ({micro})", key="macro", got=short_repr(macro))
    for w in widths:
        if not (isinstance(w, int) and w > 0 and w % micro == 0):
            raise ConfigError(f"row-tile widths that are positive multiples of micro ({micro})",
                              key="rowtile_widths", got=short_repr(list(widths)))
    if not (isinstance(k_sigma, (int, float)) and math.isfinite(k_sigma) and k_sigma > 0):
        raise ConfigError("a number > 0", key="k_sigma", got=short_repr(k_sigma))


def count_outliers(w: np.ndarray, *, k_sigma: float = 3.0, micro: int = 8, macro: int = 128,
                   rowtile_widths: Sequence[int] = DEFAULT_WIDTHS) -> OutlierCounts:
    """Counts of outliers, micro-blocks, adjacency and row tiles of ``w[K, N]``."""
    widths = tuple(int(x) for x in rowtile_widths)
    check_grouping(micro, macro, widths, k_sigma)
    mask = outlier_mask(w, k_sigma, macro)
    rows, n = mask.shape
    c = OutlierCounts(micro=micro, widths=widths)
    if mask.size == 0:
        return c
    cap = micro // 2
    per_ub = _segment_sum(mask.view(np.int8), micro)  # k-sigma candidates per uB
    kept = np.minimum(per_ub, cap)
    c.weights = int(mask.size)
    c.outliers = int(kept.sum())
    c.ubs = int(per_ub.size)
    c.ubs_with = int(np.count_nonzero(per_ub))
    c.per_ub = np.bincount(kept.ravel(), minlength=cap + 1).astype(np.int64)
    c.over_cap = int(np.count_nonzero(per_ub > cap))
    # Adjacent: a candidate whose left or right neighbour in the same uB is also one.
    if n > 1:
        cols = np.arange(n - 1)
        same_ub = (cols // micro) == ((cols + 1) // micro)
        pair = mask[:, :-1] & mask[:, 1:] & same_ub
        has_nb = np.zeros_like(mask)
        has_nb[:, :-1] |= pair
        has_nb[:, 1:] |= pair
        c.adjacent = int(np.count_nonzero(has_nb))
    c.candidates = int(np.count_nonzero(mask))
    ub_with = (per_ub > 0).view(np.int8)
    for wd in widths:
        tiles = _segment_sum(ub_with, wd // micro)
        c.tiles[wd] = TileCount(int(np.count_nonzero(tiles)), int(tiles.size))
    return c


def _round(x: float) -> float:
    return float(f"{x:.{SIG_DIGITS}g}")


def _stats_from_counts(c: OutlierCounts, shape: Sequence[int]) -> OpOutlierStats:
    def frac(a: int, b: int) -> float:
        return _round(a / b) if b else 0.0

    k_full, n_full = shape
    cap = c.micro // 2
    if c.ubs_with:
        dist = {i: frac(int(c.per_ub[i]), c.ubs_with) for i in range(1, cap + 1)}
    else:
        dist = {i: 0.0 for i in range(1, cap + 1)}
    return OpOutlierStats(
        shape=[int(k_full), int(n_full)],
        frac_ub_with_outliers=frac(c.ubs_with, c.ubs),
        outliers_per_ub=dist,
        frac_ub_over_cap=frac(c.over_cap, c.ubs),
        frac_weights_outliers=frac(c.outliers, c.weights),
        adjacency=frac(c.adjacent, c.candidates),
        frac_rowtile_with_outliers={wd: frac(c.tiles[wd].with_outliers, c.tiles[wd].total)
                                    for wd in c.widths},
    )


def _row_chunks(w: np.ndarray, chunk_rows: int) -> Iterator[np.ndarray]:
    for r0 in range(0, w.shape[0], chunk_rows):
        yield w[r0:r0 + chunk_rows]


def measure_matrix(w: np.ndarray, *, k_sigma: float = 3.0, micro: int = 8, macro: int = 128,
                   rowtile_widths: Sequence[int] = DEFAULT_WIDTHS,
                   shape: Sequence[int] | None = None, chunk_rows: int = 512) -> OpOutlierStats:
    """Outlier statistics of ``w[K, N]`` (Strata orientation; transpose HF ``[out, in]``).

    Rows are processed ``chunk_rows`` at a time (the statistics are sums over rows, so this
    is exact). ``shape`` records the full weight's shape when ``w`` is a slice of it.
    """
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ConfigError("a non-empty 2-D weight matrix [K, N]", key="weights",
                          got=f"an array of shape {tuple(w.shape)}")
    total = OutlierCounts(micro=micro, widths=tuple(int(x) for x in rowtile_widths))
    for part in _row_chunks(w, max(1, int(chunk_rows))):
        total.add(count_outliers(part, k_sigma=k_sigma, micro=micro, macro=macro,
                                 rowtile_widths=rowtile_widths))
    return _stats_from_counts(total, shape if shape is not None else w.shape)


# ============================================================================================
# Model shapes
# ============================================================================================


def op_shapes(model: ModelConfig, include_lm_head: bool = False) -> dict[str, tuple[int, int]]:
    """``[K, N]`` of each linear op of one block (and the lm_head), Strata orientation."""
    if model.architecture == "mamba":
        shapes = model.ssm.gemm_shapes(model.hidden_size)
        if include_lm_head:
            shapes["lm_head"] = (model.hidden_size, model.vocab_size)
        return shapes
    hd = model.head_dim or model.hidden_size // model.num_heads
    h, inter = model.hidden_size, model.intermediate_size
    shapes = {
        "q_proj": (h, model.num_heads * hd),
        "k_proj": (h, model.num_kv_heads * hd),
        "v_proj": (h, model.num_kv_heads * hd),
        "o_proj": (model.num_heads * hd, h),
    }
    if model.ffn == "gated":
        shapes["gate_proj"] = (h, inter)
    shapes["up_proj"] = (h, inter)
    shapes["down_proj"] = (inter, h)
    if include_lm_head:
        shapes["lm_head"] = (h, model.vocab_size)
    return shapes


def _model(model_config: Any) -> ModelConfig:
    return model_config if isinstance(model_config, ModelConfig) else load_model(model_config)


# ============================================================================================
# Assembling a profile
# ============================================================================================


def assemble_profile(model: ModelConfig, name: str | None, description: str, k_sigma: float,
                     micro: int, macro: int, widths: Sequence[int], provenance: Mapping,
                     layers: Mapping, lm_head: OpOutlierStats | None) -> OutlierProfile:
    """The validated profile, whichever way its statistics were obtained (measured from
    weights or generated): ``layers`` maps layer -> op -> statistics."""
    return OutlierProfile.model_validate({
        "name": name or model.name,
        "model": model.name,
        "description": description,
        "k_sigma": float(k_sigma),
        "micro": micro,
        "macro": macro,
        "rowtile_widths": list(widths),
        "num_layers": model.num_layers,
        "provenance": provenance,
        "layers": layers,
        "lm_head": lm_head,
    })


# ============================================================================================
# Synthetic weights
# ============================================================================================


def _lognormal_factor(rng: np.random.Generator, sigma: float, size: Any) -> np.ndarray:
    """exp(sigma * z - sigma^2 / 2): lognormal factors with mean 1."""
    if sigma == 0:
        return np.ones(size)
    return np.exp(sigma * rng.standard_normal(size) - 0.5 * sigma * sigma)


def synthetic_matrix(rows: int, cols: int, rate: float, params: SyntheticParams,
                     rng: np.random.Generator) -> np.ndarray:
    """A ``rows x cols`` float32 slice of synthetic weights (see the module docstring).

    Only two draws are dense (the Gaussian body and the run starts); run lengths, signs and
    magnitudes are drawn for the sparse spike positions only, in row-major order."""
    body = rng.standard_normal((rows, cols), dtype=np.float32)
    f_row = _lognormal_factor(rng, params.row_sigma, rows).astype(np.float32)
    f_col = _lognormal_factor(rng, params.col_sigma, cols).astype(np.float32)
    p = np.minimum(np.float32(rate) * f_row[:, None] * f_col[None, :], np.float32(0.5))
    start_r, start_c = np.nonzero(rng.random((rows, cols), dtype=np.float32) < p)
    covered = np.zeros((rows, cols), dtype=bool)
    covered[start_r, start_c] = True
    if params.run_continue > 0 and params.max_run > 1 and start_r.size:
        # Run length 1 + G, G geometric (P(G >= j) = run_continue ** j), at most max_run.
        u = rng.random(start_r.size)
        extra = np.floor(np.log(np.maximum(u, 1e-300)) / math.log(params.run_continue))
        for j in range(1, params.max_run):
            sel = extra >= j
            r, c = start_r[sel], start_c[sel] + j
            inside = c < cols
            covered[r[inside], c[inside]] = True
    idx = np.flatnonzero(covered)
    magnitude = params.spike_min + (rng.exponential(params.spike_scale, idx.size)
                                    if params.spike_scale > 0 else np.zeros(idx.size))
    sign = np.where(rng.random(idx.size) < 0.5, -1.0, 1.0)
    body.ravel()[idx] = (sign * magnitude).astype(np.float32)
    return body


def _params(family_params: Any) -> SyntheticParams:
    if isinstance(family_params, SyntheticParams):
        return family_params
    if isinstance(family_params, str):
        names = available_recipes()
        if family_params in names:
            return load_synthetic_recipe(family_params).params
        raise ConfigError("a recipe name (" + ", ".join(names) + ") or "
                          "SyntheticParams", key="family_params", got=short_repr(family_params),
                          hint=did_you_mean(family_params, names))
    if isinstance(family_params, Mapping):
        from sim.config.loader import load_validated

        return load_validated(dict(family_params), SyntheticParams, source="<family_params>")
    raise ConfigError("SyntheticParams, a mapping or a shipped profile name",
                      key="family_params", got=short_repr(family_params))


def _op_rates(model: ModelConfig, params: SyntheticParams, seed: int,
              ops: Sequence[str]) -> dict[tuple[int, str], float]:
    """Spike-start rate of every (layer, op) before the row/column factors."""
    jitter = _lognormal_factor(np.random.default_rng([seed, 0, 0]), params.layer_sigma,
                               (model.num_layers + 1, len(TRANSFORMER_PROFILE_OPS)))
    if any(op in SSM_BLOCK_OPS for op in ops):
        # the state-space ops draw their own stream, so a transformer's draws stay as they were
        ssm = _lognormal_factor(np.random.default_rng([seed, 0, 1]), params.layer_sigma,
                                (model.num_layers + 1, len(SSM_BLOCK_OPS)))
        jitter = np.concatenate([jitter, ssm], axis=1)
    rates = {}
    last = model.num_layers
    for layer in list(range(model.num_layers)) + [-1]:
        edge = layer >= 0 and (layer < params.edge_first or layer >= last - params.edge_last)
        row = jitter[layer if layer >= 0 else last]
        for op in ops:
            if layer == -1 and op != "lm_head" or layer >= 0 and op == "lm_head":
                continue
            factor = params.op_factor(op) * (params.edge_boost if edge else 1.0)
            rates[(layer, op)] = params.base_rate * factor * float(row[PROFILE_OPS.index(op)])
    return rates


def synthetic_profile(model_config: Any, family_params: Any, seed: int, *,
                      k_sigma: float = 3.0, micro: int = 8, macro: int = 128,
                      rowtile_widths: Sequence[int] = DEFAULT_WIDTHS,
                      include_lm_head: bool = False, name: str | None = None,
                      description: str = "", notes: str = "",
                      regenerate: str = "") -> OutlierProfile:
    """A profile measured on seeded synthetic weights shaped like ``model_config``.

    ``family_params``: :class:`SyntheticParams`, a mapping of them, or a recipe name (its
    params). ``regenerate`` is recorded in the provenance (a command that writes the profile
    again). Deterministic: same inputs, same profile (and same YAML bytes).
    """
    model = _model(model_config)
    params = _params(family_params)
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise ConfigError("a non-negative integer", key="seed", got=short_repr(seed))
    widths = tuple(int(x) for x in rowtile_widths)
    check_grouping(micro, macro, widths, k_sigma)
    shapes = op_shapes(model, include_lm_head=include_lm_head)
    rates = _op_rates(model, params, seed, list(shapes))

    def one(layer: int, op: str) -> OpOutlierStats:
        k_full, n_full = shapes[op]
        rows, cols = min(params.sample_rows, k_full), min(params.sample_cols, n_full)
        rng = np.random.default_rng([seed, layer + 1, PROFILE_OPS.index(op)])
        w = synthetic_matrix(rows, cols, rates[(layer, op)], params, rng)
        return measure_matrix(w, k_sigma=k_sigma, micro=micro, macro=macro,
                              rowtile_widths=widths, shape=(k_full, n_full))

    layers = {i: {op: one(i, op) for op in shapes if op != "lm_head"}
              for i in range(model.num_layers)}
    lm_head = one(-1, "lm_head") if include_lm_head else None
    return assemble_profile(model, name, description, k_sigma, micro, macro, widths, {
            "source": ("synthetic, calibrated to published outlier statistics "
                       "(params.calibrated_to says which)"),
            "generator": "sim.numerics.outlier_stats.synthetic_profile",
            "seed": seed,
            "params": params,
            "orientation": "W[K=in, N=out]; uB/MaB run along N for a fixed input row k",
            "sampling": (f"each op generated and measured on a {params.sample_rows} x "
                         f"{params.sample_cols} slice (rows x cols, clipped to the op's [K, N]); "
                         "shape holds the full [K, N]"),
            "regenerate": regenerate,
            "notes": notes,
        }, layers, lm_head)


def calibrate_base_rate(model_config: Any, family_params: Any, seed: int, *,
                        target: float | None = None, k_sigma: float = 3.0, micro: int = 8,
                        macro: int = 128, tol: float = 5e-4, max_iter: int = 40,
                        digits: int = 4) -> SyntheticParams:
    """``family_params`` with ``base_rate`` set so that the model average (weighted by
    weights) of ``frac_ub_with_outliers`` of :func:`synthetic_profile` is ``target``
    (default ``target_frac_ub``) within ``tol``. Bisection on log(base_rate), measuring whole
    synthetic profiles with common random numbers (same seed), so the map is monotone up to
    the sd-inflation of crowded macro-blocks. The rate is rounded to ``digits`` significant
    digits, so that it reads well in the profile's provenance."""
    model = _model(model_config)
    params = _params(family_params)
    goal = params.target_frac_ub if target is None else float(target)

    def measured(rate: float) -> tuple[float, SyntheticParams]:
        trial = params.model_copy(update={"base_rate": float(f"{rate:.{digits}g}"),
                                          "target_frac_ub": goal})
        prof = synthetic_profile(model, trial, seed, k_sigma=k_sigma, micro=micro, macro=macro)
        return prof.mean("frac_ub_with_outliers"), trial

    lo, hi = math.log(1e-5), math.log(0.1)
    best, best_value = None, math.inf
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        value, trial = measured(math.exp(mid))
        if best is None or abs(value - goal) < abs(best_value - goal):
            best, best_value = trial, value
        if abs(value - goal) <= tol:
            break
        if value < goal:
            lo = mid
        else:
            hi = mid
    if best is None:
        raise ConfigError("max_iter >= 1", key="max_iter", got=short_repr(max_iter))
    return best


# ============================================================================================
# Recipes (workloads/outliers/recipes): shipped profiles and run-time profiles
# ============================================================================================


def recipe_profile(recipe: Any, model: Any = None, seed: int | None = None, *,
                   name: str | None = None, notes: str | None = None,
                   regenerate: str = "") -> OutlierProfile:
    """The profile a recipe (name, path, mapping or SyntheticRecipe) makes: for the recipe's
    own model and seed, or for ``model`` / ``seed`` where given (a recipe that leaves them
    open needs them)."""
    r: SyntheticRecipe = load_synthetic_recipe(recipe)
    model = r.model if model is None else model
    seed = r.seed if seed is None else seed
    if model is None or seed is None:
        missing = "model" if model is None else "seed"
        raise ConfigError(f"a {missing} (recipe {r.name!r} leaves it open)", key=missing,
                          got="nothing")
    return synthetic_profile(model, r.params, seed, name=name or r.name,
                             description=r.description, notes=r.notes if notes is None else notes,
                             regenerate=regenerate)


def shipped_profile(name: str) -> OutlierProfile:
    """Regenerate the shipped profile ``name`` (in memory) from its recipe
    (``workloads/outliers/recipes/<name>.yaml``)."""
    names = shipped_recipes()
    if name not in names:
        raise ConfigError("a shipped profile name (" + ", ".join(names) + ")",
                          key="name", got=short_repr(name), hint=did_you_mean(name, names))
    return recipe_profile(name, regenerate=(
        "python -c \"from sim.io.profiles import regenerate_shipped; "
        f"regenerate_shipped('{name}')\""))


def run_profile(model_config: Any, seed: int, recipe: str = DEFAULT_RECIPE) -> OutlierProfile:
    """The synthetic profile an outlier-aware accelerator uses for a model that names no
    ``outlier_profile``: ``recipe`` (default ``default``) applied to the model's shapes with
    the experiment's ``seed``, named ``<model>-synthetic-seed<seed>``.

    Building one takes about 2 s for a 7B model, so the last few are kept, keyed by the
    model's content hash, the seed and the recipe's content (a profile is frozen, so sharing
    it is safe)."""
    model = _model(model_config)
    r = load_synthetic_recipe(recipe)
    key = (model.hash(), seed, r.model_dump_json())
    if key in _RUN_PROFILES:
        _RUN_PROFILES.move_to_end(key)
        return _RUN_PROFILES[key]
    profile = recipe_profile(r, model, seed, name=f"{model.name}-synthetic-seed{seed}", notes=(
        f"Generated at run time: model {model.name!r} names no outlier_profile, so the "
        f"{r.name!r} recipe (workloads/outliers/recipes/{r.name}.yaml) was applied to its "
        f"shapes with the experiment's seed {seed}. {r.notes}").strip())
    _RUN_PROFILES[key] = profile
    while len(_RUN_PROFILES) > _RUN_PROFILES_MAX:
        _RUN_PROFILES.popitem(last=False)
    return profile


_RUN_PROFILES: OrderedDict[tuple, OutlierProfile] = OrderedDict()
_RUN_PROFILES_MAX = 8
