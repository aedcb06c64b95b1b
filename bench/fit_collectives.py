#!/usr/bin/env python3
"""Fit the GPU model's ring-collective parameters on measured NCCL traces; report the errors.

Reads the ``collectives.csv`` files of ``bench/tp_traces.py`` (columns ``op`` allreduce |
allgather, ``mode`` graph | eager, ``world``, ``nccl_proto`` ('' = NCCL's own choice),
``bytes`` (an all-gather's gathered output), ``time_us``, ``correct``; other columns are
ignored) and fits, per collective kind, the parameters of
:func:`sim.hw.gpu.calibrated_ring_seconds`:

    t(n, p) = launch + min over protocols k of ( steps(p) hop_k + bus(p) n / bw_k )

with steps = 2(p-1) ring hops for an all-reduce and p-1 for an all-gather, bus = 2(p-1)/p and
(p-1)/p. ``min`` is NCCL's own rule: it runs the protocol it predicts fastest for the size, so
the switch sizes follow from the fitted lines (and move with p) instead of being parameters.

Given which protocol serves each point, the model is linear in (launch, hop_k, 1/bw_k), so the
fit is a non-negative linear least squares on relative errors (``scipy.optimize.nnls`` on rows
divided by the measured time); the assignment starts from every choice of switch sizes among
the measured sizes (the same for every p) and is then refined by the min rule until it stops
changing. The best fit over all starts is kept for each number of protocols up to
``--protocols``, and the number is chosen by the Bayesian information criterion (a protocol
more must lower the squared error by more than its two parameters explain). Only rows of two or more ranks, in the chosen
mode, with NCCL's own protocol and a correct result are used.

``--write`` stores the fit in ``traces/h200-tp/calibration.yaml``, which ``arch/h200-sxm.yaml``
extends. With ``--steps`` (default: the ``steps.csv`` files beside the collectives) it also
reports the tensor-parallel step errors of ``sim.simulate_step(..., tp=p)`` per phase.

    python bench/fit_collectives.py [CSV ...] [--protocols 3] [--mode graph] [--write]
"""
from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sim.config import ConfigError  # noqa: E402
from sim.hw.gpu import RingCollective, calibrated_ring_seconds, ring_steps  # noqa: E402

TRACES = ROOT / "traces"
CALIBRATION = TRACES / "h200-tp" / "calibration.yaml"
KINDS = ("allreduce", "allgather")
REQUIRED = ("op", "mode", "world", "nccl_proto", "bytes", "time_us", "correct")
NAMES = {1: ("ring",), 2: ("small", "large"), 3: ("small", "medium", "large")}


def shipped_csvs(name: str = "collectives.csv") -> list[Path]:
    """Every ``traces/h200-tp*/**/<name>`` (one folder per traced machine)."""
    return sorted(p for d in TRACES.glob("h200-tp*") for p in d.rglob(name))


# ------------------------------------------------------------------------------- reading ----
def read_collectives(paths, mode: str = "graph") -> list[dict]:
    """Usable rows of the given CSVs: {kind, world, bytes, seconds, file}; a file lacking a
    column or holding a bad number is a one-line ConfigError naming it and the column."""
    rows = []
    for path in map(Path, paths):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError("a collectives CSV of bench/tp_traces.py with columns "
                                  + ", ".join(REQUIRED), file=str(path), key=missing[0],
                                  got="no such column")
            for line, r in enumerate(reader, start=2):
                if (r["mode"] != mode or r["nccl_proto"] or r["correct"] != "1"
                        or r["op"] not in KINDS or not r["time_us"]):
                    continue
                try:
                    world, nbytes = int(r["world"]), int(r["bytes"])
                    seconds = float(r["time_us"]) * 1e-6
                except ValueError:
                    raise ConfigError("integer world and bytes, a number of time_us",
                                      file=f"{path}:{line}", key="time_us",
                                      got=f"{r['world']!r}, {r['bytes']!r}, {r['time_us']!r}"
                                      ) from None
                if not (seconds > 0 and nbytes > 0 and world >= 1):
                    raise ConfigError("time_us > 0, bytes > 0, world >= 1",
                                      file=f"{path}:{line}", key="time_us",
                                      got=f"{r['time_us']}, {r['bytes']}, {r['world']}")
                if world >= 2:           # one rank: the collective does nothing
                    rows.append({"kind": r["op"], "world": world, "bytes": nbytes,
                                 "seconds": seconds, "file": str(path)})
    return rows


# ----------------------------------------------------------------------------- the fit ----
def _design(kind: str, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([ring_steps(kind, r["world"]) for r in rows], dtype=float)
    bus = np.array([r["bytes"] * ring_steps(kind, r["world"]) / r["world"] for r in rows],
                   dtype=float)
    return steps, bus


def _solve(steps, bus, meas, assign, k):
    """nnls on relative errors for one assignment: x = [launch, hop_1..k, inv_bw_1..k]."""
    from scipy.optimize import nnls
    n = len(meas)
    A = np.zeros((n, 1 + 2 * k))
    A[:, 0] = 1.0
    A[np.arange(n), 1 + assign] = steps
    A[np.arange(n), 1 + k + assign] = bus
    scale = np.r_[1e-6, np.full(k, 1e-6), np.full(k, 1e-12)]   # us and s/TB: well conditioned
    x, _ = nnls(A * scale / meas[:, None], np.ones(n))
    return x * scale


def _predict(x, steps, bus, k):
    lines = x[0] + steps[:, None] * x[1:1 + k] + bus[:, None] * x[1 + k:]
    return lines.min(1), lines.argmin(1)


def fit_kind(kind: str, rows: list[dict], protocols: int = 3, max_iter: int = 20) -> dict:
    """Least relative squares fit of one kind's launch and protocols (see the module doc)."""
    if len({r["world"] for r in rows}) < 2:
        raise ConfigError(f"{kind} rows of at least two world sizes (ring hops and the fixed "
                          "cost cannot be told apart on one)", file=rows[0]["file"] if rows
                          else None, key="world", got=str(sorted({r["world"] for r in rows})))
    steps, bus = _design(kind, rows)
    meas = np.array([r["seconds"] for r in rows])
    sizes = np.array([r["bytes"] for r in rows])
    cuts = np.unique(sizes)[1:]
    best = None
    for k in range(1, protocols + 1):
        best_k = None
        for sw in itertools.combinations(cuts, k - 1):
            assign = np.searchsorted(np.array(sw), sizes, side="right")
            for _ in range(max_iter):
                x = _solve(steps, bus, meas, assign, k)
                # a protocol with no bandwidth term left is no line: keep it out of the min
                x[1 + k:] = np.where(x[1 + k:] > 0, x[1 + k:], np.inf)
                pred, new = _predict(x, steps, bus, k)
                if np.array_equal(new, assign):
                    break
                assign = new
            err = float(np.sum((pred / meas - 1) ** 2))
            if best_k is None or err < best_k[0] - 1e-15:
                best_k = (err, k, x)
        # one more protocol must pay for its two parameters (Bayesian information criterion)
        n = len(meas)
        bic = n * np.log(max(best_k[0], 1e-300) / n) + (1 + 2 * k) * np.log(n)
        if best is None or bic < best[0]:
            best = (bic, k, best_k[2])
    _, k, x = best
    used = [i for i in range(k) if np.isfinite(x[1 + k + i])]
    order = sorted(used, key=lambda i: 1.0 / x[1 + k + i])          # by bandwidth, low first
    names = NAMES[len(order)]
    return {"launch_us": float(x[0] * 1e6),
            "protocols": [{"name": names[j], "hop_us": float(x[1 + i] * 1e6),
                           "bus_gbps": float(1.0 / x[1 + k + i] / 1e9)}
                          for j, i in enumerate(order)]}


def fit(rows: list[dict], protocols: int = 3) -> dict:
    """{kind: fitted RingCollective dict} for every kind with rows."""
    return {kind: fit_kind(kind, [r for r in rows if r["kind"] == kind], protocols)
            for kind in KINDS if any(r["kind"] == kind for r in rows)}


def predict(values: dict, rows: list[dict]) -> np.ndarray:
    """Seconds by the simulator's own formula (sim.hw.gpu.calibrated_ring_seconds)."""
    fits = {k: RingCollective.model_validate(v) for k, v in values.items()}
    return np.array([calibrated_ring_seconds(r["kind"], r["bytes"], r["world"],
                                             fits[r["kind"]])[0] for r in rows])


def errors(values: dict, rows: list[dict]) -> dict:
    """{(kind, world): (MAPE %, points)} and (kind, 'all')."""
    pred = predict(values, rows)
    meas = np.array([r["seconds"] for r in rows])
    ape = np.abs(pred / meas - 1) * 100
    out = {}
    for kind in values:
        for w in sorted({r["world"] for r in rows if r["kind"] == kind}) + ["all"]:
            sel = [r["kind"] == kind and (w == "all" or r["world"] == w) for r in rows]
            out[(kind, w)] = (float(ape[sel].mean()), int(sum(sel)))
    return out


# -------------------------------------------------------------------------- TP steps ----
def step_errors(step_paths, collectives: dict | None, arch: str = "h200-sxm",
                shards: bool = False) -> dict:
    """{(model, tp, phase): (MAPE %, steps)} of sim.simulate_step at tp against the measured
    TP steps (rows whose tp equals the world size), bf16, with ``collectives`` set in the
    arch's calibration (None: the arch as shipped). ``shards``: instead, the rows of a dry run
    (one rank running a tp-way shard, so its collectives do nothing) against the simulated
    step less its collective nodes, a check of the shard's shapes and single-GPU kernels."""
    import sim
    from sim.config import load_arch, load_model
    sys.path.insert(0, str(ROOT / "bench"))
    from fit_gpu import step_sequences
    over = {} if collectives is None else {"calibration.collectives": collectives}
    a = load_arch(arch, overrides=over)
    acc: dict = {}
    models: dict = {}
    for path in map(Path, step_paths):
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                tp, world = int(r["tp"]), int(r["world"])
                if (world != 1 or tp < 2) if shards else (tp != world or tp < 2):
                    continue                    # traces and dry-run shapes are kept apart
                name = r["model"]
                if name not in models:
                    models[name] = load_model(name, overrides={
                        "precision.wbits": 16, "precision.abits": 16, "max_position": 1 << 20})
                prefill, decode = step_sequences(r)
                res = sim.simulate_step(a, models[name], prefill=prefill, decode=decode, tp=tp)
                t = res.seconds
                if shards:
                    coll = res.ops[res.ops.kind == "collective"].cycles.sum()
                    t -= coll / (a.clock_ghz * 1e9)
                acc.setdefault((name, tp, r["kind"]), []).append(
                    abs(t / (float(r["time_ms"]) * 1e-3) - 1) * 100)
    return {k: (float(np.mean(v)), len(v)) for k, v in sorted(acc.items())}


# ----------------------------------------------------------------------------- writing ----
def calibration_text(values: dict, source: str) -> str:
    """The YAML that arch/h200-sxm.yaml extends, holding ``calibration.collectives``."""
    import yaml
    body = {"extends": "../h200/calibration.yaml",
            "calibration": {"collectives": {"source": source, **{
                k: {"launch_us": round(v["launch_us"], 4),
                    "protocols": [{"name": p["name"], "hop_us": round(p["hop_us"], 4),
                                   "bus_gbps": round(p["bus_gbps"], 2)}
                                  for p in v["protocols"]]} for k, v in values.items()}}}}
    head = ("# Collective calibration of the gpu model (sim/hw/gpu.py, calibrated_ring_seconds)\n"
            "# for NVIDIA H200 SXM on one NVLink/NVSwitch host, NCCL with NVLS off, CUDA graphs.\n"
            "# Written by `bench/fit_collectives.py --write` from traces/h200-tp*/**/"
            "collectives.csv\n# (see traces/h200-tp/README.md); the rest of the calibration "
            "comes from the file\n# it extends. Do not edit by hand: rerun the fitter.\n")
    return head + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="*", help="collectives CSVs (default: traces/h200-tp*/**)")
    ap.add_argument("--protocols", type=int, default=3, choices=(1, 2, 3))
    ap.add_argument("--mode", default="graph", choices=("graph", "eager"))
    ap.add_argument("--steps", nargs="*", default=None,
                    help="TP steps CSVs to check (default: steps.csv beside each collectives CSV)")
    ap.add_argument("--write", action="store_true", help=f"write {CALIBRATION.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.csv] or shipped_csvs()
    if not paths:
        print("no collectives CSV given and none under traces/h200-tp*/ (run bench/tp_traces.sh "
              "on a machine with several GPUs first)")
        return 1
    rows = read_collectives(paths, args.mode)
    values, err = None, {}
    if rows:
        values = fit(rows, args.protocols)
        print(f"fitted on {len(rows)} {args.mode} points from {len(paths)} file(s)")
        for kind, v in values.items():
            print(f"  {kind}: launch {v['launch_us']:.2f} us; " + "; ".join(
                f"{p['name']} hop {p['hop_us']:.3f} us, bus {p['bus_gbps']:.1f} GB/s"
                for p in v["protocols"]))
        err = errors(values, rows)
        for (kind, w), (e, n) in err.items():
            print(f"  {kind:9s} world {w!s:>3}: MAPE {e:5.2f}% ({n} sizes)")
    else:
        print(f"no {args.mode} rows of two or more ranks in {len(paths)} file(s): nothing fitted")
    step_paths = args.steps if args.steps is not None else [
        p.parent / "steps.csv" for p in paths if (p.parent / "steps.csv").exists()]
    if step_paths:
        for (model, tp, phase), (e, n) in step_errors(step_paths, values).items():
            print(f"  step {model} tp{tp} {phase:8s}: MAPE {e:5.2f}% ({n} steps)")
        for (model, tp, phase), (e, n) in step_errors(step_paths, values, shards=True).items():
            print(f"  dry-run shard {model} tp{tp} {phase:8s} (collectives left out): MAPE "
                  f"{e:5.2f}% ({n} steps)")
    if args.write and values:
        src = ("bench/fit_collectives.py on " + ", ".join(
            str(Path(p).resolve().relative_to(ROOT)) if Path(p).resolve().is_relative_to(ROOT)
            else str(p) for p in paths) + "; MAPE " + ", ".join(
            f"{k} {e:.1f}%" for (k, w), (e, _) in err.items() if w == "all"))
        CALIBRATION.write_text(calibration_text(values, src), encoding="utf-8")
        print(f"wrote {CALIBRATION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
