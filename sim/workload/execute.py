"""Run an operator graph on an accelerator: one row of timing, traffic and energy per operator.

Ops run one after another on the accelerator (no overlap between operators). Identical ops
(repeated decoder blocks, repeated decode steps) hit the accelerator's memo, so a 32-layer
model costs about as much as one layer.

Where operands live (the placement the GEMM model is handed):

* static weights and the KV cache are in DRAM;
* an activation tensor stays on chip (L2) when it fits in half of L2, otherwise it goes
  through DRAM; the same rule decides where an op's output goes;
* k_proj / v_proj outputs are appended to the KV cache, so they are always written to DRAM;
* a state-space model's recurrent state lives in DRAM between steps (``state_load`` reads it,
  ``state_store`` writes it: memory nodes).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core import EnergyLedger, TraceRecorder
from ..config.outliers import load_outlier_profile
from ..numerics.outlier_stats import run_profile
from ..hw.accelerator import WeightOutliers
from ..hw.interface import OpResult, ordered_components
from ..hw.memory_plan import OperandPlacement

KV_APPEND_OPS = ("k_proj", "v_proj")
#: memory nodes that write DRAM (a state-space model's recurrent state after a step); every
#: other memory node reads DRAM into L2 (the embedding gather, the state load)
DRAM_WRITE_OPS = ("state_store",)

# identity and shape of a graph node (copied from the node), then its results; the energy
# columns (``energy_<component>_pj``, one per component the accelerator declares or charged,
# then ``energy_pj``, the total) follow, then accelerator-specific counters (sorted)
IDENTITY_COLUMNS = ["index", "name", "layer", "op", "kind", "part", "M", "K", "N", "count",
                    "wbits", "abits"]
RESULT_COLUMNS = ["cycles", "compute_cycles", "stall_cycles", "stall_memory", "stall_sram",
                  "stall_drain", "macs", "peak_macs_per_cycle", "utilization",
                  "dram_read_bytes", "dram_write_bytes", "dram_busy_cycles", "l2_busy_cycles"]
OP_COLUMNS = IDENTITY_COLUMNS + RESULT_COLUMNS
NON_ADDITIVE = ("peak_macs_per_cycle", "utilization")


def _energy_column(c: str) -> bool:
    return c.startswith("energy_") and c.endswith("_pj") and c != "energy_pj"


def _placement(accel, op: dict) -> OperandPlacement:
    on_chip = accel.on_chip_bytes() / 2
    count = _instances(op)
    a_src = "l2" if op["a_bytes"] / count <= on_chip else "dram"
    o_dst = "l2" if op["o_bytes"] / count <= on_chip else "dram"
    if op["op"] in KV_APPEND_OPS:
        o_dst = "dram"
    return OperandPlacement(a_src=a_src, w_src="dram", o_dst=o_dst)


def outlier_profile_for(accel, model, seed: int = 0):
    """The outlier profile an outlier-aware accelerator runs ``model`` with: the model's
    ``outlier_profile``, or, when it names none, a synthetic one from the calibrated generator
    (the ``default`` recipe in workloads/outliers/recipes) built for the model's shapes and
    seeded with ``seed``. None when the accelerator does not care."""
    if not accel.uses_outlier_profile:
        return None
    if model.outlier_profile is None:
        return run_profile(model, seed)
    return load_outlier_profile(model.outlier_profile)


def outlier_lookup(accel, model, seed: int = 0):
    """``(layer, op) -> WeightOutliers | None`` for an outlier-aware accelerator, from
    :func:`outlier_profile_for`; None when the accelerator does not care."""
    profile = outlier_profile_for(accel, model, seed)
    if profile is None:
        return None
    known = set(profile.ops())
    cache: dict[tuple[int, str], WeightOutliers | None] = {}

    def lookup(layer: int, op: str) -> WeightOutliers | None:
        key = (layer, op)
        if key not in cache:
            if layer < 0 or op not in known:
                cache[key] = None
            else:
                st = profile.stats(layer, op)
                cache[key] = WeightOutliers(
                    frac_ub=float(st.frac_ub_with_outliers),
                    rowtile=tuple(sorted((int(w), float(f))
                                         for w, f in st.frac_rowtile_with_outliers.items())),
                    frac_weights=float(st.frac_weights_outliers),
                    channel_share=model.outlier_channel_share, micro=profile.micro)
        return cache[key]
    return lookup


def attach_outliers(ops: list[dict], lookup) -> list[dict]:
    """Give every weight GEMM its outlier statistics (field ``outliers``)."""
    if lookup is None:
        return ops
    for op in ops:
        op["outliers"] = lookup(op["layer"], op["op"]) if op["kind"] == "gemm" else None
    return ops


def attach_annotations(ops: list[dict], annotations) -> list[dict]:
    """Give every weight GEMM the accelerator's per-op keyword arguments (field
    ``gemm_args``, from :meth:`~sim.hw.interface.Accelerator.op_annotations`)."""
    if annotations is None:
        return ops
    for op in ops:
        op["gemm_args"] = annotations(op["layer"], op["op"]) if op["kind"] == "gemm" else ()
    return ops


def prepare_ops(accel, model, ops: list[dict], seed: int = 0, outliers=None,
                annotations=None) -> list[dict]:
    """Attach what the accelerator needs to each op: outlier statistics (an outlier-aware
    type) and its own per-op arguments. ``outliers``/``annotations`` are the lookups when the
    caller already has them (a run of many steps), else they are built here."""
    if outliers is None:
        outliers = outlier_lookup(accel, model, seed)
    if annotations is None:
        annotations = accel.op_annotations(model, seed)
    return attach_annotations(attach_outliers(ops, outliers), annotations)


def run_op(accel, op: dict, seed: int = 0, compress: bool = True) -> OpResult:
    """Time one graph node (all ``count`` instances are accounted by the caller). A node kind
    outside gemm/attention/vector/memory goes to the method the accelerator declared for it
    in ``operators``, which receives the node (and the seed). ``compress=False`` simulates
    repeated tiles and folds in full."""
    kind = op["kind"]
    if kind in ("gemm", "attention"):
        return accel.gemm(op["M"], op["K"], op["N"], wbits=op["wbits"], abits=op["abits"],
                          place=_placement(accel, op), outliers=op.get("outliers"), seed=seed,
                          compress=compress, **dict(op.get("gemm_args") or ()))
    if kind == "vector":
        on_chip = accel.on_chip_bytes() / 2
        where = "l2" if op["bytes"] <= on_chip else "dram"
        return accel.vector(op["elements"], op["ops_per_element"],
                            op["a_bytes"] + op["w_bytes"], op["o_bytes"],
                            place=OperandPlacement(a_src=where, w_src="dram", o_dst=where))
    if kind == "memory":
        if op["op"] in DRAM_WRITE_OPS:
            return accel.memory_op(0, op["bytes"])
        return accel.memory_op(op["bytes"])
    if kind == "collective":       # tensor parallelism (sim.workload.parallel)
        return accel.collective(op["op"], op["bytes"], op["chips"])
    if accel.supports(kind):
        return accel.run_operator(kind, op, seed=seed)
    raise ValueError(f"unknown op kind {kind!r} for node {op['name']!r}")


def _instances(op: dict) -> int:
    """How many identical instances of the op one graph node stands for (at least 1)."""
    return max(int(op.get("count") or 1), 1)


def _op_key(op: dict) -> tuple:
    """Everything :func:`run_op` reads: ops with equal keys have equal results."""
    return (op["kind"], op["op"] in KV_APPEND_OPS, op["op"] in DRAM_WRITE_OPS, op["M"], op["K"], op["N"], op["count"],
            op["wbits"], op["abits"], op["a_bytes"], op["w_bytes"], op["o_bytes"], op["bytes"],
            op["elements"], op["ops_per_element"], op.get("outliers"), op.get("gemm_args"))


def _result_columns(r: OpResult, n: int) -> dict:
    row = dict(cycles=r.cycles * n, compute_cycles=r.compute_cycles * n,
               stall_cycles=r.stall_cycles * n, stall_memory=r.stall_memory * n,
               stall_sram=r.stall_sram * n, stall_drain=r.stall_drain * n, macs=r.macs * n,
               peak_macs_per_cycle=r.peak_macs_per_cycle, utilization=r.utilization,
               dram_read_bytes=r.dram_read_bytes * n, dram_write_bytes=r.dram_write_bytes * n,
               dram_busy_cycles=r.dram_busy_cycles * n, l2_busy_cycles=r.l2_busy_cycles * n)
    energy = r.energy_pj          # declared components, then any other charged one
    for c, v in energy.items():
        row[f"energy_{c}_pj"] = v * n
    row["energy_pj"] = sum(energy.values()) * n
    for k, v in r.counters.items():
        row[k] = v * n
    return row


def run_ops(accel, ops: list[dict], *, trace: TraceRecorder | None = None,
            start_cycle: int = 0, track_prefix: str = "",
            seed: int = 0, compress: bool = True) -> tuple[list[dict], EnergyLedger, int]:
    """Run ops in order; returns (result columns per op, summed ledger, end cycle). ``seed``
    (the experiment's) goes to every op, which derives its draws from it and its content.

    Decoder blocks repeat, so each distinct op is evaluated once and its energy merged once,
    scaled by how often it occurs. Identical ops share one (read-only) result dict."""
    columns: dict[tuple, dict] = {}
    results: dict[tuple, OpResult] = {}
    times: dict[tuple, int] = {}          # graph nodes with this key
    instances: dict[tuple, int] = {}      # the instances one such node stands for
    out, now = [], start_cycle
    whole = accel.price_nodes(ops, seed)   # a type pricing the step as a whole, or None
    for i, op in enumerate(ops):
        key = _op_key(op) if whole is None else i
        cols = columns.get(key)
        if cols is None:
            r = results[key] = run_op(accel, op, seed, compress) if whole is None else whole[i]
            n = instances[key] = _instances(op) if whole is None else 1
            cols = columns[key] = _result_columns(r, n)
            times[key] = 0
        times[key] += 1
        if trace is not None:
            track = "pe_array" if op["kind"] in ("gemm", "attention") else op["kind"]
            trace.span(op["name"], op["kind"], now, cols["cycles"], track=track_prefix + track,
                       args={"M": op["M"], "K": op["K"], "N": op["N"], "count": op["count"]})
        now += cols["cycles"]
        out.append(cols)
    ledger = EnergyLedger()
    for key, r in results.items():
        ledger.merge(r.energy, scale=times[key] * instances[key])
    return out, ledger, now


_OP_COLUMN_SET = set(OP_COLUMNS)


class StepSums:
    """Running per-op sums over consecutive decode steps (same ops, same order): every result
    column but the per-op rates adds up, energies and accelerator-specific counters included.

    A step's result list holds one (shared) dict per distinct op, so each step is turned into
    a matrix over its distinct dicts and added with numpy: integer columns stay exact in
    int64, float columns add in the same order as a loop over the steps would."""

    def __init__(self, first: list[dict]):
        self.first = [dict(r) for r in first]
        self.n = len(first)
        self.int_cols: list[str] = []
        self.float_cols: list[str] = []
        self.ints = np.zeros((self.n, 0), dtype=np.int64)
        self.floats = np.zeros((self.n, 0), dtype=np.float64)
        self.add(first)       # 0 + first + second ...: the order a loop over steps adds in

    def _column(self, c: str, v) -> None:
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            self.int_cols.append(c)
            self.ints = np.concatenate([self.ints, np.zeros((self.n, 1), np.int64)], axis=1)
        else:
            self.float_cols.append(c)
            self.floats = np.concatenate([self.floats, np.zeros((self.n, 1))], axis=1)

    def add(self, step: list[dict]) -> None:
        if len(step) != self.n:
            raise ValueError(f"decode steps differ in op count: {self.n} vs {len(step)}")
        distinct: dict[int, int] = {}
        rows: list[dict] = []
        index = np.empty(self.n, dtype=np.int64)
        for i, cols in enumerate(step):
            j = distinct.get(id(cols))
            if j is None:
                j = distinct[id(cols)] = len(rows)
                rows.append(cols)
            index[i] = j
        known = set(self.int_cols) | set(self.float_cols)
        for cols in rows:
            for c, v in cols.items():
                if c not in known and c not in NON_ADDITIVE:
                    self._column(c, v)
                    known.add(c)
        if self.int_cols:
            m = np.array([[r.get(c, 0) for c in self.int_cols] for r in rows], dtype=np.int64)
            self.ints += m[index]
        if self.float_cols:
            m = np.array([[r.get(c, 0.0) for c in self.float_cols] for r in rows],
                         dtype=np.float64)
            self.floats += m[index]

    def result(self) -> list[dict]:
        """The summed result dicts (the first step's rates, every other column summed)."""
        out = []
        ints, floats = self.ints.tolist(), self.floats.tolist()
        for i, first in enumerate(self.first):
            row = dict(first)
            row.update(zip(self.int_cols, ints[i]))
            row.update(zip(self.float_cols, floats[i]))
            out.append(row)
        return out


def ops_frame(ops: list[dict], results: list[dict], components=()) -> pd.DataFrame:
    """One row per op: the graph node's identity and shape, then its (summed) results, the
    energy per component (``components`` first, then any other charged one; 0 where an op
    charged none), the total, and any accelerator-specific counters (0 where an op has none)."""
    ident = IDENTITY_COLUMNS
    keys = {k for r in results for k in r}
    charged = [k[len("energy_"):-len("_pj")] for k in keys if _energy_column(k)]
    energy = [f"energy_{c}_pj" for c in ordered_components(components, charged)]
    extra = sorted(keys - _OP_COLUMN_SET - set(energy) - {"energy_pj"})
    df = pd.DataFrame([{**{k: op.get(k) for k in ident}, **r} for op, r in zip(ops, results)],
                      columns=OP_COLUMNS + energy + ["energy_pj"] + extra)
    df[energy] = df[energy].fillna(0.0)
    if extra:
        df[extra] = df[extra].fillna(0).astype("int64")
    busy = df.cycles * df.peak_macs_per_cycle
    df["utilization"] = (df.macs / busy.where(busy > 0)).fillna(0.0)
    return df
