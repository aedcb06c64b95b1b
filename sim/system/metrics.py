"""Serving metrics: latencies, SLO attainment, goodput, throughput, energy, series over time.

Inputs
------
A **requests frame of a run**: one row per request with the columns ``request_id, arrival_s,
client, first_token_s, finish_s, prompt_tokens, output_tokens, status``; ``status`` is
``"completed"`` or ``"rejected:<reason>"``. Times are seconds on the simulation clock. A rejected
request may have NaN first-token and finish times (or the time it was rejected as ``finish_s``).
An optional ``preemptions`` column counts preemptions per request.

A **steps frame**: one row per engine step with ``client, kind, start_s, end_s, sequences,
padded_sequences, tokens, context_tokens, kv_blocks_used``.

Definitions
-----------
- TTFT = first_token_s - arrival_s; E2E = finish_s - arrival_s (completed requests).
- TPOT = (finish_s - first_token_s) / (output_tokens - 1), for completed requests with more than
  one output token (a one-token request has no decode phase and no TPOT).
- Inter-token latency (ITL) = the gaps between consecutive output tokens, pooled over all
  requests; it needs the gaps themselves (``itl_s``), since TPOT is only their per-request mean.
- Percentiles: the linear interpolation between order statistics (Hyndman and Fan's type 7,
  numpy's default ``method="linear"``): for n sorted values x[0..n-1] and q in [0, 100],
  h = (n - 1) q / 100 and P_q = x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h]).
  :func:`percentile` computes it so that an infinite value (a rejected request, see below) in
  the upper neighbour makes the percentile infinite instead of NaN.
- Latency statistics (:func:`latency_stats`: mean, P50, P90, P99) are over completed requests.
- SLO checks count every request: a rejected request never gets its first token, so its TTFT and
  TPOT are +inf there. Requests with one output token have no TPOT and do not enter TPOT checks.
- Rates divide by the run's span, ``duration_s``: from the first arrival to the last event
  (finish or arrival) unless given.

SLO table
---------
:data:`HERMES_SLO` encodes Table II of HERMES (arXiv 2504.09775 v2, §V-A) as data: base TTFT
250 ms (1 s for RAG and KV-retrieval pipelines, :data:`HERMES_SLO_RETRIEVAL`), base TPOT 25 ms,
allowed slowdowns at P50/P90/P99 of 2x/3x/6x (TTFT) and 1.25x/1.5x/5x (TPOT); all six must hold.
:func:`slo_attainment` checks the six at once. Per request, a request *meets the SLO at tier p*
when it completed with TTFT <= the P-p TTFT limit and TPOT <= the P-p TPOT limit; goodput at
tier p is the rate of such requests (and of their output tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np
import pandas as pd

__all__ = [
    "SloTable",
    "HERMES_SLO",
    "HERMES_SLO_RETRIEVAL",
    "SLO_TABLES",
    "RUN_COLUMNS",
    "STEP_COLUMNS",
    "percentile",
    "latency_stats",
    "weighted_latency_stats",
    "request_latencies",
    "slo_attainment",
    "meets_slo",
    "goodput",
    "throughput",
    "tokens_per_joule",
    "run_duration",
    "queue_length",
    "requests_in_system",
    "batch_size",
    "kv_usage",
    "value_at",
    "time_weighted_mean",
    "summarize",
    "comparison_rows",
]

RUN_COLUMNS = ("request_id", "arrival_s", "client", "first_token_s", "finish_s",
               "prompt_tokens", "output_tokens", "status")
STEP_COLUMNS = ("client", "kind", "start_s", "end_s", "sequences", "padded_sequences",
                "tokens", "context_tokens", "kv_blocks_used")
PERCENTILES = (50, 90, 99)
COMPLETED = "completed"
REJECTED = "rejected:"


# ------------------------------------------------------------------------------------------
# The SLO table
# ------------------------------------------------------------------------------------------


def _frozen(m: Mapping) -> Mapping:
    return MappingProxyType(dict(m))


@dataclass(frozen=True)
class SloTable:
    """Latency SLOs as a base per metric and an allowed slowdown per percentile: the limit of
    metric m at percentile p is ``base[m] * slowdown[m][p]``."""

    name: str
    source: str
    ttft_base_s: float
    tpot_base_s: float
    ttft_slowdown: Mapping[int, float] = field(default_factory=dict)
    tpot_slowdown: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "ttft_slowdown", _frozen(self.ttft_slowdown))
        object.__setattr__(self, "tpot_slowdown", _frozen(self.tpot_slowdown))

    def limit(self, metric: str, p: int) -> float:
        if metric == "ttft":
            return self.ttft_base_s * self.ttft_slowdown[p]
        if metric == "tpot":
            return self.tpot_base_s * self.tpot_slowdown[p]
        raise ValueError(f"SLO metric 'ttft' or 'tpot', got {metric!r}")

    @property
    def tiers(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.ttft_slowdown) & set(self.tpot_slowdown)))

    def rows(self) -> list[tuple[str, int, float]]:
        """(metric, percentile, limit_s) of every SLO in the table."""
        return [(m, p, self.limit(m, p)) for m, table in
                (("ttft", self.ttft_slowdown), ("tpot", self.tpot_slowdown))
                for p in sorted(table)]


_HERMES_SOURCE = ("HERMES, Bambhaniya et al., 'Understanding and Optimizing Multi-Stage AI "
                  "Inference Pipelines', arXiv 2504.09775 v2 (2025), Table II, Sec. V-A")
HERMES_SLO = SloTable(
    name="hermes", source=_HERMES_SOURCE, ttft_base_s=0.250, tpot_base_s=0.025,
    ttft_slowdown={50: 2.0, 90: 3.0, 99: 6.0}, tpot_slowdown={50: 1.25, 90: 1.5, 99: 5.0})
HERMES_SLO_RETRIEVAL = SloTable(
    name="hermes_retrieval", source=_HERMES_SOURCE + " (RAG and KV-retrieval pipelines)",
    ttft_base_s=1.0, tpot_base_s=0.025,
    ttft_slowdown={50: 2.0, 90: 3.0, 99: 6.0}, tpot_slowdown={50: 1.25, 90: 1.5, 99: 5.0})
SLO_TABLES: Mapping[str, SloTable] = _frozen({t.name: t for t in (HERMES_SLO,
                                                                    HERMES_SLO_RETRIEVAL)})


# ------------------------------------------------------------------------------------------
# Percentiles and per-request latencies
# ------------------------------------------------------------------------------------------


def percentile(values, q: float) -> float:
    """The type-7 (linear) percentile of ``values`` (see the module docstring); NaN values
    are dropped, +inf is kept as a value larger than all others; NaN for no values."""
    x = np.asarray(values, dtype=np.float64)
    x = np.sort(x[~np.isnan(x)])
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q in [0, 100], got {q}")
    if x.size == 0:
        return math.nan
    h = (x.size - 1) * (q / 100.0)
    lo = int(math.floor(h))
    frac = h - lo
    if frac == 0 or lo + 1 >= x.size:
        return float(x[lo])
    a, b = x[lo], x[lo + 1]
    if math.isinf(b):
        return math.inf
    return float(a + frac * (b - a))


def latency_stats(values) -> dict:
    """``{count, mean, p50, p90, p99, max}`` of the non-NaN values (NaN where there are none)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    out = {"count": int(x.size), "mean": float(x.mean()) if x.size else math.nan}
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(x, p)
    out["max"] = float(x.max()) if x.size else math.nan
    return out


def weighted_latency_stats(values, counts) -> dict:
    """:func:`latency_stats` of a sample given as distinct ``values`` with ``counts``
    (non-negative integers): the same type-7 percentiles as over the sample written out, without
    writing it out (a day of traffic has tens of millions of inter-token gaps)."""
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(counts, dtype=np.int64)
    keep = ~np.isnan(v) & (c > 0)
    v, c = v[keep], c[keep]
    order = np.argsort(v, kind="stable")
    v, c = v[order], c[order]
    n = int(c.sum())
    out = {"count": n, "mean": float(np.dot(v, c) / n) if n else math.nan}
    ends = np.cumsum(c)                 # x[i] = v[j] for ends[j-1] <= i < ends[j]

    def at(i):
        return v[int(np.searchsorted(ends, i, side="right"))]
    for p in PERCENTILES:
        if not n:
            out[f"p{p}"] = math.nan
            continue
        h = (n - 1) * (p / 100.0)
        lo = int(math.floor(h))
        frac = h - lo
        a = at(lo)
        if frac == 0 or lo + 1 >= n:
            out[f"p{p}"] = float(a)
            continue
        b = at(lo + 1)
        out[f"p{p}"] = math.inf if math.isinf(b) else float(a + frac * (b - a))
    out["max"] = float(v[-1]) if n else math.nan
    return out


def _check_run(requests: pd.DataFrame) -> None:
    missing = [c for c in RUN_COLUMNS if c not in requests.columns]
    if missing:
        raise ValueError(f"a requests frame needs the columns {', '.join(RUN_COLUMNS)}; "
                         f"missing {', '.join(missing)}")
    status = requests["status"].astype(str)
    ok = (status == COMPLETED) | status.str.startswith(REJECTED)
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise ValueError(f"status 'completed' or 'rejected:<reason>', got "
                         f"{status.iloc[i]!r} for request {requests['request_id'].iloc[i]}")
    done = (status == COMPLETED).to_numpy()
    a = requests["arrival_s"].to_numpy(dtype=np.float64)[done]
    f = requests["first_token_s"].to_numpy(dtype=np.float64)[done]
    e = requests["finish_s"].to_numpy(dtype=np.float64)[done]
    out = requests["output_tokens"].to_numpy()[done]
    bad = ~(np.isfinite(a) & np.isfinite(f) & np.isfinite(e) & (a <= f) & (f <= e)
            & (out >= 1))
    if bad.any():
        rid = requests["request_id"].to_numpy()[done][np.flatnonzero(bad)[0]]
        raise ValueError(f"a completed request needs finite times with arrival_s <= "
                         f"first_token_s <= finish_s and output_tokens >= 1 (request {rid})")


def request_latencies(requests: pd.DataFrame) -> pd.DataFrame:
    """A copy of a run's requests frame with ``ttft_s``, ``tpot_s`` and ``e2e_s`` added (NaN
    where undefined: rejected requests, TPOT of one-token requests)."""
    _check_run(requests)
    out = requests.copy()
    done = (out["status"].astype(str) == COMPLETED).to_numpy()
    arrival = out["arrival_s"].to_numpy(dtype=np.float64)
    first = out["first_token_s"].to_numpy(dtype=np.float64)
    finish = out["finish_s"].to_numpy(dtype=np.float64)
    tokens = out["output_tokens"].to_numpy(dtype=np.float64)
    nan = np.full(len(out), np.nan)
    out["ttft_s"] = np.where(done, first - arrival, nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = (finish - first) / (tokens - 1)
    out["tpot_s"] = np.where(done & (tokens > 1), tpot, nan)
    out["e2e_s"] = np.where(done, finish - arrival, nan)
    return out


def _with_latencies(requests: pd.DataFrame) -> pd.DataFrame:
    if all(c in requests.columns for c in ("ttft_s", "tpot_s", "e2e_s")):
        _check_run(requests)
        return requests
    return request_latencies(requests)


def _slo_values(lat: pd.DataFrame, metric: str) -> np.ndarray:
    """Per-request values an SLO on ``metric`` sees: rejected requests +inf, requests without
    the metric (TPOT of one-token requests) left out."""
    rejected = (lat["status"].astype(str) != COMPLETED).to_numpy()
    v = lat[f"{metric}_s"].to_numpy(dtype=np.float64).copy()
    v[rejected] = np.inf
    return v[~np.isnan(v)]


# ------------------------------------------------------------------------------------------
# SLOs, goodput, throughput, energy
# ------------------------------------------------------------------------------------------


def slo_attainment(requests: pd.DataFrame, slo: SloTable = HERMES_SLO) -> pd.DataFrame:
    """Every SLO of ``slo`` checked at once: one row per SLO with ``metric, percentile,
    limit_s, value_s`` (the percentile over all requests, rejected ones +inf), ``met``
    (value_s <= limit_s) and ``attainment`` (the fraction of requests within the limit)."""
    lat = _with_latencies(requests)
    rows = []
    for metric, p, limit in slo.rows():
        v = _slo_values(lat, metric)
        value = percentile(v, p)
        rows.append({"metric": metric, "percentile": p, "limit_s": limit, "value_s": value,
                     "met": bool(value <= limit),     # NaN (no values) is not met
                     "attainment": float(np.mean(v <= limit)) if v.size else math.nan})
    return pd.DataFrame(rows)


def meets_slo(requests: pd.DataFrame, slo: SloTable = HERMES_SLO, tier: int = 50) -> np.ndarray:
    """Per request: completed, TTFT within the tier's TTFT limit and TPOT (where it has one)
    within the tier's TPOT limit."""
    lat = _with_latencies(requests)
    done = (lat["status"].astype(str) == COMPLETED).to_numpy()
    ttft = lat["ttft_s"].to_numpy(dtype=np.float64)
    tpot = lat["tpot_s"].to_numpy(dtype=np.float64)
    ok_tpot = np.isnan(tpot) | (tpot <= slo.limit("tpot", tier))
    return done & (ttft <= slo.limit("ttft", tier)) & ok_tpot


def run_duration(requests: pd.DataFrame) -> float:
    """From the first arrival to the last arrival or finish."""
    arrival = requests["arrival_s"].to_numpy(dtype=np.float64)
    if arrival.size == 0:
        return math.nan
    finish = requests["finish_s"].to_numpy(dtype=np.float64)
    end = np.nanmax(np.concatenate([arrival, finish]))
    return float(end - arrival.min())


def _rate(x: float, duration_s: float) -> float:
    return x / duration_s if duration_s > 0 else math.nan


def goodput(requests: pd.DataFrame, slo: SloTable = HERMES_SLO,
            duration_s: float | None = None) -> dict:
    """Per SLO tier: ``{tier: {"requests_per_s", "tokens_per_s", "fraction"}}`` of the
    requests meeting the tier (:func:`meets_slo`), tokens being their output tokens."""
    lat = _with_latencies(requests)
    span = run_duration(lat) if duration_s is None else duration_s
    out_tokens = lat["output_tokens"].to_numpy(dtype=np.float64)
    res = {}
    for tier in slo.tiers:
        ok = meets_slo(lat, slo, tier)
        res[tier] = {"requests_per_s": _rate(float(ok.sum()), span),
                     "tokens_per_s": _rate(float(out_tokens[ok].sum()), span),
                     "fraction": float(ok.mean()) if ok.size else math.nan}
    return res


def throughput(requests: pd.DataFrame, duration_s: float | None = None) -> dict:
    """Completed requests and their output, prompt and total tokens per second."""
    _check_run(requests)
    span = run_duration(requests) if duration_s is None else duration_s
    done = (requests["status"].astype(str) == COMPLETED).to_numpy()
    out_t = float(requests["output_tokens"].to_numpy()[done].sum())
    in_t = float(requests["prompt_tokens"].to_numpy()[done].sum())
    return {"requests_per_s": _rate(float(done.sum()), span),
            "output_tokens_per_s": _rate(out_t, span),
            "prompt_tokens_per_s": _rate(in_t, span),
            "total_tokens_per_s": _rate(out_t + in_t, span)}


def tokens_per_joule(requests: pd.DataFrame, energy_j: float) -> dict:
    """Output and total (prompt + output) tokens of completed requests per joule."""
    _check_run(requests)
    done = (requests["status"].astype(str) == COMPLETED).to_numpy()
    out_t = float(requests["output_tokens"].to_numpy()[done].sum())
    in_t = float(requests["prompt_tokens"].to_numpy()[done].sum())
    if not energy_j > 0:
        raise ValueError(f"energy_j > 0, got {energy_j}")
    return {"output_tokens_per_j": out_t / energy_j,
            "total_tokens_per_j": (out_t + in_t) / energy_j}


# ------------------------------------------------------------------------------------------
# Series over time: step functions as (time_s, value) frames
# ------------------------------------------------------------------------------------------
#
# A series is right-continuous: the value in row i holds from time_s[i] until time_s[i+1]
# (and after the last row). Events at the same time are merged into one row.


def _series(times: np.ndarray, deltas: np.ndarray, name: str) -> pd.DataFrame:
    order = np.argsort(times, kind="stable")
    t, d = times[order], deltas[order]
    level = np.cumsum(d)
    last = np.r_[t[1:] != t[:-1], True] if t.size else np.zeros(0, bool)
    return pd.DataFrame({"time_s": t[last], name: level[last]})


def _by_client(frame: pd.DataFrame, client) -> pd.DataFrame:
    return frame if client is None else frame[frame["client"] == client]


def queue_length(requests: pd.DataFrame, client=None) -> pd.DataFrame:
    """Requests that have arrived and not yet had their first token (waiting or in prefill),
    over time; a rejected request leaves the queue when it is rejected (``finish_s``, or at
    arrival when that is NaN). ``client``: only requests routed to it."""
    r = _by_client(requests, client)
    arrival = r["arrival_s"].to_numpy(dtype=np.float64)
    done = (r["status"].astype(str) == COMPLETED).to_numpy()
    leave = np.where(done, r["first_token_s"].to_numpy(dtype=np.float64),
                     r["finish_s"].to_numpy(dtype=np.float64))
    leave = np.where(np.isnan(leave), arrival, leave)
    n = len(arrival)
    return _series(np.r_[arrival, leave], np.r_[np.ones(n), -np.ones(n)], "queued")


def requests_in_system(requests: pd.DataFrame, client=None) -> pd.DataFrame:
    """Requests that have arrived and not finished (or been rejected), over time."""
    r = _by_client(requests, client)
    arrival = r["arrival_s"].to_numpy(dtype=np.float64)
    leave = r["finish_s"].to_numpy(dtype=np.float64)
    leave = np.where(np.isnan(leave), arrival, leave)
    n = len(arrival)
    return _series(np.r_[arrival, leave], np.r_[np.ones(n), -np.ones(n)], "in_system")


def batch_size(steps: pd.DataFrame, client=None, column: str = "sequences") -> pd.DataFrame:
    """Sequences in running steps over time (summed over clients unless ``client`` is given):
    a step adds its ``column`` (``sequences`` or ``padded_sequences``) from start_s to end_s,
    so the value is 0 while a client is idle."""
    s = _by_client(steps, client)
    v = s[column].to_numpy(dtype=np.float64)
    return _series(np.r_[s["start_s"].to_numpy(dtype=np.float64),
                         s["end_s"].to_numpy(dtype=np.float64)], np.r_[v, -v], column)


def kv_usage(steps: pd.DataFrame, client=None) -> pd.DataFrame:
    """KV blocks in use over time (summed over clients unless ``client`` is given): a client's
    count is the ``kv_blocks_used`` of its latest step, held from that step's start until its
    next step starts (blocks stay allocated between steps)."""
    s = _by_client(steps, client)
    s = s.sort_values(["client", "start_s"], kind="stable")
    used = s["kv_blocks_used"].to_numpy(dtype=np.float64)
    same = (s["client"].to_numpy() == np.roll(s["client"].to_numpy(), 1))
    if len(s):
        same[0] = False
    prev = np.where(same, np.roll(used, 1), 0.0)
    return _series(s["start_s"].to_numpy(dtype=np.float64), used - prev, "kv_blocks_used")


def value_at(series: pd.DataFrame, times) -> np.ndarray:
    """A series' value at ``times`` (0 before its first row)."""
    t = series["time_s"].to_numpy(dtype=np.float64)
    v = series.iloc[:, 1].to_numpy(dtype=np.float64)
    i = np.searchsorted(t, np.asarray(times, dtype=np.float64), side="right") - 1
    return np.where(i >= 0, v[np.maximum(i, 0)], 0.0)


def time_weighted_mean(series: pd.DataFrame, start_s: float, end_s: float) -> float:
    """The mean over [start_s, end_s] of a series, weighting each value by how long it held."""
    if not end_s > start_s:
        return math.nan
    t = series["time_s"].to_numpy(dtype=np.float64)
    edges = np.r_[start_s, t[(t > start_s) & (t < end_s)], end_s]
    vals = value_at(series, edges[:-1])
    return float(np.sum(vals * np.diff(edges)) / (end_s - start_s))


# ------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------


def _plain(x):
    """JSON-safe: numpy scalars to Python, NaN and inf to None, mapping keys to str."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def summarize(requests: pd.DataFrame, *, steps: "pd.DataFrame | StepStats | None" = None,
              itl_s=None, itl_counts=None, energy_j: float | None = None,
              slo: SloTable = HERMES_SLO, duration_s: float | None = None) -> dict:
    """Everything above for one run, as a JSON-ready dict (NaN and inf become null).

    Args:
        requests: the run's requests frame.
        steps: its steps frame (batch, padding, KV and busy-time figures), or the
            :class:`StepStats` of a run that streamed its steps to a file, optional.
        itl_s: inter-token gaps in seconds, pooled over requests (or a list of per-request
            arrays), optional.
        itl_counts: with ``itl_s`` as distinct gaps, how many tokens had each (a serving
            run's ``token_gaps`` frame: ``gap_s`` and ``tokens``).
        energy_j: total energy of the run, for tokens per joule, optional.
        slo: the SLO table.
        duration_s: the span rates divide by (default :func:`run_duration`).
    """
    lat = request_latencies(requests)
    span = run_duration(lat) if duration_s is None else float(duration_s)
    status = lat["status"].astype(str)
    rejected = status[status != COMPLETED].str.slice(len(REJECTED))
    out = {
        "requests": int(len(lat)),
        "completed": int((status == COMPLETED).sum()),
        "rejected": int(len(rejected)),
        "rejected_by_reason": {k: int(v) for k, v in sorted(rejected.value_counts().items())},
        "duration_s": span,
        "ttft_s": latency_stats(lat["ttft_s"]),
        "tpot_s": latency_stats(lat["tpot_s"]),
        "e2e_s": latency_stats(lat["e2e_s"]),
    }
    if itl_s is not None and itl_counts is not None:
        out["itl_s"] = weighted_latency_stats(itl_s, itl_counts)
    elif itl_s is not None:
        gaps = np.concatenate([np.ravel(np.asarray(g, dtype=np.float64)) for g in itl_s]) \
            if isinstance(itl_s, (list, tuple)) else np.asarray(itl_s, dtype=np.float64)
        out["itl_s"] = latency_stats(gaps)
    att = slo_attainment(lat, slo)
    out["slo"] = {"table": slo.name, "source": slo.source, "all_met": bool(att["met"].all()),
                  "checks": att.to_dict("records")}
    out["goodput"] = {f"p{k}": v for k, v in goodput(lat, slo, span).items()}
    out["throughput"] = throughput(lat, span)
    if energy_j is not None:
        out["energy_j"] = float(energy_j)
        out["efficiency"] = tokens_per_joule(lat, energy_j)
    if "preemptions" in lat.columns:
        out["preemptions"] = int(lat["preemptions"].sum())
    q = queue_length(lat)
    t0 = float(lat["arrival_s"].min()) if len(lat) else 0.0
    out["queue_length"] = {"mean": time_weighted_mean(q, t0, t0 + span),
                           "max": float(q["queued"].max()) if len(q) else math.nan}
    if isinstance(steps, StepStats):
        out["steps"] = steps.summary(t0, span)
    elif steps is not None:
        out["steps"] = _step_summary(steps, t0, span)
    return _plain(out)


def _step_summary(steps: pd.DataFrame, t0: float, span: float) -> dict:
    missing = [c for c in STEP_COLUMNS if c not in steps.columns]
    if missing:
        raise ValueError(f"a steps frame needs the columns {', '.join(STEP_COLUMNS)}; "
                         f"missing {', '.join(missing)}")
    busy = (steps["end_s"] - steps["start_s"]).groupby(steps["client"]).sum()
    seqs, padded = float(steps["sequences"].sum()), float(steps["padded_sequences"].sum())
    kv = kv_usage(steps)
    return {
        "count": int(len(steps)),
        "by_kind": {str(k): int(v) for k, v in sorted(steps["kind"].value_counts().items())},
        "mean_sequences": float(steps["sequences"].mean()) if len(steps) else math.nan,
        "padding_fraction": 1.0 - seqs / padded if padded > 0 else math.nan,
        "busy_fraction": {str(c): float(b) / span if span > 0 else math.nan
                          for c, b in busy.items()},
        "kv_blocks_used": {"mean": time_weighted_mean(kv, t0, t0 + span),
                           "max": float(kv["kv_blocks_used"].max()) if len(kv) else math.nan},
    }


class StepStats:
    """The steps section of :func:`summarize`, accumulated over a steps frame's rows chunk by
    chunk in the frame's order (:meth:`sim.system.coordinator.Coordinator.step_chunks`), for
    runs whose steps go to a file. ``window``: (first arrival, span) of the run, which the
    time-weighted KV mean integrates over. Counts are exact; sums of seconds agree with the
    frame's figures to rounding (they are added in another order)."""

    def __init__(self, window: tuple[float, float]):
        from .engine import KINDS
        self.window = (float(window[0]), float(window[1]))
        self.kinds = list(KINDS)
        self.count = 0
        self.by_kind = np.zeros(len(KINDS), np.int64)
        self.sequences = self.padded = 0
        self.busy = np.zeros(0)
        self.steps_by_client = np.zeros(0, np.int64)
        self.clients: list = []
        self.kv_prev = np.zeros(0)          # each client's kv_blocks_used of its latest step
        self.level, self.t_last, self.kv_max = 0.0, -math.inf, -math.inf
        self.kv_area = 0.0                  # integral of the KV series over the window so far

    def add(self, chunk: Mapping, clients: list) -> None:
        """One chunk: numpy columns ``client`` (index into ``clients``), ``kind`` (codes),
        ``start_ns``, ``end_ns``, ``sequences``, ``padded_sequences``, ``kv_blocks_used``."""
        from .engine import NS
        k = len(clients)
        if len(self.clients) != k:
            self.clients = list(clients)
            self.busy = np.zeros(k)
            self.steps_by_client = np.zeros(k, np.int64)
            self.kv_prev = np.zeros(k)
        c = chunk["client"]
        start, end = chunk["start_ns"] * NS, chunk["end_ns"] * NS
        self.count += len(c)
        self.by_kind += np.bincount(chunk["kind"], minlength=len(self.kinds))
        self.sequences += int(chunk["sequences"].sum(dtype=np.int64))
        self.padded += int(chunk["padded_sequences"].sum(dtype=np.int64))
        self.busy += np.bincount(c, weights=end - start, minlength=k)
        self.steps_by_client += np.bincount(c, minlength=k)
        # KV in use: each step's count minus its client's previous one, at its start
        used = chunk["kv_blocks_used"].astype(np.float64)
        by = np.argsort(c, kind="stable")
        cs, us = c[by], used[by]
        head = np.r_[True, cs[1:] != cs[:-1]] if len(cs) else np.zeros(0, bool)
        prev = np.where(head, self.kv_prev[cs], np.r_[0.0, us[:-1]])
        delta = np.empty_like(used)
        delta[by] = us - prev
        last = np.r_[~head[1:], False] if len(cs) else head
        self.kv_prev[cs[~last]] = us[~last]
        level = self.level + np.cumsum(delta)
        keep = np.r_[start[1:] != start[:-1], True] if len(start) else np.zeros(0, bool)
        t, v = start[keep], level[keep]
        if len(t):
            lo, hi = self.window[0], self.window[0] + self.window[1]
            edges = np.clip(np.r_[self.t_last, t], lo, hi)
            vals = np.r_[self.level, v[:-1]]
            self.kv_area += float(np.sum(vals * np.diff(edges)))
            self.level, self.t_last = float(v[-1]), float(t[-1])
            self.kv_max = max(self.kv_max, float(v.max()))

    def summary(self, t0: float, span: float) -> dict:
        if (float(t0), float(span)) != self.window:
            raise ValueError(f"these step figures integrate over {self.window}, "
                             f"not ({t0}, {span})")
        lo, hi = t0, t0 + span
        area = self.kv_area + self.level * (hi - min(max(self.t_last, lo), hi))
        return {
            "count": int(self.count),
            "by_kind": {k: int(v) for k, v in sorted(zip(self.kinds, self.by_kind))},
            "mean_sequences": self.sequences / self.count if self.count else math.nan,
            "padding_fraction": 1.0 - self.sequences / self.padded if self.padded > 0
            else math.nan,
            "busy_fraction": {str(c): float(b) / span if span > 0 else math.nan
                              for c, b, n in zip(self.clients, self.busy, self.steps_by_client)
                              if n},
            "kv_blocks_used": {"mean": area / span if span > 0 else math.nan,
                               "max": self.kv_max if self.count else math.nan},
        }


def comparison_rows(summaries: Mapping[str, dict]) -> list[dict]:
    """One flat row per variant from :func:`summarize`-style dicts (in their order): size,
    latency percentiles, SLO attainment per tier (the fraction of requests meeting it), goodput,
    throughput and energy figures; ``None`` where a summary has no value."""
    def get(d, *path):
        for p in path:
            if not isinstance(d, Mapping) or p not in d:
                return None
            d = d[p]
        return d

    rows = []
    for name, s in summaries.items():
        row = {"variant": name}
        for key in ("clients", "chips", "area_mm2", "requests", "completed", "rejected",
                    "duration_s"):
            row[key] = s.get(key)
        for metric in ("ttft", "tpot", "e2e"):
            for stat in ("mean", "p50", "p90", "p99"):
                row[f"{metric}_{stat}_s"] = get(s, f"{metric}_s", stat)
        row["slo_all_met"] = get(s, "slo", "all_met")
        for tier in PERCENTILES:
            row[f"slo_p{tier}_fraction"] = get(s, "goodput", f"p{tier}", "fraction")
            row[f"goodput_p{tier}_requests_per_s"] = get(s, "goodput", f"p{tier}",
                                                         "requests_per_s")
        row["throughput_requests_per_s"] = get(s, "throughput", "requests_per_s")
        row["output_tokens_per_s"] = get(s, "throughput", "output_tokens_per_s")
        row["energy_j"] = s.get("energy_j")
        row["output_tokens_per_j"] = get(s, "efficiency", "output_tokens_per_j")
        row["total_tokens_per_j"] = get(s, "efficiency", "total_tokens_per_j")
        rows.append(row)
    return rows
