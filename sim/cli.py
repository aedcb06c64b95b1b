"""The ``strata`` command (also ``python -m sim``).

    strata run EXP.yaml [--set key=value ...] [--out DIR] [--force] [--trace] [--plots DIR]
    strata list [archs|models|experiments]
    strata sweep EXP.yaml [--executor serial|process|dask] [--workers N] [--scheduler ADDR]
                 [--resume] [--retry-failed] [--out DIR]
    strata search EXP.yaml --budget N [--time S] [--sampler nsga2|tpe]
                  [--objective latency_s:min ...] [--seed N] [--resume] [--out DIR]
    strata report RESULTS [--out PAGE.html] [--objective latency_s:min ...] [--figures KIND,...]
    strata --version

Every user mistake ends in one ``error:`` line naming the file, the key and what was expected,
and exit status 2; never a traceback.

Outputs are written into a temporary folder beside the target and renamed into place once every
file is complete, so an interrupted or failed run never leaves truncated files, and a rerun
replaces the earlier run's files in one step instead of mixing with them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import __version__
from .config import ConfigError, data_dir, list_shipped

# A folder holding these is an earlier run's results: a rerun may replace it.
RESULT_MARKERS = ("summary.json", "config.json")

RUN_EPILOG = """\
outputs: the files go to --out DIR (default results/<experiment name>/). They are written into
a temporary folder beside DIR and moved into place when all are complete, so a failed or
interrupted run leaves DIR as it was. If DIR holds an earlier run's results (summary.json), it is
replaced as a whole; any other non-empty DIR is refused unless --force is given (then its
contents are replaced too). The experiment name must be a plain file name (no '/' or '..')."""

KINDS = {"archs": "arch", "models": "workloads", "experiments": "experiments"}
# derived listings: GPUs (archs of type gpu), clusters (serving experiments), pipelines
DERIVED = ("gpus", "clusters", "pipelines")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="strata", description="Cycle-level simulator of "
                                "heterogeneous hardware for LLM inference.")
    p.add_argument("--version", action="version", version=f"strata {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an experiment YAML and write CSVs, a summary and plots",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("experiment", help="experiment file, or the name of a shipped experiment")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set arch.array.rows=32 (repeatable)")
    r.add_argument("--out", type=Path, default=None,
                   help="output folder (default: results/<experiment name>); see below")
    r.add_argument("--force", action="store_true",
                   help="replace the contents of a non-empty --out folder that does not hold "
                        "an earlier run's results")
    r.add_argument("--trace", action="store_true",
                   help="also write a Chrome-trace timeline (trace.json, opens in Perfetto)")
    r.add_argument("--plots", type=Path, default=None, metavar="DIR",
                   help="also copy the figures to DIR as <experiment>_<plot>.png")
    ls = sub.add_parser("list", help="list the shipped archs (with their type), GPUs, models, "
                        "experiments, serving clusters and pipelines")
    ls.add_argument("what", nargs="?", choices=sorted(KINDS) + list(DERIVED), default=None)
    fl = sub.add_parser("flow", help="FLOW: choose a per-layer N:M schedule and write its YAML")
    fl.add_argument("model", help="model file, or the name of a shipped model")
    fl.add_argument("--sparsity", type=float, default=0.6, help="target average sparsity "
                    "in [0, 1) (default 0.6; the nearest feasible mix is taken and reported)")
    fl.add_argument("-o", "--out", type=Path, required=True, help="schedule YAML to write")
    fl.add_argument("--patterns", default=None, metavar="LIST", help="candidate patterns, "
                    "comma-separated (default 1:4,2:4,2:8,4:8,1:2,dense)")
    fl.add_argument("--extra", default="", metavar="LIST", help="patterns added to the list")
    fl.add_argument("--edges-dense", action=argparse.BooleanOptionalAction, default=True,
                    help="force the first and last decoder blocks dense (default: yes)")
    fl.add_argument("--seed", type=int, default=0, help="seed of a synthetic profile")
    fl.add_argument("--weights", default=None, help="real weights (.npz/.safetensors or a "
                    "folder of shards); needs --act-norms")
    fl.add_argument("--act-norms", default=None, help="calibration activation-norm .npz")
    fl.add_argument("--profile", default=None, help="outlier profile name or path")
    _sweep_parser(sub)
    _search_parser(sub)
    _plot_parser(sub)
    _report_parser(sub)
    return p


def _cmd_flow(args) -> int:
    from .io.flow_inputs import flow

    def split(text):
        return [t.strip() for t in text.split(",") if t.strip()] if text else []

    if args.out.is_dir():
        raise ConfigError("a schedule file path, not a folder", file=str(args.out), key="--out")
    s = flow(args.model, args.sparsity, candidates=None if args.patterns is None
             else split(args.patterns), extra=split(args.extra), edges_dense=args.edges_dense,
             seed=args.seed, weights=args.weights, act_norms=args.act_norms,
             profile=args.profile, out=args.out)
    mix = ", ".join(f"{p} x{n}" for p, n in s.counts().items())
    print(f"{s.model}: {s.num_layers} layers, {mix}; sparsity {s.achieved_sparsity:.4f} "
          f"(target {s.target_sparsity:g}, gap {s.gap:.4f}); wrote {args.out}")
    return 0


def _arch_type(stem: str) -> str:
    from .config import load_arch
    try:
        return load_arch(stem).type
    except ConfigError:
        return "invalid"


def _cmd_list(what: str | None) -> int:
    for name in ([what] if what else sorted(KINDS) + list(DERIVED)):
        if name == "pipelines":
            folder = data_dir("workloads") / "pipelines"
            print(f"pipelines ({folder}):")
            for p in sorted(folder.glob("*.yaml")):
                print(f"  {p.stem}")
            continue
        kind = KINDS["archs" if name == "gpus" else
                     "experiments" if name == "clusters" else name]
        print(f"{name} ({data_dir(kind)}):")
        for stem in list_shipped(kind):
            if name in ("archs", "gpus"):
                t = _arch_type(stem)
                if name == "archs" or t == "gpu":
                    print(f"  {stem:24s} {t}")
            elif name == "clusters":
                if _is_serving(data_dir(kind) / f"{stem}.yaml"):
                    print(f"  {stem}")
            else:
                print(f"  {stem}")
    return 0


def _is_serving(ref) -> bool:
    """A YAML with a ``cluster:`` section is a serving experiment (sim.serve)."""
    from .config.loader import read_yaml
    p = Path(ref)
    if not p.is_file():
        cand = Path("experiments") / f"{ref}.yaml"
        p = cand if cand.is_file() else data_dir("experiments") / f"{ref}.yaml"
    if not p.is_file():
        return False
    try:
        data = read_yaml(p)
    except ConfigError:
        return False
    return isinstance(data, dict) and "cluster" in data


def _cmd_serve(args) -> int:
    import pandas as pd

    from . import api
    from .system.plots import write_serving_plots, write_serving_trace

    exp = api.load_serving(args.experiment, overrides=args.overrides or None)
    out = args.out if args.out is not None else Path("results") / exp.name
    _check_out(out, args.force, "--out" if args.out is not None else "results/<name>")
    if args.plots is not None:
        _check_out(args.plots, True, "--plots", replace=False)
    ran = {}

    def write_one(r, folder: Path) -> list[Path]:
        r.requests.to_csv(folder / "requests.csv", index=False)
        if r.steps_frame is not None and r.experiment.outputs.steps == "memory":
            r.steps_frame.to_csv(folder / "steps.csv", index=False)
        # outputs.steps: file streamed steps.csv during the run; none writes no steps.csv
        r.clients.to_csv(folder / "clients.csv", index=False)
        (folder / "summary.json").write_text(json.dumps(r.summary, indent=2) + "\n")
        written = [folder / f for f in ("requests.csv", "steps.csv", "clients.csv",
                                        "summary.json") if (folder / f).exists()]
        if args.trace or exp.outputs.trace:
            written.append(write_serving_trace(r, folder / "trace.json"))
        return written

    def fill(tmp: Path):
        t0 = time.perf_counter()
        ran["result"] = result = api.serve(exp, out=tmp)   # file mode streams steps.csv here
        ran["wall"] = time.perf_counter() - t0
        variants = getattr(result, "variants", None)
        if variants:        # <out>/<variant>/{requests,steps,clients}.csv, summary.json
            written = []
            for v, r in variants.items():
                (tmp / v).mkdir(exist_ok=True)    # file mode made it for steps.csv
                written += write_one(r, tmp / v)
            pd.DataFrame(result.summary["comparison"]).to_csv(tmp / "comparison.csv",
                                                              index=False)
            (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
            written += [tmp / "comparison.csv", tmp / "summary.json"]
        else:
            written = write_one(result, tmp)
        figs = write_serving_plots(result, tmp)
        return written + figs, figs

    written, figs = _atomic_folder(out, fill)
    result, wall = ran["result"], ran["wall"]
    variants = getattr(result, "variants", None)
    if args.plots is not None:
        args.plots.mkdir(parents=True, exist_ok=True)
        for f in figs:
            _copy_whole(out / f, args.plots / f"{exp.name}_{f}")

    def ms(v):                  # null when no request completed
        return "n/a" if v is None else f"{v * 1e3:.1f} ms"
    for v, r in (variants or {None: result}).items():
        s = r.summary
        head = exp.name if v is None else f"{exp.name} [{v}]"
        print(f"{head}: {s['requests']} requests ({s['completed']} completed, "
              f"{s['rejected']} rejected) over {s['duration_s']:.1f} simulated s; "
              f"TTFT p50 {ms(s['ttft_s']['p50'])}, TPOT p50 {ms(s['tpot_s']['p50'])}, "
              f"SLOs all met: {s['slo']['all_met']}"
              + (f"; {s['chips']} chips, {s['area_mm2']:.3f} mm^2" if s.get("area_mm2") else ""))
    print(f"ran in {wall:.2f} s; wrote {len(written)} files to {out}{os.sep}: "
          + ", ".join(written))
    return 0


def _cmd_run(args) -> int:
    from . import api
    from .config import load_experiment

    if _is_serving(args.experiment):
        return _cmd_serve(args)

    from .report.plots import check_plot_names

    exp = load_experiment(args.experiment, overrides=args.overrides or None)
    check_plot_names(exp.outputs.plots, exp.origin)
    out = args.out if args.out is not None else Path("results") / exp.name
    _check_out(out, args.force, "--out" if args.out is not None else "results/<name>")
    if args.plots is not None:
        _check_out(args.plots, True, "--plots", replace=False)
    t0 = time.perf_counter()
    result = api.run(exp, trace=args.trace or None, progress=sys.stderr.isatty())
    wall = time.perf_counter() - t0
    written, figs = _write_outputs(result, out, api.accelerator_for(exp.arch).clock)
    if args.plots is not None:
        args.plots.mkdir(parents=True, exist_ok=True)
        for f in figs:
            _copy_whole(out / f, args.plots / f"{exp.name}_{f}")
    _print_runs(result, wall)
    print(f"wrote {len(written)} files to {out}{os.sep}: " + ", ".join(written))
    return 0


def _check_out(out: Path, force: bool, key: str, replace: bool = True) -> None:
    """Refuse an output folder that is a file, lies under a file, cannot be created or written,
    or (for results) is a non-empty folder without an earlier run's results (unless --force)."""
    if out.exists() and not out.is_dir():
        raise ConfigError("a folder for the results", file=str(out), key=key,
                          got="an existing file")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError("a folder for the results", file=str(out), key=key,
                          got=f"a path under the file {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError("a folder that can be written", file=str(out), key=key,
                          got=f"no write permission in {parent}")
    if replace and out.is_dir() and any(out.iterdir()) and not force \
            and not any((out / m).is_file() for m in RESULT_MARKERS):
        raise ConfigError("an empty folder or an earlier run's results (summary.json)",
                          file=str(out), key=key, got="a folder with other files",
                          hint="pass --force to replace its contents, or choose another --out")


def _write_outputs(result, out: Path, clock) -> tuple[list[str], list[str]]:
    """Write every file into a temporary folder beside ``out``, then put it in place of
    ``out`` in one rename (the earlier folder, if any, is moved aside first and removed)."""
    from .report.plots import write_plots
    from .report.tables import write_tables

    def fill(tmp: Path):
        written = write_tables(result, tmp)
        figs = write_plots(result, tmp)
        written += figs
        if result.trace is not None:
            written.append(result.trace.write(tmp / "trace.json", clock))
        return written, figs

    return _atomic_folder(out, fill)


def _atomic_folder(out: Path, fill) -> tuple[list[str], list[str]]:
    """Run ``fill(tmp) -> (written paths, figure paths)`` on a temporary folder beside ``out``,
    then put it in place of ``out`` in one rename (an earlier folder is moved aside first)."""
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)        # mkdtemp makes it private; results are not
        written, figs = fill(tmp)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError("a folder where the results can be written", file=str(out),
                          key="--out", got=f"{e.strerror or e} ({e.filename or out})") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ([str(Path(p).relative_to(tmp)) for p in written],
            [str(Path(p).relative_to(tmp)) for p in figs])


def _copy_whole(src: Path, dst: Path) -> None:
    """Copy to a temporary name beside ``dst`` and rename: never a half-written file."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError("a folder where the figures can be written", file=str(dst.parent),
                          key="--plots", got=f"{e.strerror or e}") from None


def _print_runs(result, wall: float) -> None:
    exp = result.experiment
    print(f"{exp.name}: {exp.model.name} on {exp.arch.name} "
          f"({result.arch_description}) — simulated in {wall:.2f} s")
    print(format_table(result.runs, many=bool(exp.variants)))


def format_table(runs, many: bool) -> str:
    """The runs as an aligned text table; every column as wide as its widest cell (+2)."""
    cols = ([("variant", "<")] if many else []) + [("run", "<"), ("phase", "<")] + [
        (c, ">") for c in ("tokens", "latency ms", "tokens/s", "stall", "util", "energy mJ",
                           "mJ/token")]
    rows = []
    for r in runs.to_dict(orient="records"):
        stall = r["stall_cycles"] / r["cycles"] if r["cycles"] else 0.0
        cells = ([str(r["variant"])] if many else []) + [
            str(r["run"]), str(r["phase"]), str(r["tokens"]), f"{r['seconds'] * 1e3:.3f}",
            f"{r['tokens_per_s']:.1f}", f"{stall:.1%}", f"{r['utilization']:.1%}",
            f"{r['energy_total_j'] * 1e3:.3f}", f"{r['energy_per_token_mj']:.3f}"]
        rows.append(cells)
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, (name, _) in
              enumerate(cols)]
    lines = []
    for cells in [[name for name, _ in cols]] + rows:
        parts = [f"{c:{align}{w}}" for c, (_, align), w in zip(cells, cols, widths)]
        lines.append("  " + "  ".join(parts).rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------------------------ sweep ----
SWEEP_EPILOG = """\
outputs: DIR/<experiment name>/results.sqlite (one row per design point, written as each point
completes), points.csv (one row per point and run) and points.parquet (if pyarrow is installed).
A store that already exists is refused unless --resume is given; --resume runs only the points
it lacks (dropped and failed points are kept; --retry-failed reruns the failed ones)."""


def _sweep_parser(sub) -> None:
    from .dse.executors import EXECUTORS

    s = sub.add_parser("sweep", help="run the design points of an experiment's sweep: block",
                       epilog=SWEEP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("experiment", help="experiment file with a sweep: block")
    s.add_argument("--executor", choices=sorted(EXECUTORS), default="process",
                   help="where points run (default: process, all cores)")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: all cores; dask: the cluster's threads)")
    s.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="dask scheduler address, e.g. tcp://host:8786 (default: a LocalCluster)")
    s.add_argument("--resume", action="store_true",
                   help="continue an existing store: run only the missing points")
    s.add_argument("--retry-failed", action="store_true",
                   help="with --resume, also rerun the points that failed")
    s.add_argument("--progress-every", type=int, default=0, metavar="N",
                   help="when stderr is not a terminal, a progress line every N computed "
                        "points (default 0: none; a terminal always gets a live line)")
    _store_args(s)


PLOT_EPILOG = """kinds and the options each takes (--run with any, when the results hold several runs):
  pareto    --x --y [--color] [--max x|y]          y against x, the 2-objective Pareto front
  pareto3d  --x --y --z [--color] [--max x|y|z]    3-D scatter, 3-objective front, its 2-D projections
  lines     --x KEY --y METRIC [--color KEY] [--agg best|mean] [--max y]
                                                   one line per --color value, others aggregated
  heatmap   --x KEY --y KEY --z METRIC [--agg best|mean] [--max z]
                                                   cells aggregated over the other keys
  energy    [--x KEY] [--agg best|mean]             energy stacked by component, a bar per point
                                                   or per value of --x (best: lowest energy)"""

# the options each plot kind takes beyond --run and -o (everything else is an error)
PLOT_OPTIONS = {"pareto": {"x", "y", "color", "maximize"},
                "pareto3d": {"x", "y", "z", "color", "maximize"},
                "lines": {"x", "y", "color", "agg", "maximize"},
                "heatmap": {"x", "y", "z", "agg", "maximize"},
                "energy": {"x", "agg"}}
PLOT_NEEDS = {"pareto": ("x", "y"), "pareto3d": ("x", "y", "z"), "lines": ("x", "y"),
              "heatmap": ("x", "y", "z"), "energy": ()}
PLOT_MAX_AXES = {"pareto": "xy", "pareto3d": "xyz", "lines": "y", "heatmap": "z"}


def _plot_parser(sub) -> None:
    s = sub.add_parser("plot", help="plot sweep/search results: Pareto fronts (2-D, 3-D), "
                       "metric-against-key lines, heatmaps, energy stacks",
                       epilog=PLOT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("results", help="a sweep/search output folder, its store or points.csv")
    s.add_argument("--kind", default="pareto",
                   help="pareto (default), pareto3d, lines, heatmap or energy")
    s.add_argument("--x", default=None, help="column on the x axis (e.g. energy_j, a swept key)")
    s.add_argument("--y", default=None, help="column on the y axis (e.g. latency_s)")
    s.add_argument("--z", default=None,
                   help="third objective (pareto3d) or the cell metric (heatmap)")
    s.add_argument("--color", "--group", dest="color", default=None,
                   help="column that colours the points (lines: one line per value)")
    s.add_argument("--run", default=None, help="the run to plot when the results hold several")
    s.add_argument("--max", dest="maximize", action="append", default=[], choices=("x", "y", "z"),
                   help="an objective to maximise (default: minimise every one)")
    s.add_argument("--agg", default=None,
                   help="lines, heatmap, energy: best (default) or mean over the other keys")
    s.add_argument("-o", "--output", type=Path, default=None,
                   help="PNG to write (default: a name from the kind and columns, in RESULTS)")


def _plot_name(kind: str, a) -> str:
    return {"pareto": f"{a.y}_vs_{a.x}", "pareto3d": f"pareto3d_{a.x}_{a.y}_{a.z}",
            "lines": f"{a.y}_by_{a.x}", "heatmap": f"{a.z}_over_{a.x}_{a.y}",
            "energy": f"energy_by_{a.x or 'point'}"}[kind] + ".png"


def _cmd_plot(args) -> int:
    from .dse.plots import PLOT_KINDS, load_results, plot

    where = str(args.results)
    kind = args.kind
    if kind not in PLOT_KINDS:
        raise ConfigError("a plot kind (" + ", ".join(PLOT_KINDS) + ")", file=where,
                          key="--kind", got=repr(kind))
    takes = PLOT_OPTIONS[kind]
    for name in ("x", "y", "z", "color", "agg", "maximize"):
        if getattr(args, name) not in (None, []) and name not in takes:
            flag = "--max" if name == "maximize" else f"--{name}"
            raise ConfigError(f"no {flag} with --kind {kind} (it takes "
                              + ", ".join(f"--{t}" if t != "maximize" else "--max"
                                          for t in sorted(takes)) + ")",
                              file=where, key=flag, got=repr(getattr(args, name)))
    for name in PLOT_NEEDS[kind]:
        if getattr(args, name) is None:
            raise ConfigError(f"--{name} with --kind {kind}", file=where, key=f"--{name}",
                              got="none")
    for axis in args.maximize:
        if axis not in PLOT_MAX_AXES[kind]:
            raise ConfigError(f"--max naming one of {', '.join(PLOT_MAX_AXES[kind])} with "
                              f"--kind {kind}", file=where, key="--max", got=repr(axis))
    options = {k: getattr(args, k) for k in ("x", "y", "z", "color", "agg")
               if k in takes and getattr(args, k) is not None}
    if kind in ("pareto", "pareto3d"):
        options["senses"] = tuple("max" if a in args.maximize else "min"
                                  for a in PLOT_MAX_AXES[kind])
    elif kind in ("lines", "heatmap"):
        options["sense"] = "max" if args.maximize else "min"
    df = load_results(args.results)
    base = Path(args.results)
    base = base if base.is_dir() else base.parent
    out = args.output or base / _plot_name(kind, args)
    data = plot(df, out, kind, run=args.run, where=where, **options)
    print(f"wrote {data.path} ({data.note})")
    return 0


def _report_parser(sub) -> None:
    from .dse.report import DEFAULT_FIGURES

    s = sub.add_parser("report", help="one self-contained HTML page of sweep/search results: "
                       "figures, sortable tables, the Pareto points with their configs")
    s.add_argument("results", help="a sweep/search output folder, its store or points.csv")
    s.add_argument("--out", type=Path, default=None, metavar="PAGE.html",
                   help="page to write (default: RESULTS/report.html)")
    s.add_argument("--objective", dest="objectives", action="append", default=None,
                   metavar="METRIC:min|max", help="an objective, repeatable (default: a "
                   "search's own, else latency_s, energy_j, area_mm2, all min)")
    s.add_argument("--figures", default=",".join(DEFAULT_FIGURES), metavar="KIND,...",
                   help=f"figure kinds, comma-separated (default: {','.join(DEFAULT_FIGURES)})")
    s.add_argument("--title", default=None, help="page title (default: the sweep's name)")
    s.add_argument("--max-rows", type=int, default=5000, metavar="N",
                   help="rows of the all-points table (default: 5000)")


def _cmd_report(args) -> int:
    from .dse.report import write_report
    from .dse.search import parse_objective

    if args.max_rows < 1:
        raise ConfigError("a number of rows >= 1", key="--max-rows", got=str(args.max_rows))
    objectives = ([parse_objective(o) for o in args.objectives] if args.objectives else None)
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    path = write_report(args.results, args.out, objectives=objectives, figures=figures,
                        title=args.title, max_rows=args.max_rows)
    print(f"wrote {path}")
    return 0


def _store_args(s) -> None:
    """The options a sweep and a search share: where the store goes, base overrides."""
    s.add_argument("--out", type=Path, default=Path("results"),
                   help="output folder; the store goes to DIR/<name>/ (default: results)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the base experiment (repeatable)")


def _cmd_sweep(args) -> int:
    from .dse import Store, load_sweep, run_sweep

    if args.workers is not None and args.workers < 1:
        raise ConfigError("a number of workers >= 1", key="--workers", got=str(args.workers))
    if args.progress_every < 0:
        raise ConfigError("a number of points >= 0", key="--progress-every",
                          got=str(args.progress_every))
    if args.scheduler and args.executor != "dask":
        raise ConfigError("--executor dask with --scheduler", key="--scheduler",
                          got=f"--executor {args.executor}")
    if args.retry_failed:
        args.resume = True
    sweep = load_sweep(args.experiment, overrides=args.overrides or None)
    folder = args.out / sweep.name
    db = folder / "results.sqlite"
    _check_out(folder, True, "--out", replace=False)
    if db.exists() and not args.resume:
        raise ConfigError("a new results folder, or --resume to continue this sweep",
                          file=str(db), key="--out", got="an existing results.sqlite")
    summary = run_sweep(sweep, db, executor=args.executor, workers=args.workers,
                        scheduler=args.scheduler, retry_failed=args.retry_failed,
                        progress=True, progress_every=args.progress_every)
    with Store(db) as store:
        written = [store.write_csv(folder / "points.csv").name]
        pq = store.write_parquet(folder / "points.parquet")
        if pq is not None:
            written.append(pq.name)
    print(summary.line())
    print(f"wrote {db} and {', '.join(written)} to {folder}{os.sep}")
    return 0


# ----------------------------------------------------------------------------- search ----
SEARCH_EPILOG = """\
outputs: DIR/<experiment name>/search.sqlite (every trial's point, in the sweep store's format,
plus the trials), front.csv (the Pareto front: one row per non-dominated point) and points.csv
(every point the search ran). --budget N is the number of trials the study holds when the
search stops (a resumed search counts its stored trials: the same N finishes an interrupted
search, a larger N extends it); --time S stops after S seconds of this call."""


def _search_parser(sub) -> None:
    from .dse.search import DEFAULT_OBJECTIVES, SAMPLERS

    s = sub.add_parser("search", help="guided multi-objective search (optuna) over an "
                       "experiment's sweep: space", epilog=SEARCH_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("experiment", help="experiment file with a sweep: block")
    s.add_argument("--budget", type=int, default=None, metavar="N",
                   help="trials in the study when the search stops")
    s.add_argument("--time", type=float, default=None, metavar="S",
                   help="stop after S seconds (with or without --budget)")
    s.add_argument("--sampler", choices=SAMPLERS, default="nsga2",
                   help="optuna sampler (default: nsga2)")
    default = " ".join(f"{n}:{d}" for n, d in DEFAULT_OBJECTIVES)
    s.add_argument("--objective", dest="objectives", action="append", default=None,
                   metavar="METRIC:min|max", help=f"an objective, repeatable (default: "
                   f"{default}); any metric column of points.csv")
    s.add_argument("--seed", type=int, default=None,
                   help="sampler seed (default: the experiment's seed)")
    s.add_argument("--population", type=int, default=8, metavar="N",
                   help="NSGA-II population, TPE startup trials (default: 8)")
    s.add_argument("--resume", action="store_true",
                   help="continue the search in an existing store")
    _store_args(s)


def _cmd_search(args) -> int:
    from .dse import Store, load_sweep, run_search
    from .dse.search import DEFAULT_OBJECTIVES, parse_objective

    if args.budget is not None and args.budget < 1:
        raise ConfigError("a budget of trials >= 1", key="--budget", got=str(args.budget))
    if args.time is not None and not args.time > 0:
        raise ConfigError("a time budget > 0 seconds", key="--time", got=str(args.time))
    if args.budget is None and args.time is None:
        raise ConfigError("a budget: --budget N trials and/or --time S seconds",
                          key="--budget", got="none")
    objectives = ([parse_objective(o) for o in args.objectives] if args.objectives
                  else list(DEFAULT_OBJECTIVES))
    sweep = load_sweep(args.experiment, overrides=args.overrides or None)
    folder = args.out / sweep.name
    db = folder / "search.sqlite"
    _check_out(folder, True, "--out", replace=False)
    front = run_search(sweep, db, budget_points=args.budget, budget_seconds=args.time,
                       sampler=args.sampler, objectives=objectives, seed=args.seed,
                       resume=args.resume, population=args.population,
                       progress=sys.stderr.isatty())
    tmp = folder / ".front.csv.tmp"
    front.to_csv(tmp, index=False)
    tmp.replace(folder / "front.csv")
    with Store(db) as store:
        store.write_csv(folder / "points.csv")
    print(front.attrs["summary"].line())
    with _pd_display():
        print(front.drop(columns=["hash"]).to_string(index=False))
    print(f"wrote {db.name}, front.csv and points.csv to {folder}{os.sep}")
    return 0


def _pd_display():
    import pandas as pd

    return pd.option_context("display.width", 160, "display.max_columns", 20,
                             "display.float_format", "{:.4g}".format)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list(args.what)
        if args.command == "flow":
            return _cmd_flow(args)
        if args.command == "sweep":
            return _cmd_sweep(args)
        if args.command == "search":
            return _cmd_search(args)
        if args.command == "plot":
            return _cmd_plot(args)
        if args.command == "report":
            return _cmd_report(args)
        return _cmd_run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:          # e.g. an output folder that cannot be written
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error:{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except OverflowError as e:    # a combination of sizes past what the model can count
        print(f"error: expected sizes whose cycle and byte counts fit in 64-bit integers, "
              f"got an overflow ({e})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
