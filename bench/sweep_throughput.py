"""Sweep throughput: 1,000 accelerator design points, each a whole-model decode step.

The space: systolic array rows x cols x SRAM (ifmap = weight buffer) x DRAM bandwidth on a
Llama-3-8B decode step at 512 tokens of context (5 x 5 x 5 x 8 = 1,000 points), run through the
sweep machinery (spec -> store -> executor) with each executor. Prints points/s, the per-point
overhead (wall x workers / points minus the mean simulation time inside the worker) and checks
that every executor stored identical rows.

    PYTHONPATH=. python bench/sweep_throughput.py                       # serial, process, dask
    PYTHONPATH=. python bench/sweep_throughput.py --executors process --workers 2
    PYTHONPATH=. python bench/sweep_throughput.py --points 200          # a smaller slice
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.dse import Store, load_sweep, run_sweep  # noqa: E402

SPEC = """\
name: bench_sweep
arch: quickstart
model: llama-3-8b
runs:
  - {name: decode, phase: decode, batch: 1, context: 512}
sweep:
  grid:
    arch.array.rows: [16, 32, 64, 96, 128]
    arch.array.cols: [16, 32, 64, 96, 128]
    arch.memory.sram.ifmap_kb: {start: 64, stop: 1024, num: 5, scale: log}
    arch.memory.dram.bandwidth_gbps: {start: 64, stop: 1024, num: 8, scale: log}
  derive:
    arch.memory.sram.weight_kb: "arch.memory.sram.ifmap_kb"
"""


def rows_of(db):
    with Store(db) as st:
        return {h: (s, r) for h, _, _, s, _, r, _, _ in st.iter_points()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executors", default="serial,process,dask")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--points", type=int, default=1000, help="run the first N points")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="strata-sweep-bench-"))
    (tmp / "bench.yaml").write_text(SPEC)
    sweep = load_sweep(tmp / "bench.yaml")
    n = min(args.points, sweep.size())
    print(f"{n} points of {sweep.size()} (Llama-3-8B decode step each), "
          f"{args.workers} workers where parallel")
    print(f"{'executor':>9}  {'wall s':>7}  {'points/s':>8}  {'sim ms/pt':>9}  "
          f"{'overhead ms/pt':>14}")
    ref = None
    for ex in args.executors.split(","):
        db = tmp / f"{ex}.sqlite"
        opts = {} if ex == "serial" else {"workers": args.workers}
        t0 = time.perf_counter()
        s = run_sweep(sweep, db, executor=ex, limit=n, **opts)
        wall = time.perf_counter() - t0
        with Store(db) as st:
            sims = [w for *_, w in st.iter_points() if w is not None]
        sim_ms = 1e3 * sum(sims) / max(1, len(sims))
        par = 1 if ex == "serial" else args.workers
        over = 1e3 * wall * par / max(1, s.ran) - sim_ms
        print(f"{ex:>9}  {wall:7.2f}  {s.ran / wall:8.1f}  {sim_ms:9.2f}  {over:14.2f}"
              f"   ({s.ok} ok, {s.failed} failed)")
        got = rows_of(db)
        if ref is None:
            ref = (ex, got)
        else:
            same = got == ref[1]
            print(f"{'':>9}  rows identical to {ref[0]}: {same}")
            if not same:
                diff = [h for h in ref[1] if got.get(h) != ref[1][h]]
                print(json.dumps(diff[:3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
