"""Figures of a Result (matplotlib, no screen needed). Registered by name for ``outputs.plots``."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..hw.accelerator import COMPONENTS  # noqa: E402

# operator -> category shown in the latency breakdown
CATEGORIES = {
    "attention (QK, AV)": ("qk", "av"),
    "QKV / O projections": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "FFN": ("gate_proj", "up_proj", "down_proj"),
    "LM head": ("lm_head",),
    "vector ops": ("norm_attn", "norm_ffn", "softmax", "act", "residual_attn", "residual_ffn",
                   "final_norm"),
    "embedding": ("embed",),
}
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3"]

_PLOTS = {}


def register_plot(name):
    def deco(fn):
        _PLOTS[name] = fn
        return fn
    return deco


def plot_names() -> list[str]:
    return sorted(_PLOTS)


@register_plot("breakdown")
def breakdown(result, path: Path) -> Path:
    """Per run: where the time goes (operator categories, compute vs memory stall) and where the
    energy goes (components). Bars are shares of each run so that a 1-token decode step and a
    long prefill read side by side; the absolute totals are printed on the bars."""
    exp = result.experiment
    runs = list(result.runs.run)
    totals = dict(zip(result.runs.run, result.runs.cycles))
    seconds = dict(zip(result.runs.run, result.runs.seconds))
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(12, 4.8))
    x = list(range(len(runs)))
    width = 0.6

    bottom = [0.0] * len(runs)
    for (cat, ops), color in zip(CATEGORIES.items(), COLORS):
        for part, hatch, alpha in (("compute_cycles", None, 1.0), ("stall_cycles", "//", 0.45)):
            vals = []
            for r in runs:
                sel = result.ops[(result.ops.run == r) & result.ops.op.isin(ops)]
                vals.append(100.0 * float(sel[part].sum()) / totals[r] if totals[r] else 0.0)
            if not any(vals):
                continue
            ax_t.bar(x, vals, width, bottom=bottom, color=color, alpha=alpha, hatch=hatch,
                     edgecolor="white", linewidth=0.4,
                     label=cat if part == "compute_cycles" else None)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax_t.set_xticks(x, runs)
    ax_t.set_ylim(0, 112)
    ax_t.set_ylabel("share of run latency (%)")
    ax_t.set_title("Latency by operator (hatched: memory stall)")
    ax_t.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for i, r in enumerate(runs):
        ax_t.annotate(f"{seconds[r] * 1e3:.4g} ms", (i, 101), ha="center", va="bottom", fontsize=9)

    energy = result.energy.pivot_table(index="run", columns="component", values="energy_pj",
                                       aggfunc="sum").reindex(runs)
    tokens = dict(zip(result.runs.run, result.runs.tokens))
    bottom = [0.0] * len(runs)
    for comp, color in zip(COMPONENTS, COLORS):
        if comp not in energy:
            continue
        vals = [100.0 * energy.loc[r, comp] / energy.loc[r].sum() for r in runs]
        if not any(v > 0 for v in vals):
            continue
        ax_e.bar(x, vals, width, bottom=bottom, color=color, label=comp.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax_e.set_xticks(x, runs)
    ax_e.set_ylim(0, 112)
    ax_e.set_ylabel("share of run energy (%)")
    ax_e.set_title("Energy by component")
    ax_e.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for i, r in enumerate(runs):
        total_mj = energy.loc[r].sum() * 1e-9
        ax_e.annotate(f"{total_mj:.4g} mJ, {total_mj / max(tokens[r], 1):.3g} mJ/token", (i, 101),
                      ha="center", va="bottom", fontsize=9)

    arr = exp.arch.array
    fig.suptitle(f"{exp.name}: {exp.model.name} on {exp.arch.name} "
                 f"({arr.rows}x{arr.cols} {arr.dataflow.upper()}, {exp.arch.clock_ghz:g} GHz)",
                 fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def write_plots(result, out_dir: Path, names=None) -> list[Path]:
    names = list(names if names is not None else result.experiment.outputs.plots)
    unknown = [n for n in names if n not in _PLOTS]
    if unknown:
        raise ValueError(f"unknown plot(s) {unknown}; available: {plot_names()}")
    return [_PLOTS[n](result, out_dir / f"{n}.png") for n in names]
