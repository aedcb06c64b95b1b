"""FlexCiM figures for README and plots/ (issue 8 item 9): where FlexCiM's gain comes from.

Writes, for Llama-3-8B with FLOW at 60 % average sparsity:

* ``plots/flexcim_patterns.png``: the pattern each decoder block asks for (FLOW) and what
  FlexCiM, the fixed 2:4 DCiM and the VEGETA-style array run it at;
* ``plots/flexcim_gain_breakdown.png``: decode and 512-token prefill cycles split into the
  macros' ideal-memory compute, input-port stall and weight-delivery (reload) stall, and energy
  by component, for every design;
* ``plots/flexcim_area.png``: the macro's area by unit (cells, column trees, distribution,
  per-cell pair selects, psum buffers, merge) against the dense DCiM macro.

Run: ``python bench/flexcim_figures.py`` (about 10 s); prints the numbers it plots.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib                      # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt        # noqa: E402
import numpy as np                     # noqa: E402

import sim                             # noqa: E402
from sim.api import accelerator_for    # noqa: E402
from sim.config import load_arch      # noqa: E402

MODEL, TARGET = "llama-3-8b", 0.6
DESIGNS = {"FlexCiM": "flexcim", "DCiM 2:4": "dcim-2of4", "VEGETA": "vegeta-64x64",
           "DCiM dense": "dcim-dense", "INT8 systolic": "int8-64x64"}


ALL_COMPONENTS = ["cells", "column_trees", "distribution", "merge", "weight_write",
                  "metadata_write", "accumulate", "pe_array", "sparse_pe", "noc", "sram", "l2",
                  "dram", "vector", "static"]


def _arch(name: str):
    a = load_arch(name).model_dump()
    if "sparsity" in a and name != "dcim-dense":
        a["sparsity"] = {"target": TARGET, "fallback": "mask"}
        a["name"] = f"{name}-fig"
    return load_arch(a)


def patterns(out: Path) -> None:
    model = sim.load_model(MODEL)
    rows = {}
    for label in ("FlexCiM", "DCiM 2:4", "VEGETA"):
        lp = accelerator_for(_arch(DESIGNS[label])).layer_patterns(model)
        rows["FLOW asks"] = [str(p) for p in lp.requested]
        rows[label] = [str(p) for p in lp.run]
    names = sorted({p for r in rows.values() for p in r},
                   key=lambda p: 1.0 if p == "dense" else int(p.split(":")[0]) / int(p.split(":")[1]))
    cmap = plt.get_cmap("viridis", len(names))
    fig, ax = plt.subplots(figsize=(10, 2.8))
    for i, (label, pats) in enumerate(rows.items()):
        for layer, p in enumerate(pats):
            ax.barh(i, 1, left=layer, color=cmap(names.index(p)), edgecolor="white", lw=0.3)
        counts = {p: pats.count(p) for p in names if p in pats}
        print(f"{label:10s} " + ", ".join(f"{p}: {n}" for p, n in counts.items()))
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_xlabel("decoder block")
    ax.invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(names))]
    ax.legend(handles, names, ncol=len(names), loc="upper center", bbox_to_anchor=(0.5, -0.35),
              frameon=False)
    ax.set_title(f"{MODEL}: per-block N:M (FLOW {TARGET:.0%}) and what each design runs")
    fig.tight_layout()
    fig.savefig(out / "flexcim_patterns.png", dpi=130)
    plt.close(fig)


def gain(out: Path) -> None:
    runs = {"decode (ctx 1024)": dict(phase="decode", batch=1, context=1024),
            "prefill 512": dict(phase="prefill", batch=1, seq_len=512)}
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for col, (rname, kw) in enumerate(runs.items()):
        res = {lab: sim.simulate_model(_arch(a), MODEL, **kw) for lab, a in DESIGNS.items()}
        labels = list(res)
        parts = {"array/macros (incl. in-macro weight writes)": [], "input-port stall": [],
                 "L2/DRAM delivery stall": []}
        for lab in labels:
            ops = res[lab].ops
            parts["array/macros (incl. in-macro weight writes)"].append(ops.compute_cycles.sum() / 1e6)
            parts["input-port stall"].append(ops.stall_sram.sum() / 1e6)
            parts["L2/DRAM delivery stall"].append((ops.stall_memory + ops.stall_drain).sum() / 1e6)
        ax = axes[0, col]
        bottom = np.zeros(len(labels))
        for name, vals in parts.items():
            ax.bar(labels, vals, bottom=bottom, label=name)
            bottom += np.array(vals)
        ax.set_ylabel("Mcycles")
        ax.set_title(f"{rname}: cycles")
        ax.tick_params(axis="x", rotation=20)
        if col == 0:
            ax.legend(fontsize=8)
        comps = sorted({c for r in res.values() for c in r.energy_pj})
        colors = plt.get_cmap("tab20")
        ax = axes[1, col]
        bottom = np.zeros(len(labels))
        for c in comps:
            vals = np.array([res[lab].energy_pj.get(c, 0.0) / 1e9 for lab in labels])
            if vals.max() <= 0.01 * max(sum(r.energy_pj.values()) / 1e9 for r in res.values()):
                continue
            ax.bar(labels, vals, bottom=bottom, label=c,
                   color=colors(ALL_COMPONENTS.index(c) % 20 if c in ALL_COMPONENTS else 19))
            bottom += vals
        ax.set_ylabel("mJ")
        ax.set_title(f"{rname}: energy (components > 1 %)")
        ax.tick_params(axis="x", rotation=20)
        ax.legend(fontsize=7, ncol=2)
        for lab in labels:
            r = res[lab]
            print(f"{rname:18s} {lab:14s} {r.seconds * 1e3:9.2f} ms "
                  f"{sum(r.energy_pj.values()) / 1e9:9.1f} mJ")
    fig.suptitle(f"{MODEL}, FLOW {TARGET:.0%}: where the time and energy go")
    fig.tight_layout()
    fig.savefig(out / "flexcim_gain_breakdown.png", dpi=130)
    plt.close(fig)


def area(out: Path) -> None:
    designs = {"FlexCiM macro (cell selects)": "flexcim", "dense DCiM macro": "dcim-dense"}
    from sim.hw.dcim import macro_area_um2
    fig, ax = plt.subplots(figsize=(8, 3.2))
    y = 0
    for label, name in designs.items():
        acc = accelerator_for(load_arch(name))
        a = macro_area_um2(acc.arch.macro, acc.dtech)
        left = 0.0
        for k, v in a.items():
            ax.barh(y, v / 1e3, left=left, label=k if y == 0 else None)
            left += v / 1e3
        flex = (a["distribution"] + a["merge"] + a.get("cell_select", 0.0)) / sum(a.values())
        print(f"{label:30s} {sum(a.values()):9.0f} um^2; distribution+merge+cell selects "
              f"{flex:.1%}; " + ", ".join(f"{k} {v:.0f}" for k, v in a.items()))
        y += 1
    ax.set_yticks(range(len(designs)), list(designs))
    ax.set_xlabel("area (1000 um^2, 7 nm)")
    ax.legend(fontsize=8, ncol=3, loc="lower right")
    ax.set_title("macro area by unit: FlexCiM (P = 4 x 32 x 32) vs dense DCiM (128 x 32)")
    fig.tight_layout()
    fig.savefig(out / "flexcim_area.png", dpi=130)
    plt.close(fig)


def main() -> int:
    out = REPO / "plots"
    out.mkdir(exist_ok=True)
    patterns(out)
    gain(out)
    area(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
