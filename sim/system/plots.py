"""Serving outputs beyond the frames: plots (latency CDFs; batch size and KV usage over time
per client) and a Chrome-trace / Perfetto timeline of requests and engine steps."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import batch_size, kv_usage, request_latencies

SERVING_PLOTS = ("latency_cdf", "timeline")


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_latency_cdf(requests: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Empirical CDFs of TTFT, TPOT and E2E over completed requests."""
    plt = _plt()
    lat = request_latencies(requests)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, col, label in zip(axes, ("ttft_s", "tpot_s", "e2e_s"), ("TTFT", "TPOT", "E2E")):
        v = np.sort(lat[col].to_numpy(dtype=float))
        v = v[np.isfinite(v)]
        if v.size:
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post")
        ax.set_xlabel(f"{label} (s)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of requests")
    fig.suptitle(f"{title}: latency CDFs" if title else "latency CDFs")
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
    """The plots an experiment's ``outputs.plots`` lists, as ``<plot>.png`` in ``folder``."""
    name = result.experiment.name
    out = []
    for p in result.experiment.outputs.plots:
        if p == "latency_cdf":
            out.append(plot_latency_cdf(result.requests, folder / "latency_cdf.png", name))
        elif p == "timeline":
            out.append(plot_timeline(result.steps, folder / "timeline.png", name))
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
