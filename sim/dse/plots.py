"""Figures of sweep and search results: metric against metric (or parameter) with the Pareto
front, coloured by a third column (``strata plot RESULTS --x ... --y ... [--color ...]``).

``RESULTS`` is a sweep/search output folder (holding ``results.sqlite`` or ``search.sqlite``),
a store file, or a ``points.csv``. Only points that ran (``status`` ok) are plotted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..config.errors import ConfigError

__all__ = ["pareto_mask", "load_results", "plot_results"]


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


def _column(df, name: str, key: str, where: str) -> str:
    if name not in df.columns:
        import difflib
        near = difflib.get_close_matches(name, list(df.columns), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"a column of the results{hint}", file=where, key=key, got=repr(name))
    return name


def plot_results(results, out: str | Path, *, x: str, y: str, color: str | None = None,
                 run: str | None = None, senses: Iterable[str] = ("min", "min"),
                 where: str = "<plot_results>") -> Path:
    """Scatter ``y`` against ``x`` over the points that ran, the Pareto front of (x, y) drawn
    as a step line (``senses``: min/max per axis), coloured by ``color``; one run (``run``)
    when the results hold several. Returns the written PNG path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = results
    if "status" in df.columns:
        df = df[df.status == "ok"]
    if run is not None:
        _column(df, "run", "--run", where)
        if run not in set(df.run):
            raise ConfigError("a run of the results (" + ", ".join(map(str, sorted(set(df.run))))
                              + ")", file=where, key="--run", got=repr(run))
        df = df[df.run == run]
    elif "run" in df.columns and df.run.nunique() > 1:
        raise ConfigError("--run naming one of the runs (" + ", ".join(sorted(map(str, set(df.run))))
                          + ")", file=where, key="--run", got="none")
    for key, name in (("--x", x), ("--y", y)) + ((("--color", color),) if color else ()):
        _column(df, name, key, where)
    if df.empty:
        raise ConfigError("results with at least one point that ran", file=where,
                          key="RESULTS", got="none")
    senses = tuple(senses)
    fig, ax = plt.subplots(figsize=(7, 5))
    c = df[color] if color else None
    if c is not None and not np.issubdtype(c.dtype, np.number):
        for value, g in df.groupby(color):
            ax.scatter(g[x], g[y], s=24, label=f"{color}={value}")
        ax.legend(fontsize=8)
    else:
        sc = ax.scatter(df[x], df[y], c=c, s=24, cmap="viridis")
        if c is not None:
            fig.colorbar(sc, ax=ax, label=color)
    mask = pareto_mask(df[[x, y]].to_numpy(dtype=float), senses)
    front = df[mask].sort_values(x)
    ax.step(front[x], front[y], where="post", color="crimson", lw=1.2,
            label="Pareto front")
    ax.scatter(front[x], front[y], facecolors="none", edgecolors="crimson", s=60)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{y} against {x}" + (f" ({run})" if run else "")
                 + f": {len(df)} points, {int(mask.sum())} on the front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
