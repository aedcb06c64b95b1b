"""Sweep points of serving experiments (a ``cluster:`` section): identity, run, result row.

A serving point runs :func:`sim.serve` and stores one row per variant (the experiment's name
when it has none), run ``serve``, with the serving metrics of :func:`sim.system.summarize`
flattened into plain columns:

================================  ===========================================================
column                            meaning
================================  ===========================================================
policy                            the cluster's batching policy: the engines' scheduler when
                                  co-located, ``disaggregated <P>P<D>D`` for prefill/decode
                                  pools of P and D clients (one line per value in plots)
clients, prefill_clients,         how many clients, and in which pool (co-located: every
decode_clients                    client counts in both)
offered_rps                       requests over the span of their arrivals (the rate offered)
throughput_rps                    completed requests per second of the run
throughput_tokens_per_s           their output tokens per second (``total_tokens_per_s``:
                                  prompt tokens too)
goodput_rps, goodput_tokens_per_s requests (and their output tokens) per second that meet the
                                  HERMES SLO tier 90 (TTFT <= 0.75 s, TPOT <= 37.5 ms);
                                  ``goodput_p50_rps`` and ``goodput_p99_rps`` the other tiers
slo_attainment                    the fraction of requests meeting tier 90 (goodput / all)
slo_met                           every one of the six SLO checks met (TTFT and TPOT at P50,
                                  P90 and P99)
ttft_p50_s ... e2e_p99_s          TTFT, TPOT and E2E percentiles (P50, P99) over completed
                                  requests
energy_j                          the cluster's energy over the run, as :func:`sim.serve`
                                  reports it: ``step_energy_j`` (each client's power while it
                                  runs steps) plus ``idle_energy_j`` (each chip's idle power
                                  while its client has no step to run, from the first arrival
                                  to the last finish)
tokens_per_j, total_tokens_per_j  output (and all) tokens of completed requests per joule of
                                  ``energy_j``; ``step_tokens_per_j`` per joule of steps only
preemptions, rejected, completed  counts over the run
requests, duration_s, events      the run's size: requests, seconds simulated, kernel events
================================  ===========================================================
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["input_stamp", "serving_rows", "run_serving", "policy_of"]

SLO_TIER = 90      # the tier whose goodput is the headline column


def _file_digest(path: str | os.PathLike, memo: dict) -> str:
    """sha256 of a file's bytes, memoized on (path, mtime, size) so a sweep of many points
    reads each input once."""
    p = str(Path(path).resolve())
    try:
        st = os.stat(p)
    except OSError:
        return f"missing:{p}"
    k = ("file", p, st.st_mtime_ns, st.st_size)
    hit = memo.get(k)
    if hit is None:
        with open(p, "rb") as f:
            hit = memo[k] = hashlib.sha256(f.read()).hexdigest()
    return hit


def input_stamp(exp, memo: dict) -> str:
    """A digest of what a serving run reads by name rather than from its config: the content
    of every client's arch and model (their validated configs, ``extends:`` included), the
    arch's technology table and the model's outlier profile files, the trace CSV and the
    pipeline YAML. ``memo`` is the caller's (one per sweep)."""
    from ..system.arrivals import resolve_trace
    from ..system.pipeline import PIPELINES
    from ..workload.step import _profile_stamp, _tech_stamp, resolve_config

    env = (os.getcwd(), os.environ.get("STRATA_HOME"))
    parts = []
    for ref in sorted({(c.arch, c.model) for c in exp.cluster.clients}):
        k = ("client", ref, env)
        hit = memo.get(k)
        if hit is None:
            arch, model = resolve_config("arch", ref[0]), resolve_config("workloads", ref[1])
            try:
                tech = _tech_stamp(arch, env)
            except Exception:           # an arch without a technology table
                tech = None
            files = [t[0] for t in (tech, _profile_stamp(model, env))
                     if isinstance(t, tuple) and t and isinstance(t[0], str)
                     and os.path.isfile(t[0])]
            hit = memo[k] = ":".join([arch.hash(), model.hash(),
                                      *(_file_digest(f, memo) for f in files)])
        parts.append(hit)
    origin = exp.origin
    base = os.path.dirname(origin) if origin and os.path.isfile(origin) else None
    if exp.workload.trace is not None:
        parts.append(_file_digest(resolve_trace(exp.workload.trace, base, file=origin), memo))
    pipe = Path(exp.pipeline)
    parts.append(_file_digest(pipe if pipe.suffix else PIPELINES / f"{exp.pipeline}.yaml", memo))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _names(client) -> list[str]:
    """The client names one ``clients:`` entry stands for (an entry may count several)."""
    return client.names() if hasattr(client, "names") else [client.name]


def policy_of(cluster) -> tuple[str, int, int]:
    """(policy label, prefill clients, decode clients) of a validated cluster section."""
    n = sum(len(_names(c)) for c in cluster.clients)
    if not cluster.disaggregated:
        return cluster.clients[0].engine.scheduler, n, n
    p = sum(len(_names(c)) for c in cluster.clients if c.role == "prefill")
    return f"disaggregated {p}P{n - p}D", p, n - p


def serving_rows(result, variant: str | None = None) -> list[dict]:
    """The store row of one :class:`sim.api.ServeResult` (see the module docstring)."""
    s = result.summary
    exp = result.experiment
    policy, pre, dec = policy_of(exp.cluster)
    arrivals = result.requests["arrival_s"]
    span = float(arrivals.max() - arrivals.min()) if len(arrivals) > 1 else float("nan")
    gp = s["goodput"]
    tput = s["throughput"]
    done = result.requests["status"] == "completed"
    out_tokens = float(result.requests.loc[done, "output_tokens"].sum())
    all_tokens = out_tokens + float(result.requests.loc[done, "prompt_tokens"].sum())
    energy = float(s.get("energy_j") or 0.0)          # steps + idle (sim.serve)
    step_j = float(s.get("step_energy_j") or 0.0)
    checks = {(c["metric"], int(c["percentile"])): c for c in s["slo"]["checks"]}

    def pct(metric, p):
        v = s[f"{metric}_s"].get(f"p{p}")
        return None if v is None else float(v)

    row = {
        "variant": variant or exp.name, "run": "serve",
        "policy": policy, "clients": pre + dec if exp.cluster.disaggregated else pre,
        "prefill_clients": pre, "decode_clients": dec,
        "offered_rps": (len(arrivals) - 1) / span if span and span > 0 else None,
        "throughput_rps": tput["requests_per_s"],
        "throughput_tokens_per_s": tput["output_tokens_per_s"],
        "total_tokens_per_s": tput["total_tokens_per_s"],
        "goodput_rps": gp[f"p{SLO_TIER}"]["requests_per_s"],
        "goodput_tokens_per_s": gp[f"p{SLO_TIER}"]["tokens_per_s"],
        **{f"goodput_p{t}_rps": gp[f"p{t}"]["requests_per_s"] for t in (50, 99)
           if f"p{t}" in gp},
        "slo_attainment": gp[f"p{SLO_TIER}"]["fraction"],
        "slo_met": bool(s["slo"]["all_met"]),
        **{f"slo_{m}_p{p}_attainment": c["attainment"] for (m, p), c in checks.items()},
        **{f"{m}_p{p}_s": pct(m, p) for m in ("ttft", "tpot", "e2e") for p in (50, 99)},
        "energy_j": energy, "step_energy_j": step_j, "idle_energy_j": energy - step_j,
        "tokens_per_j": out_tokens / energy if energy > 0 else None,
        "total_tokens_per_j": all_tokens / energy if energy > 0 else None,
        "step_tokens_per_j": out_tokens / step_j if step_j > 0 else None,
        "preemptions": int(s.get("preemptions", 0)),
        "rejected": int(s["rejected"]), "completed": int(s["completed"]),
        "requests": int(s["requests"]), "duration_s": s["duration_s"],
        "events": int(s["events"]),
    }
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}]


def run_serving(exp) -> list[dict]:
    """Serve one point (each of its variants, if the experiment has ``variants:``) and return
    its rows."""
    from .. import api
    from ..config.loader import load_validated

    # a point keeps metric rows only: its step rows are neither held nor written, and
    # nothing is plotted (``outputs.steps: file`` would otherwise need a folder per point)
    quiet = [("outputs.steps", "none"), ("outputs.plots", [])]
    variants = getattr(exp, "variants", None) or ()
    if not variants:
        return serving_rows(api.serve(load_validated(exp, type(exp), quiet,
                                                     kind="experiments")))
    rows = []
    for v in variants:
        cfg = load_validated(exp, type(exp), [*v.set.items(), ("variants", []), *quiet],
                             kind="experiments")
        rows += serving_rows(api.serve(cfg), variant=v.name)
    return rows
