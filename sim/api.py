"""The public API: simulate one GEMM, one model step, or a whole experiment.

``arch`` and ``model`` accept a shipped name (file stem under ``arch/`` or ``workloads/``), a
path to a YAML file, a dict, or an already-validated config object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import pandas as pd

import math
import numbers
from contextlib import contextmanager

from .config import ConfigError, load_arch, load_experiment, load_model
from .config.errors import InvalidValue, did_you_mean, short_repr
from .config.loader import LRU, load_validated, source_of
from .config.schema import MAX_SIZE, FrozenDict, RunConfig, check_positions
from .config.tech import load_tech
from .hw.systolic import DATAFLOWS
from .core import EnergyLedger, TraceRecorder
from .hw.interface import OpResult, energy_by_component, merge_component_orders
from .hw.memory_plan import OperandPlacement
from .hw.registry import build_accelerator
from .io.profiles import profile_info
from .workload.execute import (StepSums, ops_frame, outlier_lookup, prepare_ops,
                                outlier_profile_for, run_ops)
from .workload.graph import step_ops
from .workload import step as _step
from .workload.precision import resolve_precision
from .workload.step import StepResult
from .workload.step_table import StepEstimate, StepTable as _StepTable


# (arch content hash, technology table content hash) -> accelerator; bounded, since each
# accelerator holds its own (bounded) operator memos and a sweep visits many design points
_ACCEL_CACHE = LRU(32)


def accelerator_for(arch):
    """The (memoized) accelerator model of an arch config, keyed by the arch's content hash
    and its technology table's content hash (a table edited on disk is re-read and gives a
    new accelerator). Configs are frozen, so a caller cannot change a cached one."""
    arch = _step.resolve_config("arch", arch)
    with _blame((arch, None)):          # a missing tech file names the arch's key
        tech = load_tech(arch.technology)
        key = (arch.hash(), tech.hash())
        accel = _ACCEL_CACHE.get(key)
        if accel is None:
            accel = build_accelerator(arch, tech)
            _ACCEL_CACHE.put(key, accel)
    return accel


# -------------------------------------------------------------------- argument checks ----
def _api_int(fn: str, key: str, value, minimum: int = 1) -> int:
    """An integer argument of an API call (numpy integers too; not bool, float or str), in
    ``minimum..MAX_SIZE``: a ConfigError naming the call and the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"an integer >= {minimum}", file=f"<{fn}()>", key=key,
                          got=short_repr(value))
    if not minimum <= value <= MAX_SIZE:
        raise ConfigError(f"an integer in {minimum}..{MAX_SIZE} (sizes are bounded so that "
                          "cycle and byte counts stay exact in 64-bit integers)",
                          file=f"<{fn}()>", key=key, got=short_repr(value))
    return int(value)


def _api_choice(fn: str, key: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"one of {', '.join(map(repr, choices))}", file=f"<{fn}()>", key=key,
                          got=short_repr(value), hint=did_you_mean(str(value), choices))
    return value


@contextmanager
def _blame(*owners, run: tuple | None = None, exp=None):
    """Name the file and key of a ConfigError raised below the config layer.

    ``owners`` are (config, field) pairs: an error about one of a config's keys
    (``memory.sram.weight_kb``, ``technology``, ``outlier_profile``) that names no file, or
    names the config's own file, is blamed on the source that wrote the key: the config's own
    file (key as written there), or, inside experiment ``exp``, the experiment file or
    ``--set`` (key ``<field>.<key>``). An error about a size (a GEMM too large) names ``run`` =
    (file, key) when there is one."""
    try:
        yield
    except ConfigError as e:
        top = e.key.split(".")[0] if e.key else None
        for cfg, fld in owners:
            if top not in type(cfg).model_fields or e.file not in (None, cfg.origin):
                continue
            origin = cfg.origin or f"<{type(cfg).__name__}>"
            file, key = origin, e.key
            if exp is not None and fld:
                src = source_of(exp, (fld, *e.key.split(".")))
                if src is not None and (src != cfg.origin or cfg.origin == exp.origin):
                    file, key = src, f"{fld}.{e.key}"
            raise ConfigError(e.expected, file=file, key=key, got=e.got, hint=e.hint) from None
        if e.file is None and e.key is None and run is not None:
            run_file, run_key = run
            raise ConfigError(e.expected, file=run_file, key=run_key, got=e.got,
                              hint=e.hint) from None
        raise


def _owners(cfg):
    """(config, field) of an experiment's arch and model for :func:`_blame`."""
    return [(cfg.arch, "arch"), (cfg.model, "model")]


def _run_args(fn: str, phase, batch, seq_len, context, steps, decode_batch):
    """The run arguments of simulate_model, checked as a ``runs:`` entry of a YAML file is."""
    data = {"name": "api", "phase": phase, "batch": batch, "seq_len": seq_len,
            "context": context, "steps": steps, "decode_batch": decode_batch}
    return load_validated(data, RunConfig, source=f"<{fn}()>")


# ----------------------------------------------------------------------------------- GEMM ----
@dataclass(frozen=True)
class GemmResult:
    """One GEMM on one accelerator: cycles, energy by component (pJ), utilization."""

    M: int
    K: int
    N: int
    dataflow: str
    array: tuple[int, int] | None       # None for an accelerator without a PE array
    convention: str
    cycles: int
    compute_cycles: int
    stall_cycles: int
    stall_memory: int
    stall_sram: int
    stall_drain: int
    macs: int
    utilization: float
    energy_pj: dict
    dram_read_bytes: int
    dram_write_bytes: int
    seconds: float

    @property
    def energy_total_pj(self) -> float:
        return float(sum(self.energy_pj.values()))

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["array"] = list(self.array) if self.array is not None else None
        d["energy_pj"] = dict(self.energy_pj)
        d["energy_total_pj"] = self.energy_total_pj
        return d


def simulate_gemm(arch, M: int, K: int, N: int, *, dataflow: str = "ws", wbits: int = 8,
                  abits: int = 8, array: tuple[int, int] | None = None,
                  convention: str = "strata", trace: TraceRecorder | None = None,
                  seed: int = 0, compress: bool = True) -> GemmResult:
    """Simulate ``O[M,N] = A[M,K] @ W[K,N]`` with all operands in DRAM.

    ``array=(rows, cols)`` overrides the arch's array; ``convention="scalesim"`` counts the
    array's compute cycles the way SCALE-Sim v3 does (no overlap between folds). ``seed``
    seeds the op's random draws (where the accelerator makes any); ``compress=False``
    simulates repeated tiles and folds in full (the same result, slower). The result is the
    caller's own: changing it changes nothing cached.
    """
    fn = "simulate_gemm"
    M, K, N = (_api_int(fn, k, v) for k, v in (("M", M), ("K", K), ("N", N)))
    wbits, abits = _api_int(fn, "wbits", wbits), _api_int(fn, "abits", abits)
    _api_choice(fn, "dataflow", dataflow, DATAFLOWS)
    _api_choice(fn, "convention", convention, ("strata", "scalesim"))
    if array is not None:
        if not isinstance(array, (tuple, list)) or len(array) != 2:
            raise ConfigError("(rows, cols)", file=f"<{fn}()>", key="array",
                              got=short_repr(array))
        rows, cols = array
        array = (_api_int(fn, "array.rows", rows), _api_int(fn, "array.cols", cols))
    accel = accelerator_for(arch)
    with _blame((accel.arch, None)):
        r: OpResult = accel.gemm(M, K, N, wbits=wbits, abits=abits, dataflow=dataflow,
                                 array=array, convention=convention, place=OperandPlacement(),
                                 trace=trace, seed=seed, compress=compress)
    own = getattr(accel.arch, "array", None)
    rows_cols = (tuple(array) if array is not None
                 else (own.rows, own.cols) if own is not None else None)
    return GemmResult(M=M, K=K, N=N, dataflow=dataflow, array=rows_cols, convention=convention,
                      cycles=r.cycles, compute_cycles=r.compute_cycles,
                      stall_cycles=r.stall_cycles, stall_memory=r.stall_memory,
                      stall_sram=r.stall_sram, stall_drain=r.stall_drain, macs=r.macs, utilization=r.utilization,
                      energy_pj=dict(r.energy_pj), dram_read_bytes=r.dram_read_bytes,
                      dram_write_bytes=r.dram_write_bytes, seconds=accel.clock.seconds(r.cycles))


# ---------------------------------------------------------------------------------- model ----
@dataclass(frozen=True)
class ModelResult:
    """One run of a model (a prefill pass, decode steps or a mixed chunk) on one accelerator."""

    phase: str
    batch: int
    seq_len: int | None
    context: int | None
    steps: int
    tokens: int
    cycles: int
    compute_cycles: int
    stall_cycles: int
    seconds: float
    energy_pj: dict
    utilization: float
    dram_utilization: float      # fraction of the run the DRAM port was transferring
    l2_utilization: float
    ops: pd.DataFrame = field(repr=False)
    # profile_info of an outlier-aware arch's profile, read-only (a FrozenDict)
    outlier_profile: Mapping | None = None

    @property
    def energy_total_pj(self) -> float:
        return float(sum(self.energy_pj.values()))

    def summary(self) -> dict:
        return {
            "phase": self.phase, "batch": self.batch, "seq_len": self.seq_len,
            "context": self.context, "steps": self.steps, "tokens": self.tokens,
            "cycles": self.cycles, "compute_cycles": self.compute_cycles,
            "stall_cycles": self.stall_cycles, "seconds": self.seconds,
            "tokens_per_s": self.tokens / self.seconds if self.seconds else 0.0,
            "utilization": self.utilization, "dram_utilization": self.dram_utilization,
            "l2_utilization": self.l2_utilization, "energy_total_j": self.energy_total_pj * 1e-12,
            "energy_per_token_mj": self.energy_total_pj * 1e-9 / max(self.tokens, 1),
            **{f"energy_{c}_j": v * 1e-12 for c, v in self.energy_pj.items()},
        }


def simulate_model(arch, model, *, phase: str = "prefill", batch: int = 1,
                   seq_len: int | None = None, context: int | None = None, steps: int = 1,
                   decode_batch: int = 0, trace: TraceRecorder | None = None,
                   progress=None, seed: int = 0, precision=None,
                   compress: bool = True) -> ModelResult:
    """Simulate one model step on an accelerator; ``steps`` > 1 chains decode steps whose
    context grows by one token each (the per-op table then holds sums over the steps).
    ``seed`` seeds every random draw, and the synthetic outlier profile of a model that names
    none (an experiment passes its ``seed``); ``compress=False`` simulates repeated tiles and
    folds in full (the same result, slower).

    ``precision`` (``'w4a8'``, ``(4, 8)`` or ``{wbits, abits}``) replaces the model's precision
    (``layer_precision`` rules still apply); a model precision the arch lacks falls back to the
    arch's native one with a ``PrecisionFallback`` warning (see ``sim.workload.precision``)."""
    r = _run_args("simulate_model", phase, batch, seq_len, context, steps, decode_batch)
    model = _step.resolve_config("workloads", model)
    try:
        check_positions(model, r.phase, r.seq_len, r.context, r.steps)
    except InvalidValue as e:
        raise ConfigError(e.expected, file="<simulate_model()>", key=".".join(e.loc),
                          got=e.got) from None
    phase, batch, seq_len, context = r.phase, r.batch, r.seq_len, r.context
    steps, decode_batch = r.steps, r.decode_batch
    accel = accelerator_for(arch)
    model, _ = resolve_precision(accel, model, precision)
    with _blame((accel.arch, None), (model, None)):
        return _simulate(accel, model, phase=phase, batch=batch, seq_len=seq_len,
                         context=context, steps=steps, decode_batch=decode_batch, trace=trace,
                         progress=progress, seed=seed, compress=compress)


def _simulate(accel, model, *, phase, batch, seq_len, context, steps, decode_batch,
              trace=None, progress=None, start_cycle: int = 0, track_prefix: str = "",
              seed: int = 0, compress: bool = True) -> ModelResult:
    if steps > 1 and phase != "decode":
        raise ValueError(f"steps > 1 only makes sense for phase 'decode', got phase {phase!r}")
    first_ops, sums, ledger, now = None, None, EnergyLedger(), start_cycle
    outliers = outlier_lookup(accel, model, seed)
    annotations = accel.op_annotations(model, seed)
    for step in range(steps):
        ctx = None if context is None else context + step
        ops = prepare_ops(accel, model, step_ops(model, phase, batch=batch, seq_len=seq_len,
                                                 context=ctx, decode_batch=decode_batch),
                          seed, outliers, annotations)
        results, led, now = run_ops(accel, ops, trace=trace, start_cycle=now,
                                    track_prefix=track_prefix, seed=seed, compress=compress)
        if sums is None:
            first_ops, sums = ops, StepSums(results)
        else:
            sums.add(results)
        ledger.merge(led)
        if progress is not None:
            progress(1)
    energy = energy_by_component(ledger, accel.energy_components)
    ops = ops_frame(first_ops, sums.result(), components=tuple(energy))
    # array utilization: useful MACs over what the array could have done in the whole run;
    # cycles spent in vector/memory ops count at the peak of the model's default precision
    wb, ab = model.precision.wbits, model.precision.abits
    default_peak = accel.peak_macs_per_cycle(wb, ab)
    peak = ops.peak_macs_per_cycle.where(ops.peak_macs_per_cycle > 0, default_peak)
    busy = float((ops.cycles * peak).sum())
    macs = int(ops.macs.sum())
    profile = profile_info(outlier_profile_for(accel, model, seed), model.outlier_profile is None)
    if profile is not None:
        profile = FrozenDict(profile)
    if phase == "prefill":
        tokens = batch * seq_len
    elif phase == "decode":
        tokens = batch * steps
    else:
        tokens = batch * seq_len + decode_batch
    return ModelResult(phase=phase, batch=batch, seq_len=seq_len, context=context, steps=steps,
                       tokens=tokens, cycles=int(now - start_cycle), compute_cycles=int(ops.compute_cycles.sum()),
                       stall_cycles=int(ops.stall_cycles.sum()),
                       seconds=accel.clock.seconds(int(now - start_cycle)), energy_pj=energy,
                       utilization=float(macs / busy) if busy else 0.0,
                       dram_utilization=float(ops.dram_busy_cycles.sum() / max(now - start_cycle, 1)),
                       l2_utilization=float(ops.l2_busy_cycles.sum() / max(now - start_cycle, 1)),
                       ops=ops, outlier_profile=profile)


# ----------------------------------------------------------------------------------- step ----
def simulate_step(arch, model, *, prefill=(), decode=(), precision=None, causal: bool = True,
                  seed: int = 0, causal_block: int | None = None, tp: int = 1) -> StepResult:
    """One continuous-batching step: ``prefill=[(new_tokens, past_tokens), ...]`` chunks and
    ``decode=[context, ...]`` sequences, priced per sequence, causal masking exploited by query
    blocks of ``causal_block`` (default the arch's ``array.cols``; ``causal=False``: the full
    square). ``tp`` (1, 2, 4, 8) chips in tensor parallelism over the arch's ``chip_link``.
    Memoized and frozen: see :mod:`sim.workload.step`."""
    return _step.simulate_step(arch, model, prefill=prefill, decode=decode,
                               precision=precision, causal=causal, seed=seed,
                               causal_block=causal_block, tp=tp,
                               accelerator_for=accelerator_for)


class StepTable(_StepTable):
    """A step-time table over :func:`simulate_step` (see :mod:`sim.workload.step_table`)."""

    def __init__(self, arch, model, **options):
        super().__init__(arch, model, simulate=simulate_step, **options)


def step_table(arch, model, **options) -> StepTable:
    """Build a :class:`StepTable` once per (arch, model) and interpolate steps from it."""
    return StepTable(arch, model, **options)


# ----------------------------------------------------------------------------- experiment ----
@dataclass(frozen=True)
class Result:
    """Everything one experiment produced, as pandas DataFrames plus a JSON-able summary."""

    experiment: object            # the validated ExperimentConfig
    runs: pd.DataFrame            # one row per run: totals, seconds, tokens/s, energy (J)
    ops: pd.DataFrame             # one row per operator per run (cycles, stalls, energy pJ)
    energy: pd.DataFrame          # run, component, energy_pj
    area: pd.DataFrame            # component, area_um2
    trace: TraceRecorder | None = None
    run_records: tuple = field(default_factory=tuple, repr=False)   # runs as plain dicts
    arch_description: str = ""    # one line: the (first) design point's accelerator
    # variant -> profile_info, where used (read-only)
    outlier_profiles: Mapping = field(default_factory=FrozenDict)

    def summary(self) -> dict:
        exp = self.experiment
        return {
            "experiment": exp.name,
            "config_hash": exp.hash(),
            "arch": exp.arch.name,
            "model": exp.model.name,
            "seed": exp.seed,
            "variants": [v.name for v in exp.variants],
            "area_mm2": {str(k): float(v) * 1e-6
                         for k, v in self.area.groupby("variant", sort=False).area_um2.sum().items()},
            "runs": [dict(r) for r in self.run_records],
            **({"outlier_profiles": {v: dict(info) for v, info in self.outlier_profiles.items()}}
               if self.outlier_profiles else {}),
        }


def design_points(exp) -> list[tuple[str, object]]:
    """(name, config) per design point: the experiment itself, or one per ``variants:`` entry
    (the base config with that variant's keys changed)."""
    if not exp.variants:
        return [(exp.name, exp)]
    points = []
    for i, v in enumerate(exp.variants):
        try:
            points.append((v.name, load_experiment(exp, overrides=list(v.set.items()))))
        except ConfigError as e:     # name the experiment file and the variant's key
            key = f"variants.{i}.set" + (f".{e.key}" if e.key else "")
            raise ConfigError(e.expected, file=exp.origin, key=key, got=e.got,
                              hint=e.hint) from None
    return points


def run(experiment, overrides=None, *, trace: bool | None = None, progress: bool = False) -> Result:
    """Run every ``runs:`` entry of an experiment (a name, a path, a dict or a config), for
    every design point in ``variants:`` if it has any. Every table has a ``variant`` column."""
    exp = load_experiment(experiment, overrides=overrides)
    points = []
    for name, cfg in design_points(exp):
        with _blame(*_owners(cfg), exp=cfg):
            points.append((name, cfg, accelerator_for(cfg.arch)))
    want_trace = exp.outputs.trace if trace is None else trace
    recorder = TraceRecorder(exp.name) if want_trace else None
    total_steps = len(points) * sum(r.steps for r in exp.runs)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total_steps, desc=exp.name, unit="step", delay=2.0, leave=False)
    results, area_rows, now = [], [], 0
    outlier_profiles: dict = {}
    for variant, cfg, accel in points:
        prefix = f"{variant}: " if exp.variants else ""
        for i, r in enumerate(cfg.runs):
            where = source_of(exp, ("runs", i, "precision")) or exp.origin
            model, _ = resolve_precision(accel, cfg.model, r.precision, file=where,
                                         key=f"runs.{i}.precision")
            with _blame(*_owners(cfg), exp=cfg, run=(exp.origin or "<experiment>", f"runs.{i}")):
                res = _simulate(accel, model, phase=r.phase, batch=r.batch, seq_len=r.seq_len,
                                context=r.context, steps=r.steps,
                                decode_batch=r.decode_batch, trace=recorder,
                                progress=bar.update if bar is not None else None,
                                start_cycle=now, track_prefix=f"{prefix}{r.name}: ",
                                seed=cfg.seed, compress=cfg.compress)
            if res.outlier_profile is not None:
                outlier_profiles[variant] = res.outlier_profile
            now += res.cycles       # runs follow one another on the trace's time axis
            results.append((variant, r.name, res))
        area_rows += [{"variant": variant, "component": c, "area_um2": v}
                      for c, v in accel.area_um2().items()]
    if bar is not None:
        bar.close()
    # every table covers the same components for every design point, in one order (the
    # declared ones first, see merge_component_orders; 0 where a point charges none)
    components = ()
    for _, _, res in results:
        components = merge_component_orders(components, res.energy_pj)
    rows, op_frames, energy_rows = [], [], []
    for variant, run_name, res in results:
        own = {f"energy_{c}_j" for c in res.energy_pj}
        rows.append({"variant": variant, "run": run_name,
                     **{k: v for k, v in res.summary().items() if k not in own},
                     **{f"energy_{c}_j": float(res.energy_pj.get(c, 0.0)) * 1e-12
                        for c in components}})
        op_frames.append(res.ops.assign(variant=variant, run=run_name))
        energy_rows += [{"variant": variant, "run": run_name, "component": c,
                         "energy_pj": float(res.energy_pj.get(c, 0.0))} for c in components]
    ops = pd.concat(op_frames, ignore_index=True)
    energy_cols = [f"energy_{c}_pj" for c in components]
    ops[energy_cols] = ops.reindex(columns=energy_cols).fillna(0.0)
    lead = [c for c in ops.columns if not c.startswith("energy_")]
    at = lead.index("l2_busy_cycles") + 1 if "l2_busy_cycles" in lead else len(lead)
    ops = ops[lead[:at] + energy_cols + ["energy_pj"] + lead[at:]]
    ops.insert(0, "run", ops.pop("run"))
    ops.insert(0, "variant", ops.pop("variant"))
    _, _, first_accel = points[0]
    return Result(experiment=exp, runs=pd.DataFrame(rows), ops=ops,
                  energy=pd.DataFrame(energy_rows), area=pd.DataFrame(area_rows),
                  trace=recorder, run_records=tuple(rows),
                  arch_description=first_accel.describe(),
                  outlier_profiles=FrozenDict(outlier_profiles))


# ------------------------------------------------------------------------------ serving ----
@dataclass(frozen=True)
class ServeResult:
    """A serving experiment's frames (``requests``, ``steps``, ``clients``, ``token_gaps``)
    and its :func:`sim.system.summarize` dict (plus experiment name, seed and wall time).

    With ``outputs.steps: file`` the step rows are in the CSV file ``steps_path`` and
    ``steps`` reads it back on each access (the same frame as ``memory`` mode's, exactly);
    with ``none`` it is an empty frame."""

    experiment: object            # the validated ServingExperiment
    requests: pd.DataFrame
    steps_frame: pd.DataFrame | None
    clients: pd.DataFrame
    token_gaps: pd.DataFrame
    summary: dict
    steps_path: str | None = None

    @property
    def steps(self) -> pd.DataFrame:
        if self.steps_frame is not None:
            return self.steps_frame
        from .system.stepcsv import read_steps
        return read_steps(self.steps_path, self.clients["client"])


def load_serving(experiment, overrides=None):
    """A :class:`sim.system.experiment.ServingExperiment` by shipped name, path, mapping or
    object (``--set``-style ``overrides``)."""
    from .config.loader import load_validated
    from .system.experiment import ServingExperiment
    return load_validated(experiment, ServingExperiment, overrides, kind="experiments")


@dataclass(frozen=True)
class ServeComparison:
    """A serving experiment with ``variants:``: one :class:`ServeResult` per variant (same
    requests unless a variant changes the workload) and a summary comparing them. The frames
    ``requests``, ``steps``, ``clients`` and ``token_gaps`` concatenate the variants' with a
    leading ``variant`` column."""

    experiment: object
    variants: Mapping[str, ServeResult]
    summary: dict

    def _frame(self, name: str) -> pd.DataFrame:
        return pd.concat([getattr(r, name).assign(variant=v).pipe(
            lambda f: f[["variant"] + [c for c in f.columns if c != "variant"]])
            for v, r in self.variants.items()], ignore_index=True)

    @property
    def requests(self) -> pd.DataFrame:
        return self._frame("requests")

    @property
    def steps(self) -> pd.DataFrame:
        return self._frame("steps")

    @property
    def clients(self) -> pd.DataFrame:
        return self._frame("clients")

    @property
    def token_gaps(self) -> pd.DataFrame:
        return self._frame("token_gaps")


def serve(experiment, overrides=None, *, out=None) -> "ServeResult | ServeComparison":
    """Run a serving experiment: load and validate it, build its requests and its clients'
    backends (``StrataBackend`` on each client's arch, GPU archs included), run
    :func:`sim.system.serve_frames` and summarize. Client names are the experiment's.
    With ``variants:``, every variant runs over the same requests and a
    :class:`ServeComparison` holds them (``summary["comparison"]``: one row per variant).
    ``out``: a folder for ``outputs.steps: file``, which streams each run's steps to
    ``<out>/steps.csv`` (``<out>/<variant>/steps.csv`` with variants) during the run."""
    import os
    from pathlib import Path

    from .system import build_requests
    from .system.experiment import serving_points
    from .system.metrics import comparison_rows

    exp = load_serving(experiment, overrides)
    origin = exp.origin
    base = os.path.dirname(origin) if origin and os.path.isfile(origin) else None
    frames_by_workload: dict = {}     # variants with the same workload share its frame
    backends: dict = {}               # ... and the same backend (one step table, one memo)
    results = {}
    for name, cfg in serving_points(exp):
        wl = cfg.workload.model_dump_json()
        if wl not in frames_by_workload:
            key = "workload" if name is None or cfg.workload == exp.workload else \
                f"variants.{[v.name for v in exp.variants].index(name)}.set.workload"
            frames_by_workload[wl] = build_requests(cfg.workload, base_dir=base,
                                                    source=origin, key=key)
        folder = None
        if cfg.outputs.steps == "file" and out is None:
            raise ConfigError("an output folder for the streamed steps (strata run --out, or "
                              "sim.serve(..., out=folder)), or outputs.steps: memory or none",
                              file=origin or "<experiment>", key="outputs.steps", got="file")
        if cfg.outputs.steps == "file":
            folder = Path(out) if name is None else Path(out) / name
            folder.mkdir(parents=True, exist_ok=True)
        results[name] = _serve_one(cfg, frames_by_workload[wl], backends,
                                   None if folder is None else folder / "steps.csv")
    if not exp.variants:
        return results[None]
    summary = {"experiment": exp.name, "config_hash": exp.hash(), "seed": exp.seed,
               "variants": list(results),
               "comparison": comparison_rows({v: r.summary for v, r in results.items()}),
               "by_variant": {v: r.summary for v, r in results.items()}}
    return ServeComparison(exp, FrozenDict(results), summary)


def _client_area_mm2(c) -> float:
    """One client's silicon: its chips (``tp``) times its arch's area model, in mm^2 (NaN
    for an arch without one, such as a GPU)."""
    area = accelerator_for(c.arch).area_um2()
    return c.tp * sum(area.values()) * 1e-6 if area else math.nan


def idle_power_w(arch) -> float:
    """What one chip of ``arch`` draws with nothing to run: a GPU's power model at zero
    utilisation, an accelerator's leakage; 0 for a type that has neither."""
    acc = accelerator_for(arch)
    if hasattr(acc, "power_w"):
        return float(acc.power_w(0.0, 0.0, 0.0)[0])
    if hasattr(acc, "leakage_uw"):
        return float(sum(acc.leakage_uw().values())) * 1e-6
    return 0.0


def _serve_one(exp, reqs: pd.DataFrame, backends: dict, steps_path=None) -> ServeResult:
    """One cluster over ``reqs``; ``backends`` (backend mapping as JSON -> built backend) is
    shared between calls: a backend's answers depend on its mapping only."""
    import json

    from .system import serve_frames, summarize
    from .system.backends import build_backend
    from .system.metrics import run_duration
    from .system.experiment import backend_specs, client_names, cluster_spec

    def shared(spec):
        key = json.dumps(spec, sort_keys=True)
        if key not in backends:
            backends[key] = build_backend(spec)
        return backends[key]

    built = {role: [shared(s) for s in spec] if isinstance(spec, list) else shared(spec)
             for role, spec in backend_specs(exp.cluster).items()}
    names = client_names(exp.cluster)
    frames = serve_frames(reqs, cluster_spec(exp.cluster, built), pipeline=exp.pipeline,
                          seed=exp.seed, keep_steps=exp.outputs.steps != "none",
                          steps_path=steps_path, client_names=names)
    rename = lambda s: s.map(lambda v: names.get(v, v) if isinstance(v, str) else v)  # noqa: E731
    requests = frames.requests.assign(client=rename(frames.requests["client"]),
                                      decode_client=rename(frames.requests["decode_client"]))
    # metrics reads a rejection as 'rejected:<reason>' (the coordinator keeps them apart)
    rej = requests["status"] == "rejected"
    requests.loc[rej, "status"] = "rejected:" + requests.loc[rej, "reason"].astype(str)
    steps = None if frames.steps is None else frames.steps.assign(
        client=rename(frames.steps["client"]))
    area = {n: _client_area_mm2(c) for c in exp.cluster.clients for n in c.names()}
    clients = frames.clients.assign(client=rename(frames.clients["client"]))
    clients = clients.assign(area_mm2=clients["client"].map(area))
    # a chip draws its idle power while its client runs no step: energy is steps + idle
    # over the run's span (first arrival to last finish)
    span = run_duration(requests)
    idle_w = {n: idle_power_w(c.arch) * c.tp for c in exp.cluster.clients for n in c.names()}
    idle_j = clients["client"].map(idle_w) * (span - clients["busy_s"]).clip(lower=0.0) \
        if span == span else clients["busy_s"] * 0.0
    clients = clients.assign(idle_energy_j=idle_j.astype(float))
    step_j, idle_total = float(clients["energy_j"].sum()), float(clients["idle_energy_j"].sum())
    step_figures = {"memory": steps, "file": frames.step_stats, "none": None}[exp.outputs.steps]
    summary = summarize(requests, steps=step_figures, itl_s=frames.token_gaps["gap_s"].to_numpy(),
                        itl_counts=frames.token_gaps["tokens"].to_numpy(),
                        energy_j=step_j + idle_total)
    summary["step_energy_j"], summary["idle_energy_j"] = step_j, idle_total
    summary = {"experiment": exp.name, "config_hash": exp.hash(), "seed": exp.seed,
               "events": frames.events, "simulated_s": frames.sim_seconds,
               "clients": int(len(clients)), "chips": int(sum(c.tp * c.count
                                                               for c in exp.cluster.clients)),
               "area_mm2": float(clients["area_mm2"].sum(min_count=len(clients)))
               if clients["area_mm2"].notna().all() else None, **summary}
    return ServeResult(exp, requests, steps, clients, frames.token_gaps, summary,
                       frames.steps_path)
