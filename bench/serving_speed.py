"""Serving-layer speed and memory: requests/s, events/s, wall time and peak RSS.

Llama-3-8B on 8 co-located H100-SXM clients (``type: gpu``, ``mode: table``: the GPU step
table of :mod:`sim.system.gpu_steps`, built once and shared by the 8 identical clients; its
build time is printed on its own line), round robin, continuous (vLLM v0) or chunked
(Sarathi) batching, CUDA-graph padding, 80 GB each. Requests: the Azure LLM conversation
trace (``../shared/traces/AzureLLMInferenceTrace_conv.csv``, 19,366 requests over 3,502 s)
at its own times; ``--requests`` beyond its length replays it again after its end, each copy
shifted by the trace's span plus one mean gap (so the rate stays the trace's). Without the
file: a synthetic trace of the same shape (Poisson at the trace's rate, log-normal prompts
and outputs with its medians), said so in the output.

    PYTHONPATH=$PWD python bench/serving_speed.py                  # 10,000 requests, both
    PYTHONPATH=$PWD python bench/serving_speed.py --requests 100000 --scheduler continuous
    PYTHONPATH=$PWD python bench/serving_speed.py --sizes 10000 100000   # each in its own process
    PYTHONPATH=$PWD python bench/serving_speed.py --requests 100000 --no-step-rows
    PYTHONPATH=$PWD python bench/serving_speed.py --sizes 10000 100000 --steps file

``--steps file`` streams the step rows to ``steps.csv`` in a temporary folder
(``serve_frames(steps_path=...)``, what ``outputs.steps: file`` does), the time to write it
included; ``--steps none`` is ``--no-step-rows``; ``memory`` (default) builds the steps frame.

Wall and CPU (``time.process_time``) seconds are both printed: on a shared machine the wall
time moves with the other users' load. Peak RSS is the process's high-water mark (``resource.getrusage``), so ``--sizes`` runs every
size in a fresh interpreter; it includes Python, numpy, pandas and the frames returned.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
if not TRACE.exists():
    TRACE = Path("/work/shared/traces/AzureLLMInferenceTrace_conv.csv")


def azure_conv(n: int) -> tuple[pd.DataFrame, str]:
    """``n`` requests of the conv trace, replayed back to back; or a synthetic stand-in."""
    from sim.system.requests import read_trace
    if TRACE.exists():
        base = read_trace(TRACE)
        what = f"Azure conv trace ({len(base)} rows)"
    else:
        rng = np.random.default_rng(0)
        m = 19_366
        base = pd.DataFrame({"arrival_s": np.cumsum(rng.exponential(3502 / m, m)) - 0.0,
                             "prompt_tokens": np.clip(rng.lognormal(np.log(1020), 0.8, m), 2,
                                                      8000).astype(np.int64),
                             "output_tokens": np.clip(rng.lognormal(np.log(129), 0.8, m), 7,
                                                      1000).astype(np.int64)})
        what = "synthetic Azure-conv-shaped trace (the Azure file is absent)"
    copies = -(-n // len(base))
    arr = base["arrival_s"].to_numpy()
    period = arr[-1] - arr[0] + (arr[-1] - arr[0]) / max(len(arr) - 1, 1)
    if copies > 1:
        what += f", replayed {copies}x, each copy shifted by {period:.0f} s"
    idx = np.arange(n) % len(base)
    shift = (np.arange(n) // len(base)) * period
    df = pd.DataFrame({"request_id": np.arange(n, dtype=np.int64),
                       "arrival_s": arr[idx] + shift,
                       "prompt_tokens": base["prompt_tokens"].to_numpy()[idx],
                       "output_tokens": base["output_tokens"].to_numpy()[idx]})
    return df, what


def gpu_backend():
    from sim.system import StrataBackend
    t = time.perf_counter()
    b = StrataBackend("h100-sxm", "llama-3-8b", mode="table",
                      table_options=dict(max_tokens=8192, max_chunk=8192))   # any past
    return b, time.perf_counter() - t


def run(n: int, schedulers, steps: str = "memory") -> None:
    import tempfile

    from sim.system import serve_frames
    df, what = azure_conv(n)
    b, build = gpu_backend()
    print(f"{n} requests of the {what}: {int(df.output_tokens.sum())} output tokens, "
          f"8 H100-SXM clients, Llama-3-8B")
    print(f"GPU step table build (h100-sxm, llama-3-8b, 8192 tokens): {build:.2f} s")
    for sched in schedulers:
        cluster = {"backend": b, "clients": 8, "router": "round_robin",
                   "engine": {"scheduler": sched, "max_num_seqs": 256,
                              "max_num_batched_tokens": 8192 if sched != "chunked" else 512,
                              "memory_gb": 80.0,
                              "cuda_graph_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256]}}
        tmp = tempfile.TemporaryDirectory(prefix="strata-steps-")
        path = Path(tmp.name) / "steps.csv" if steps == "file" else None
        t, cpu = time.perf_counter(), time.process_time()
        f = serve_frames(df, cluster, keep_steps=steps != "none", steps_path=path)
        dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        ok = int((f.requests.status == "completed").sum())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n_steps = int(f.clients.steps.sum())
        how = {"memory": "", "none": ", no step rows kept",
               "file": f", steps.csv {path.stat().st_size / 2**20:.0f} MB" if path else ""}
        print(f"  {sched:10s} wall {dt:6.2f} s (CPU {cpu:6.2f} s)  {n / dt:7.0f} requests/s  "
              f"{f.events / dt:8.0f} events/s  peak RSS {peak:5.0f} MB  ({n_steps} steps"
              f"{how[steps]}, {f.events} events, {ok} "
              f"completed, {f.sim_seconds:.0f} simulated s)", flush=True)
        del f
        tmp.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--scheduler", choices=["continuous", "chunked", "both"], default="both")
    ap.add_argument("--sizes", type=int, nargs="+",
                    help="run each size in a fresh process (its own peak RSS)")
    ap.add_argument("--no-step-rows", action="store_true",
                    help="serve_frames(keep_steps=False): no steps frame (tens of millions of rows)")
    ap.add_argument("--steps", choices=["memory", "file", "none"], default="memory",
                    help="memory: the steps frame; file: steps.csv streamed to a temporary "
                         "folder (timed); none: as --no-step-rows")
    a = ap.parse_args()
    schedulers = ["continuous", "chunked"] if a.scheduler == "both" else [a.scheduler]
    steps = "none" if a.no_step_rows else a.steps
    if a.sizes:
        for n in a.sizes:
            for sched in schedulers:
                subprocess.run([sys.executable, __file__, "--requests", str(n), "--scheduler",
                                sched, "--steps", steps],
                               check=True, env={**os.environ})
        return
    run(a.requests, schedulers, steps)


if __name__ == "__main__":
    main()
