#!/usr/bin/env python3
"""Speed of ragged steps (sim.simulate_step) and accuracy of the step-time table (sim.StepTable).

    .venv/bin/python bench/step_speed.py                 # quickstart x llama-3-8b, 200 steps
    .venv/bin/python bench/step_speed.py --steps 50 --arch quickstart --model qwen2.5-3b

Prints, for one (arch, model):

* warm calls per second of ``simulate_step`` on steps seen before, with config objects and
  with names (target >= 20,000/s), as CPU time (process_time) and wall time;
* the cold time of a first call (a new step shape on a fresh accelerator);
* the table build time and its probe count;
* the table's relative error against direct ``simulate_step`` calls on random ragged steps that
  are not grid points (0-4 prefill chunks of 1..max_chunk new tokens on 0..max_past past
  tokens, 0-64 decodes at 0..max_context, at most max_tokens tokens): mean and max, for cycles
  and for total energy; and the time of one interpolated estimate.

Deterministic: the random steps come from ``numpy.random.default_rng(--seed)``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import sim
from sim.config import load_arch, load_model


def warm_rate(args, kw, n: int) -> tuple[float, float]:
    sim.simulate_step(*args, **kw)
    rates = []
    for _ in range(3):
        t, w = time.process_time(), time.perf_counter()
        for _ in range(n):
            sim.simulate_step(*args, **kw)
        rates.append((n / (time.process_time() - t), n / (time.perf_counter() - w)))
    return max(r[0] for r in rates), max(r[1] for r in rates)


def random_steps(rng, tab, count: int):
    steps = []
    while len(steps) < count:
        pre = [(int(rng.integers(1, tab.max_chunk + 1)), int(rng.integers(0, tab.max_past + 1)))
               for _ in range(int(rng.integers(0, 5)))]
        dec = [int(rng.integers(0, tab.max_context + 1)) for _ in range(int(rng.integers(0, 65)))]
        if not pre and not dec:
            continue
        if sum(n for n, _ in pre) + len(dec) > tab.max_tokens:
            continue
        steps.append((pre, dec))
    return steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="quickstart")
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--steps", type=int, default=200, help="random steps for the error figures")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--calls", type=int, default=20000, help="warm calls per timing")
    args = ap.parse_args()

    arch, model = load_arch(args.arch), load_model(args.model)
    kw = dict(prefill=[(512, 0), (128, 1900)], decode=[100, 2000, 3000, 4000, 35, 870, 5100, 12])
    perm = dict(prefill=kw["prefill"][::-1], decode=kw["decode"][::-1])

    t = time.perf_counter()
    first = sim.simulate_step(arch, model, **kw)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    sim.simulate_step(arch, model, prefill=[(333, 77)], decode=[1234])
    cold2 = time.perf_counter() - t
    print(f"{args.arch} x {args.model}: step of {first.tokens} tokens, {first.sequences} "
          f"sequences = {first.seconds * 1e3:.3f} ms, {first.energy_total_pj * 1e-6:.1f} uJ")
    print(f"cold first call: {cold:.3f} s (fresh accelerator); another new step: {cold2:.3f} s")
    for label, a in (("config objects", (arch, model)), ("names", (args.arch, args.model))):
        cpu, wall = warm_rate(a, perm, args.calls)
        print(f"warm calls, {label:>14}: {cpu:,.0f}/s CPU time, {wall:,.0f}/s wall "
              f"(target >= 20,000/s)")

    t = time.perf_counter()
    tab = sim.StepTable(arch, model)
    build = time.perf_counter() - t
    info = tab.grid_info()
    print(f"table build: {build:.1f} s, {info['probes']} probes; grid {info}")
    print(f"table ranges: max_tokens {tab.max_tokens}, max_chunk {tab.max_chunk}, "
          f"max_past {tab.max_past}, max_context {tab.max_context}")

    rng = np.random.default_rng(args.seed)
    ec, ee, est_t = [], [], []
    for pre, dec in random_steps(rng, tab, args.steps):
        d = sim.simulate_step(arch, model, prefill=pre, decode=dec)
        t = time.perf_counter()
        e = tab.estimate(prefill=pre, decode=dec)
        est_t.append(time.perf_counter() - t)
        ec.append(abs(e.cycles - d.cycles) / d.cycles)
        ee.append(abs(e.energy_total_pj - d.energy_total_pj) / d.energy_total_pj)
    print(f"table error on {len(ec)} random ragged steps (seed {args.seed}): cycles mean "
          f"{100 * np.mean(ec):.3f} %, max {100 * np.max(ec):.3f} %; energy mean "
          f"{100 * np.mean(ee):.3f} %, max {100 * np.max(ee):.3f} %")
    print(f"one estimate: {statistics.median(est_t) * 1e6:.0f} us (median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
