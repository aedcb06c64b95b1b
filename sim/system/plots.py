"""Serving outputs beyond the frames: plots (latency CDFs; batch size and KV usage over time
per client) and a Chrome-trace / Perfetto timeline of requests and engine steps."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import batch_size, kv_usage, request_latencies

SERVING_PLOTS = ("latency_cdf", "timeline", "compare")


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_latency_cdf(requests, path: Path, title: str = "") -> Path:
    """Empirical CDFs of TTFT, TPOT and E2E over completed requests: one requests frame, or
    a mapping label -> frame drawn overlaid (a comparison of variants)."""
    plt = _plt()
    frames = requests if isinstance(requests, dict) else {None: requests}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for label, frame in frames.items():
        lat = request_latencies(frame)
        for ax, col in zip(axes, ("ttft_s", "tpot_s", "e2e_s")):
            v = np.sort(lat[col].to_numpy(dtype=float))
            v = v[np.isfinite(v)]
            if v.size:
                ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=label)
    for ax, label in zip(axes, ("TTFT", "TPOT", "E2E")):
        ax.set_xlabel(f"{label} (s)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if len(frames) > 1:
            ax.set_xscale("log")
    axes[0].set_ylabel("fraction of requests")
    if len(frames) > 1:
        axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{title}: latency CDFs" if title else "latency CDFs")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def plot_compare(rows: list[dict], path: Path, title: str = "") -> Path:
    """Bars per variant (rows of :func:`sim.system.metrics.comparison_rows`): SLO attainment
    (fraction of requests meeting each HERMES tier), goodput at P90 tier, output throughput and
    total tokens per joule."""
    plt = _plt()
    names = [str(r["variant"]) for r in rows]
    x = np.arange(len(names))

    def col(key):
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    w = 0.8 / 3
    for k, tier in enumerate((50, 90, 99)):
        axes[0].bar(x + (k - 1) * w, col(f"slo_p{tier}_fraction"), w, label=f"P{tier} tier")
    axes[0].set_ylim(0, 1.3)
    axes[0].set_yticks(np.linspace(0, 1, 6))
    axes[0].set_title("SLO attainment (fraction of requests)", fontsize=9)
    axes[0].legend(fontsize=7, ncol=3, loc="upper center")
    panels = (("goodput_p90_requests_per_s", "goodput, P90 tier (requests/s)"),
              ("output_tokens_per_s", "throughput (output tokens/s)"),
              ("total_tokens_per_j", "tokens per joule (prompt + output)"))
    for ax, (key, label) in zip(axes[1:], panels):
        v = col(key)
        ax.bar(x, v, 0.6, color="C0")
        for xi, vi in zip(x, v):
            if np.isfinite(vi):
                ax.annotate(f"{vi:.3g}", (xi, vi), ha="center", va="bottom", fontsize=7)
        ax.set_title(label, fontsize=9)
    for ax in axes:
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{title}: comparison" if title else "comparison")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def plot_timeline(steps: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Batch size (sequences per running step) and KV blocks in use over time, per client."""
    plt = _plt()
    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for client in sorted(steps["client"].unique()):
        bs = batch_size(steps, client)
        kv = kv_usage(steps, client)
        a.step(bs["time_s"], bs["sequences"], where="post", label=str(client), lw=0.8)
        b.step(kv["time_s"], kv["kv_blocks_used"], where="post", label=str(client), lw=0.8)
    a.set_ylabel("batch size (sequences)")
    b.set_ylabel("KV blocks in use")
    b.set_xlabel("time (s)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{title}: batch size and KV usage" if title else "batch size and KV usage")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def write_serving_plots(result, folder: Path) -> list[Path]:
    """The plots an experiment's ``outputs.plots`` lists, as ``<plot>.png`` in ``folder``.
    With variants (a :class:`sim.api.ServeComparison`): ``latency_cdf`` overlays them,
    ``compare`` draws bars of their comparison rows, ``timeline`` is one file per variant
    (``timeline_<variant>.png``)."""
    from .metrics import comparison_rows
    name = result.experiment.name
    variants = getattr(result, "variants", None)
    out = []
    for p in result.experiment.outputs.plots:
        if p == "latency_cdf":
            reqs = {v: r.requests for v, r in variants.items()} if variants else result.requests
            out.append(plot_latency_cdf(reqs, folder / "latency_cdf.png", name))
        elif p == "timeline" and variants:
            for v, r in variants.items():
                out.append(plot_timeline(r.steps, folder / f"timeline_{v}.png", f"{name} {v}"))
        elif p == "timeline":
            out.append(plot_timeline(result.steps, folder / "timeline.png", name))
        elif p == "compare":
            rows = result.summary["comparison"] if variants else \
                comparison_rows({name: result.summary})
            out.append(plot_compare(rows, folder / "compare.png", name))
    return out


def write_serving_trace(result, path: Path) -> Path:
    """A Chrome-trace JSON (opens in Perfetto): one process per client; its engine steps as
    complete spans on one thread, each request (arrival to finish) as an async span with its
    first token as an instant. Times in microseconds."""
    us = 1e6
    clients = list(result.clients["client"])
    pid = {c: i + 1 for i, c in enumerate(clients)}
    ev = []
    for c in clients:
        ev.append({"ph": "M", "name": "process_name", "pid": pid[c], "tid": 0,
                   "args": {"name": str(c)}})
        ev.append({"ph": "M", "name": "thread_name", "pid": pid[c], "tid": 1,
                   "args": {"name": "steps"}})
    s = result.steps
    for row in s.itertuples(index=False):
        ev.append({"ph": "X", "name": row.kind, "cat": "step", "pid": pid[row.client], "tid": 1,
                   "ts": row.start_s * us, "dur": (row.end_s - row.start_s) * us,
                   "args": {"sequences": int(row.sequences), "tokens": int(row.tokens),
                            "kv_blocks_used": int(row.kv_blocks_used)}})
    for row in result.requests.itertuples(index=False):
        if row.client not in pid or not np.isfinite(row.finish_s):
            continue
        common = {"cat": "request", "id": int(row.request_id), "pid": pid[row.client], "tid": 2,
                  "name": f"request {row.request_id}"}
        ev.append({**common, "ph": "b", "ts": row.arrival_s * us,
                   "args": {"prompt_tokens": int(row.prompt_tokens),
                            "output_tokens": int(row.output_tokens), "status": row.status}})
        ev.append({**common, "ph": "e", "ts": row.finish_s * us})
    path.write_text(json.dumps({"traceEvents": ev, "displayTimeUnit": "ms"}))
    return path
