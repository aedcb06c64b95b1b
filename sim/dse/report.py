"""``strata report RESULTS``: one self-contained HTML page of a sweep or search.

The page holds a header (name, where the points came from, ok/failed/dropped counts, when they
finished), the figures (PNG embedded as base64 ``data:`` URIs), and sortable tables: every
point, the Pareto points of the objectives with their configs, the failed points with their
errors and the dropped points with their reasons. It needs no server and loads nothing: no
external CSS, JS, fonts or images; a few lines of inline JS sort a table when its header is
clicked (numerically when every cell of the column is a number).

Every text that comes from the results (config values, error messages, column names) is
HTML-escaped, so a config string cannot inject markup.

Figures are pluggable: a *figure kind* is a function ``(data: ReportData, tmp: Path) ->
Iterable[Figure]`` registered with :func:`register_figure` (the page shows each kind's figures
under its name and the first paragraph of its docstring; ``tmp`` is an empty folder of its own); ``strata report --figures a,b``
picks kinds by name (default: :data:`DEFAULT_FIGURES`). A kind that draws with a function
writing a PNG file (as those of :mod:`sim.dse.plots` do) writes it under ``tmp`` and returns
``Figure.from_png(title, path)``.

The full resolved config of a Pareto point is rebuilt from the sweep file named in the store
(``meta.file``) with :meth:`Sweep.point`, and shown only when that file still gives the stored
base config (``meta.base_hash``) and the rebuilt point has the stored hash: a report never shows
a config that is not the one that ran. Otherwise the page says why and shows the overrides.
"""
from __future__ import annotations

import base64
import html
import json
import math
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable, Iterable, Iterator


from ..config.errors import ConfigError, did_you_mean
from .plots import (energy_components, load_results, pareto_mask, plot_energy, plot_heatmap,
                    plot_lines, plot_pareto3d, plot_results)

__all__ = ["Figure", "ReportData", "FIGURES", "DEFAULT_FIGURES", "register_figure",
           "load_report_data", "render_report", "write_report"]

DEFAULT_OBJECTIVES = (("latency_s", "min"), ("energy_j", "min"), ("area_mm2", "min"))
STORE_NAMES = ("results.sqlite", "search.sqlite")


# ---------------------------------------------------------------------------- figures ----
@dataclass(frozen=True)
class Figure:
    """One figure of the page: a PNG (bytes) or an SVG document (text), with a title."""

    title: str
    png: bytes | None = None
    svg: str | None = None
    caption: str = ""

    @classmethod
    def from_png(cls, title: str, path: str | Path, caption: str = "") -> "Figure":
        return cls(title, png=Path(path).read_bytes(), caption=caption)

    def html(self) -> str:
        if self.png is not None:
            body = (f'<img alt="{html.escape(self.title)}" src="data:image/png;base64,'
                    f'{base64.b64encode(self.png).decode("ascii")}">')
        elif self.svg is not None:
            # an SVG is embedded as an image too: its text is never parsed as part of the page
            body = (f'<img alt="{html.escape(self.title)}" src="data:image/svg+xml;base64,'
                    f'{base64.b64encode(self.svg.encode()).decode("ascii")}">')
        else:
            raise ValueError("a Figure needs png or svg")
        cap = html.escape(self.title) + (f" &mdash; {html.escape(self.caption)}"
                                         if self.caption else "")
        return f'<figure class="fig">{body}<figcaption>{cap}</figcaption></figure>'


FigureKind = Callable[["ReportData", Path], Iterable[Figure]]
FIGURES: dict[str, FigureKind] = {}
DEFAULT_FIGURES = ("pareto", "pareto3d", "lines", "heatmap", "energy")


def register_figure(name: str):
    """Decorator: register a figure kind under ``name`` (``strata report --figures name``)."""
    def deco(fn: FigureKind) -> FigureKind:
        FIGURES[name] = fn
        return fn
    return deco


@register_figure("pareto")
def pareto_figures(data: "ReportData", tmp: Path) -> Iterator[Figure]:
    """Every pair of objectives, per run (and variant): the points and their 2-D Pareto front
    (sim.dse.plots.plot_results), coloured by the first swept key."""
    color = data.keys[0] if data.keys else None
    n = 0
    for label, g in data.groups():          # one run and variant per group
        for (x, sx), (y, sy) in combinations(data.objectives, 2):
            if g[[x, y]].isna().all().any():
                continue
            n += 1
            path = plot_results(g, tmp / f"pareto_{n}.png", x=x, y=y, color=color,
                                senses=(sx, sy), where=data.source)
            yield Figure.from_png(f"{y} against {x}" + (f" ({label})" if label else ""), path,
                                  caption=f"Pareto front: {sy} {y}, {sx} {x}")


def _numeric_keys(data: "ReportData", g) -> list:
    """The swept keys that are numbers and take more than one value in ``g``."""
    import pandas as pd

    return [k for k in data.keys if k in g.columns and pd.api.types.is_numeric_dtype(g[k])
            and g[k].nunique() > 1]


def _label(title: str, label: str) -> str:
    return title + (f" ({label})" if label else "")


@register_figure("pareto3d")
def pareto3d_figures(data: "ReportData", tmp: Path) -> Iterator[Figure]:
    """The first three objectives in 3-D with their 3-objective front and its 2-D projections
    (sim.dse.plots.plot_pareto3d), per run."""
    if len(data.objectives) < 3:
        return
    (x, sx), (y, sy), (z, sz) = data.objectives[:3]
    color = data.keys[0] if data.keys else None
    for n, (label, g) in enumerate(data.groups()):
        if g[[x, y, z]].isna().all().any():
            continue
        d = plot_pareto3d(g, tmp / f"{n}.png", x=x, y=y, z=z, color=color,
                          senses=(sx, sy, sz), where=data.source)
        yield Figure.from_png(_label(f"{x}, {y}, {z}", label), d.path,
                              caption=f"3-objective front: {int(d.table.pareto.sum())} points")


@register_figure("lines")
def lines_figures(data: "ReportData", tmp: Path) -> Iterator[Figure]:
    """The first objective against each numeric swept key, one line per value of the next
    key, the best over the other keys (sim.dse.plots.plot_lines), per run."""
    if not data.objectives:
        return
    y, sense = data.objectives[0]
    n = 0
    for label, g in data.groups():
        keys = _numeric_keys(data, g)
        for i, x in enumerate(keys):
            color = keys[(i + 1) % len(keys)] if len(keys) > 1 else None
            n += 1
            d = plot_lines(g, tmp / f"{n}.png", x=x, y=y, color=color, agg="best",
                           sense=sense, where=data.source)
            yield Figure.from_png(_label(f"{y} against {x}", label), d.path, caption=d.note)


@register_figure("heatmap")
def heatmap_figures(data: "ReportData", tmp: Path) -> Iterator[Figure]:
    """The first objective over the first two numeric swept keys, the best over the other
    keys (sim.dse.plots.plot_heatmap), per run."""
    if not data.objectives:
        return
    z, sense = data.objectives[0]
    for n, (label, g) in enumerate(data.groups()):
        keys = _numeric_keys(data, g)
        if len(keys) < 2:
            continue
        d = plot_heatmap(g, tmp / f"{n}.png", x=keys[0], y=keys[1], z=z, agg="best",
                         sense=sense, where=data.source)
        yield Figure.from_png(_label(f"{z} over {keys[0]} and {keys[1]}", label), d.path,
                              caption=d.note)


@register_figure("energy")
def energy_figures(data: "ReportData", tmp: Path) -> Iterator[Figure]:
    """Energy stacked by component, the lowest-energy point per value of the first numeric
    swept key (sim.dse.plots.plot_energy), per run."""
    for n, (label, g) in enumerate(data.groups()):
        if not energy_components(g) or "energy_j" not in g.columns or g.energy_j.isna().all():
            continue
        keys = _numeric_keys(data, g)
        d = plot_energy(g, tmp / f"{n}.png", x=keys[0] if keys else None, agg="best",
                        where=data.source)
        yield Figure.from_png(_label("energy by component", label), d.path, caption=d.note)


# ------------------------------------------------------------------------------- data ----
@dataclass
class ReportData:
    """What a report shows, read from a results store or export."""

    source: str                      # RESULTS as given
    frame: object                    # the tidy DataFrame (one row per point and run)
    keys: list                       # swept and derived keys
    objectives: list                 # [(metric, "min"|"max")]
    meta: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)     # point hash -> overrides
    finished: tuple = (None, None)   # first and last unix time a point finished
    compute_s: float | None = None   # sum of the points' wall times

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or Path(self.source).resolve().name)

    def counts(self) -> dict:
        df = self.frame
        if "status" not in df.columns:
            return {"ok": int(df.hash.nunique() if "hash" in df.columns else len(df))}
        per_point = df.drop_duplicates("hash") if "hash" in df.columns else df
        return {k: int(v) for k, v in per_point.status.value_counts().items()}

    def ok(self):
        df = self.frame
        return df[df.status == "ok"] if "status" in df.columns else df

    def group_columns(self) -> list:
        ok = self.ok()
        return [c for c in ("variant", "run") if c in ok.columns and ok[c].nunique() > 1]

    def groups(self):
        """(label, rows) per variant and run that vary among the points that ran."""
        ok = self.ok()
        cols = self.group_columns()
        if not cols:
            yield "", ok
            return
        for vals, g in ok.groupby(cols, sort=False):
            vals = vals if isinstance(vals, tuple) else (vals,)
            yield ", ".join(map(str, vals)), g

    def pareto(self):
        """The rows that are non-dominated in all objectives within their variant and run."""
        import pandas as pd

        names = [n for n, _ in self.objectives]
        parts = []
        for _, g in self.groups():
            mask = pareto_mask(g[names].to_numpy(dtype=float), [s for _, s in self.objectives])
            parts.append(g[mask].sort_values(names))
        return pd.concat(parts) if parts else self.ok().iloc[:0]


def _results_error(source: str, got: str) -> ConfigError:
    return ConfigError("a sweep or search results store (results.sqlite, search.sqlite), its "
                       "output folder or points.csv", file=source, key="RESULTS", got=got)


def _store_path(path: Path) -> Path | None:
    if path.is_dir():
        return next((path / n for n in STORE_NAMES if (path / n).is_file()), None)
    return path if path.is_file() and path.suffix != ".csv" else None


def load_report_data(results: str | Path, objectives=None) -> ReportData:
    """Read a results store, output folder or ``points.csv`` for a report. ``objectives``:
    [(metric, min|max)]; default: a search's own objectives, else latency, energy and area
    (those the results have)."""
    import pandas as pd

    source = str(results)
    path = Path(results)
    store = _store_path(path)
    if store is not None:
        try:
            with open(store, "rb") as f:
                magic = f.read(16)
        except OSError as e:
            raise _results_error(source, e.strerror or str(e)) from None
        if magic != b"SQLite format 3\x00":
            raise _results_error(source, "a file that is not an SQLite store")
        try:
            db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
                if not {"meta", "points"} <= tables:
                    raise _results_error(source, "an SQLite file without points and meta tables")
                meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
                overrides = {h: json.loads(o) for h, o in
                             db.execute("SELECT hash, overrides FROM points")}
                first, last, compute = db.execute(
                    "SELECT MIN(finished), MAX(finished), SUM(wall_s) FROM points").fetchone()
            finally:
                db.close()
        except (sqlite3.DatabaseError, json.JSONDecodeError) as e:
            raise _results_error(source, f"an unreadable store ({e})") from None
    else:
        meta, overrides, first, last, compute = {}, {}, None, None, None
    try:
        df = load_results(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise _results_error(source, f"an unreadable CSV ({str(e).splitlines()[0]})") from None
    if df.empty:
        raise _results_error(source, "no points")
    keys = list(meta.get("keys") or _keys_of_csv(df))
    if not overrides and "hash" in df.columns:
        overrides = {h: {k: _plain(v) for k, v in r.items() if not _missing(v)}
                     for h, r in df.drop_duplicates("hash").set_index("hash")[keys].iterrows()}
    data = ReportData(source, df, keys, [], meta, overrides, (first, last), compute)
    data.objectives = _objectives(data, objectives)
    return data


def _keys_of_csv(df) -> list:
    """A tidy export lists point, hash, status, the swept keys, then variant and run."""
    cols = list(df.columns)
    if "status" not in cols:
        return []
    start = cols.index("status") + 1
    end = next((cols.index(c) for c in ("variant", "run") if c in cols), start)
    return cols[start:end]


def _objectives(data: ReportData, given) -> list:
    import pandas as pd

    cols = [c for c in data.frame.columns if c not in ("point", "hash", "status", "error",
                                                       "variant", "run", *data.keys)]
    if given:
        out = []
        for name, sense in given:
            if name not in data.frame.columns:
                raise ConfigError("an objective naming a metric column of the results",
                                  file=data.source, key="--objective", got=repr(name),
                                  hint=did_you_mean(name, cols))
            if not pd.api.types.is_numeric_dtype(data.ok()[name]):
                raise ConfigError("an objective naming a numeric metric column",
                                  file=data.source, key="--objective", got=repr(name))
            if sense not in ("min", "max"):
                raise ConfigError("min or max", file=data.source, key="--objective",
                                  got=repr(sense))
            out.append((name, sense))
        if len({n for n, _ in out}) != len(out):
            raise ConfigError("each objective once", file=data.source, key="--objective",
                              got=", ".join(n for n, _ in out))
        return out
    search = data.meta.get("search") or {}
    default = [tuple(o) for o in search.get("objectives", [])] or list(DEFAULT_OBJECTIVES)
    ok = data.ok()
    return [(n, s) for n, s in default if n in ok.columns and ok[n].notna().any()]


# ----------------------------------------------------------------------------- configs ----
def resolved_configs(data: ReportData, hashes: Iterable[str]) -> tuple[dict, str | None]:
    """{hash: full resolved config as JSON data} for the given points, rebuilt from the sweep
    file, and None, or {} and why they cannot be shown."""
    from .spec import load_sweep

    file = data.meta.get("file")
    if not file:
        return {}, "the results do not name their sweep file"
    if not Path(file).is_file():
        return {}, f"the sweep file {file} is not here"
    try:
        sweep = load_sweep(file)
    except ConfigError as e:
        return {}, f"the sweep file no longer loads ({e})"
    if data.meta.get("base_hash") and sweep.base.hash() != data.meta["base_hash"]:
        return {}, (f"the sweep file {file} does not give the stored base config (edited "
                    "since, or the sweep ran with --set)")
    out = {}
    for h in hashes:
        pt = sweep.point(0, data.overrides.get(h, {}))
        if pt.exp is not None and pt.hash == h:
            out[h] = pt.exp.model_dump(mode="json")
    return out, None


# ------------------------------------------------------------------------------ render ----
def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _cell(v) -> str:
    """A table cell: the value shown (4 significant digits for floats) and, for numbers, the
    exact value in data-v for sorting."""
    v = _plain(v)
    if _missing(v):
        return "<td></td>"
    if isinstance(v, bool):
        return f"<td>{v}</td>"
    if isinstance(v, (int, float)):
        shown = f"{v:.4g}" if isinstance(v, float) else str(v)
        exact = repr(v) if math.isfinite(v) else ("Infinity" if v > 0 else "-Infinity")
        return f'<td class="n" data-v="{exact}">{html.escape(shown)}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def _table(tid: str, columns: list, rows: Iterable[list], extra: dict | None = None) -> str:
    """A sortable table; ``extra`` maps a row number to an HTML block shown under that row
    (already escaped; it moves with its row when sorting)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        body.append("<tr>" + "".join(c if isinstance(c, _Raw) else _cell(c) for c in r)
                    + "</tr>")
        if extra and i in extra:
            body.append(f'<tr class="more"><td colspan="{len(columns)}">{extra[i]}</td></tr>')
    return (f'<div class="scroll"><table class="sortable" id="{tid}"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>')


class _Raw(str):
    """A cell that is already HTML."""


def _shown(path) -> str | None:
    """A path as the page shows it: relative to the working folder when inside it (so a
    committed report does not name the machine it was made on)."""
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "unknown"


def _json_block(summary: str, obj) -> str:
    return (f"<details><summary>{html.escape(summary)}</summary><pre>"
            f"{html.escape(json.dumps(obj, indent=2, sort_keys=True, default=str))}</pre>"
            f"</details>")


def render_report(data: ReportData, figures: Iterable[str] = DEFAULT_FIGURES,
                  title: str | None = None, max_rows: int = 5000) -> str:
    """The page as one HTML string; the table of all points shows the first ``max_rows``
    rows (the Pareto, failed and dropped tables are always whole)."""
    figures = list(figures)
    for f in figures:
        if f not in FIGURES:
            raise ConfigError("figure kinds among " + ", ".join(sorted(FIGURES)),
                              file=data.source, key="--figures", got=repr(f),
                              hint=did_you_mean(f, list(FIGURES)))
    df = data.frame
    ok = data.ok()
    counts = data.counts()
    names = [n for n, _ in data.objectives]
    group = data.group_columns()
    title = title or f"Strata report: {data.name}"

    figs: dict[str, list[Figure]] = {}        # kind -> its figures
    if not ok.empty and len(names) >= 1:
        with tempfile.TemporaryDirectory(prefix="strata-report-") as tmp:
            for f in figures:
                (Path(tmp) / f).mkdir()
                figs[f] = list(FIGURES[f](data, Path(tmp) / f))
    n_figs = sum(map(len, figs.values()))

    parts = [f"<h1>{html.escape(title)}</h1>", '<table class="facts">']
    search = data.meta.get("search")
    facts = [("results", _shown(data.source)),
             ("sweep file", _shown(data.meta.get("file")) or "not recorded"),
             ("kind", f"guided search ({search.get('sampler')}, seed {search.get('seed')})"
              if search else "sweep" if data.meta else "exported table"),
             ("swept keys", ", ".join(data.keys) or "none recorded"),
             ("objectives", ", ".join(f"{s} {n}" for n, s in data.objectives) or "none"),
             ("points", ", ".join(f"{counts.get(s, 0)} {s}" for s in
                                  ("ok", "failed", "dropped")) +
              "".join(f", {n} {s}" for s, n in sorted(counts.items())
                      if s not in ("ok", "failed", "dropped"))),
             ("finished", f"{_when(data.finished[0])} to {_when(data.finished[1])}"
              if data.finished[1] else "unknown"),
             ("compute time", f"{data.compute_s:.1f} s (sum over points)"
              if data.compute_s else "unknown")]
    for k, v in facts:
        parts.append(f'<tr><th>{html.escape(k)}</th><td id="fact-{k.replace(" ", "-")}">'
                     f"{html.escape(str(v))}</td></tr>")
    parts.append("</table>")
    parts.append('<nav><a href="#figures">figures</a> · <a href="#pareto">Pareto points</a> · '
                 '<a href="#points">all points</a> · <a href="#failed">failed</a> · '
                 '<a href="#dropped">dropped</a></nav>')

    parts.append(f'<h2 id="figures">Figures ({n_figs})</h2>')
    if not n_figs:
        parts.append("<p>No figure: no point ran, or no objective has values.</p>")
    for kind, shown in figs.items():
        if shown:
            doc = (FIGURES[kind].__doc__ or "").strip().split("\n\n")[0]
            parts.append(f'<h3 id="fig-{html.escape(kind)}">{html.escape(kind)} '
                         f'({len(shown)})</h3><p class="doc">{html.escape(" ".join(doc.split()))}'
                         '</p><div class="figs">' + "".join(f.html() for f in shown) + "</div>")

    # Pareto points with their configs
    front = data.pareto() if names and not ok.empty else ok.iloc[:0]
    configs, why = resolved_configs(data, list(front.get("hash", [])))
    parts.append(f'<h2 id="pareto">Pareto points ({len(front)})</h2>')
    parts.append("<p>Non-dominated in " + html.escape(", ".join(
        f"{s} {n}" for n, s in data.objectives) or "nothing") +
        (" within each " + html.escape(" and ".join(group)) if group else "") +
        ". Click a header to sort; open a row's config below it.</p>")
    if why:
        parts.append(f"<p class=\"note\">Full configs not shown: {html.escape(why)}; the "
                     "overrides are.</p>")
    cols = ["point", *group, *data.keys, *names]
    rows, extra = [], {}
    for i, (_, r) in enumerate(front.iterrows()):
        rows.append([r.get(c) for c in cols])
        h = r.get("hash")
        block = _json_block(f"overrides (point {str(h)[:12]})", data.overrides.get(h, {}))
        if h in configs:
            block += _json_block("full resolved config", configs[h])
        extra[i] = block
    parts.append(_table("pareto-table", cols, rows, extra))

    # all points
    lead = ["point", "status", *group, *data.keys, *names]
    skip = {"hash", "error", "variant", "run"} - set(group)
    rest = [c for c in df.columns if c not in lead and c not in skip]
    cols = lead + rest
    parts.append(f'<h2 id="points">All points ({len(df)} rows)</h2>')
    if len(df) > max_rows:
        parts.append(f'<p class="note">The first {max_rows} rows are shown; the whole table '
                     "is the sweep's points.csv.</p>")
    parts.append(_table("points-table", cols,
                        df.head(max_rows).reindex(columns=cols).itertuples(index=False)))

    for status, label, col in (("failed", "Failed points", "error"),
                               ("dropped", "Dropped points", "reason")):
        sel = (df[df.status == status].drop_duplicates("hash" if "hash" in df.columns
                                                       else "point")
               if "status" in df.columns else df.iloc[:0])
        parts.append(f'<h2 id="{status}">{label} ({len(sel)})</h2>')
        if sel.empty:
            parts.append(f"<p>None {status}.</p>")
            continue
        cols = ["point", *data.keys]
        rows = [[r.get(c) for c in cols] + [_Raw(f'<td class="err"><pre>'
                                                 f'{html.escape(str(r.get("error") or ""))}'
                                                 f"</pre></td>")] for _, r in sel.iterrows()]
        parts.append(_table(f"{status}-table", cols + [col], rows))

    return PAGE.format(title=html.escape(title), css=CSS, js=JS, body="\n".join(parts))


def write_report(results, out: str | Path | None = None, *, objectives=None,
                 figures: Iterable[str] = DEFAULT_FIGURES, title: str | None = None,
                 max_rows: int = 5000) -> Path:
    """Read ``results`` and write its report page (default: ``report.html`` beside the
    store); written to a temporary name and renamed. Returns the page's path."""
    data = load_report_data(results, objectives)
    page = render_report(data, figures, title, max_rows)
    if out is None:
        base = Path(results)
        out = (base if base.is_dir() else base.parent) / "report.html"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


# ----------------------------------------------------------------------- page template ----
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;
max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.3em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12.5px}td,th{padding:3px 7px;border:1px solid #ddd;
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{background:#f3f3f3;cursor:pointer;user-select:none;white-space:nowrap;
position:sticky;top:0}table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
table.facts th{background:#f8f8f8;width:9em}.scroll{overflow:auto;max-height:38em}
p.doc{color:#555;margin:.2em 0 .6em}.figs{display:flex;flex-wrap:wrap;gap:12px}figure.fig{margin:0;max-width:48%}
figure.fig img{max-width:100%;border:1px solid #eee}figcaption{font-size:12px;color:#555}
pre{margin:0;white-space:pre-wrap;font-size:11.5px}tr.more td{background:#fbfbfb}
details summary{cursor:pointer;color:#036}tr.more details{display:inline-block;
vertical-align:top;margin-right:2.5em}.note{color:#8a4b00}td.err pre{color:#900}
"""

# Click a header: sort that table's body rows by the column (numbers numerically when every
# non-empty cell of the column is a number, else as text; empty cells last); click again to
# reverse. A row's detail row (class "more") moves with it.
JS = """
(function(){
function key(tr,i){var c=tr.children[i];if(!c)return "";
  return c.hasAttribute("data-v")?c.getAttribute("data-v"):c.textContent.trim();}
function sortBy(th){
  var table=th.closest("table"),tb=table.tBodies[0],i=Array.prototype.indexOf.call(
    th.parentNode.children,th),groups=[],g=null;
  Array.prototype.forEach.call(tb.rows,function(tr){
    if(tr.classList.contains("more")&&g){g.push(tr);}else{g=[tr];groups.push(g);}});
  var vals=groups.map(function(g){return key(g[0],i);});
  var numeric=vals.every(function(v){return v===""||!isNaN(Number(v));});
  var asc=th.getAttribute("aria-sort")!=="ascending";
  var idx=groups.map(function(_,k){return k;});
  idx.sort(function(a,b){var x=vals[a],y=vals[b];
    if(x===""||y===""){return x===y?a-b:(x===""?1:-1);}
    var d=numeric?Number(x)-Number(y):x.localeCompare(y,undefined,{numeric:true});
    return d===0?a-b:(asc?d:-d);});
  idx.forEach(function(k){groups[k].forEach(function(tr){tb.appendChild(tr);});});
  Array.prototype.forEach.call(th.parentNode.children,function(h){h.removeAttribute("aria-sort");});
  th.setAttribute("aria-sort",asc?"ascending":"descending");}
document.querySelectorAll("table.sortable thead th").forEach(function(th){
  th.addEventListener("click",function(){sortBy(th);});});
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="strata report">
<title>{title}</title><style>{css}</style></head>
<body>
{body}
<script>{js}</script>
</body></html>
"""
