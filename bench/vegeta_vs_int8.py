"""Llama-2-7B on the dense INT8 64x64 systolic array vs its VEGETA-style sparse sibling at 60 %
FLOW sparsity (issue 8 item 6): 512-token prefill and one decode step at context 512.

    PYTHONPATH=. python bench/vegeta_vs_int8.py [--target 0.6] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import sim
from sim.hw.registry import build_accelerator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--target", type=float, default=0.6)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model = sim.load_model(a.model)
    veg = {"extends": "vegeta-64x64", "name": "vegeta-64x64-flow",
           "sparsity": {"target": a.target}}
    lp = build_accelerator(sim.load_arch(veg)).layer_patterns(model, a.seed)
    print(f"{a.model}: FLOW target {a.target}: requested {lp.counts('requested')} "
          f"(mean {lp.mean_sparsity('requested'):.4f}) -> runs {lp.counts()} "
          f"(mean {lp.mean_sparsity():.4f}, fallback {lp.fallback})")
    runs = {"prefill": dict(phase="prefill", batch=1, seq_len=a.seq),
            "decode": dict(phase="decode", batch=1, context=a.seq)}
    for name, kw in runs.items():
        res = {}
        for label, arch in (("int8-64x64", "int8-64x64"), ("vegeta-64x64", veg)):
            t0 = time.perf_counter()
            r = sim.simulate_model(arch, model, seed=a.seed, **kw)
            wall = time.perf_counter() - t0
            res[label] = r
            ops = r.ops
            print(f"  {name:7s} {label:13s} cycles {r.cycles:>13,d}  "
                  f"energy {r.energy_total_pj / 1e6:10.2f} uJ"
                  f"  dram {int(ops.dram_read_bytes.sum() + ops.dram_write_bytes.sum()) / 2**20:9.1f} MiB"
                  f"  macs {int(ops.macs.sum()):>16,d}  ({wall:.2f} s)")
        d, s = res["int8-64x64"], res["vegeta-64x64"]
        print(f"  {name:7s} speed-up {d.cycles / s.cycles:.3f}x, energy ratio "
              f"{d.energy_total_pj / s.energy_total_pj:.3f}x")
        for label, r in res.items():
            print(f"    {label} uJ: " + ", ".join(f"{k} {v / 1e6:.1f}"
                                                 for k, v in r.energy_pj.items()))


if __name__ == "__main__":
    main()
