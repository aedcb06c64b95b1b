"""Figures of sweep and search results (``strata plot RESULTS --kind KIND ...``).

``RESULTS`` is a sweep/search output folder (holding ``results.sqlite`` or ``search.sqlite``),
a store file, or a ``points.csv``. Only points that ran (``status`` ok) are plotted.

Every kind is a public function ``fn(df, out_path, **options) -> PlotData`` (registered in
:data:`PLOT_KINDS`); the :class:`PlotData` it returns holds the numbers it drew, so a caller
(``strata report``, a test) can check or tabulate exactly what the figure shows:

- ``pareto``: ``y`` against ``x`` with the 2-objective Pareto front, coloured by a column;
- ``pareto3d``: three objectives in a 3-D scatter with their 3-objective front, plus the three
  pairwise 2-D projections of that front;
- ``lines``: a metric against a swept key, one line per value of ``color``, aggregated
  (``best`` or ``mean``) over the keys that are neither;
- ``heatmap``: a metric over two numeric keys, each cell aggregated over the other keys;
- ``energy``: energy stacked by component (the ``energy_<component>_j`` columns), one bar per
  point or per value of a key.
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..config.errors import ConfigError

__all__ = ["pareto_mask", "load_results", "PlotData", "PLOT_KINDS", "plot", "plot_results",
           "plot_pareto", "plot_pareto3d", "plot_lines", "plot_heatmap", "plot_energy",
           "energy_components"]

_AGGS = ("best", "mean")
_COMPONENT = re.compile(r"energy_(.+)_j")
_FRONT = "crimson"


@dataclass(frozen=True)
class PlotData:
    """What one figure drew. ``table`` by kind: ``pareto``/``pareto3d``: the plotted points,
    indexed like the input frame (so ``df.loc[table.index[table.pareto]]`` gives the front's
    full rows), with their objective columns, the colour column if any and a bool ``pareto``;
    ``lines``: index the x values, one column per line (its group value, or ``y`` alone);
    ``heatmap``: index the y values (ascending), columns the x values, cells the metric (NaN
    where no point ran); ``energy``: index the bar labels, one column per energy component in
    stacking order (J) and ``total`` (the ``energy_j`` of the same rows, aggregated alike)."""

    kind: str
    path: Path
    table: object        # a pandas DataFrame
    note: str            # what was aggregated, as shown on the figure


def pareto_mask(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n x k) where column j is to be
    minimised (``"min"``) or maximised (``"max"``). A row is dominated when another is no
    worse in every column and better in one. Rows with a NaN are never on the front."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or v.shape[1] != len(senses):
        raise ValueError("values must be n x len(senses)")
    sign = np.array([1.0 if s == "min" else -1.0 for s in senses])
    v = v * sign
    ok = ~np.isnan(v).any(axis=1)
    mask = np.zeros(len(v), dtype=bool)
    idx = np.flatnonzero(ok)
    # sort by the first objective so each candidate is compared with fewer rows
    order = idx[np.lexsort(v[idx].T[::-1])]
    front: list[int] = []
    for i in order:
        row = v[i]
        if not any(np.all(v[j] <= row) and np.any(v[j] < row) for j in front):
            front = [j for j in front if not (np.all(row <= v[j]) and np.any(row < v[j]))]
            front.append(i)
    mask[front] = True
    return mask


def load_results(path: str | Path):
    """The tidy points DataFrame of a sweep or search output (folder, store or CSV)."""
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        stores = [p / n for n in ("results.sqlite", "search.sqlite") if (p / n).is_file()]
        if stores:
            p = stores[0]
        elif (p / "points.csv").is_file():
            p = p / "points.csv"
        else:
            raise ConfigError("a sweep or search output folder (results.sqlite, search.sqlite "
                              "or points.csv)", file=str(path), key="RESULTS", got="none of them")
    if not p.is_file():
        raise ConfigError("an existing sweep/search output", file=str(path), key="RESULTS",
                          got="no such file")
    if p.suffix == ".csv":
        return pd.read_csv(p)
    from .store import Store
    with Store(p) as store:
        return store.frame()


# ------------------------------------------------------------------------ input checks ----
def _column(df, name: str, key: str, where: str) -> str:
    if name not in df.columns:
        import difflib
        near = difflib.get_close_matches(name, list(df.columns), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"a column of the results{hint}", file=where, key=key, got=repr(name))
    return name


def _numeric(df, name: str, key: str, where: str, what: str = "a numeric column") -> str:
    import pandas as pd

    _column(df, name, key, where)
    col = df[name]
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        sample = ", ".join(map(repr, col.dropna().unique()[:3]))
        raise ConfigError(what, file=where, key=key, got=f"{name!r} holding {sample}")
    return name


def _several(df, name: str, key: str, where: str) -> None:
    n = df[name].nunique()
    if n < 2:
        raise ConfigError("a key with at least 2 values among the points that ran",
                          file=where, key=key, got=f"{name!r} with {n}")


def _distinct(where: str, **named) -> None:
    seen: dict[str, str] = {}
    for key, name in named.items():
        if name is None:
            continue
        if name in seen:
            raise ConfigError(f"a column other than {seen[name]}'s", file=where, key=key,
                              got=repr(name))
        seen[name] = key


def _choice(value: str, allowed: Sequence[str], key: str, where: str) -> str:
    if value not in allowed:
        raise ConfigError("one of " + ", ".join(allowed), file=where, key=key, got=repr(value))
    return value


def _ran(results, run: str | None, where: str, by_run: bool = False):
    """The rows that ran, of one run: ``run``, or the only one. ``by_run``: the figure keys on
    the ``run`` column itself, so every run is kept."""
    df = results
    if "status" in df.columns:
        df = df[df.status == "ok"]
    if run is not None:
        _column(df, "run", "--run", where)
        if run not in set(df.run):
            raise ConfigError("a run of the results (" + ", ".join(map(str, sorted(set(df.run))))
                              + ")", file=where, key="--run", got=repr(run))
        df = df[df.run == run]
    elif not by_run and "run" in df.columns and df.run.nunique() > 1:
        raise ConfigError("--run naming one of the runs (" + ", ".join(sorted(map(str, set(df.run))))
                          + ")", file=where, key="--run", got="none")
    if df.empty:
        raise ConfigError("results with at least one point that ran", file=where,
                          key="RESULTS", got="none")
    return df


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    _plt().close(fig)
    return out


def _short(key: str) -> str:
    """``arch.macro.sub_macros`` -> ``sub_macros`` (labels on crowded axes)."""
    return key.rsplit(".", 1)[-1]


def _scatter(ax, fig, df, cols, color, **kw) -> None:
    """Scatter ``df[cols]`` coloured by ``color``: a legend entry per value when it is not
    numeric, a colour bar when it is, one grey when there is none."""
    import pandas as pd

    if color is not None and not pd.api.types.is_numeric_dtype(df[color]):
        for value, g in df.groupby(color):
            ax.scatter(*(g[c] for c in cols), label=f"{color}={value}", **kw)
        return
    if color is None:
        ax.scatter(*(df[c] for c in cols), color="0.55", **kw)
        return
    sc = ax.scatter(*(df[c] for c in cols), c=df[color], cmap="viridis", **kw)
    fig.colorbar(sc, ax=ax, label=color, shrink=0.8)


def _title(text: str, run: str | None) -> str:
    return text + (f" ({run})" if run else "")


# ------------------------------------------------------------------------------- pareto ----
def plot_pareto(results, out: str | Path, *, x: str, y: str, color: str | None = None,
                run: str | None = None, senses: Iterable[str] = ("min", "min"),
                where: str = "<plot_pareto>") -> PlotData:
    """Scatter ``y`` against ``x`` over the points that ran, the Pareto front of (x, y) drawn
    as a step line (``senses``: min/max per axis), coloured by ``color``; one run (``run``)
    when the results hold several."""
    plt = _plt()
    df = _ran(results, run, where, by_run=color == "run")
    for key, name in (("--x", x), ("--y", y)):
        _numeric(df, name, key, where)
    if color:
        _column(df, color, "--color", where)
    senses = tuple(senses)
    fig, ax = plt.subplots(figsize=(7, 5))
    _scatter(ax, fig, df, (x, y), color, s=24)
    mask = pareto_mask(df[[x, y]].to_numpy(dtype=float), senses)
    front = df[mask].sort_values(x)
    ax.step(front[x], front[y], where="post", color=_FRONT, lw=1.2, label="Pareto front")
    ax.scatter(front[x], front[y], facecolors="none", edgecolors=_FRONT, s=60)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(_title(f"{y} against {x}", run)
                 + f": {len(df)} points, {int(mask.sum())} on the front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    cols = list(dict.fromkeys([x, y] + ([color] if color else [])))
    table = df[cols].assign(pareto=mask)
    return PlotData("pareto", _save(fig, out), table, f"senses {senses[0]}/{senses[1]}")


def plot_results(results, out: str | Path, *, x: str, y: str, color: str | None = None,
                 run: str | None = None, senses: Iterable[str] = ("min", "min"),
                 where: str = "<plot_results>") -> Path:
    """:func:`plot_pareto`, returning only the written PNG path (the first API)."""
    return plot_pareto(results, out, x=x, y=y, color=color, run=run, senses=senses,
                       where=where).path


def plot_pareto3d(results, out: str | Path, *, x: str, y: str, z: str,
                  color: str | None = None, run: str | None = None,
                  senses: Iterable[str] = ("min", "min", "min"),
                  where: str = "<plot_pareto3d>") -> PlotData:
    """Three objectives (e.g. latency, energy, area): a 3-D scatter of the points that ran
    with their 3-objective Pareto front ringed, and the three pairwise projections (x-y, x-z,
    y-z) of that front over the other points in grey. A point of the 3-objective front need
    not be on a pairwise 2-D front: it can win on the third objective."""
    plt = _plt()
    df = _ran(results, run, where, by_run=color == "run")
    _distinct(where, **{"--x": x, "--y": y, "--z": z})
    for key, name in (("--x", x), ("--y", y), ("--z", z)):
        _numeric(df, name, key, where)
    if color:
        _column(df, color, "--color", where)
    senses = tuple(senses)
    if len(senses) != 3:
        raise ValueError("pareto3d needs three senses")
    mask = pareto_mask(df[[x, y, z]].to_numpy(dtype=float), senses)
    front, rest = df[mask], df[~mask]
    fig = plt.figure(figsize=(12, 9.5))
    ax3 = fig.add_subplot(2, 2, 1, projection="3d")
    _scatter(ax3, fig, df, (x, y, z), color, s=18, alpha=0.8)
    ax3.scatter(front[x], front[y], front[z], facecolors="none", edgecolors=_FRONT, s=70,
                linewidths=1.3, label="3-objective front")
    ax3.set_xlabel(_short(x))
    ax3.set_ylabel(_short(y))
    ax3.set_zlabel(_short(z))
    ax3.legend(fontsize=7, loc="upper left")
    for i, (a, b) in enumerate(((x, y), (x, z), (y, z)), start=2):
        ax = fig.add_subplot(2, 2, i)
        ax.scatter(rest[a], rest[b], s=14, color="0.7", label="dominated")
        ax.scatter(front[a], front[b], s=30, color=_FRONT, label="3-objective front")
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        ax.grid(alpha=0.3)
        ax.set_title(f"{_short(b)} against {_short(a)}", fontsize=9)
        if i == 2:
            ax.legend(fontsize=7)
    note = "senses " + "/".join(senses)
    fig.suptitle(_title(f"{x}, {y}, {z}", run) + f": {len(df)} points, {int(mask.sum())} on "
                 f"the 3-objective front ({note})", fontsize=10)
    fig.tight_layout()
    cols = list(dict.fromkeys([x, y, z] + ([color] if color else [])))
    return PlotData("pareto3d", _save(fig, out), df[cols].assign(pareto=mask), note)


# -------------------------------------------------------------------- aggregated kinds ----
def _aggregate(df, by: list[str], value: str, agg: str, sense: str):
    """``value`` per group of ``by``: its best (``sense`` min or max) or its mean; and the
    most rows any group held (1: nothing was aggregated)."""
    g = df.groupby(by, sort=True)[value]
    if agg == "mean":
        out = g.mean()
    else:
        out = g.min() if sense == "min" else g.max()
    return out, int(g.size().max())


def _agg_words(agg: str, sense: str, value: str, n: int) -> str:
    if n <= 1:
        return "one point each"
    word = "mean" if agg == "mean" else sense
    return f"{word} {_short(value)} over the other keys (up to {n} points each)"


def plot_lines(results, out: str | Path, *, x: str, y: str, color: str | None = None,
               run: str | None = None, agg: str = "best", sense: str = "min",
               where: str = "<plot_lines>") -> PlotData:
    """A metric ``y`` against a swept key ``x``, one line per value of ``color`` (or one
    line). Points that share (x, color) but differ in other keys are aggregated: ``best``
    (the minimum, or the maximum with ``sense="max"``) or ``mean``; the legend says which."""
    import pandas as pd

    plt = _plt()
    df = _ran(results, run, where, by_run="run" in (x, color))
    _choice(agg, _AGGS, "--agg", where)
    _distinct(where, **{"--x": x, "--y": y, "--color": color})
    _column(df, x, "--x", where)
    _numeric(df, y, "--y", where)
    if color:
        _column(df, color, "--color", where)
    _several(df, x, "--x", where)
    by = [color, x] if color else [x]
    series, n = _aggregate(df, by, y, agg, sense)
    table = series.unstack(color) if color else series.to_frame(y)
    note = _agg_words(agg, sense, y, n)
    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("viridis")
    numeric_groups = color is not None and pd.api.types.is_numeric_dtype(table.columns)
    for i, col in enumerate(table.columns):
        line = table[col].dropna()
        kw = {"color": cmap(i / max(1, len(table.columns) - 1))} if numeric_groups else {}
        ax.plot(line.index, line.to_numpy(), marker="o", ms=4,
                label=f"{_short(color)}={col}" if color else y, **kw)
    ax.legend(fontsize=8, title=note, title_fontsize=7)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.set_title(_title(f"{y} against {x}", run), fontsize=10)
    fig.tight_layout()
    return PlotData("lines", _save(fig, out), table, note)


def plot_heatmap(results, out: str | Path, *, x: str, y: str, z: str, run: str | None = None,
                 agg: str = "best", sense: str = "min",
                 where: str = "<plot_heatmap>") -> PlotData:
    """A metric ``z`` over two numeric keys ``x`` (columns) and ``y`` (rows), each cell the
    ``best`` (min, or max with ``sense="max"``) or ``mean`` of the points that share its
    (x, y), annotated with its value; the best cell is outlined, empty cells (no point ran)
    are blank."""
    plt = _plt()
    df = _ran(results, run, where, by_run=False)
    _choice(agg, _AGGS, "--agg", where)
    _distinct(where, **{"--x": x, "--y": y, "--z": z})
    for key, name in (("--x", x), ("--y", y)):
        _numeric(df, name, key, where, what="a numeric key (a heatmap's axes are ordered)")
        _several(df, name, key, where)
    _numeric(df, z, "--z", where)
    cells, n = _aggregate(df, [y, x], z, agg, sense)
    table = cells.unstack(x).reindex(index=sorted(df[y].unique()),
                                     columns=sorted(df[x].unique()))
    note = _agg_words(agg, sense, z, n)
    v = table.to_numpy(dtype=float)
    if np.isnan(v).all():
        raise ConfigError("a metric with a value at some point", file=where, key="--z",
                          got=f"{z!r} empty at every point")
    fig, ax = plt.subplots(figsize=(1.2 * v.shape[1] + 3, 0.7 * v.shape[0] + 2.2))
    im = ax.imshow(np.ma.masked_invalid(v), origin="lower", aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, label=z)
    lo, hi = np.nanmin(v), np.nanmax(v)
    # enough significant digits that the cells' differences show (3 at least, 6 at most)
    spread = (hi - lo) / max(abs(hi), abs(lo)) if hi > lo else 1.0
    digits = int(min(6, max(3, np.ceil(-np.log10(spread)) + 2)))
    for (r, c), val in np.ndenumerate(v):
        if np.isnan(val):
            ax.text(c, r, "no point", ha="center", va="center", fontsize=7, color="0.5")
            continue
        bright = hi > lo and (val - lo) / (hi - lo) > 0.6
        ax.text(c, r, f"{val:.{digits}g}", ha="center", va="center", fontsize=8,
                color="black" if bright else "white")
    best = np.nanargmin(v) if sense == "min" else np.nanargmax(v)
    r, c = np.unravel_index(best, v.shape)
    ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec=_FRONT, lw=2))
    ax.set_xticks(range(v.shape[1]), [f"{t:g}" for t in table.columns])
    ax.set_yticks(range(v.shape[0]), [f"{t:g}" for t in table.index])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(_title(f"{z} by {_short(x)} and {_short(y)}", run) + f"\n{note}", fontsize=9)
    fig.tight_layout()
    return PlotData("heatmap", _save(fig, out), table, note)


def energy_components(df) -> list[str]:
    """The ``energy_<component>_j`` columns of a results frame, in their order."""
    return [c for c in df.columns if _COMPONENT.fullmatch(str(c))]


def _point_labels(df) -> list[str]:
    """A bar label per row: the swept keys (the columns named by a dotted key path) and the
    variant and run, those that differ between rows."""
    keys = [c for c in df.columns if "." in str(c)]
    keys += [c for c in ("variant", "run") if c in df.columns]
    vary = [k for k in keys if df[k].nunique(dropna=False) > 1]
    if not vary:
        return [f"point {p}" for p in (df["point"] if "point" in df.columns else range(len(df)))]
    return [" ".join(f"{_short(k)}={v:g}" if isinstance(v, numbers.Real) else f"{_short(k)}={v}"
                     for k, v in zip(vary, row)) for row in df[vary].itertuples(index=False)]


def plot_energy(results, out: str | Path, *, x: str | None = None, run: str | None = None,
                agg: str = "best", where: str = "<plot_energy>") -> PlotData:
    """Energy stacked by component (every ``energy_<component>_j`` column that is non-zero
    somewhere), one bar per point, or with ``x`` one bar per value of that key: the
    lowest-energy point of it (``best``) or the mean of its points (``mean``, component by
    component, so the stack still sums to the mean total)."""
    plt = _plt()
    df = _ran(results, run, where, by_run=x == "run")
    _choice(agg, _AGGS, "--agg", where)
    comps = energy_components(df)
    if not comps:
        raise ConfigError("results with energy_<component>_j columns", file=where,
                          key="RESULTS", got="none")
    _numeric(df, "energy_j", "RESULTS", where)
    if x is not None:
        _column(df, x, "--x", where)
        if agg == "mean":
            table = df.groupby(x, sort=True)[comps + ["energy_j"]].mean()
            n = int(df.groupby(x).size().max())
        else:
            picked = df.loc[df.groupby(x, sort=True)["energy_j"].idxmin()]
            table = picked.set_index(x)[comps + ["energy_j"]]
            n = int(df.groupby(x).size().max())
        note = ("one point each" if n <= 1 else
                f"{'mean' if agg == 'mean' else 'lowest-energy point'} of up to {n} points each")
        table.index = [f"{v:g}" if isinstance(v, numbers.Real) else str(v) for v in table.index]
    else:
        table = df[comps + ["energy_j"]].set_axis(_point_labels(df), axis=0)
        note = "one bar per point"
    table = table.rename(columns={"energy_j": "total"})
    shown = [c for c in comps if (table[c].abs() > 0).any()]
    table = table[shown + ["total"]]
    # horizontal bars: a point's label (its keys) reads along the bar however many there are
    longest = max(len(str(t)) for t in table.index)
    height = max(1.6 + 0.32 * len(table), 1.4 + 0.2 * len(shown))
    fig, ax = plt.subplots(figsize=(7 + 0.06 * longest, height))
    left = np.zeros(len(table))
    cmap = plt.get_cmap("tab20")
    pos = np.arange(len(table))
    for i, c in enumerate(shown):
        vals = table[c].to_numpy(dtype=float)
        ax.barh(pos, vals, left=left, color=cmap(i % 20),
                label=_COMPONENT.fullmatch(c).group(1))
        left += vals
    ax.set_yticks(pos, list(table.index), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("energy (J)")
    if x is not None:
        ax.set_ylabel(x)
    ax.legend(fontsize=7, title=note, title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(_title("energy by component", run), fontsize=10)
    fig.tight_layout()
    return PlotData("energy", _save(fig, out), table, note)


PLOT_KINDS = {"pareto": plot_pareto, "pareto3d": plot_pareto3d, "lines": plot_lines,
              "heatmap": plot_heatmap, "energy": plot_energy}


def plot(results, out: str | Path, kind: str = "pareto", **options) -> PlotData:
    """Draw one figure of ``kind`` (a key of :data:`PLOT_KINDS`) with its options."""
    fn = PLOT_KINDS.get(kind)
    if fn is None:
        raise ConfigError("a plot kind (" + ", ".join(PLOT_KINDS) + ")",
                          file=options.get("where"), key="--kind", got=repr(kind))
    return fn(results, out, **options)
