#!/usr/bin/env python3
"""Wall time against model size: Llama-2-7B, -13B and -70B, the same run on the same arch.

    .venv/bin/python bench/model_size_speed.py
    .venv/bin/python bench/model_size_speed.py --arch quickstart --seq-len 2048 --steps 128

Each model runs in a fresh process (no memo shared between models): a ``--seq-len``-token
prefill followed by ``--steps`` decode steps from that context, on ``--arch``; ``--repeat``
fresh processes per model, of which the fastest counts (the machine may be shared). Prints
the model's layer count and MACs of the prefill, the wall time of the two calls and the time
relative to the first model. Decoder blocks repeat, so the simulator prices one block's
distinct operators and reuses them: wall time grows far slower than layers or MACs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
import sim
from sim.config import load_model
arch, name, seq, steps = {arch!r}, {model!r}, {seq}, {steps}
m = load_model(name)
t = time.perf_counter()
p = sim.simulate_model(arch, name, phase="prefill", seq_len=seq)
d = sim.simulate_model(arch, name, phase="decode", context=seq, steps=steps)
wall = time.perf_counter() - t
print(json.dumps({{"layers": m.num_layers, "macs": int(p.ops.macs.sum()), "wall": wall,
                  "seconds": p.seconds + d.seconds}}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="quickstart")
    ap.add_argument("--models", default="llama-2-7b,llama-2-13b,llama-2-70b")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per model (min)")
    args = ap.parse_args(argv)
    print(f"{args.arch}: prefill {args.seq_len} tokens + {args.steps} decode steps, "
          f"each model in a fresh process, fastest of {args.repeat}")
    print(f"{'model':<14} {'layers':>6} {'prefill MACs':>14} {'simulated s':>12} "
          f"{'wall s':>8} {'wall / first':>12}")
    first = None
    for name in args.models.split(","):
        code = CHILD.format(repo=str(REPO), arch=args.arch, model=name, seq=args.seq_len,
                            steps=args.steps)
        runs = []
        for _ in range(max(args.repeat, 1)):
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                 text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        r = min(runs, key=lambda x: x["wall"])
        first = first or r
        print(f"{name:<14} {r['layers']:>6} {r['macs']:>14.3e} {r['seconds']:>12.3f} "
              f"{r['wall']:>8.3f} {r['wall'] / first['wall']:>11.2f}x"
              f"   (MACs {r['macs'] / first['macs']:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
