#!/usr/bin/env python3
"""Sweep of random GEMMs: register-level reference against the fast array model and numpy.

    .venv/bin/python bench/ref_sweep.py                       # 1,000 cases, one process
    .venv/bin/python bench/ref_sweep.py --cases 12000 --jobs 2 --seed 1

Each case is a random GEMM ``O[M,N] = A[M,K] @ W[K,N]`` with integer operands, run through
:func:`sim.hw.systolic_ref.simulate_array` (every PE register, bank and bus stepped cycle by
cycle; it computes the GEMM) and priced by :func:`sim.hw.systolic.array_timing` (the closed-form
fast model, ``convention="strata"``). A case agrees when the reference's output equals numpy's
int64 ``A @ W`` exactly and its cycle count equals the fast model's total.

Cases (same space as tests/test_systolic_ref.py, which runs 210 of them in CI): case ``i``
cycles through the three dataflows (WS, OS, IS) and the five modes (4, 2, 1 MACs per PE per
cycle: lanes; 1/2 and 1/4: two or four fused PEs), and draws from ``default_rng([seed, i])`` the
array (rows 2..``--max-array``, columns from the fusion width up to ``--max-array``), M, K, N in
1..``--max-dim``, weight bits in {2, 4, 8} and activation bits in {4, 8, 16}, with each
operand's extreme values planted. A case is therefore a function of (seed, i) alone, so the
result does not depend on ``--jobs``.

It prints the number of cases that agree, per dataflow and mode, and every mismatch; the exit
status is 0 only when every case agrees. The reference takes about 0.07 s per case on one core
of the 2-core VM: 12,000 cases (seed 1, all agreeing) took 738 s in one process.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path
from typing import NamedTuple

import numpy as np

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.append(REPO)      # after any installed Strata, so `pip install -e .` is what runs

from sim.hw.systolic import array_timing  # noqa: E402
from sim.hw.systolic_ref import simulate_array  # noqa: E402

DATAFLOWS = ("ws", "os", "is")
MODES = (4, 2, 1, 0.5, 0.25)     # MACs per PE per cycle: lanes (>= 1) or 1 / fused PEs (< 1)
WBITS = (2, 4, 8)
ABITS = (4, 8, 16)


class Case(NamedTuple):
    index: int
    dataflow: str
    macs_per_cycle: float
    rows: int
    cols: int
    M: int
    K: int
    N: int
    wbits: int
    abits: int


class Group(NamedTuple):
    """Cases reported together: one dataflow at one mode."""

    dataflow: str
    macs_per_cycle: float


class Outcome(NamedTuple):
    case: Case
    output_exact: bool
    ref_cycles: int
    fast_cycles: int

    @property
    def agrees(self) -> bool:
        return self.output_exact and self.ref_cycles == self.fast_cycles


def fused_pes(macs_per_cycle: float) -> int:
    """Physical PEs fused into one logical PE (1 for lane modes)."""
    return 1 if macs_per_cycle >= 1 else round(1 / macs_per_cycle)


def _signed(rng: np.random.Generator, bits: int, shape: tuple[int, int]) -> np.ndarray:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x = rng.integers(lo, hi + 1, size=shape)
    x.flat[rng.integers(x.size)] = lo      # the extremes are the sign slice's hardest values
    x.flat[rng.integers(x.size)] = hi
    return x


def make_case(seed: int, i: int, max_dim: int, max_array: int):
    """Case ``i`` of the sweep and its operands (A, W)."""
    rng = np.random.default_rng([seed, i])
    m = MODES[(i // len(DATAFLOWS)) % len(MODES)]
    q = fused_pes(m)
    rows = int(rng.integers(2, max_array + 1))
    cols = int(rng.integers(max(2, q), max_array + 1))      # at least one logical column
    M, K, N = (int(v) for v in rng.integers(1, max_dim + 1, size=3))
    wbits, abits = int(rng.choice(WBITS)), int(rng.choice(ABITS))
    case = Case(i, DATAFLOWS[i % len(DATAFLOWS)], m, rows, cols, M, K, N, wbits, abits)
    return case, _signed(rng, abits, (M, K)), _signed(rng, wbits, (K, N))


def run_case(args: tuple[int, int, int, int]) -> Outcome:
    seed, i, max_dim, max_array = args
    c, A, W = make_case(seed, i, max_dim, max_array)
    ref = simulate_array(A, W, c.rows, c.cols, c.dataflow, c.macs_per_cycle, c.wbits)
    exact = bool(np.array_equal(ref.output, A.astype(np.int64) @ W.astype(np.int64)))
    fast = array_timing(c.M, c.K, c.N, c.rows, c.cols, c.dataflow, c.macs_per_cycle,
                        convention="strata")
    return Outcome(c, exact, int(ref.cycles), int(fast.total))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="number of random GEMMs (1000)")
    ap.add_argument("--seed", type=int, default=1, help="sweep seed (1; CI's test uses its own)")
    ap.add_argument("--max-dim", type=int, default=40, help="M, K, N drawn in 1..this (40)")
    ap.add_argument("--max-array", type=int, default=8, help="rows, cols drawn up to this (8)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (1)")
    args = ap.parse_args(argv)
    if args.cases < 1 or args.max_dim < 1 or args.max_array < 4 or args.jobs < 1:
        ap.error("need --cases >= 1, --max-dim >= 1, --max-array >= 4 (4 fused PEs) and --jobs >= 1")

    work = [(args.seed, i, args.max_dim, args.max_array) for i in range(args.cases)]
    t0 = time.perf_counter()
    if args.jobs == 1:
        outcomes = [run_case(w) for w in work]
    else:
        with Pool(args.jobs) as pool:
            outcomes = pool.map(run_case, work, chunksize=32)
    wall = time.perf_counter() - t0

    groups, agree = Counter(), Counter()
    for o in outcomes:
        key = Group(o.case.dataflow, o.case.macs_per_cycle)
        groups[key] += 1
        agree[key] += o.agrees
    print(f"ref_sweep: {args.cases} random GEMMs (seed {args.seed}, M/K/N 1..{args.max_dim}, "
          f"arrays 2..{args.max_array}), {wall:.1f} s with {args.jobs} process(es)")
    print(f"  {'dataflow':<9}{'MACs/PE/cycle':>14}{'cases':>8}{'agree':>8}")
    for key in sorted(groups, key=lambda g: (DATAFLOWS.index(g.dataflow), -g.macs_per_cycle)):
        print(f"  {key.dataflow:<9}{key.macs_per_cycle:>14g}{groups[key]:>8}{agree[key]:>8}")
    bad = [o for o in outcomes if not o.agrees]
    for o in bad[:50]:
        print(f"  MISMATCH {o.case}: output exact {o.output_exact}, reference {o.ref_cycles} "
              f"cycles, fast model {o.fast_cycles}")
    total = sum(agree.values())
    print(f"agree: {total}/{args.cases} (cycles equal to the fast model and output equal to "
          f"numpy)")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
