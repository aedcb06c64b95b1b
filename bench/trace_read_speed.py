"""How fast request traces are read and workloads built.

Reads the Azure conv and code traces (from ../shared/traces, when there) and a ~20 MB
Azure-schema file made here by repeating the conv trace's rows with shifted timestamps (about
560,000 requests), with the reader's cache cleared before every read; then builds 100,000-request
Poisson and trace-replay workloads. Prints the best of ``--repeat`` wall times.

    python bench/trace_read_speed.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.system import build_requests, load_workload, read_trace  # noqa: E402
from sim.system import requests as requests_module  # noqa: E402

SHARED = ROOT.parent / "shared" / "traces"
TARGET_MB = 20


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        requests_module._FRAMES.clear()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def big_azure_file(folder: Path) -> Path:
    """~20 MB in the Azure schema: the conv rows (or synthetic ones) repeated, one hour later
    each time, so timestamps stay sorted."""
    src = SHARED / "AzureLLMInferenceTrace_conv.csv"
    if src.is_file():
        base = pd.read_csv(src)
        stamps = pd.to_datetime(base["TIMESTAMP"])
    else:
        rng = np.random.default_rng(0)
        n = 20_000
        stamps = pd.Timestamp("2023-11-16") + pd.to_timedelta(
            np.cumsum(rng.exponential(0.18, n)), unit="s")
        base = pd.DataFrame({"ContextTokens": rng.integers(2, 8000, n),
                             "GeneratedTokens": rng.integers(7, 1000, n)})
    span = stamps.iloc[-1] - stamps.iloc[0] + pd.Timedelta(seconds=1)
    row_bytes = 36
    copies = max(1, TARGET_MB * 1_000_000 // (row_bytes * len(base)))
    parts = []
    for i in range(copies):
        parts.append(pd.DataFrame({
            "TIMESTAMP": (stamps + i * span).dt.strftime("%Y-%m-%d %H:%M:%S.%f") + "0",
            "ContextTokens": base["ContextTokens"], "GeneratedTokens": base["GeneratedTokens"]}))
    path = folder / "azure_big.csv"
    pd.concat(parts).to_csv(path, index=False)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = [p for p in (SHARED / "AzureLLMInferenceTrace_conv.csv",
                             SHARED / "AzureLLMInferenceTrace_code.csv") if p.is_file()]
        files.append(big_azure_file(Path(tmp)))
        files.append(ROOT / "traces" / "synthetic_conv_1k.csv")
        for path in files:
            secs, frame = best_of(args.repeat, lambda: read_trace(path))
            mb = path.stat().st_size / 1e6
            print(f"read_trace {path.name:38s} {mb:7.2f} MB {len(frame):8d} requests "
                  f"{secs * 1e3:8.1f} ms  ({mb / secs:6.1f} MB/s)")
    synth = load_workload({"arrivals": {"process": "poisson", "rate": 50.0},
                           "lengths": {"prompt": {"dist": "lognormal", "mean": 1155,
                                                  "std": 1109},
                                       "output": {"dist": "lognormal", "mean": 211,
                                                  "std": 163}},
                           "requests": 100_000, "seed": 1})
    secs, frame = best_of(args.repeat, lambda: build_requests(synth))
    print(f"build_requests poisson + lognormal lengths  {len(frame):8d} requests "
          f"{secs * 1e3:8.1f} ms")
    replay = load_workload({"trace": "synthetic_conv_1k", "arrivals": {"process": "gamma",
                            "rate": 20.0, "cv": 2.0},
                            "lengths": {"prompt": {"dist": "empirical"},
                                        "output": {"dist": "empirical"}},
                            "requests": 100_000})
    secs, frame = best_of(args.repeat, lambda: build_requests(replay))
    print(f"build_requests gamma + empirical lengths   {len(frame):8d} requests "
          f"{secs * 1e3:8.1f} ms (trace read included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
