"""Hardware backends of the serving layer: "how long does this step take, and how much energy".

A step is what an engine's scheduler hands the hardware: prefill chunks ``(new, past)`` and
decode contexts (the KV tokens each decoding sequence attends to). Every backend answers
:meth:`Backend.price` with a :class:`StepCost` (seconds, joules) and says how many bytes of KV
one token holds and how many bytes the weights take on one chip, which the KV block manager
needs for its capacity. Backends are registered by ``type`` (:data:`BACKENDS`).

:class:`StrataBackend` prices a step on a Strata accelerator through ``sim.simulate_step``.
Why not decompose a step into per-sequence attention parts plus token-count GEMM parts and
price those parts once each? Because on a Strata accelerator that sum is *not* exact:
sequences of equal shape share one softmax node in a real step (see
``sim.workload.step_table``), and the operators of a step run back to back with memory plans
that depend on the whole step. So the exact mode memoizes whole steps, keyed on the full
multiset of prefill chunks and decode contexts plus the arch and model content hashes; the
table mode (``mode="table"``), chosen explicitly by the user, interpolates a
:class:`sim.StepTable` built once per (arch, model), with the interpolation error that table
documents. A client of ``chips`` > 1 runs tensor parallelism: every step is
``sim.simulate_step(..., tp=chips)`` (:mod:`sim.workload.parallel`: one chip's Megatron shard
plus ring all-reduces on the arch's ``chip_link``; its energy is that of all chips), and the
memory facts are those of one chip's shard (KV heads replicated when chips exceed them). Step
tables price one chip, so tensor parallelism needs ``mode="exact"``.
"""
from __future__ import annotations


import numpy as np
from dataclasses import dataclass
from typing import Callable, Sequence

from sim.config import ConfigError

WHERE = "<serving backend>"
#: StepTable options that shape an interpolation grid
GRID_OPTIONS = {"points_per_octave", "tol", "max_nodes"}


def shape_is_transformer(model) -> bool:
    return getattr(model, "architecture", "transformer") == "transformer"


@dataclass(frozen=True)
class StepCost:
    seconds: float
    joules: float


def step_key(prefill: Sequence[tuple[int, int]], decode: Sequence[int]) -> tuple:
    """The normalized content of a step: the multiset of chunks and of contexts (sorted)."""
    return (tuple(sorted((int(n), int(p)) for n, p in prefill)), tuple(sorted(int(c) for c in decode)))


def model_shape(model) -> dict:
    """Layers, KV heads, head dim and weight parameter count of a transformer model config."""
    h, L = int(model.hidden_size), int(model.num_layers)
    heads = int(model.num_heads)
    kv = int(getattr(model, "num_kv_heads", None) or heads)
    d = int(getattr(model, "head_dim", None) or h // heads)
    inter = int(getattr(model, "intermediate_size", None) or 4 * h)
    gated = getattr(model, "ffn", "gated") == "gated"
    per_layer = h * heads * d + 2 * h * kv * d + heads * d * h + (3 if gated else 2) * h * inter
    params = L * per_layer + 2 * int(model.vocab_size) * h
    return {"layers": L, "kv_heads": kv, "head_dim": d, "params": params}


class Backend:
    """Interface: ``price(prefill, decode) -> StepCost``; plus the memory facts of one chip."""

    #: bytes one token's KV takes over all layers (K and V), per chip
    kv_bytes_per_token: float = 0.0
    #: bytes of weights on one chip
    weight_bytes: float = 0.0
    #: the model's KV geometry, for transfers: layers, kv_heads, head_dim, bytes per element
    layers: int = 1

    chips: int = 1
    #: the model's context window (prompt + output - 1 tokens of KV at most), None: no limit
    max_position: int | None = None

    def price(self, prefill: Sequence[tuple[int, int]], decode: Sequence[int]) -> StepCost:
        raise NotImplementedError

    def price_decode_run(self, contexts: Sequence[int], pads: int, steps: int):
        """(seconds, joules) lists of ``steps`` consecutive pure decode steps: step k has the
        contexts ``c + k`` and ``pads`` padding sequences at context 0. The default prices
        each step through :meth:`price`; a backend may vectorize it if it stays identical."""
        secs, joules = [], []
        base = list(contexts)
        for k in range(steps):
            cost = self.price((), [c + k for c in base] + [0] * pads)
            secs.append(cost.seconds)
            joules.append(cost.joules)
        return secs, joules


class AnalyticBackend(Backend):
    """A closed-form step cost for tests and speed benches (no hardware model behind it):

    ``seconds = base_s + s_per_token * tokens + s_per_context * sum(decode contexts)
    + s_per_attn * sum(new * (past + (new + 1) / 2))`` over prefill chunks, and
    ``joules = watts * seconds``."""

    def __init__(self, *, base_s=5e-3, s_per_token=2e-5, s_per_context=2e-8, s_per_attn=1e-9,
                 watts=500.0, layers=32, kv_heads=8, head_dim=128, kv_bytes=2,
                 weight_bytes=16e9):
        self.base_s, self.s_per_token = float(base_s), float(s_per_token)
        self.s_per_context, self.s_per_attn = float(s_per_context), float(s_per_attn)
        self.watts = float(watts)
        self.layers, self.kv_heads, self.head_dim, self.kv_bytes = layers, kv_heads, head_dim, kv_bytes
        self.kv_bytes_per_token = 2.0 * layers * kv_heads * head_dim * kv_bytes
        self.weight_bytes = float(weight_bytes)

    def price(self, prefill, decode) -> StepCost:
        tokens = len(decode) + sum(n for n, _ in prefill)
        attn = sum(n * (p + (n + 1) / 2) for n, p in prefill)
        s = (self.base_s + self.s_per_token * tokens + self.s_per_context * sum(decode)
             + self.s_per_attn * attn)
        return StepCost(s, self.watts * s)

    def price_decode_run(self, contexts, pads, steps):
        n = len(contexts) + pads
        ctx = sum(contexts) + len(contexts) * np.arange(steps)
        s = self.base_s + self.s_per_token * n + self.s_per_context * ctx + self.s_per_attn * 0
        return s, self.watts * s


class StrataBackend(Backend):
    """A client of ``chips`` Strata accelerators running ``model``; steps priced by
    ``sim.simulate_step`` (``mode="exact"``, memoized per step) or by a ``sim.StepTable``
    (``mode="table"``, ``table_options`` passed to it). ``kv_bytes`` per KV element defaults
    to the model's activation bits / 8."""

    def __init__(self, arch, model, chips: int = 1, *, mode: str = "exact", kv_bytes=None,
                 table_options: dict | None = None, memo_size: int = 1 << 20,
                 simulate: Callable | None = None, **step_options):
        import sim
        from sim.workload.step import resolve_config
        if mode not in ("exact", "table"):
            raise ConfigError("mode 'exact' or 'table'", file=WHERE, key="mode", got=repr(mode))
        from sim.workload.parallel import TP_SIZES, shard_model
        if isinstance(chips, bool) or not isinstance(chips, int) or chips not in TP_SIZES:
            raise ConfigError(f"one of {', '.join(map(str, TP_SIZES))} (chips in tensor "
                              "parallelism)", file=WHERE, key="chips", got=repr(chips))
        if step_options.get("tp", chips) != chips:
            raise ConfigError(f"tp equal to chips ({chips}) or left out", file=WHERE, key="tp",
                              got=repr(step_options["tp"]))
        if chips > 1 and mode == "table":
            raise ConfigError("mode 'exact' for chips > 1 (step tables price one chip)",
                              file=WHERE, key="mode", got=repr(mode))
        self.arch, self.model, self.chips, self.mode = arch, model, chips, mode
        self._arch_cfg = resolve_config("arch", arch)
        self._model_cfg = resolve_config("workloads", model)
        if chips > 1 and getattr(self._arch_cfg, "chip_link", None) is None:
            raise ConfigError(f"a chip_link {{bandwidth_gbps, latency_ns}} for chips = {chips}",
                              file=self._arch_cfg.origin, key="chip_link", got="nothing")
        self._simulate = simulate or sim.simulate_step
        step_options = {k: v for k, v in step_options.items() if k != "tp"}
        if chips > 1:
            step_options["tp"] = chips
        self.step_options = step_options
        shard = shard_model(self._model_cfg, chips, WHERE) if chips > 1 else self._model_cfg
        shape = model_shape(shard)
        prec = getattr(self._model_cfg, "precision", None)
        abits = getattr(prec, "abits", 16) if prec is not None else 16
        wbits = getattr(prec, "wbits", 16) if prec is not None else 16
        if step_options.get("precision") is not None:   # the steps' own precision
            from sim.workload.precision import parse_precision
            wbits, abits = parse_precision(step_options["precision"], file=WHERE)
        self.kv_bytes = float(kv_bytes if kv_bytes is not None else abits / 8)
        self.layers = shape["layers"]
        self.max_position = int(self._model_cfg.max_position)
        # one chip's facts: its KV heads (replicated past the model's) and its weight shard
        self.kv_heads, self.head_dim = shape["kv_heads"], shape["head_dim"]
        self.kv_bytes_per_token = 2.0 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes
        self.weight_bytes = shape["params"] * wbits / 8
        self.max_position = int(self._model_cfg.max_position)
        # the memo key carries the arch and model content hashes, so one memo could be
        # shared between backends without ever answering for another's question
        self._ident = (self._arch_cfg.hash(), self._model_cfg.hash(), mode,
                       tuple(sorted(step_options.items())),
                       tuple(sorted((table_options or {}).items())))
        self._memo: dict = {}
        self.memo_size = memo_size
        self.table = None
        if mode == "table" and self._arch_cfg.type == "gpu" and shape_is_transformer(self._model_cfg):
            # a GPU fuses a layer's attention into one kernel per phase: its own step table
            from .gpu_steps import GpuStepTable
            grid = sorted(set(table_options or {}) & GRID_OPTIONS)
            if grid:
                raise ConfigError("no grid options for a GPU step table (it interpolates "
                                  "nothing)", file=WHERE, key=f"table_options.{grid[0]}",
                                  got=repr((table_options or {})[grid[0]]))
            self.table = GpuStepTable(self._arch_cfg, self._model_cfg,
                                      **{**step_options, **(table_options or {})})
        elif mode == "table":
            self.table = shared_step_table(self._arch_cfg, self._model_cfg,
                                           {**step_options, **(table_options or {})})
        self.priced = 0      # steps actually computed (memo misses)

    def price_decode_run(self, contexts, pads, steps):
        if self.table is not None and hasattr(self.table, "decode_run"):
            secs, pj = self.table.decode_run(contexts, pads, steps)
            return secs, pj * 1e-12                   # as price(): pJ * 1e-12
        if self.table is not None and not self.table.ssm:
            return _table_decode_run(self, contexts, pads, steps)
        return super().price_decode_run(contexts, pads, steps)

    def price(self, prefill, decode) -> StepCost:
        key = (self._ident, *step_key(prefill, decode))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        self.priced += 1
        pre, dec = key[1], key[2]
        if self.table is not None:
            r = self.table.estimate(prefill=list(pre), decode=list(dec))
        else:
            r = self._simulate(self._arch_cfg, self._model_cfg, prefill=list(pre),
                               decode=list(dec), **self.step_options)
        cost = StepCost(float(r.seconds), float(r.energy_total_pj) * 1e-12)   # all chips
        if len(self._memo) >= self.memo_size:
            self._memo.clear()
        self._memo[key] = cost
        return cost


# Built step tables, shared by every backend of the process (a sweep's points in one worker,
# the prefill and decode pools of one run): a table is read-only once built, and the key holds
# everything its build read (arch and model content, the arch's technology table and the
# model's outlier profile files as they are on disk, the options, the building function).
_TABLES: dict = {}
_TABLES_SIZE = 8


def shared_step_table(arch_cfg, model_cfg, options: dict):
    """``sim.step_table(arch_cfg, model_cfg, **options)``, built once per process per key."""
    import os

    import sim
    from sim.workload.step import _profile_stamp, _tech_stamp
    env = (os.getcwd(), os.environ.get("STRATA_HOME"))
    try:
        tech = _tech_stamp(arch_cfg, env)
    except (ConfigError, AttributeError):    # an arch without a technology table (a GPU)
        tech = None
    key = (arch_cfg.hash(), model_cfg.hash(), tech, _profile_stamp(model_cfg, env),
           tuple(sorted(options.items(), key=lambda kv: kv[0])), sim.step_table)
    table = _TABLES.pop(key, None)
    if table is None:
        table = sim.step_table(arch_cfg, model_cfg, **options)
        while len(_TABLES) >= _TABLES_SIZE:
            _TABLES.pop(next(iter(_TABLES)))
    _TABLES[key] = table                     # most recently used last
    return table


#: backend type name -> factory(**options)
BACKENDS: dict[str, Callable[..., Backend]] = {
    "analytic": AnalyticBackend,
    "strata": StrataBackend,
}


def build_backend(spec, where: str = WHERE) -> Backend:
    """A backend from an instance or a mapping ``{type: name, ...options}``."""
    if isinstance(spec, Backend):
        return spec
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError("a backend mapping with a 'type'", file=where, key="backend", got=repr(spec)[:60])
    kind = spec["type"]
    if kind not in BACKENDS:
        raise ConfigError(f"one of {sorted(BACKENDS)}", file=where, key="backend.type", got=repr(kind))
    opts = {k: v for k, v in spec.items() if k != "type"}
    return BACKENDS[kind](**opts)


def _table_decode_run(backend: StrataBackend, contexts, pads: int, steps: int):
    """A run of decode steps from a StepTable in one vectorized pass: step k is
    ``f_tok(T) + f_head(S) + sum_i f_dec(c_i + k) + pads * f_dec(0)`` (the table's own sum,
    up to the order of float additions)."""
    t = backend.table
    n = len(contexts)
    S = n + pads
    if S > t.max_tokens or max(contexts) + steps - 1 > t.max_context:
        raise ConfigError(f"decode steps inside the StepTable (at most {t.max_tokens} sequences, "
                          f"contexts <= {t.max_context})", file=WHERE, key="decode",
                          got=f"{S} sequences, context {max(contexts) + steps - 1}")
    one = np.array([S], dtype=float)
    base = t._interp(t.token_grid, t._tok, one) + t._interp(t.token_grid, t._head, one)
    if pads:
        base = base + pads * t._interp(t.context_grid, t._dec, np.array([0.0]))
    x = (np.sort(np.asarray(contexts, dtype=float))[None, :] + np.arange(steps)[:, None]).ravel()
    grid, table = t.context_grid, t._dec
    i = np.searchsorted(grid, x, side="right") - 1
    np.clip(i, 0, len(grid) - 2, out=i)
    w = ((x - grid[i]) / (grid[i + 1] - grid[i]))[:, None]
    vals = ((1 - w) * table[i] + w * table[i + 1]).reshape(steps, n, -1).sum(axis=1) + base
    from sim.workload.step_table import CYCLES, ENERGY
    secs = vals[:, CYCLES] * t.clock_seconds_per_cycle
    joules = vals[:, ENERGY].sum(axis=1) * 1e-12       # one chip: tables need chips = 1
    return secs, joules
