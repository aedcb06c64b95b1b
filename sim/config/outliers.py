"""Per-layer outlier profiles: how many MicroScopiQ outliers each linear op of a model has.

A profile lives in ``workloads/outliers/<name>.yaml`` (or any path) and is read through
:func:`load_outlier_profile`, which uses the common loader: every problem is a
:class:`ConfigError` naming the file and the key. Profiles are measured from real weights
(:func:`sim.io.profiles.profile_from_weights`) or produced by the seeded synthetic generator
(:func:`sim.numerics.outlier_stats.synthetic_profile`), and written by
:func:`sim.io.profiles.write_profile`.

The synthetic generator's recipes are data too: ``workloads/outliers/recipes/<name>.yaml``
(:class:`SyntheticRecipe`, read by :func:`load_synthetic_recipe`) holds the knobs, the model
whose shapes a shipped profile follows, its seed and the sources of its targets. The recipe
``default`` (:data:`DEFAULT_RECIPE`) leaves model and seed open: it is what a model without a
shipped profile runs with on an outlier-aware accelerator.

Grouping (the issue-3 conventions). Strata's GEMM is ``O[M,N] = A[M,K] @ W[K,N]`` with
K = input features and N = output features; HF ``nn.Linear`` weights are stored ``[out, in]``
and are transposed to ``[K, N]`` before anything is measured. For a fixed input row ``k``:

* a macro-block (MaB) is ``W[k, n0:n0+macro]`` (128): its mean ``mu`` and standard deviation
  ``sd`` (population, ddof = 0) define the outliers of that block, ``|w - mu| > k_sigma * sd``
  and ``w != 0`` (the candidate rule of :mod:`sim.numerics.mx`);
* a micro-block (uB) is ``W[k, n0:n0+micro]`` (8);
* a row tile of width ``w`` is ``W[k, n0:n0+w]``: what one PE row of a weight-stationary array
  holds (a 64-column array holds 64 weights at bb = 4 and 128 at bb = 2).

Per op, a profile stores (all fractions in [0, 1]):

``frac_ub_with_outliers``
    uBs holding at least one outlier / all uBs. Drives the effective bit width
    (EBW = x * EBW_O + (1 - x) * bb) and the metadata traffic.
``outliers_per_ub``
    among the uBs with outliers, the fraction holding 1, 2, ..., micro/2 outliers. The format
    keeps at most micro/2 outliers per uB, so the last bucket also holds the uBs with more.
``frac_ub_over_cap``
    uBs with more than micro/2 outliers (the excess is clipped to inlier range) / all uBs.
``frac_weights_outliers``
    outliers the format keeps (at most micro/2 per uB) / weights.
``adjacency``
    k-sigma candidates whose left or right neighbour in the same uB is also a candidate /
    candidates (before the micro/2 cap, which almost never binds).
    ``frac_weights_adjacent`` (a property) is ``adjacency * frac_weights_outliers``: adjacent
    outliers as a fraction of all weights.
``frac_rowtile_with_outliers``
    for each width in ``rowtile_widths``: row tiles holding at least one outlier uB / row tiles.
    Only those PE rows send their products through ReCoN.
``shape``
    ``[K, N]`` of the full weight (used to weight model averages by weight count).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Iterator

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .errors import ConfigError, InvalidValue, did_you_mean, short_repr
from .loader import TableFolder, data_dir
from .schema import SSM_GEMM_OPS, StrictModel

__all__ = [
    "BLOCK_OPS",
    "SSM_BLOCK_OPS",
    "ALL_BLOCK_OPS",
    "PROFILE_OPS",
    "OpOutlierStats",
    "LayerOutliers",
    "SyntheticParams",
    "WeightFile",
    "Provenance",
    "OutlierProfile",
    "SyntheticRecipe",
    "DEFAULT_RECIPE",
    "load_outlier_profile",
    "available_profiles",
    "load_synthetic_recipe",
    "available_recipes",
    "shipped_recipes",
    "recipes_dir",
    "outliers_dir",
    "profile_to_yaml",
    "DIST_TOLERANCE",
]

# Linear ops of one decoder block, in Strata's names (sim.workload.graph.GEMM_OPS).
BLOCK_OPS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Linear ops of one Mamba block (sim.workload.graph.SSM_GEMM_OPS).
SSM_BLOCK_OPS = SSM_GEMM_OPS
ALL_BLOCK_OPS = BLOCK_OPS + SSM_BLOCK_OPS
TRANSFORMER_PROFILE_OPS = BLOCK_OPS + ("lm_head",)
# the SSM ops come last, so that a transformer op's index (a seed of its synthetic draws)
# is what it was before they existed
PROFILE_OPS = TRANSFORMER_PROFILE_OPS + SSM_BLOCK_OPS

# How far from 1 a stored distribution's sum may be (values are rounded when written).
DIST_TOLERANCE = 1e-4

Frac = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Text = Annotated[str, Field(min_length=1)]

_FROZEN = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Frozen(StrictModel):
    model_config = _FROZEN


# --------------------------------------------------------------------------------------------
# Statistics of one op
# --------------------------------------------------------------------------------------------


class OpOutlierStats(_Frozen):
    """Outlier statistics of one weight matrix (see the module docstring for definitions)."""

    shape: list[PosInt] = Field(min_length=2, max_length=2)  # [K, N] of the full weight
    frac_ub_with_outliers: Frac
    outliers_per_ub: dict[PosInt, Frac]  # count (1 .. micro/2) -> fraction of outlier uBs
    frac_ub_over_cap: Frac = 0.0
    frac_weights_outliers: Frac
    adjacency: Frac
    frac_rowtile_with_outliers: dict[PosInt, Frac]  # row-tile width -> fraction

    @property
    def num_weights(self) -> int:
        k, n = self.shape   # [K, N]
        return k * n

    @property
    def frac_weights_adjacent(self) -> float:
        """Outliers with an outlier neighbour in their uB, as a fraction of all weights."""
        return self.adjacency * self.frac_weights_outliers

    def rowtile(self, width: int) -> float:
        """``frac_rowtile_with_outliers`` for ``width`` (a width the profile stores)."""
        try:
            return self.frac_rowtile_with_outliers[width]
        except KeyError:
            known = sorted(self.frac_rowtile_with_outliers)
            raise ConfigError(
                f"a row-tile width the profile stores ({', '.join(map(str, known))})",
                key="frac_rowtile_with_outliers", got=short_repr(width),
            ) from None

    def mean_outliers_per_outlier_ub(self) -> float:
        """Mean (capped) outlier count of the uBs that have outliers."""
        return sum(c * f for c, f in self.outliers_per_ub.items())


class LayerOutliers(_Frozen):
    """The ops of one decoder block; a model without a gated FFN has no ``gate_proj``; a
    Mamba block has in_proj, x_proj, dt_proj and out_proj instead."""

    q_proj: OpOutlierStats | None = None
    k_proj: OpOutlierStats | None = None
    v_proj: OpOutlierStats | None = None
    o_proj: OpOutlierStats | None = None
    gate_proj: OpOutlierStats | None = None
    up_proj: OpOutlierStats | None = None
    down_proj: OpOutlierStats | None = None
    in_proj: OpOutlierStats | None = None
    x_proj: OpOutlierStats | None = None
    dt_proj: OpOutlierStats | None = None
    out_proj: OpOutlierStats | None = None

    @model_validator(mode="after")
    def _some_op(self) -> "LayerOutliers":
        if not self.present():
            raise InvalidValue("statistics for at least one op (" + ", ".join(ALL_BLOCK_OPS)
                               + ")")
        return self

    def present(self) -> dict[str, OpOutlierStats]:
        """Op name -> statistics, for the ops this layer has, in ALL_BLOCK_OPS order."""
        return {op: s for op in ALL_BLOCK_OPS if (s := getattr(self, op)) is not None}


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------


class SyntheticParams(_Frozen):
    """Knobs of the synthetic weight generator (sim.numerics.outlier_stats.synthetic_matrix).

    A weight is a Gaussian body value (sd 1) unless a *spike* covers it. Spike runs start at a
    position with probability ``base_rate * op_rate[op] * layer factor * row factor * column
    factor`` and cover 1 + G consecutive output channels, G geometric with continuation
    probability ``run_continue``, capped so that a run is at most ``max_run`` long (adjacent
    outliers). A spike is ``+-(spike_min + Exp(spike_scale))`` body sds.
    """

    calibrated_to: Text  # what the targets below come from, in words
    target_frac_ub: Frac  # model average (weighted by weights) of frac_ub_with_outliers
    base_rate: Annotated[float, Field(gt=0, le=0.5, allow_inf_nan=False)]
    run_continue: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    max_run: PosInt = 4
    spike_min: PosFloat = 3.5
    spike_scale: NonNegFloat = 2.0
    row_sigma: NonNegFloat = 0.0  # lognormal sd of the per-input-channel factor (mean 1)
    col_sigma: NonNegFloat = 0.0  # lognormal sd of the per-output-channel factor (mean 1)
    layer_sigma: NonNegFloat = 0.0  # lognormal sd of the per-(layer, op) factor (mean 1)
    edge_first: NonNegInt = 0  # the first edge_first layers ...
    edge_last: NonNegInt = 0  # ... and the last edge_last layers get edge_boost
    edge_boost: PosFloat = 1.0
    op_rate: dict[str, PosFloat] = Field(default_factory=dict)  # op -> factor (default 1)
    sample_rows: PosInt = 128  # each op is generated and measured on a
    sample_cols: PosInt = 1024  # sample_rows x sample_cols slice of its [K, N] weight

    @field_validator("op_rate")
    @classmethod
    def _known_ops(cls, value: dict[str, float]) -> dict[str, float]:
        for op in value:
            if op not in PROFILE_OPS:
                raise InvalidValue(
                    "op names among " + ", ".join(PROFILE_OPS), loc=(op,), got=short_repr(op),
                    hint=did_you_mean(op, PROFILE_OPS),
                )
        return value

    def op_factor(self, op: str) -> float:
        return self.op_rate.get(op, 1.0)


class SyntheticRecipe(_Frozen):
    """How the synthetic generator makes one profile (``workloads/outliers/recipes/<name>.yaml``).

    A shipped profile's recipe names its ``model`` (shapes) and ``seed``; a recipe that leaves
    them open (``null``) is applied to the model being run with the experiment's seed."""

    name: Text
    model: Text | None = None  # workloads/<model>.yaml whose shapes the profile follows
    seed: NonNegInt | None = None
    description: str = ""
    notes: str = ""
    params: SyntheticParams


class WeightFile(_Frozen):
    name: Text  # file name as given (not a full path: profiles travel between machines)
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Provenance(_Frozen):
    """Where the numbers come from, precisely enough to regenerate them."""

    source: Text  # "synthetic, calibrated to ..." or "weights: <file> (sha256 ...)"
    generator: str | None = None  # dotted name of the function that produced the profile
    seed: NonNegInt | None = None
    params: SyntheticParams | None = None
    files: list[WeightFile] = Field(default_factory=list)  # weight files measured
    orientation: Text = "W[K=in, N=out]; HF Linear weights [out, in] are transposed"
    sampling: str = ""  # which part of each weight was measured
    regenerate: str = ""  # a command that writes this file again
    notes: str = ""

    @model_validator(mode="after")
    def _complete(self) -> "Provenance":
        if self.params is not None and self.seed is None:
            raise InvalidValue("a seed (synthetic params are given)", loc=("seed",))
        return self


# --------------------------------------------------------------------------------------------
# The profile
# --------------------------------------------------------------------------------------------


class OutlierProfile(StrictModel):
    """Outlier statistics of every linear op of a model, with their provenance. Frozen."""

    model_config = _FROZEN

    name: Text
    model: Text  # the workloads/<model>.yaml whose shapes the profile follows
    description: str = ""
    k_sigma: PosFloat = 3.0
    micro: Annotated[int, Field(ge=2)] = 8
    macro: PosInt = 128
    rowtile_widths: list[PosInt] = Field(default_factory=lambda: [64, 128], min_length=1)
    num_layers: PosInt
    provenance: Provenance
    layers: dict[NonNegInt, LayerOutliers]
    lm_head: OpOutlierStats | None = None

    _origin: str | None = PrivateAttr(default=None)

    @property
    def origin(self) -> str | None:
        return self._origin

    @property
    def max_per_ub(self) -> int:
        """Most outliers the format keeps in one uB (micro / 2)."""
        return self.micro // 2

    # -- validation ----------------------------------------------------------------------------

    @model_validator(mode="after")
    def _consistent(self) -> "OutlierProfile":
        if self.macro % self.micro:
            raise InvalidValue(f"a multiple of micro ({self.micro})", loc=("macro",),
                               got=str(self.macro))
        widths = self.rowtile_widths
        for i, w in enumerate(widths):
            if w % self.micro:
                raise InvalidValue(f"a multiple of micro ({self.micro})",
                                   loc=("rowtile_widths", i), got=str(w))
        if len(set(widths)) != len(widths) or widths != sorted(widths):
            raise InvalidValue("distinct widths in increasing order", loc=("rowtile_widths",),
                               got=short_repr(widths))
        missing = [i for i in range(self.num_layers) if i not in self.layers]
        extra = sorted(i for i in self.layers if i >= self.num_layers)
        if extra:
            raise InvalidValue(f"layer indices in 0..{self.num_layers - 1}",
                               loc=("layers", extra[0]), got=str(extra[0]))
        if missing:
            raise InvalidValue(f"every layer 0..{self.num_layers - 1}", loc=("layers",),
                               got="no entry for layer" + ("s " if len(missing) > 1 else " ")
                               + short_repr(missing)[1:-1])
        for loc, stats in self._located():
            self._check_op(loc, stats)
        return self

    def _located(self) -> Iterator[tuple[tuple, OpOutlierStats]]:
        for i in sorted(self.layers):
            for op, stats in self.layers[i].present().items():
                yield ("layers", i, op), stats
        if self.lm_head is not None:
            yield ("lm_head",), self.lm_head

    def _check_op(self, loc: tuple, s: OpOutlierStats) -> None:
        cap = self.max_per_ub
        dist = s.outliers_per_ub
        want = list(range(1, cap + 1))
        if sorted(dist) != want:
            bad = next((c for c in sorted(dist) if c not in want), None)
            raise InvalidValue(
                f"the outlier counts 1..{cap} (micro {self.micro} keeps at most {cap} per uB)",
                loc=loc + ("outliers_per_ub",) + ((bad,) if bad is not None else ()),
                got=short_repr(sorted(dist)),
            )
        total = sum(dist.values())
        if s.frac_ub_with_outliers > 0 or total > 0:
            if abs(total - 1.0) > DIST_TOLERANCE:
                raise InvalidValue(
                    f"fractions that sum to 1 (within {DIST_TOLERANCE:g})",
                    loc=loc + ("outliers_per_ub",), got=f"a sum of {total:.6g}",
                )
        if sorted(s.frac_rowtile_with_outliers) != list(self.rowtile_widths):
            raise InvalidValue(
                "one entry per row-tile width (" + ", ".join(map(str, self.rowtile_widths)) + ")",
                loc=loc + ("frac_rowtile_with_outliers",),
                got=short_repr(sorted(s.frac_rowtile_with_outliers)),
            )
        if s.frac_ub_over_cap > s.frac_ub_with_outliers + 1e-9:
            raise InvalidValue(
                f"at most frac_ub_with_outliers ({s.frac_ub_with_outliers:g})",
                loc=loc + ("frac_ub_over_cap",), got=f"{s.frac_ub_over_cap:g}",
            )
        if s.frac_weights_outliers > 0 and s.frac_ub_with_outliers == 0:
            raise InvalidValue(
                "0 when no micro-block has outliers (frac_ub_with_outliers is 0)",
                loc=loc + ("frac_weights_outliers",), got=f"{s.frac_weights_outliers:g}",
            )

    # -- lookups -------------------------------------------------------------------------------

    def ops(self) -> list[str]:
        """Op names present in the blocks (those of layer 0), in BLOCK_OPS order."""
        return list(self.layers[0].present())

    def stats(self, layer: int, op: str) -> OpOutlierStats:
        """Statistics of ``op`` in ``layer``; ``lm_head`` may be asked with any layer (-1)."""
        if op == "lm_head":
            if self.lm_head is None:
                raise ConfigError("a profile with lm_head statistics", file=self._origin,
                                  key="lm_head", got="none stored")
            return self.lm_head
        if layer not in self.layers:
            raise ConfigError(f"a layer index in 0..{self.num_layers - 1}", file=self._origin,
                              key="layers", got=short_repr(layer))
        present = self.layers[layer].present()
        if op not in present:
            raise ConfigError(
                f"an op of layer {layer} (" + ", ".join(present) + ")", file=self._origin,
                key=f"layers.{layer}", got=short_repr(op), hint=did_you_mean(str(op), present),
            )
        return present[op]

    def items(self, include_lm_head: bool = False) -> Iterator[tuple[int, str, OpOutlierStats]]:
        """(layer, op, stats) for every op; lm_head (if asked and stored) as layer -1."""
        for i in sorted(self.layers):
            for op, s in self.layers[i].present().items():
                yield i, op, s
        if include_lm_head and self.lm_head is not None:
            yield -1, "lm_head", self.lm_head

    def mean(self, field: str, *, width: int | None = None, weighted: bool = True,
             include_lm_head: bool = False) -> float:
        """Model average of one statistic over the ops, weighted by the number of weights
        (``weighted=False``: plain mean over ops).

        ``field`` is a stored fraction, ``frac_weights_adjacent``, or
        ``frac_rowtile_with_outliers`` with ``width``. ``adjacency`` is averaged over the
        outliers (weight = outliers), so that it stays "adjacent outliers / outliers".
        """
        num = den = 0.0
        for _, _, s in self.items(include_lm_head):
            value = self._field(s, field, width)
            w = float(s.num_weights) if weighted else 1.0
            if field == "adjacency":
                w *= s.frac_weights_outliers
            num += w * value
            den += w
        return num / den if den else 0.0

    def max(self, field: str, *, width: int | None = None, include_lm_head: bool = False) -> float:
        return max(self._field(s, field, width) for _, _, s in self.items(include_lm_head))

    @staticmethod
    def _field(s: OpOutlierStats, field: str, width: int | None) -> float:
        if field == "frac_rowtile_with_outliers":
            if width is None:
                raise ConfigError("a row-tile width (width=...)", key=field)
            return s.rowtile(width)
        if field == "frac_weights_adjacent":
            return s.frac_weights_adjacent
        if field not in ("frac_ub_with_outliers", "frac_ub_over_cap", "frac_weights_outliers",
                         "adjacency"):
            raise ConfigError(
                "a fraction stored per op (frac_ub_with_outliers, frac_ub_over_cap, "
                "frac_weights_outliers, adjacency, frac_weights_adjacent, "
                "frac_rowtile_with_outliers)", key="field", got=short_repr(field))
        return getattr(s, field)

    def summary(self) -> dict[str, float]:
        """Model averages (weighted by weights) and maxima of the main statistics."""
        out = {
            "frac_ub_with_outliers": self.mean("frac_ub_with_outliers"),
            "frac_weights_outliers": self.mean("frac_weights_outliers"),
            "max_frac_weights_outliers": self.max("frac_weights_outliers"),
            "adjacency": self.mean("adjacency"),
            "frac_weights_adjacent": self.mean("frac_weights_adjacent"),
            "max_frac_weights_adjacent": self.max("frac_weights_adjacent"),
            "frac_ub_over_cap": self.mean("frac_ub_over_cap"),
        }
        for w in self.rowtile_widths:
            out[f"frac_rowtile_with_outliers_{w}"] = self.mean("frac_rowtile_with_outliers",
                                                               width=w)
        return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def outliers_dir() -> Path:
    """``<repo>/workloads/outliers``: where shipped profiles live."""
    return data_dir("workloads") / "outliers"


_PROFILES = TableFolder(outliers_dir, OutlierProfile,
                        "an outlier profile shipped in workloads/outliers", key="outlier_profile",
                        allow_mapping=True)


def available_profiles() -> list[str]:
    """Names of the shipped profiles (file stems in ``workloads/outliers``), sorted."""
    return _PROFILES.names()


def recipes_dir() -> Path:
    """``<repo>/workloads/outliers/recipes``: the synthetic generator's recipes."""
    return outliers_dir() / "recipes"


# The recipe of a model that names no outlier profile (workloads/outliers/recipes/default.yaml).
DEFAULT_RECIPE = "default"

_RECIPES = TableFolder(recipes_dir, SyntheticRecipe,
                       "a synthetic-profile recipe in workloads/outliers/recipes", key="recipe",
                       allow_mapping=True)


def available_recipes() -> list[str]:
    """Names of the recipes (file stems in ``workloads/outliers/recipes``), sorted."""
    return _RECIPES.names()


def load_synthetic_recipe(name_or_path: Any) -> SyntheticRecipe:
    """A recipe by name (``"llama-2-7b"``), path, mapping or SyntheticRecipe."""
    return _RECIPES.load(name_or_path)


def shipped_recipes() -> list[str]:
    """Recipes of shipped profiles: those that fix both the model and the seed."""
    return [n for n in available_recipes()
            if (r := load_synthetic_recipe(n)).model is not None and r.seed is not None]


def load_outlier_profile(name_or_path: Any, overrides: Any = None) -> OutlierProfile:
    """An outlier profile by shipped name (``"llama-2-7b"`` ->
    ``workloads/outliers/llama-2-7b.yaml``), path, mapping or OutlierProfile.

    ``overrides`` take the config loader's forms (``["k_sigma=2.5"]``). Bad names, files or
    values raise :class:`ConfigError` naming the file and the key.
    """
    return _PROFILES.load(name_or_path, overrides)
# --------------------------------------------------------------------------------------------
# Writing (deterministic text, one op per line)
# --------------------------------------------------------------------------------------------


def _num(x: Any) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"cannot write a non-finite number {x!r}")
    text = repr(x)
    if "e" in text:
        mant, exp = text.split("e")
        if "." not in mant:
            mant += ".0"
        text = f"{mant}e{exp}"
    return text


def _str(s: str) -> str:
    import json

    return json.dumps(s, ensure_ascii=False)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str):
        return _str(value)
    if value is None:
        return "null"
    return _num(value)


_OP_KEYS = ("shape", "frac_ub_with_outliers", "outliers_per_ub", "frac_ub_over_cap",
            "frac_weights_outliers", "adjacency", "frac_rowtile_with_outliers")


def _op_line(s: OpOutlierStats) -> str:
    d = s.model_dump()
    return _flow({k: d[k] for k in _OP_KEYS})


def profile_to_yaml(profile: OutlierProfile, header: str = "") -> str:
    """The YAML text of a profile: ``header`` as comment lines, then the keys, one op per line.

    The text is a function of the profile alone (no dates, no paths), so regenerating a
    profile with the same inputs gives the same bytes."""
    lines = [f"# {h}".rstrip() for h in header.splitlines()] if header else []
    p = profile
    lines += [
        f"name: {_str(p.name)}",
        f"model: {_str(p.model)}",
        f"description: {_str(p.description)}",
        f"k_sigma: {_num(p.k_sigma)}",
        f"micro: {p.micro}",
        f"macro: {p.macro}",
        f"rowtile_widths: {_flow(p.rowtile_widths)}",
        f"num_layers: {p.num_layers}",
        "provenance:",
    ]
    prov = p.provenance
    lines.append(f"  source: {_str(prov.source)}")
    if prov.generator is not None:
        lines.append(f"  generator: {_str(prov.generator)}")
    if prov.seed is not None:
        lines.append(f"  seed: {prov.seed}")
    if prov.params is not None:
        lines.append("  params:")
        for key, value in prov.params.model_dump().items():
            lines.append(f"    {key}: {_flow(value)}")
    if prov.files:
        lines.append("  files:")
        for f in prov.files:
            lines.append(f"    - {{name: {_str(f.name)}, sha256: {f.sha256}}}")
    for key in ("orientation", "sampling", "regenerate", "notes"):
        value = getattr(prov, key)
        if value:
            lines.append(f"  {key}: {_str(value)}")
    lines.append("layers:")
    for i in sorted(p.layers):
        lines.append(f"  {i}:")
        for op, s in p.layers[i].present().items():
            lines.append(f"    {op}: {_op_line(s)}")
    if p.lm_head is not None:
        lines.append(f"lm_head: {_op_line(p.lm_head)}")
    return "\n".join(lines) + "\n"

