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
    """Latency by operator category (compute vs memory stall) and energy by component, per run."""
    exp = result.experiment
    runs = list(result.runs.run)
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(12, 4.6))
    x = range(len(runs))
    width = 0.6

    # latency: stacked categories, each split into compute (solid) and stall (hatched)
    secs_per_cycle = {r: s / c if c else 0.0 for r, s, c in
                      zip(result.runs.run, result.runs.seconds, result.runs.cycles)}
    bottom = [0.0] * len(runs)
    for (cat, ops), color in zip(CATEGORIES.items(), COLORS):
        for part, hatch, alpha in (("compute_cycles", None, 1.0), ("stall_cycles", "//", 0.45)):
            vals = []
            for r in runs:
                sel = result.ops[(result.ops.run == r) & result.ops.op.isin(ops)]
                vals.append(float(sel[part].sum()) * secs_per_cycle[r] * 1e3)
            if not any(vals):
                continue
            label = cat if part == "compute_cycles" else None
            ax_t.bar(x, vals, width, bottom=bottom, color=color, alpha=alpha, hatch=hatch,
                     edgecolor="white", linewidth=0.4, label=label)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax_t.set_xticks(list(x), runs)
    ax_t.set_ylabel("latency (ms)")
    ax_t.set_title("Latency by operator (hatched: memory stall)")
    ax_t.legend(fontsize=8, frameon=False)
    for i, b in enumerate(bottom):
        ax_t.annotate(f"{b:.3g} ms", (i, b), ha="center", va="bottom", fontsize=8)

    # energy: stacked components
    bottom = [0.0] * len(runs)
    for comp, color in zip(COMPONENTS, COLORS):
        vals = [float(result.energy[(result.energy.run == r) & (result.energy.component == comp)]
                      .energy_pj.sum()) * 1e-9 for r in runs]
        if not any(vals):
            continue
        ax_e.bar(x, vals, width, bottom=bottom, color=color, label=comp.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax_e.set_xticks(list(x), runs)
    ax_e.set_ylabel("energy (mJ)")
    ax_e.set_title("Energy by component")
    ax_e.legend(fontsize=8, frameon=False)
    for i, b in enumerate(bottom):
        ax_e.annotate(f"{b:.3g} mJ", (i, b), ha="center", va="bottom", fontsize=8)

    fig.suptitle(f"{exp.name}: {exp.model.name} on {exp.arch.name}", fontsize=11)
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
