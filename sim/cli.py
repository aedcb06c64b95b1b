"""The ``strata`` command (also ``python -m sim``).

    strata run EXP.yaml [--set key=value ...] [--out DIR] [--trace] [--plots DIR]
    strata list [archs|models|experiments]

Every user mistake ends in one ``error:`` line naming the file, the key and what was expected,
and exit status 2; never a traceback.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .config import ConfigError, data_dir, list_shipped

KINDS = {"archs": "arch", "models": "workloads", "experiments": "experiments"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="strata", description="Cycle-level simulator of "
                                "heterogeneous hardware for LLM inference.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an experiment YAML and write CSVs, a summary and plots")
    r.add_argument("experiment", help="experiment file, or the name of a shipped experiment")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set arch.array.rows=32 (repeatable)")
    r.add_argument("--out", type=Path, default=None,
                   help="output folder (default: results/<experiment name>)")
    r.add_argument("--trace", action="store_true",
                   help="also write a Chrome-trace timeline (trace.json, opens in Perfetto)")
    r.add_argument("--plots", type=Path, default=None, metavar="DIR",
                   help="also copy the figures to DIR as <experiment>_<plot>.png")
    ls = sub.add_parser("list", help="list the shipped archs, models and experiments")
    ls.add_argument("what", nargs="?", choices=sorted(KINDS), default=None)
    return p


def _cmd_list(what: str | None) -> int:
    for name in ([what] if what else sorted(KINDS)):
        kind = KINDS[name]
        print(f"{name} ({data_dir(kind)}):")
        for stem in list_shipped(kind):
            print(f"  {stem}")
    return 0


def _cmd_run(args) -> int:
    from . import api
    from .config import load_experiment
    from .report.plots import plot_names, write_plots
    from .report.tables import write_tables

    exp = load_experiment(args.experiment, overrides=args.overrides or None)
    unknown = [n for n in exp.outputs.plots if n not in plot_names()]
    if unknown:
        raise ConfigError(f"plot names from {plot_names()}", file=exp.origin,
                          key="outputs.plots", got=repr(unknown[0]))
    out = args.out or Path("results") / exp.name
    t0 = time.perf_counter()
    result = api.run(exp, trace=args.trace or None, progress=True)
    wall = time.perf_counter() - t0
    written = write_tables(result, out)
    figs = write_plots(result, out)
    written += figs
    if result.trace is not None:
        written.append(result.trace.write(out / "trace.json", api.accelerator_for(exp.arch).clock))
    if args.plots is not None:
        args.plots.mkdir(parents=True, exist_ok=True)
        for f in figs:
            shutil.copyfile(f, args.plots / f"{exp.name}_{f.name}")
    _print_runs(result, wall)
    print(f"wrote {len(written)} files to {out}/: " + ", ".join(p.name for p in written))
    return 0


def _print_runs(result, wall: float) -> None:
    exp = result.experiment
    print(f"{exp.name}: {exp.model.name} on {exp.arch.name} "
          f"({result.arch_description}) — simulated in {wall:.2f} s")
    many = bool(exp.variants)
    vw = max([len(v.name) for v in exp.variants] + [7]) + 2 if many else 0
    head = (f"  {'variant':<{vw}}" if many else "  ") + (
        f"{'run':<12}{'phase':<9}{'tokens':>8}{'latency ms':>13}{'tokens/s':>11}"
        f"{'stall':>8}{'util':>7}{'energy mJ':>12}{'mJ/token':>11}")
    print(head)
    for r in result.runs.to_dict(orient="records"):
        stall = r["stall_cycles"] / r["cycles"] if r["cycles"] else 0.0
        lead = f"  {r['variant']:<{vw}}" if many else "  "
        print(f"{lead}{r['run']:<12}{r['phase']:<9}{r['tokens']:>8}{r['seconds'] * 1e3:>13.3f}"
              f"{r['tokens_per_s']:>11.1f}{stall:>8.1%}{r['utilization']:>7.1%}"
              f"{r['energy_total_j'] * 1e3:>12.3f}{r['energy_per_token_mj']:>11.3f}")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list(args.what)
        return _cmd_run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:          # e.g. an output folder that cannot be written
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error:{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
