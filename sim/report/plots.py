"""Figures of a Result (matplotlib, no screen needed). Registered by name for ``outputs.plots``."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


# operator -> category shown in the latency breakdown
CATEGORIES = {
    "attention (QK, AV)": ("qk", "av"),
    "QKV / O projections": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "FFN": ("gate_proj", "up_proj", "down_proj"),
    "LM head": ("lm_head",),
    "vector ops": ("norm_attn", "norm_ffn", "softmax", "act", "residual_attn", "residual_ffn",
                   "final_norm", "norm", "residual"),
    "embedding": ("embed",),
    # a state-space (Mamba) model's blocks
    "SSM projections (in, x, dt, out)": ("in_proj", "x_proj", "dt_proj", "out_proj"),
    "selective scan + conv1d": ("scan", "conv1d"),
    "SSM state load / store": ("state_load", "state_store"),
}
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
          "#CCB974", "#64B5CD", "#8C8C8C"]
# one fixed colour per hardware component, in every figure
COMPONENT_COLORS = {"pe_array": "#4C72B0", "sram": "#DD8452", "l2": "#55A868", "dram": "#C44E52",
                    "noc": "#8172B3", "vector": "#937860", "static": "#DA8BC3",
                    "recon": "#CCB974", "control": "#8C8C8C"}

_PLOTS = {}


def register_plot(name):
    def deco(fn):
        _PLOTS[name] = fn
        return fn
    return deco


def plot_names() -> list[str]:
    return sorted(_PLOTS)


class _Group(NamedTuple):
    """One bar: a run of a design point."""

    variant: str
    run: str
    label: str


class _Segment(NamedTuple):
    """One operator category in the latency panel: its share of each bar (compute, stall)."""

    label: str
    color: str
    compute: list
    stall: list


def _groups(result) -> list[_Group]:
    """Every run of every design point, in order."""
    many = result.runs.variant.nunique() > 1
    return [_Group(v, r, f"{v}\n{r}" if many else r)
            for v, r in zip(result.runs.variant, result.runs.run)]


def _title(result, what: str) -> str:
    exp = result.experiment
    if exp.variants:       # the design points differ: the variant names label the bars
        base = f"{exp.name}: {exp.model.name}, {len(exp.variants)} design points"
    else:
        base = f"{exp.name}: {exp.model.name} on {exp.arch.name} ({result.arch_description})"
    return f"{base} — {what}" if what else base


# categories whose share stays below this in every run are drawn as one "other" segment, so
# that no segment is a sliver too thin to see or label
MIN_SHARE_PCT = 2.0


def _ms(seconds: float) -> str:
    """A latency for a bar label: ms below one second, else s (never an exponent)."""
    ms = seconds * 1e3
    if ms >= 1000:
        return f"{ms / 1000:.3g} s" if ms < 1e6 else f"{ms / 1000:,.0f} s"
    if ms < 0.01:
        return f"{ms * 1000:.3g} µs"
    return f"{ms:.3g} ms"


def _mj(pj: float) -> str:
    mj = pj * 1e-9
    return f"{mj:.3g} mJ" if mj < 1000 else f"{mj:,.0f} mJ"


def _latency_segments(result, groups, totals) -> list[_Segment]:
    """The segments of the operator categories, small ones merged into "other (...)"."""
    segs, small = [], []
    for (cat, ops), color in zip(CATEGORIES.items(), COLORS):
        parts = []
        for part in ("compute_cycles", "stall_cycles"):
            vals = []
            for v, r, _ in groups:
                sel = result.ops[(result.ops.variant == v) & (result.ops.run == r)
                                 & result.ops.op.isin(ops)]
                t = totals[(v, r)]
                vals.append(100.0 * float(sel[part].sum()) / t if t else 0.0)
            parts.append(vals)
        share = [c + st for c, st in zip(*parts)]
        if not any(share):
            continue
        (segs if max(share) >= MIN_SHARE_PCT else small).append(_Segment(cat, color, *parts))
    if len(small) == 1:
        segs.extend(small)
    elif small:
        comp = [sum(x) for x in zip(*(s.compute for s in small))]
        stall = [sum(x) for x in zip(*(s.stall for s in small))]
        names = ", ".join(s.label for s in small)
        segs.append(_Segment(f"other ({names})", "#B0B0B0", comp, stall))
    return segs


def _xticks(ax, x, labels, many):
    if many:                      # one line per label, turned and anchored at its bar
        labels = [lab.replace("\n", " · ") for lab in labels]
        ax.set_xticks(x, labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=8)
    else:
        ax.set_xticks(x, labels, fontsize=10)


@register_plot("breakdown")
def breakdown(result, path: Path) -> Path:
    """Per run: where the time goes (operator categories, compute vs memory stall) and where the
    energy goes (components). Bars are shares of each run so that a 1-token decode step and a
    long prefill read side by side; the absolute totals are printed above the bars.
    Categories and components below MIN_SHARE_PCT in every run are merged into "other"."""
    groups = _groups(result)
    runs = result.runs
    key = list(zip(runs.variant, runs.run))
    totals = dict(zip(key, runs.cycles))
    seconds = dict(zip(key, runs.seconds))
    many = len(groups) > 6               # many design points: panels stacked, labels turned
    if many:
        longest = max(len(g.label) for g in groups)     # turned labels need room below
        fig, (ax_t, ax_e) = plt.subplots(2, 1, figsize=(max(10, 0.6 * len(groups) + 4),
                                                        8 + 0.08 * longest))
    else:
        fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(max(11, 1.6 * len(groups) + 7), 4.8))
    note = dict(fontsize=7, rotation=90) if many else dict(fontsize=9)
    top = 135 if many else 112
    x = list(range(len(groups)))
    labels = [g.label for g in groups]
    width = 0.6

    bottom = [0.0] * len(groups)
    for label, color, comp, stall in _latency_segments(result, groups, totals):
        for vals, hatch, alpha, name in ((comp, None, 1.0, label), (stall, "//", 0.45, None)):
            if not any(vals):
                continue
            ax_t.bar(x, vals, width, bottom=bottom, color=color, alpha=alpha, hatch=hatch,
                     edgecolor="white", linewidth=0.4, label=name)
            bottom = [b + v for b, v in zip(bottom, vals)]
    _xticks(ax_t, x, labels, many)
    ax_t.set_ylim(0, top)
    ax_t.set_yticks(range(0, 101, 20))
    ax_t.set_ylabel("share of run latency (%)")
    ax_t.set_title("Latency by operator (hatched: memory stall)")
    ax_t.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for i, (v, r, _) in enumerate(groups):
        ax_t.annotate(_ms(seconds[(v, r)]), (i, 101), ha="center", va="bottom", **note)

    energy = result.energy.pivot_table(index=["variant", "run"], columns="component",
                                       values="energy_pj", aggfunc="sum")
    shares = {}
    # the components in the result's own order (the accelerator's declared ones first)
    for comp in [c for c in dict.fromkeys(result.energy.component) if c in energy]:
        vals = [100.0 * energy.loc[(v, r), comp] / energy.loc[(v, r)].sum()
                if energy.loc[(v, r)].sum() else 0.0 for v, r, _ in groups]
        if any(val > 0 for val in vals):
            shares[comp] = vals
    small = [c for c, vals in shares.items() if max(vals) < MIN_SHARE_PCT]
    if len(small) > 1:
        merged = [sum(x) for x in zip(*(shares.pop(c) for c in small))]
        shares["other (" + ", ".join(c.replace("_", " ") for c in small) + ")"] = merged
    bottom = [0.0] * len(groups)
    for i, (comp, vals) in enumerate(shares.items()):
        color = ("#B0B0B0" if comp.startswith("other (")
                 else COMPONENT_COLORS.get(comp, COLORS[i % len(COLORS)]))
        ax_e.bar(x, vals, width, bottom=bottom, color=color, label=comp.replace("_", " "))
        bottom = [b + val for b, val in zip(bottom, vals)]
    _xticks(ax_e, x, labels, many)
    ax_e.set_ylim(0, top)
    ax_e.set_yticks(range(0, 101, 20))
    ax_e.set_ylabel("share of run energy (%)")
    ax_e.set_title("Energy by component (total above each bar)")
    ax_e.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for i, (v, r, _) in enumerate(groups):
        ax_e.annotate(_mj(energy.loc[(v, r)].sum()), (i, 101), ha="center", va="bottom",
                      **note)

    fig.suptitle(_title(result, ""), fontsize=11)
    return _save(fig, path)


@register_plot("compare")
def compare(result, path: Path) -> Path:
    """Design points side by side: latency and energy of every run and the compute area
    (PE array + ReCoN + vector + control), each normalized to the first variant."""
    runs = result.runs
    variants = list(dict.fromkeys(runs.variant))
    run_names = list(dict.fromkeys(runs.run))
    baseline = variants[0]                 # every panel is normalized to the first variant
    fig, (ax_latency, ax_energy, ax_area) = plt.subplots(1, 3, figsize=(15, 4.6))
    width = 0.8 / max(len(variants), 1)
    for ax, field, title in ((ax_latency, "seconds", "Latency"),
                             (ax_energy, "energy_total_j", "Energy")):
        for j, v in enumerate(variants):
            vals = []
            for r in run_names:
                base = runs[(runs.variant == baseline) & (runs.run == r)][field].iloc[0]
                mine = runs[(runs.variant == v) & (runs.run == r)][field].iloc[0]
                vals.append(mine / base if base else 0.0)
            xs = [i + (j - (len(variants) - 1) / 2) * width for i in range(len(run_names))]
            bars = ax.bar(xs, vals, width, color=COLORS[j % len(COLORS)], label=v)
            if len(variants) <= 4:         # more labels than that would overlap
                for b, val in zip(bars, vals):
                    ax.annotate(f"{val:.2f}", (b.get_x() + b.get_width() / 2, val),
                                ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(run_names)), run_names)
        ax.set_ylabel(f"normalized to {baseline}")
        ax.set_title(f"{title} (normalized)")
    area = result.area[~result.area.component.isin(["sram", "l2"])]
    compute = area.groupby("variant", sort=False).area_um2.sum()
    vals = [compute[v] / compute[baseline] for v in variants]
    bars = ax_area.bar(range(len(variants)), vals, 0.6,
                       color=[COLORS[j % len(COLORS)] for j in range(len(variants))])
    for b, val in zip(bars, vals):
        ax_area.annotate(f"{val:.3f}", (b.get_x() + b.get_width() / 2, val), ha="center",
                         va="bottom", fontsize=8)
    ax_area.set_xticks(range(len(variants)), variants, rotation=20)
    ax_area.set_title("Compute area (normalized)")
    ax_latency.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    exp = result.experiment
    fig.suptitle(f"{exp.name}: {exp.model.name}, {len(variants)} design points", fontsize=11)
    return _save(fig, path)


@register_plot("area")
def area(result, path: Path) -> Path:
    """Area per design point: the compute part (PE array, ReCoN, vector unit, control) by
    component, and ReCoN's share of the compute area and of the whole chip."""
    a = result.area.pivot_table(index="variant", columns="component", values="area_um2",
                                aggfunc="sum", sort=False).fillna(0.0)
    variants = list(dict.fromkeys(result.area.variant))
    a = a.reindex(variants)
    compute_parts = [c for c in a.columns if c not in ("sram", "l2")]
    compute = a[compute_parts].sum(axis=1)
    fig, (ax_c, ax_r) = plt.subplots(1, 2, figsize=(max(12, 2.2 * len(variants) + 4), 4.6))
    x = list(range(len(variants)))
    bottom = [0.0] * len(variants)
    for comp in compute_parts:
        vals = [100.0 * a.loc[v, comp] / compute[v] for v in variants]
        ax_c.bar(x, vals, 0.6, bottom=bottom, color=COMPONENT_COLORS.get(comp, "#64B5CD"),
                 label=comp.replace("_", " "))
        bottom = [b + val for b, val in zip(bottom, vals)]
    for i, v in enumerate(variants):
        ax_c.annotate(f"{compute[v] * 1e-6:.3g} mm²", (i, 101), ha="center", va="bottom",
                      fontsize=8)
    ax_c.set_xticks(x, variants)
    ax_c.set_ylim(0, 112)
    ax_c.set_ylabel("share of compute area (%)")
    ax_c.set_title("Compute area by component")
    ax_c.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if "recon" in a:
        width = 0.38
        of_compute = [100.0 * a.loc[v, "recon"] / compute[v] for v in variants]
        of_total = [100.0 * a.loc[v, "recon"] / a.loc[v].sum() for v in variants]
        for off, vals, label, color in ((-width / 2, of_compute, "of compute area", "#CCB974"),
                                        (width / 2, of_total, "of total area", "#8C8C8C")):
            bars = ax_r.bar([i + off for i in x], vals, width, color=color, label=label)
            for b, val in zip(bars, vals):
                ax_r.annotate(f"{val:.2g} %", (b.get_x() + b.get_width() / 2, val),
                              ha="center", va="bottom", fontsize=8)
        ax_r.set_xticks(x, variants)
        ax_r.set_ylabel("ReCoN area (%)")
        ax_r.set_title("ReCoN area overhead")
        ax_r.legend(fontsize=8, frameon=False)
    else:
        ax_r.axis("off")
    fig.suptitle(_title(result, "area"), fontsize=11)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def check_plot_names(names, file=None) -> None:
    """ConfigError (key ``outputs.plots.<i>``) for a name no plot is registered under."""
    from ..config import ConfigError
    from ..config.errors import did_you_mean
    for i, n in enumerate(names):
        if n not in _PLOTS:
            raise ConfigError(f"a plot name ({', '.join(plot_names())})", file=file,
                              key=f"outputs.plots.{i}", got=repr(n),
                              hint=did_you_mean(n, plot_names()))


def write_plots(result, out_dir: Path, names=None) -> list[Path]:
    names = list(names if names is not None else result.experiment.outputs.plots)
    check_plot_names(names, result.experiment.origin)
    return [_PLOTS[n](result, out_dir / f"{n}.png") for n in names]
