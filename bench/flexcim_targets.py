"""FlexCiM against the paper's targets, and the assumptions that move the numbers (the README's
"FlexCiM ... Targets: paper vs Strata" figures).

1. Runs the five shipped experiments ``experiments/flexcim_<model>.yaml`` and prints, per model,
   run and FLOW sparsity, FlexCiM's speed-up and energy gain over the better sparse baseline
   (fixed 2:4 DCiM or VEGETA), over the equal-area dense DCiM and over INT8, then the ranges.
2. Re-runs Llama-2-7B at FLOW 60 % with one assumption changed at a time: double-buffered
   weights, a 4 MB input buffer, 4 macros, the RTL's shared per-row pair select; and prints the
   macro-area shares.

Run: ``python bench/flexcim_targets.py`` (about 30 s on 2 cores).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sim                             # noqa: E402
from sim.api import accelerator_for    # noqa: E402
from sim.config import load_arch      # noqa: E402
from sim.hw.dcim import macro_area_um2  # noqa: E402

MODELS = ("llama-2-7b", "llama-3-8b", "qwen2.5-3b", "opt-6.7b", "mamba-2.8b")


def targets() -> None:
    gains = {("decode", "lat"): [], ("decode", "en"): [], ("prefill", "lat"): [],
             ("prefill", "en"): []}
    print(f"{'model':11s} {'run':12s} {'sp':4s} {'FlexCiM ms':>10s} {'mJ':>7s} "
          f"{'x best sparse (lat)':>20s} {'x best sparse (E)':>18s} {'x dense DCiM':>12s} "
          f"{'x INT8':>7s}")
    for m in MODELS:
        r = sim.run(REPO / "experiments" / f"flexcim_{m}.yaml").runs
        for run in dict.fromkeys(r.run):
            v = r[r.run == run].set_index("variant")
            phase = "decode" if run.startswith("decode") else "prefill"
            for s in ("50%", "60%"):
                f = v.loc[f"FlexCiM {s}"]
                sparse = [f"DCiM 2:4 {s}", f"VEGETA {s}"]
                bl = min(sparse, key=lambda b: v.loc[b].seconds)
                be = min(sparse, key=lambda b: v.loc[b].energy_total_j)
                lat = v.loc[bl].seconds / f.seconds
                en = v.loc[be].energy_total_j / f.energy_total_j
                gains[(phase, "lat")].append(lat)
                gains[(phase, "en")].append(en)
                print(f"{m:11s} {run:12s} {s:4s} {f.seconds * 1e3:10.1f} "
                      f"{f.energy_total_j * 1e3:7.0f} {lat:8.2f}x {bl.replace(' ' + s, ''):>11s} "
                      f"{en:7.2f}x {be.replace(' ' + s, ''):>10s} "
                      f"{v.loc['DCiM dense'].seconds / f.seconds:11.2f}x "
                      f"{v.loc['INT8 systolic'].seconds / f.seconds:6.2f}x")
    print("\nFlexCiM vs the best sparse baseline (paper: up to 1.75x latency, 1.5x energy):")
    for (phase, what), g in gains.items():
        print(f"  {phase:8s} {'latency' if what == 'lat' else 'energy':8s} "
              f"{min(g):.2f}x .. {max(g):.2f}x")


def _variant(name: str, **changes):
    a = load_arch("flexcim").model_dump()
    a["name"] = f"flexcim-{name}"
    for path, value in changes.items():
        section, key = path.split("__")
        a[section] = {**a[section], key: value} if isinstance(a[section], dict) else value
    return load_arch(a)


def assumptions() -> None:
    print("\nLlama-2-7B, FLOW 60 %: one assumption changed at a time "
          "(prefill 512 tokens; decode at context 1024)")
    base_sram = load_arch("flexcim").memory.sram.model_dump()
    cases = {
        "as shipped (RTL single-buffered, 512 KB input buffer, 1 macro)": _variant("base"),
        "macro.reload_overlap: true": _variant("overlap", macro__reload_overlap=True),
        "reload_overlap + memory.sram.ifmap_kb: 4096": load_arch({
            **_variant("overlap", macro__reload_overlap=True).model_dump(),
            "name": "flexcim-bigbuf",
            "memory": {**load_arch("flexcim").memory.model_dump(),
                       "sram": {**base_sram, "ifmap_kb": 4096}}}),
        "macros: 4": load_arch({**load_arch("flexcim").model_dump(), "name": "flexcim-m4",
                                "macros": 4}),
    }
    for label, arch in cases.items():
        p = sim.simulate_model(arch, "llama-2-7b", phase="prefill", batch=1, seq_len=512)
        d = sim.simulate_model(arch, "llama-2-7b", phase="decode", batch=1, context=1024)
        # the decode's DRAM floor: every byte it reads and writes at the DRAM bandwidth
        floor = (d.ops.dram_read_bytes.sum() + d.ops.dram_write_bytes.sum()) / (
            arch.memory.dram.bandwidth_gbps * 1e9)
        print(f"  {label:62s} prefill {p.seconds * 1e3:7.1f} ms "
              f"{sum(p.energy_pj.values()) / 1e9:7.0f} mJ; decode {d.seconds * 1e3:6.2f} ms "
              f"(DRAM floor {floor * 1e3:.2f} ms)")
    for name in ("vegeta-64x64",):
        a = load_arch(name).model_dump()
        a["name"], a["sparsity"] = name + "-60", {"target": 0.6}
        p = sim.simulate_model(a, "llama-2-7b", phase="prefill", batch=1, seq_len=512)
        print(f"  {'VEGETA (for reference)':62s} prefill {p.seconds * 1e3:7.1f} ms "
              f"{sum(p.energy_pj.values()) / 1e9:7.0f} mJ")
    print("\nmacro area (7 nm):")
    for label, arch in (("flexcim (select_scope cell)", load_arch("flexcim")),
                        ("flexcim with select_scope row",
                         _variant("row", macro__select_scope="row")),
                        ("dcim-dense", load_arch("dcim-dense"))):
        acc = accelerator_for(arch)
        a = macro_area_um2(arch.macro, acc.dtech)
        total = sum(a.values())
        print(f"  {label:30s} {total:9.0f} um^2; distribution + merge "
              f"{(a['distribution'] + a['merge']) / total:.1%}; per-cell pair selects "
              f"{a['cell_select']:.0f} um^2 ({a['cell_select'] / total:.1%})")
    def compute_area(name):            # the chip without its SRAM buffers and L2
        parts = accelerator_for(load_arch(name)).area_um2()
        return sum(v for k, v in parts.items() if k not in ("sram", "l2"))
    area = {n: compute_area(n) for n in ("flexcim", "vegeta-64x64")}
    print(f"  compute area VEGETA / FlexCiM: {area['vegeta-64x64'] / area['flexcim']:.3f}")


def main() -> int:
    targets()
    assumptions()
    return 0


if __name__ == "__main__":
    sys.exit(main())
