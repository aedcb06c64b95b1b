"""Parent memory over a 100,000-point sweep run through ``run_sweep`` (issue 10's target: the
parent's memory stays flat).

The sweep is a real ``sweep:`` block walked by the real machinery: points generated lazily by
the spec, validated and hashed in the parent, looked up in and written to the SQLite store, and
sent to the process executor's workers as config dicts. To make 100,000 points affordable on two
shared cores, each point is the cheapest real simulation there is: a one-layer toy decoder
(hidden 64, FFN 128, 256-token vocabulary) decoding one token at 16 tokens of context on the
quickstart arch. Every point is a distinct arch (SRAM buffer size x DRAM bandwidth), so the
workers build a new accelerator each time. A constraint drops one point in ten in the parent, so
dropped rows go through the store too. Failed points are not part of this bench.

The bench hooks the sweep's progress object, which the parent calls once per finished point.
Every ``--every`` points it prints the parent's resident set size (from /proc), the total RSS
of the worker processes, the store's file size and the elapsed time. At the end it prints the
growth from the first report to the last. The store lives in a temporary folder, which is
deleted afterwards unless ``--keep``.

    PYTHONPATH=. python bench/sweep_parent_memory.py                    # 100,000 points
    PYTHONPATH=. python bench/sweep_parent_memory.py --points 5000 --every 1000
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.dse import load_sweep, run_sweep  # noqa: E402
from sim.dse.progress import SweepProgress  # noqa: E402

SPEC = """\
name: bench_parent_memory
arch: quickstart
model:
  name: toy-1l
  source: a toy decoder for this bench (no real model)
  hidden_size: 64
  num_layers: 1
  num_heads: 2
  num_kv_heads: 2
  head_dim: 32
  intermediate_size: 128
  ffn: gated
  vocab_size: 256
  max_position: 1024
  norm: rmsnorm
  precision: {{wbits: 8, abits: 8}}
runs:
  - {{name: decode, phase: decode, batch: 1, context: 16}}
sweep:
  grid:
    arch.memory.sram.ifmap_kb: {{start: 64, stop: {ifmap_stop}, step: 1}}
    arch.memory.dram.bandwidth_gbps: {{start: 64, stop: {bw_stop}, step: 1}}
  constraints:
    - "arch.memory.sram.ifmap_kb % 10 != 3"      # drops one point in ten, in the parent
"""


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Linux /proc)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        return out
    return out + [g for c in out for g in children(c)]


def workers_rss_mb() -> float:
    total = 0.0
    for c in children(os.getpid()):
        try:
            total += rss_mb(c)
        except OSError:
            pass
    return total


class Sampler(SweepProgress):
    """The sweep's progress, printing memory figures every ``every`` finished points."""

    def __init__(self, total: int, every: int, store: Path):
        super().__init__(total, name="bench", stream=sys.stdout, tty=False)
        self.sample_every = every
        self.store = store
        self.samples: list[tuple[int, float]] = []

    def point_done(self, status: str) -> None:
        super().point_done(status)
        if self.done % self.sample_every == 0 or self.done == self.total:
            self.sample()

    def sample(self) -> None:
        parent = rss_mb()
        self.samples.append((self.done, parent))
        size = sum(p.stat().st_size for p in self.store.parent.glob(self.store.name + "*"))
        r = self.rate()
        print(f"{self.done:>9}{parent:>11.1f}{workers_rss_mb():>12.1f}{size / 2**20:>10.1f}"
              f"{self.elapsed():>9.0f}{(r or 0):>8.0f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000,
                    help="sweep size, a multiple of 500 (500 SRAM sizes x points/500 bandwidths)")
    ap.add_argument("--every", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--executor", default="process")
    ap.add_argument("--keep", action="store_true", help="keep the store (its path is printed)")
    args = ap.parse_args(argv)
    if args.points < 500 or args.points % 500:
        ap.error("--points must be a multiple of 500")

    tmp = Path(tempfile.mkdtemp(prefix="strata-parent-mem-"))
    exp = tmp / "bench.yaml"
    exp.write_text(SPEC.format(ifmap_stop=64 + 499, bw_stop=64 + args.points // 500 - 1))
    sweep = load_sweep(exp)
    assert sweep.size() == args.points
    db = tmp / "results.sqlite"
    print(f"{sweep.size()} points through run_sweep ({args.executor}, {args.workers} workers): "
          f"a 1-layer toy decode step each, every point a distinct quickstart arch, 1 in 10 "
          f"dropped by a constraint; store {db}")
    print(f"parent RSS before the sweep: {rss_mb():.1f} MB")
    print(f"{'points':>9}{'parent MB':>11}{'workers MB':>12}{'store MB':>10}{'s':>9}"
          f"{'pt/s':>8}")
    prog = Sampler(sweep.size(), args.every, db)
    t0 = time.perf_counter()
    s = run_sweep(sweep, db, executor=args.executor, workers=args.workers, progress=prog)
    wall = time.perf_counter() - t0
    print(s.line())
    (n0, first), (n1, last) = prog.samples[0], prog.samples[-1]
    print(f"parent RSS growth from {n0} to {n1} points: {last - first:+.1f} MB "
          f"({first:.1f} -> {last:.1f} MB); peak of the samples "
          f"{max(m for _, m in prog.samples):.1f} MB; {s.ran / wall:.0f} computed points/s")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
