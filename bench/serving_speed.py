"""Serving-layer speed: requests/s and events/s of the coordinator + engines.

10,000 synthetic requests shaped like the Azure LLM conversation trace (Poisson arrivals at
5.6 requests/s, log-normal prompts (clipped at 2,048 tokens, the StepTable's chunk range),
outputs of mean ~220; the rate and output mean are the trace's over its first 10,000 rows) on 8 co-located clients, continuous and chunked
batching, once on the analytic backend and once on a Strata accelerator (quickstart arch,
Llama-3-8B) priced through a StepTable (its build time is printed separately; exact
``simulate_step`` pricing is per distinct step and far slower for long runs).

    PYTHONPATH=$PWD python bench/serving_speed.py [--requests N] [--no-strata]
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

from sim.system import AnalyticBackend, StrataBackend, serve_frames


def synthetic(n: int, seed: int = 0, rate: float = 5.6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    prompt = np.clip(rng.lognormal(np.log(800), 0.9, n), 1, 2048).astype(np.int64)
    output = np.clip(rng.lognormal(np.log(150), 0.9, n), 1, 1500).astype(np.int64)
    return pd.DataFrame({"request_id": np.arange(n), "arrival_s": arrival,
                         "prompt_tokens": prompt, "output_tokens": output})


def bench(label, df, backend, scheduler, memory_gb):
    cluster = {"backend": backend, "clients": 8, "router": "round_robin",
               "engine": {"scheduler": scheduler, "max_num_seqs": 256,
                          "max_num_batched_tokens": 8192 if scheduler != "chunked" else 512,
                          "memory_gb": memory_gb, "cuda_graph_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256]}}
    t = time.perf_counter()
    f = serve_frames(df, cluster)
    dt = time.perf_counter() - t
    ok = int((f.requests.status == "completed").sum())
    print(f"{label:34s} {scheduler:10s} {dt:6.2f} s  {len(df) / dt:8.0f} requests/s  "
          f"{f.events / dt:9.0f} events/s  ({len(f.steps)} steps, {f.events} events, "
          f"{ok} completed, simulated {f.sim_seconds:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--no-strata", action="store_true")
    a = ap.parse_args()
    df = synthetic(a.requests)
    print(f"{a.requests} requests, {int(df.output_tokens.sum())} output tokens, 8 clients")
    for sched in ("continuous", "chunked"):
        bench("analytic", df, AnalyticBackend(), sched, 80)
    if not a.no_strata:
        t = time.perf_counter()
        b = StrataBackend("arch/quickstart.yaml", "llama-3-8b", mode="table",
                          table_options=dict(max_tokens=8192, max_chunk=2048, points_per_octave=1,
                                             tol=0.02))
        print(f"StepTable build (quickstart, llama-3-8b): {time.perf_counter() - t:.1f} s, "
              f"{b.table.probes} probes")
        for sched in ("continuous", "chunked"):
            bench("strata quickstart/llama-3-8b table", df, b, sched, 32)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
