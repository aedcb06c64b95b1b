"""The public API: simulate one GEMM, one model step, or a whole experiment.

``arch`` and ``model`` accept a shipped name (file stem under ``arch/`` or ``workloads/``), a
path to a YAML file, a dict, or an already-validated config object.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .config import ConfigError, load_arch, load_experiment, load_model
from .core import EnergyLedger, TraceRecorder
from .hw.accelerator import COMPONENTS, OpResult
from .hw.memory_plan import OperandPlacement
from .hw.registry import build_accelerator
from .io.profiles import profile_info
from .workload.execute import (add_step, attach_outliers, ops_frame, outlier_lookup,
                                outlier_profile_for, run_ops)
from .workload.graph import step_ops

_ACCEL_CACHE: dict[str, object] = {}


def accelerator_for(arch):
    """The (memoized) accelerator model of an arch config, keyed by the arch's content hash."""
    arch = load_arch(arch)
    key = arch.hash()
    if key not in _ACCEL_CACHE:
        _ACCEL_CACHE[key] = build_accelerator(arch)
    return _ACCEL_CACHE[key]


# ----------------------------------------------------------------------------------- GEMM ----
@dataclass
class GemmResult:
    """One GEMM on one accelerator: cycles, energy by component (pJ), utilization."""

    M: int
    K: int
    N: int
    dataflow: str
    array: tuple[int, int]
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
        d["array"] = list(self.array)
        d["energy_total_pj"] = self.energy_total_pj
        return d


def simulate_gemm(arch, M: int, K: int, N: int, *, dataflow: str = "ws", wbits: int = 8,
                  abits: int = 8, array: tuple[int, int] | None = None,
                  convention: str = "strata", trace: TraceRecorder | None = None) -> GemmResult:
    """Simulate ``O[M,N] = A[M,K] @ W[K,N]`` with all operands in DRAM.

    ``array=(rows, cols)`` overrides the arch's array; ``convention="scalesim"`` counts the
    array's compute cycles the way SCALE-Sim v3 does (no overlap between folds).
    """
    accel = accelerator_for(arch)
    r: OpResult = accel.gemm(M, K, N, wbits=wbits, abits=abits, dataflow=dataflow, array=array,
                             convention=convention, place=OperandPlacement(), trace=trace)
    rows_cols = tuple(array) if array is not None else (accel.arch.array.rows, accel.arch.array.cols)
    return GemmResult(M=M, K=K, N=N, dataflow=dataflow, array=rows_cols, convention=convention,
                      cycles=r.cycles, compute_cycles=r.compute_cycles,
                      stall_cycles=r.stall_cycles, stall_memory=r.stall_memory,
                      stall_sram=r.stall_sram, stall_drain=r.stall_drain, macs=r.macs, utilization=r.utilization,
                      energy_pj=r.energy_pj, dram_read_bytes=r.dram_read_bytes,
                      dram_write_bytes=r.dram_write_bytes, seconds=accel.clock.seconds(r.cycles))


# ---------------------------------------------------------------------------------- model ----
@dataclass
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
    outlier_profile: dict | None = None   # profile_info of an outlier-aware arch's profile

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
                   progress=None, seed: int = 0) -> ModelResult:
    """Simulate one model step on an accelerator; ``steps`` > 1 chains decode steps whose
    context grows by one token each (the per-op table then holds sums over the steps).
    ``seed`` seeds the synthetic outlier profile of a model that names none."""
    return _simulate(accelerator_for(arch), load_model(model), phase=phase, batch=batch,
                     seq_len=seq_len, context=context, steps=steps, decode_batch=decode_batch,
                     trace=trace, progress=progress, seed=seed)


def _simulate(accel, model, *, phase, batch, seq_len, context, steps, decode_batch,
              trace=None, progress=None, start_cycle: int = 0, track_prefix: str = "",
              seed: int = 0) -> ModelResult:
    if steps > 1 and phase != "decode":
        raise ValueError(f"steps > 1 only makes sense for phase 'decode', got phase {phase!r}")
    first_ops, sums, ledger, now = None, None, EnergyLedger(), start_cycle
    outliers = outlier_lookup(accel, model, seed)
    for step in range(steps):
        ctx = None if context is None else context + step
        ops = attach_outliers(step_ops(model, phase, batch=batch, seq_len=seq_len, context=ctx,
                                       decode_batch=decode_batch), outliers)
        results, led, now = run_ops(accel, ops, trace=trace, start_cycle=now,
                                    track_prefix=track_prefix)
        if sums is None:
            first_ops, sums = ops, [dict(r) for r in results]
        else:
            add_step(sums, results)
        ledger.merge(led)
        if progress is not None:
            progress(1)
    ops = ops_frame(first_ops, sums)
    by = ledger.by_component()
    energy = {c: float(by.get(c, 0.0)) for c in COMPONENTS}
    # array utilization: useful MACs over what the array could have done in the whole run;
    # cycles spent in vector/memory ops count at the peak of the model's default precision
    wb, ab = model.precision.wbits, model.precision.abits
    default_peak = accel.arch.array.rows * accel.arch.array.cols * accel.arch.mode(wb, ab).macs_per_cycle
    peak = ops.peak_macs_per_cycle.where(ops.peak_macs_per_cycle > 0, default_peak)
    busy = float((ops.cycles * peak).sum())
    macs = int(ops.macs.sum())
    profile = profile_info(outlier_profile_for(accel, model, seed), model.outlier_profile is None)
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


# ----------------------------------------------------------------------------- experiment ----
@dataclass
class Result:
    """Everything one experiment produced, as pandas DataFrames plus a JSON-able summary."""

    experiment: object            # the validated ExperimentConfig
    runs: pd.DataFrame            # one row per run: totals, seconds, tokens/s, energy (J)
    ops: pd.DataFrame             # one row per operator per run (cycles, stalls, energy pJ)
    energy: pd.DataFrame          # run, component, energy_pj
    area: pd.DataFrame            # component, area_um2
    trace: TraceRecorder | None = None
    run_records: list = field(default_factory=list, repr=False)   # runs as plain dicts
    outlier_profiles: dict = field(default_factory=dict)  # variant -> profile_info, where used

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
            **({"outlier_profiles": self.outlier_profiles} if self.outlier_profiles else {}),
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
    points = [(name, cfg, accelerator_for(cfg.arch)) for name, cfg in design_points(exp)]
    want_trace = exp.outputs.trace if trace is None else trace
    recorder = TraceRecorder(exp.name) if want_trace else None
    total_steps = len(points) * sum(r.steps for r in exp.runs)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total_steps, desc=exp.name, unit="step", delay=2.0, leave=False)
    rows, op_frames, energy_rows, area_rows, now = [], [], [], [], 0
    outlier_profiles: dict = {}
    for variant, cfg, accel in points:
        prefix = f"{variant}: " if exp.variants else ""
        for r in cfg.runs:
            res = _simulate(accel, cfg.model, phase=r.phase, batch=r.batch, seq_len=r.seq_len,
                            context=r.context, steps=r.steps, decode_batch=r.decode_batch,
                            trace=recorder, progress=bar.update if bar is not None else None,
                            start_cycle=now, track_prefix=f"{prefix}{r.name}: ", seed=cfg.seed)
            if res.outlier_profile is not None:
                outlier_profiles[variant] = res.outlier_profile
            now += res.cycles       # runs follow one another on the trace's time axis
            rows.append({"variant": variant, "run": r.name, **res.summary()})
            op_frames.append(res.ops.assign(variant=variant, run=r.name))
            energy_rows += [{"variant": variant, "run": r.name, "component": c, "energy_pj": v}
                            for c, v in res.energy_pj.items()]
        area_rows += [{"variant": variant, "component": c, "area_um2": v}
                      for c, v in accel.area_um2().items()]
    if bar is not None:
        bar.close()
    ops = pd.concat(op_frames, ignore_index=True)
    ops.insert(0, "run", ops.pop("run"))
    ops.insert(0, "variant", ops.pop("variant"))
    return Result(experiment=exp, runs=pd.DataFrame(rows), ops=ops,
                  energy=pd.DataFrame(energy_rows), area=pd.DataFrame(area_rows),
                  trace=recorder, run_records=rows, outlier_profiles=outlier_profiles)
