#!/usr/bin/env python3
"""The README's MicroScopiQ energy shares and compute-area arithmetic, printed from Strata.

    .venv/bin/python bench/microscopiq_energy_area.py            # runs what it needs (~1 min)
    .venv/bin/python bench/microscopiq_energy_area.py --cached   # reads results/<experiment>/

Prints three blocks:

1. **Energy shares of a decode step**: per iso-accuracy experiment and design, the share of the
   decode run's energy spent in DRAM and in static (leakage x time) energy, and the range over
   all of them; MicroScopiQ v2's row is the one the README quotes.
2. **Compute area by the paper's Table 5** (the figures in ``arch/tech/7nm.yaml``): 4096 PEs of
   base + multi-precision area, the control unit and one ReCoN unit (switches + sync buffer);
   the factor eight units give; the per-unit area the paper's Fig. 18(a) factor of 1.58 would
   need (seven added units on top of the one-unit design); and Strata's own compute-area factor
   (which also counts the vector unit), from the accelerator's ``area_um2``.
3. **ReCoN at 128x128** (one unit): its area, and its share of the PE array and of the whole
   chip, from ``area_um2`` of ``microscopiq-64x64`` with a 128x128 array.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sim  # noqa: E402
from sim.api import accelerator_for  # noqa: E402
from sim.config import load_arch  # noqa: E402

MODELS = ["llama-2-7b", "llama-2-13b", "llama-3-8b", "opt-6.7b", "vila-7b"]
PAPER_18A = 1.58          # Fig. 18(a): compute area with eight ReCoN units, normalized to one


def energy_table(stem: str, cached: bool) -> pd.DataFrame:
    exp = sim.load_experiment(REPO / "experiments" / f"{stem}.yaml")
    path = REPO / "results" / exp.name / "energy.csv"
    if cached and path.exists():
        return pd.read_csv(path)
    return sim.run(exp).energy


def compute_area(area: dict) -> float:
    """PE array + ReCoN + vector + control: everything but the SRAM buffers and L2."""
    return sum(v for k, v in area.items() if k not in ("sram", "l2"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cached", action="store_true")
    args = ap.parse_args(argv)

    print("1. decode-step energy shares (iso-accuracy experiments, run 'decode')")
    print(f"   {'model':<12} {'design':<16} {'DRAM %':>7} {'static %':>9}")
    dram, static, v2 = [], [], []
    for model in MODELS:
        e = energy_table(f"microscopiq_iso_accuracy_{model}", args.cached)
        e = e[e.run == "decode"]
        for variant, g in e.groupby("variant", sort=False):
            by = g.set_index("component").energy_pj
            d, s = 100 * by["dram"] / by.sum(), 100 * by["static"] / by.sum()
            dram.append(d)
            static.append(s)
            if variant == "MicroScopiQ v2":
                v2.append((d, s))
            print(f"   {model:<12} {variant:<16} {d:>7.1f} {s:>9.2f}")
    print(f"   all designs: DRAM {min(dram):.1f}-{max(dram):.1f} %, "
          f"static {min(static):.2f}-{max(static):.2f} %")
    print(f"   MicroScopiQ v2: DRAM {min(d for d, _ in v2):.1f}-{max(d for d, _ in v2):.1f} %, "
          f"static {min(s for _, s in v2):.2f}-{max(s for _, s in v2):.2f} %")

    arch = load_arch("microscopiq-64x64")
    accel = accelerator_for(arch)
    tech = accel.tech
    pe = 4096 * (2.82 + 0.22)                       # Table 5, as quoted in arch/tech/7nm.yaml
    control = tech.controller_area_um2
    one = accelerator_for(load_arch(arch, ["recon.units=1"])).area_um2()
    unit = one["recon"]
    base = pe + control + unit
    eight = base + 7 * unit
    need = (PAPER_18A - 1) * base / 7
    print("\n2. compute area by Table 5 (um^2)")
    print(f"   4096 PEs x (2.82 + 0.22) = {pe:,.2f}; control {control:,.2f}; "
          f"one ReCoN unit {unit:,.2f} (switches + sync buffer)")
    print(f"   one unit: {base:,.0f}; eight units: {eight:,.0f}; factor {eight / base:.3f}")
    print(f"   per-unit area for Fig. 18(a)'s {PAPER_18A}: (1.58 - 1) x {base:,.0f} / 7 = "
          f"{need:,.0f} um^2, {need / unit:.1f}x Table 5's unit")
    strata = [compute_area(accelerator_for(load_arch(arch, [f"recon.units={u}"])).area_um2())
              for u in (1, 2, 4, 8)]
    print("   Strata's compute area (PE array + ReCoN + vector + control), units 1/2/4/8: "
          + " / ".join(f"{a / strata[0]:.3f}" for a in strata)
          + f" (vector unit {one['vector']:,.0f} um^2)")

    big = accelerator_for(load_arch(arch, ["array.rows=128", "array.cols=128",
                                           "recon.units=1"])).area_um2()
    print("\n3. one ReCoN unit at 128x128")
    print(f"   ReCoN {big['recon']:,.0f} um^2; PE array {big['pe_array']:,.0f} um^2 "
          f"({100 * big['recon'] / big['pe_array']:.2f} %); whole chip "
          f"{sum(big.values()):,.0f} um^2 ({100 * big['recon'] / sum(big.values()):.3f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
