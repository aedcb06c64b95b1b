"""Ragged continuous-batching steps: one call prices one scheduler step, memoized.

A serving simulator's scheduler hands the hardware layer one step at a time: prefill chunks of
different lengths, each on its own past context, and decode sequences at different contexts.
:func:`simulate_step` builds that step's operator list (``sim.workload.graph.ragged_shape``:
linear layers once over all tokens, attention per sequence, causal masking exploited by query
blocks), runs it on the accelerator and returns a frozen :class:`StepResult`. A state-space
model (``architecture: mamba``) has no attention: its step is priced from its tokens, its
sequences and how many of them resume a recurrent state; ``causal_block`` does not apply
(``StepResult.causal_block`` is None; passing one is an error).

Causal granularity. With ``causal=True`` a prefill chunk's queries are cut into blocks of
``causal_block`` queries, by default the arch's ``array.cols``: in the Q·Kᵀ GEMM the keys lie
along the array's columns, so a block of ``cols`` queries has a diagonal square one key fold
wide, which is computed whole (masked scores included), as a tiled attention kernel computes
its diagonal tile; key folds above the diagonal are skipped. ``causal_block=1`` gives the exact
causal MAC count, ``causal=False`` the full square of the ``prefill``/``mixed`` phases.

Memo. Steps seen before are answered from a bounded LRU (:data:`MEMO_SIZE` entries) keyed by
everything that affects the result: the arch content, the technology table file (path, mtime,
size), the model content, the outlier profile file (or, for a model that names none, the file
of the recipe its synthetic profile is built from: workloads/outliers/recipes/default.yaml),
the normalized step (sequences sorted, so a permutation hits), precision, causal, causal_block
and seed. Names and paths are resolved
once and re-checked by the (path, mtime, size) of every file they were built from (the file
and its ``extends:`` chain), so editing a file is noticed. Results are frozen: mappings are
read-only and ``ops`` is a fresh DataFrame on every access, so no caller can change what the
memo hands the next one. A precision fallback (see ``sim.workload.precision``) is warned when
the step is first computed and kept in ``StepResult.notes`` for every later hit.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

import pandas as pd

from sim.core import EnergyLedger

from sim.config import ConfigError, load_arch, load_model
from sim.config.errors import short_repr
from sim.config.schema import ArchConfig, ModelConfig
from sim.workload.execute import ops_frame, prepare_ops, run_ops
from sim.workload.graph import ragged_shape, ragged_step, shape_ops
from sim.workload.parallel import TP_SIZES, add_collectives, shard_model
from sim.workload.precision import parse_precision, resolve_precision

WHERE = "<simulate_step>"
#: Most distinct steps the memo keeps (least recently used ones are dropped first).
MEMO_SIZE = 4096


@dataclass(frozen=True)
class StepResult:
    """One ragged step on one accelerator. Frozen; ``ops`` returns a fresh copy each time."""

    prefill: tuple[tuple[int, int], ...]   # (new_tokens, past_tokens) per chunk, sorted
    decode: tuple[int, ...]                # KV context per decode sequence, sorted
    precision: tuple[int, int]             # model-wide (wbits, abits) the step ran at
    causal: bool
    causal_block: int | None               # query block of the causal prefill attention
    seed: int
    tokens: int
    sequences: int
    cycles: int
    compute_cycles: int
    stall_cycles: int
    macs: int
    seconds: float
    energy_pj: Mapping[str, float]         # by component, read-only
    dram_read_bytes: int
    dram_write_bytes: int
    notes: tuple[str, ...] = ()            # e.g. the precision fallback
    tp: int = 1                            # chips in tensor parallelism (energy: all of them)
    _ops: "_OpsTable" = field(default=None, repr=False, compare=False)

    @property
    def ops(self) -> pd.DataFrame:
        """The per-operator table (one row per node; a copy the caller may change)."""
        return self._ops.frame().copy()

    @property
    def energy_total_pj(self) -> float:
        return float(sum(self.energy_pj.values()))

    def summary(self) -> dict:
        wbits, abits = self.precision
        return {
            "prefill_chunks": len(self.prefill), "prefill_tokens": sum(n for n, _ in self.prefill),
            "decode_seqs": len(self.decode), "tokens": self.tokens, "sequences": self.sequences,
            "wbits": wbits, "abits": abits, "causal": self.causal,
            "causal_block": self.causal_block, "seed": self.seed, "tp": self.tp,
            "cycles": self.cycles,
            "compute_cycles": self.compute_cycles, "stall_cycles": self.stall_cycles,
            "macs": self.macs, "seconds": self.seconds,
            "energy_total_j": self.energy_total_pj * 1e-12,
            **{f"energy_{c}_j": v * 1e-12 for c, v in self.energy_pj.items()},
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------- keys ----
def _content_key(cfg) -> str:
    """The content key of a validated config (arch or model): configs are frozen, so their
    content hash is computed once per object and cannot go stale."""
    return cfg.hash()


def _stamp(path: str) -> tuple:
    """(path, mtime_ns, size) of a file, (path, None, None) when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return (path, None, None)
    return (path, st.st_mtime_ns, st.st_size)


def _unchanged(stamps: tuple) -> bool:
    """Whether every file of ``stamps`` (from :func:`_stamp`) still has its stamp."""
    for stamp in stamps:
        path, _, _ = stamp
        if _stamp(path) != stamp:
            return False
    return True


_RESOLVED: OrderedDict = OrderedDict()   # (kind, ref, cwd, STRATA_HOME) -> (stamps, cfg, key)
_RESOLVED_SIZE = 256


def _source_files(kind: str, cfg) -> tuple[str, ...]:
    """The files a named config was built from: its file and every file of its extends chain."""
    from sim.config.loader import _load_tree     # provenance: which file wrote which key
    if not cfg.origin:
        return ()
    root = Path(cfg.origin).resolve()
    if not root.is_file():
        return ()
    _, prov = _load_tree(root, kind, [root])
    return tuple(sorted({str(root), *(str(Path(p).resolve()) for p in prov.values()
                                       if p and Path(p).is_file())}))


def _resolve(kind: str, ref, env: tuple):
    """(validated config, content key) for an arch/model given as a config, name, path or dict;
    ``env`` = (cwd, STRATA_HOME), which decide what a name means."""
    cls, load = (ArchConfig, load_arch) if kind == "arch" else (ModelConfig, load_model)
    if isinstance(ref, cls):
        return ref, _content_key(ref)
    if isinstance(ref, (str, os.PathLike)):
        text = os.fspath(ref)
        k = (kind, text, env)
        hit = _RESOLVED.get(k)
        if hit is not None:
            stamps, cfg, key = hit
            if _unchanged(stamps):
                _RESOLVED.move_to_end(k)
                return cfg, key
        cfg = load(ref)
        files = _source_files(kind, cfg)
        if files:
            _RESOLVED[k] = (tuple(_stamp(f) for f in files), cfg, _content_key(cfg))
            if len(_RESOLVED) > _RESOLVED_SIZE:
                _RESOLVED.popitem(last=False)
        return cfg, _content_key(cfg)
    cfg = load(ref)                 # a mapping (validated on every call), or a clear error
    return cfg, _content_key(cfg)


def resolve_config(kind: str, ref):
    """A validated arch (``kind="arch"``) or model (``"workloads"``) config for any reference;
    a name or path is validated once and reused while its file and extends chain are
    unchanged on disk (configs are frozen, so a reused one cannot have been changed)."""
    return _resolve(kind, ref, (os.getcwd(), os.environ.get("STRATA_HOME")))[0]


_TABLE_PATHS: dict = {}


def _table_stamp(folder, ref, env: tuple) -> tuple:
    """(path, mtime, size) of a named table file (technology node, outlier profile)."""
    k = (id(folder), ref, env)
    path = _TABLE_PATHS.get(k)
    if path is None:
        if len(_TABLE_PATHS) > 1024:
            _TABLE_PATHS.clear()
        path = _TABLE_PATHS[k] = str(folder.resolve(ref))
    return _stamp(path)


def _tech_stamp(arch, env: tuple) -> tuple:
    from sim.config.tech import _TABLES
    return _table_stamp(_TABLES, arch.technology, env)


def _profile_stamp(model, env: tuple) -> tuple:
    """The stamp of what an outlier-aware arch reads for ``model``: its outlier profile file,
    or, when it names none, the recipe file its synthetic profile is generated from (an edited
    recipe gives a new profile, so it must give a new key)."""
    if model.outlier_profile is None:
        from sim.config.outliers import _RECIPES, DEFAULT_RECIPE
        try:
            return ("recipe",) + _table_stamp(_RECIPES, DEFAULT_RECIPE, env)
        except ConfigError:
            return ("missing recipe", DEFAULT_RECIPE)   # only an outlier-aware arch complains
    from sim.config.outliers import _PROFILES
    try:
        return _table_stamp(_PROFILES, model.outlier_profile, env)
    except ConfigError:
        return ("missing", model.outlier_profile)   # only an outlier-aware arch will complain


_PRECISION_TEXT: dict[str, tuple[int, int]] = {}


def _precision_key(precision):
    if precision is None:
        return None
    if type(precision) is str:
        hit = _PRECISION_TEXT.get(precision)
        if hit is None:
            hit = parse_precision(precision, file=WHERE)
            if len(_PRECISION_TEXT) < 1024:
                _PRECISION_TEXT[precision] = hit
        return hit
    return parse_precision(precision, file=WHERE)


def _check_flag(key: str, value) -> bool:
    if type(value) is not bool:
        raise ConfigError("True or False", file=WHERE, key=key, got=short_repr(value))
    return value


def _check_count(key: str, value, minimum: int) -> int:
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"an integer >= {minimum}", file=WHERE, key=key, got=short_repr(value))
    return int(value)


# ------------------------------------------------------------------------------- memo ----
_MEMO: OrderedDict = OrderedDict()
#: Operator rows the kept per-op tables may hold together (a 64-decode step of a 32-layer
#: model has ~7,300 rows, ~3.7 MB); a table dropped from this budget is recomputed, identically,
#: when ``ops`` is asked for again.
FRAME_ROWS = 250_000
_FRAMES: OrderedDict = OrderedDict()
_frame_rows = 0


def _keep_frame(key, frame) -> None:
    global _frame_rows
    if key in _FRAMES:
        return
    _FRAMES[key] = frame
    _frame_rows += len(frame)
    while _frame_rows > FRAME_ROWS and len(_FRAMES) > 1:
        _, old = _FRAMES.popitem(last=False)
        _frame_rows -= len(old)


class _OpsTable:
    """Where a result's per-op table lives: the bounded frame cache, or recomputed."""

    __slots__ = ("key", "recompute")

    def __init__(self, key, recompute):
        self.key, self.recompute = key, recompute

    def frame(self) -> pd.DataFrame:
        f = _FRAMES.get(self.key)
        if f is None:
            f = self.recompute()
            _keep_frame(self.key, f)
        else:
            _FRAMES.move_to_end(self.key)
        return f


def clear_step_cache() -> None:
    """Forget every memoized step (and resolved name)."""
    global _frame_rows
    _MEMO.clear()
    _FRAMES.clear()
    _frame_rows = 0
    _RESOLVED.clear()
    _TABLE_PATHS.clear()


def step_cache_info() -> dict:
    return {"entries": len(_MEMO), "maxsize": MEMO_SIZE, "names": len(_RESOLVED),
            "frames": len(_FRAMES), "frame_rows": _frame_rows, "max_frame_rows": FRAME_ROWS}


def simulate_step(arch, model, *, prefill=(), decode=(), precision=None, causal: bool = True,
                  seed: int = 0, causal_block: int | None = None, tp: int = 1,
                  accelerator_for: Callable) -> StepResult:
    """Price one ragged step (see the module docstring); ``accelerator_for(arch_config)`` gives
    the (shared, memoized) accelerator model, so that this layer does not import the API.
    ``tp`` chips share the step by tensor parallelism (:mod:`sim.workload.parallel`): the time
    is one chip's shard plus the collectives on the arch's ``chip_link``; energy and the
    per-op energy columns are those of all ``tp`` chips."""
    env = (os.getcwd(), os.environ.get("STRATA_HOME"))
    arch_cfg, arch_key = _resolve("arch", arch, env)
    model_cfg, model_key = _resolve("workloads", model, env)
    step = ragged_step(prefill, decode, max_position=model_cfg.max_position, where=WHERE)
    causal = _check_flag("causal", causal)
    seed = _check_count("seed", seed, 0)
    if causal_block is not None:
        causal_block = _check_count("causal_block", causal_block, 1)
        if not causal:
            raise ConfigError("no causal_block when causal=False", file=WHERE,
                              key="causal_block", got=str(causal_block))
    if causal_block is not None and model_cfg.architecture != "transformer":
        raise ConfigError(f"no causal_block for {model_cfg.name!r}: a {model_cfg.architecture} "
                          "model has no attention to mask", file=WHERE, key="causal_block",
                          got=str(causal_block))
    if type(tp) is not int or tp not in TP_SIZES:
        raise ConfigError(f"one of {', '.join(map(str, TP_SIZES))}", file=WHERE, key="tp",
                          got=short_repr(tp))
    prec = _precision_key(precision)
    accel = accelerator_for(arch_cfg)
    # what the accelerator reads for this model beyond the configs (e.g. an N:M schedule
    # file), by content, so the memo never answers for a changed input
    annotations = accel.op_annotations(model_cfg, seed)
    key = (tp, arch_key, _tech_stamp(arch_cfg, env), model_key, _profile_stamp(model_cfg, env),
           None if annotations is None else annotations.key, step.prefill,
           step.decode, prec, causal, causal_block, seed)
    hit = _MEMO.get(key)
    if hit is not None:
        _MEMO.move_to_end(key)
        return hit
    result = _compute(key, accel, model_cfg, step, prec, causal, causal_block, seed, tp)
    _MEMO[key] = result
    while len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)
    return result


def _run(accel, run_model, shape, seed, tp=1):
    if tp > 1:
        accel.chip_link()               # a one-line error naming chip_link when it is missing
    shard = shard_model(run_model, tp, WHERE)
    # per-layer annotations (N:M schedules) belong to the whole model, not to its shard
    ops = prepare_ops(accel, shard, shape_ops(shard, shape), seed,
                      annotations=accel.op_annotations(run_model, seed))
    ops = add_collectives(ops, run_model, tp)
    results, ledger, cycles = run_ops(accel, ops, seed=seed)
    frame = ops_frame(ops, results, accel.energy_components)
    if tp > 1:                          # every chip spends the energy of its shard
        energy = [c for c in frame.columns if c.startswith("energy_")]
        frame[energy] = frame[energy] * tp
        ledger = EnergyLedger().merge(ledger, scale=tp)
    return frame, ledger, cycles


def _compute(key, accel, model, step, prec, causal, causal_block, seed, tp=1) -> StepResult:
    # stacklevel: warn at the caller of sim.simulate_step
    run_model, notes = resolve_precision(accel, model, prec, file=WHERE, stacklevel=6)
    block = None
    # a decode-only step has no query blocks to price; an SSM has no attention to mask
    if causal and step.prefill and model.architecture == "transformer":
        block = causal_block or accel.causal_query_block()
        if block is None:
            raise ConfigError(f"a causal_block (queries priced together): arch type "
                              f"{accel.arch.type!r} names no query block", file=WHERE,
                              key="causal_block", got="nothing")
    shape = ragged_shape(step, causal_block=block)
    frame, ledger, cycles = _run(accel, run_model, shape, seed, tp)
    _keep_frame(key, frame)
    by = ledger.by_component()
    energy = {c: float(by.get(c, 0.0)) for c in accel.components(by)}
    return StepResult(
        prefill=step.prefill, decode=step.decode,
        precision=(run_model.precision.wbits, run_model.precision.abits), causal=causal,
        causal_block=block, seed=seed, tokens=shape.tokens, sequences=shape.sequences,
        cycles=int(cycles), compute_cycles=int(frame.compute_cycles.sum()),
        stall_cycles=int(frame.stall_cycles.sum()), macs=int(frame.macs.sum()),
        seconds=accel.clock.seconds(int(cycles)), energy_pj=MappingProxyType(energy),
        dram_read_bytes=int(frame.dram_read_bytes.sum()),
        dram_write_bytes=int(frame.dram_write_bytes.sum()), notes=tuple(notes), tp=tp,
        _ops=_OpsTable(key, lambda: _frame_of(_run(accel, run_model, shape, seed, tp))))


def _frame_of(run) -> pd.DataFrame:
    """The per-op table of a :func:`_run` result."""
    frame, _, _ = run
    return frame

