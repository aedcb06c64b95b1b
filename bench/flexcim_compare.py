#!/usr/bin/env python3
"""FlexCiM against its equal-area DCiM baselines on Llama-2-7B (issue 8): one decode step at
context 512 and a 512-token prefill, batch 1, each arch's shipped sparsity (flexcim and
dcim-2of4: FLOW at 60 %, first/last blocks dense; dcim-dense: dense). Prints cycles, ms at the
arch clock, energy and the wall time of each simulation.

    python bench/flexcim_compare.py [arch ...]
"""
from __future__ import annotations

import sys
import time

import sim


def main(archs) -> None:
    for arch in archs:
        clock = sim.api.accelerator_for(arch).arch.clock_ghz
        row = [arch]
        for what, kw in (("decode ctx512", dict(phase="decode", batch=1, context=512)),
                         ("prefill 512", dict(phase="prefill", batch=1, seq_len=512))):
            t = time.perf_counter()
            r = sim.simulate_model(arch, "llama-2-7b", **kw)
            wall = time.perf_counter() - t
            uj = sum(r.energy_pj.values()) / 1e6
            row.append(f"{what}: {r.cycles} cycles = {r.cycles / clock / 1e6:.2f} ms, "
                       f"{uj / 1e3:.1f} mJ ({wall:.2f} s to simulate)")
        print(" | ".join(row))


if __name__ == "__main__":
    main(sys.argv[1:] or ["flexcim", "dcim-dense", "dcim-2of4"])
