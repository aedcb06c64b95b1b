"""Memory over a long design sweep: every cache must be bounded, so RSS stays flat.

Runs ``--points`` (default 100,000) design points, each a distinct arch (SRAM, DRAM bandwidth
and clock varied through a dict, so every point has its own content hash and its own
accelerator), and prices one small GEMM on each (or, with ``--decode``, a one-layer decode
step). Prints the resident set size every ``--every`` points and, at the end, the growth from
the first report to the last.

    .venv/bin/python bench/sweep_memory.py                  # 100,000 GEMM points
    .venv/bin/python bench/sweep_memory.py --points 20000 --decode

A flat RSS column means bounded caches; a cache keyed on design points that never evicts
shows up as steady growth (every point adds an accelerator with its memos).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sim  # noqa: E402
from sim.config import read_yaml  # noqa: E402
from sim.config.loader import data_dir  # noqa: E402


def rss_mb() -> float:
    """Resident set size of this process (MB), from /proc (Linux) or getrusage's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def point(base: dict, i: int) -> dict:
    """Design point i: a distinct arch (every i gives different content)."""
    a = copy.deepcopy(base)
    a["name"] = f"sweep-{i}"
    a["memory"]["sram"]["ifmap_kb"] = 64 + i % 449
    a["memory"]["sram"]["weight_kb"] = 64 + (i // 449) % 223
    a["memory"]["dram"]["bandwidth_gbps"] = 64.0 + (i // (449 * 223)) % 7 * 32
    a["clock_ghz"] = 1.0 + (i % 13) * 0.05
    return a


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=10_000)
    ap.add_argument("--decode", action="store_true",
                    help="a one-layer Llama-2-7B decode step per point instead of a GEMM")
    args = ap.parse_args(argv)

    base = read_yaml(data_dir("arch") / "quickstart.yaml")
    model = sim.load_model("llama-2-7b", ["num_layers=1"])
    what = "1-layer llama-2-7b decode step (context 128)" if args.decode \
        else "GEMM 64x256x256"
    print(f"design sweep: {args.points} distinct quickstart variants, one {what} each")
    print(f"{'points':>10}{'RSS MB':>10}{'s':>9}")
    t0 = time.perf_counter()
    first = None
    last = None
    for i in range(args.points):
        arch = point(base, i)
        if args.decode:
            sim.simulate_model(arch, model, phase="decode", context=128)
        else:
            sim.simulate_gemm(arch, 64, 256, 256)
        if (i + 1) % args.every == 0 or i + 1 == args.points:
            last = rss_mb()
            first = last if first is None else first
            print(f"{i + 1:>10}{last:>10.1f}{time.perf_counter() - t0:>9.1f}", flush=True)
    print(f"RSS growth from the first report to the last: {last - first:+.1f} MB "
          f"({first:.1f} -> {last:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
