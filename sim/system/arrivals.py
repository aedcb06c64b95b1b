"""Workloads of requests: arrival processes and prompt/output length distributions, seeded.

A serving experiment's ``workload:`` section says when requests arrive and how long their
prompts and outputs are. :class:`WorkloadConfig` is its schema; :func:`build_requests` turns it
into a requests frame (``request_id, arrival_s, prompt_tokens, output_tokens``, see
:mod:`sim.system.requests`). The same config and seed give the identical frame, byte for byte.

The section
-----------

::

    workload:
      trace: synthetic_conv_1k      # optional: a trace name or a path to a CSV (Azure or
                                    # plain schema), relative to the experiment file; a name
                                    # is <name>.csv in traces/, then in each folder of
                                    # $STRATA_TRACES, then in ../shared/traces beside the
                                    # checkout (trace_search_path)
      arrivals:                     # default with a trace: {process: trace}
        process: poisson            # trace | poisson | gamma | uniform | deterministic
        rate: 5.0                   # requests per second
      lengths:                      # each default with a trace: {dist: trace}
        prompt: {dist: lognormal, mean: 1155, std: 1109, max: 8192}
        output: {dist: empirical}   # resampled from the trace's output lengths
      requests: 1000                # at most this many requests
      duration_s: 600               # ... and only those arriving before this time
      seed: 0

Arrival processes (``arrivals.process``); every synthetic process puts its first request at
t = 0 and the next ones at the running sum of inter-arrival gaps drawn i.i.d.:

==============  ==============================  =============================================
process         keys                            inter-arrival gaps
==============  ==============================  =============================================
trace           ``scale`` or ``rate``,          the trace's own times, divided by ``scale`` (a
                ``window_s: [t0, t1]``          rate multiplier: 2 = twice as fast), or scaled
                                                so the mean rate is ``rate``; with a window,
                                                only requests with t0 <= t < t1 (trace time),
                                                shifted so t0 is 0
poisson         ``rate``                        exponential, mean 1/rate (CV 1)
gamma           ``rate``, ``cv``                gamma with mean 1/rate and coefficient of
                                                variation ``cv`` (shape 1/cv²): cv > 1 is
                                                bursty, cv < 1 regular, cv = 1 is Poisson
uniform         ``rate``, ``spread`` (def. 1)   uniform on [(1-s)/rate, (1+s)/rate]
deterministic   ``rate``                        exactly 1/rate
==============  ==============================  =============================================

Length distributions (``lengths.prompt``, ``lengths.output``); draws are rounded to integers and
clipped to ``[min, max]`` (default ``min`` 1, ``max`` 2**31-1) where the distribution has them:

==================  ==========================  ===============================================
dist                keys                        value
==================  ==========================  ===============================================
trace               (none)                      the trace's column, row by row: with trace
                                                arrivals the replayed rows' own lengths; with
                                                synthetic arrivals the first n rows
empirical           (none)                      rows of the trace drawn with replacement; when
                                                prompt and output are both empirical they draw
                                                the same rows, so their joint distribution is
                                                kept
fixed               ``value``                   always ``value``
uniform             ``low``, ``high``           integers uniform on [low, high], both included
normal              ``mean``, ``std``,          normal(mean, std)
                    ``min``, ``max``
lognormal           ``mean``, ``std``,          log-normal whose own mean and standard
                    ``min``, ``max``            deviation (in tokens, before clipping) are
                                                ``mean`` and ``std``
lognormal_mixture   ``weights``, ``medians``,   component i with probability weights[i]/sum,
                    ``sigmas``, ``min``,        then exp(normal(ln medians[i], sigmas[i]))
                    ``max``
zipf                ``a``, ``max``, ``min``     k in [min, max] with probability proportional
                                                to (k - min + 1)^-a
==================  ==========================  ===============================================

``requests`` and ``duration_s`` bound how many requests there are; a synthetic process needs at
least one of them. Randomness comes from four independent streams of
``numpy.random.SeedSequence(seed)`` (arrivals, prompt, output, trace rows), so changing the
output distribution does not move the arrival times, and vice versa.

Errors are one-line :class:`~sim.config.errors.ConfigError` naming the key
(``workload.arrivals.cv: expected no 'cv' for process 'poisson' (cv is a key of gamma)``).

New processes and distributions register by name (:func:`register_arrival_process`,
:func:`register_length_distribution`), with the keys they take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from sim.config.errors import ConfigError, InvalidValue, did_you_mean, short_repr
from sim.config.loader import data_dir, load_validated
from sim.config.schema import (MAX_SIZE, FrozenList, Name, NonNegFloat, PosFloat, PosInt, Seed,
                               StrictModel)

from .requests import read_trace, requests_frame

__all__ = [
    "ArrivalsConfig",
    "LengthConfig",
    "LengthsConfig",
    "WorkloadConfig",
    "build_requests",
    "load_workload",
    "register_arrival_process",
    "register_length_distribution",
    "arrival_processes",
    "length_distributions",
    "resolve_trace",
    "trace_search_path",
]

# ------------------------------------------------------------------------------------------
# Registries: a process or distribution is a draw function plus the keys it takes
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    name: str
    draw: Callable | None     # None: handled by build_requests (needs the trace)
    required: tuple[str, ...]
    optional: tuple[str, ...]


_PROCESSES: dict[str, _Kind] = {}
_DISTRIBUTIONS: dict[str, _Kind] = {}


def register_arrival_process(name: str, *, required=(), optional=()):
    """Register ``draw(rng, size, cfg) -> gaps`` (seconds, ``size`` i.i.d. inter-arrival gaps
    from ``numpy.random.Generator`` ``rng``; ``cfg`` is the :class:`ArrivalsConfig`) as
    ``process: name``, taking the ``ArrivalsConfig`` keys ``required`` and ``optional``."""
    def deco(draw):
        _PROCESSES[name] = _Kind(name, draw, tuple(required), tuple(optional))
        return draw
    return deco


def register_length_distribution(name: str, *, required=(), optional=()):
    """Register ``draw(rng, n, cfg) -> values`` (``n`` real or integer lengths, rounded and
    clipped to ``[cfg.min, cfg.max]`` afterwards) as ``dist: name``, taking the
    ``LengthConfig`` keys ``required`` and ``optional``."""
    def deco(draw):
        _DISTRIBUTIONS[name] = _Kind(name, draw, tuple(required), tuple(optional))
        return draw
    return deco


def arrival_processes() -> list[str]:
    return sorted(_PROCESSES)


def length_distributions() -> list[str]:
    return sorted(_DISTRIBUTIONS)


_PROCESSES["trace"] = _Kind("trace", None, (), ("scale", "rate", "window_s"))
_DISTRIBUTIONS["trace"] = _Kind("trace", None, (), ())
_DISTRIBUTIONS["empirical"] = _Kind("empirical", None, (), ())


@register_arrival_process("poisson", required=("rate",))
def _poisson(rng, size, cfg):
    return rng.exponential(1.0 / cfg.rate, size)


@register_arrival_process("gamma", required=("rate", "cv"))
def _gamma(rng, size, cfg):
    shape = 1.0 / cfg.cv ** 2
    return rng.gamma(shape, 1.0 / (cfg.rate * shape), size)


@register_arrival_process("uniform", required=("rate",), optional=("spread",))
def _uniform_gaps(rng, size, cfg):
    mean = 1.0 / cfg.rate
    s = 1.0 if cfg.spread is None else cfg.spread
    return rng.uniform(mean * (1 - s), mean * (1 + s), size)


@register_arrival_process("deterministic", required=("rate",))
def _deterministic(rng, size, cfg):
    return np.full(size, 1.0 / cfg.rate)


@register_length_distribution("fixed", required=("value",))
def _fixed(rng, n, cfg):
    return np.full(n, cfg.value, dtype=np.int64)


@register_length_distribution("uniform", required=("low", "high"))
def _uniform_len(rng, n, cfg):
    return rng.integers(cfg.low, cfg.high, n, endpoint=True)


@register_length_distribution("normal", required=("mean", "std"), optional=("min", "max"))
def _normal(rng, n, cfg):
    return rng.normal(cfg.mean, cfg.std, n)


@register_length_distribution("lognormal", required=("mean", "std"), optional=("min", "max"))
def _lognormal(rng, n, cfg):
    # the log-normal's own moments: var/mean^2 = exp(sigma^2) - 1, mean = exp(mu + sigma^2/2)
    sigma2 = np.log1p((cfg.std / cfg.mean) ** 2)
    return rng.lognormal(np.log(cfg.mean) - sigma2 / 2, np.sqrt(sigma2), n)


@register_length_distribution("lognormal_mixture", required=("weights", "medians", "sigmas"),
                              optional=("min", "max"))
def _lognormal_mixture(rng, n, cfg):
    w = np.asarray(cfg.weights, dtype=np.float64)
    comp = np.searchsorted(np.cumsum(w) / w.sum(), rng.random(n), side="right")
    comp = np.minimum(comp, len(w) - 1)          # rounding at the last edge
    mu = np.log(np.asarray(cfg.medians, dtype=np.float64))[comp]
    sigma = np.asarray(cfg.sigmas, dtype=np.float64)[comp]
    return np.exp(mu + sigma * rng.standard_normal(n))


ZIPF_MAX_SUPPORT = 10_000_000   # values a zipf length can take (one CDF entry each)


@register_length_distribution("zipf", required=("a", "max"), optional=("min",))
def _zipf(rng, n, cfg):
    lo = 1 if cfg.min is None else cfg.min
    ranks = np.arange(1, cfg.max - lo + 2, dtype=np.float64)
    cdf = np.cumsum(ranks ** -cfg.a)
    k = np.searchsorted(cdf / cdf[-1], rng.random(n), side="right")
    return lo + np.minimum(k, len(ranks) - 1)


# ------------------------------------------------------------------------------------------
# Schema
# ------------------------------------------------------------------------------------------

_Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
_Window = Annotated[FrozenList[NonNegFloat], Field(min_length=2, max_length=2)]


def _check_keys(model: StrictModel, tag_key: str, kinds: dict[str, _Kind], what: str) -> None:
    """The registered kind named by ``tag_key`` exists and exactly its keys are set."""
    tag = getattr(model, tag_key)
    if tag not in kinds:
        raise InvalidValue(f"a known {what} ({', '.join(sorted(kinds))})", loc=(tag_key,),
                           got=short_repr(tag), hint=did_you_mean(tag, kinds))
    kind = kinds[tag]
    params = [f for f in type(model).model_fields if f != tag_key]
    for key in params:
        if getattr(model, key) is not None and key not in kind.required + kind.optional:
            owners = [k for k, v in sorted(kinds.items()) if key in v.required + v.optional]
            hint = f"{key} is a key of {', '.join(owners)}" if owners else None
            raise InvalidValue(f"no {key!r} for {tag_key} {tag!r} (its keys: "
                               f"{', '.join(kind.required + kind.optional) or 'none'})",
                               loc=(key,), got=short_repr(getattr(model, key)), hint=hint)
    for key in kind.required:
        if getattr(model, key) is None:
            raise InvalidValue(f"a value ({tag_key} {tag!r} requires {key!r})", loc=(key,))


class ArrivalsConfig(StrictModel):
    """When requests arrive (see the module docstring for each process and its keys)."""

    process: Name
    rate: PosFloat | None = None            # requests per second
    cv: PosFloat | None = None              # gamma: coefficient of variation of the gaps
    spread: _Fraction | None = None         # uniform: half-width of the gaps / their mean
    scale: PosFloat | None = None           # trace: rate multiplier
    window_s: _Window | None = None         # trace: [t0, t1) in trace seconds

    @model_validator(mode="after")
    def _keys(self):
        _check_keys(self, "process", _PROCESSES, "arrival process")
        if self.process == "trace" and self.scale is not None and self.rate is not None:
            raise InvalidValue("either scale (a rate multiplier) or rate (a target rate) for "
                               "process 'trace', not both", loc=("rate",))
        if self.window_s is not None and not self.window_s[0] < self.window_s[1]:
            raise InvalidValue("a window [t0, t1] with t0 < t1", loc=("window_s",),
                               got=short_repr(list(self.window_s)))
        return self


class LengthConfig(StrictModel):
    """How many tokens a prompt or an output has (see the module docstring)."""

    dist: Name
    value: PosInt | None = None             # fixed
    low: PosInt | None = None               # uniform
    high: PosInt | None = None
    mean: PosFloat | None = None            # normal, lognormal
    std: NonNegFloat | None = None
    min: PosInt | None = None               # clip bounds (default 1 and 2**31-1)
    max: PosInt | None = None
    a: PosFloat | None = None               # zipf exponent
    weights: FrozenList[PosFloat] | None = None     # lognormal_mixture
    medians: FrozenList[PosFloat] | None = None
    sigmas: FrozenList[NonNegFloat] | None = None

    @model_validator(mode="after")
    def _keys(self):
        _check_keys(self, "dist", _DISTRIBUTIONS, "length distribution")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise InvalidValue(f"high >= low ({self.low})", loc=("high",), got=str(self.high))
        if self.min is not None and self.max is not None and self.min > self.max:
            raise InvalidValue(f"max >= min ({self.min})", loc=("max",), got=str(self.max))
        if self.dist == "zipf" and self.max - (self.min or 1) >= ZIPF_MAX_SUPPORT:
            raise InvalidValue(f"max - min < {ZIPF_MAX_SUPPORT} for dist 'zipf' (one "
                               "probability per value)", loc=("max",), got=str(self.max))
        if self.weights is not None:
            n = len(self.weights)
            if n == 0:
                raise InvalidValue("at least one component", loc=("weights",), got="[]")
            for key in ("medians", "sigmas"):
                if len(getattr(self, key)) != n:
                    raise InvalidValue(f"{n} values, one per weight", loc=(key,),
                                       got=f"{len(getattr(self, key))}")
        return self


class LengthsConfig(StrictModel):
    prompt: LengthConfig | None = None      # default {dist: trace} when there is a trace
    output: LengthConfig | None = None


_TRACE_DEFAULT_ARRIVALS = ArrivalsConfig(process="trace")
_TRACE_DEFAULT_LENGTH = LengthConfig(dist="trace")


class WorkloadConfig(StrictModel):
    """The ``workload:`` section of a serving experiment (the module docstring documents it).

    Nest it as the ``workload`` field of an experiment schema, so that error keys read
    ``workload.arrivals.rate``; :func:`load_workload` validates the section alone.
    """

    trace: Name | None = None
    arrivals: ArrivalsConfig | None = None
    lengths: LengthsConfig = Field(default_factory=LengthsConfig)
    requests: PosInt | None = None
    duration_s: PosFloat | None = None
    seed: Seed = 0

    @model_validator(mode="after")
    def _complete(self):
        if self.trace is None:
            if self.arrivals is None:
                raise InvalidValue("a value (required when no trace: is given)",
                                   loc=("arrivals",))
            for side in ("prompt", "output"):
                dist = getattr(self.lengths, side)
                if dist is None:
                    raise InvalidValue("a value (required when no trace: is given)",
                                       loc=("lengths", side))
                if dist.dist in ("trace", "empirical"):
                    raise InvalidValue(f"a workload trace: for dist {dist.dist!r}",
                                       loc=("lengths", side, "dist"))
            if self.arrivals.process == "trace":
                raise InvalidValue("a workload trace: for process 'trace'",
                                   loc=("arrivals", "process"))
        if self.arrivals_config.process != "trace" and self.requests is None \
                and self.duration_s is None:
            raise InvalidValue("a value: requests or duration_s (how many requests a "
                               f"{self.arrivals_config.process!r} process makes)",
                               loc=("requests",))
        return self

    @property
    def arrivals_config(self) -> ArrivalsConfig:
        return self.arrivals if self.arrivals is not None else _TRACE_DEFAULT_ARRIVALS

    def length_config(self, side: str) -> LengthConfig:
        dist = getattr(self.lengths, side)
        return dist if dist is not None else _TRACE_DEFAULT_LENGTH


class _WorkloadSection(StrictModel):
    workload: WorkloadConfig


def load_workload(ref: Any, overrides: Any = None, source: str | None = None) -> WorkloadConfig:
    """Validate a ``workload:`` section given alone: a mapping of its keys, or a YAML file
    holding ``workload: {...}``. Error keys read ``workload.<key>``, as in an experiment."""
    if isinstance(ref, WorkloadConfig):
        ref = {"workload": ref.model_dump(exclude_defaults=True)}
    elif isinstance(ref, dict) and "workload" not in ref:
        ref = {"workload": ref}
    return load_validated(ref, _WorkloadSection, overrides, source=source).workload


# ------------------------------------------------------------------------------------------
# Building the requests frame
# ------------------------------------------------------------------------------------------

MAX_REQUESTS = 50_000_000   # requests one workload may make (about 1.2 GB of frame)
_STREAMS = ("arrivals", "prompt", "output", "rows")
_CHUNK = 4096   # gaps are drawn in chunks of this size (a stream's draws do not depend on it)


#: environment variable naming extra folders (os.pathsep-separated) that trace names resolve in
TRACES_ENV = "STRATA_TRACES"


def trace_search_path() -> list[Path]:
    """Folders a bare trace name is looked up in, in order: the shipped ``traces/``, each
    folder of ``$STRATA_TRACES``, then ``../shared/traces`` beside the checkout (traces that
    are not part of the repository, such as the Azure ones, live there)."""
    folders = [data_dir("traces")]
    folders += [Path(d).expanduser() for d in os.environ.get(TRACES_ENV, "").split(os.pathsep)
                if d]
    folders.append(data_dir("traces").parent.parent / "shared" / "traces")
    out = []
    for f in folders:
        if f not in out:
            out.append(f)
    return out


def resolve_trace(ref: str, base_dir: str | os.PathLike | None = None, *,
                  file: str | None = None, key: str = "workload.trace") -> Path:
    """The CSV a ``trace:`` names: a path (relative to ``base_dir``, the experiment file's
    folder, else the working directory) or a name, ``<name>.csv`` in the first folder of
    :func:`trace_search_path` that has it."""
    p = Path(ref).expanduser()
    if "/" in ref or os.sep in ref or p.suffix:
        if not p.is_absolute():
            p = Path(base_dir or ".") / p
        if p.is_file():
            return p
        raise ConfigError("a path to an existing trace CSV", file=file, key=key,
                          got=short_repr(ref), hint=f"no file at {p}")
    search = trace_search_path()
    for folder in search:
        if (folder / f"{ref}.csv").is_file():
            return folder / f"{ref}.csv"
    names = sorted({q.stem for f in search if f.is_dir() for q in f.glob("*.csv")})
    raise ConfigError(f"a trace name ({', '.join(names) or 'none'}) or a path to a CSV file",
                      file=file, key=key, got=short_repr(ref),
                      hint=did_you_mean(ref, names) or
                      f"no {ref}.csv in {', '.join(str(f) for f in search)} (${TRACES_ENV} "
                      "adds folders)")


def build_requests(cfg: WorkloadConfig, *, base_dir: str | os.PathLike | None = None,
                   trace: pd.DataFrame | None = None, source: str | None = None,
                   key: str = "workload") -> pd.DataFrame:
    """The requests frame a workload config describes.

    Args:
        cfg: the validated section.
        base_dir: folder that a relative ``trace:`` path is relative to.
        trace: an already-read requests frame to use instead of reading ``cfg.trace``.
        source, key: the file and key path of the section, for errors found while building.
    """
    if trace is None and cfg.trace is not None:
        trace = read_trace(resolve_trace(cfg.trace, base_dir, file=source, key=f"{key}.trace"))
    streams = np.random.SeedSequence(cfg.seed).spawn(len(_STREAMS))
    seeds = dict(zip(_STREAMS, streams))
    arr = cfg.arrivals_config
    if arr.process == "trace":
        arrival, rows = _replay(cfg, trace, source, key)
    else:
        arrival = _synthetic_arrivals(cfg, np.random.default_rng(seeds["arrivals"]), source,
                                      key)
        rows = np.arange(len(arrival))
    n = len(arrival)
    columns = {}
    for side, column in (("prompt", "prompt_tokens"), ("output", "output_tokens")):
        dist = cfg.length_config(side)
        where = f"{key}.lengths.{side}"
        if dist.dist == "trace":
            if arr.process != "trace" and n > len(trace):
                raise ConfigError(f"at most {len(trace)} requests (the trace's rows) with dist "
                                  "'trace' and synthetic arrivals; use dist 'empirical' to "
                                  "draw more", file=source, key=f"{key}.requests",
                                  got=str(cfg.requests or n))
            columns[column] = trace[column].to_numpy()[rows]
        elif dist.dist == "empirical":
            # one fresh stream per side from the same seed: both sides pick the same rows
            pick = np.random.default_rng(seeds["rows"]).integers(0, len(trace), n)
            columns[column] = trace[column].to_numpy()[pick]
        else:
            draw = _DISTRIBUTIONS[dist.dist].draw
            values = draw(np.random.default_rng(seeds[side]), n, dist)
            columns[column] = _to_tokens(values, dist)
        if n and columns[column].min() < 1:       # a registered draw that broke its contract
            raise ConfigError("lengths >= 1", file=source, key=where,
                              got=str(int(columns[column].min())))
    return requests_frame(arrival, columns["prompt_tokens"], columns["output_tokens"])


def _to_tokens(values: np.ndarray, dist: LengthConfig) -> np.ndarray:
    lo = 1 if dist.min is None else dist.min
    hi = MAX_SIZE if dist.max is None else dist.max
    return np.clip(np.rint(np.asarray(values, dtype=np.float64)), lo, hi).astype(np.int64)


def _synthetic_arrivals(cfg: WorkloadConfig, rng: np.random.Generator, source,
                        key) -> np.ndarray:
    draw = _PROCESSES[cfg.arrivals_config.process].draw
    limit = cfg.requests
    if limit is not None and limit > MAX_REQUESTS:
        raise ConfigError(f"at most {MAX_REQUESTS:,} requests", file=source,
                          key=f"{key}.requests", got=str(limit))
    rate = cfg.arrivals_config.rate
    if limit is None and rate is not None and rate * cfg.duration_s > MAX_REQUESTS:
        raise ConfigError(f"a duration_s that holds at most {MAX_REQUESTS:,} requests at rate "
                          f"{rate:g} (or a requests: limit)", file=source,
                          key=f"{key}.duration_s", got=f"{cfg.duration_s:g}")
    chunks, total, count = [], 0.0, 0
    # the first request comes at t = 0, request i at the sum of the first i gaps
    while True:
        gaps = np.asarray(draw(rng, _CHUNK, cfg.arrivals_config), dtype=np.float64)
        chunks.append(gaps)
        count += len(gaps)
        total += float(gaps.sum())
        if (limit is not None and count + 1 >= limit) or \
                (limit is None and total >= cfg.duration_s):
            break
        if count >= MAX_REQUESTS:
            raise ConfigError(f"a duration_s that holds at most {MAX_REQUESTS:,} requests "
                              "(or a requests: limit)", file=source, key=f"{key}.duration_s",
                              got=f"{cfg.duration_s:g}")
    times = np.concatenate([[0.0], np.cumsum(np.concatenate(chunks))])
    if limit is not None:
        times = times[:limit]
    if cfg.duration_s is not None:
        times = times[times < cfg.duration_s]
    return times


def _replay(cfg: WorkloadConfig, trace: pd.DataFrame, source, key) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    arr = cfg.arrivals_config
    t = trace["arrival_s"].to_numpy()
    rows = np.arange(len(t))
    origin = 0.0
    if arr.window_s is not None:
        t0, t1 = arr.window_s
        rows = rows[(t >= t0) & (t < t1)]
        origin = t0
        if not rows.size:
            raise ConfigError(f"a window holding requests (the trace spans {t[0]:g} to "
                              f"{t[-1]:g} s)", file=source, key=f"{key}.arrivals.window_s",
                              got=short_repr(list(arr.window_s)))
    if cfg.requests is not None:
        rows = rows[:cfg.requests]
    times = t[rows] - origin
    if arr.scale is not None:
        times = times / arr.scale
    elif arr.rate is not None:
        span = times[-1] - times[0]
        if len(times) < 2 or span <= 0:
            raise ConfigError("at least two requests at different times to scale the trace to "
                              "a rate", file=source, key=f"{key}.arrivals.rate",
                              got=f"{len(times)} request(s) over {span:g} s")
        times = times / (arr.rate * span / (len(times) - 1))
    if cfg.duration_s is not None:
        keep = times < cfg.duration_s
        times, rows = times[keep], rows[keep]
    return times, rows
