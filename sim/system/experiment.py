"""The serving experiment schema: a YAML with a ``cluster:`` section (see :func:`sim.serve`).

::

    name: serving_quickstart
    description: ...
    seed: 0                        # router randomness (power_of_two) and the run
    pipeline: prefill_decode       # workloads/pipelines/<name>.yaml
    workload: {...}                # sim.system.arrivals.WorkloadConfig
    cluster:
      clients:                     # one entry per client; co-located clients share one pool
        - name: h100-0
          count: 1                 # this many identical clients (named <name>-0, -1, ...
                                   # when count > 1)
          arch: h100-sxm           # any arch name or path (gpu, systolic, ...)
          model: llama-3-8b
          precision: null          # e.g. w4a4: the step precision (default: the model's)
          tp: 1                    # chips in tensor parallelism
          mode: exact              # StrataBackend: exact (memoized steps) or table
          table: {max_chunk: 8192}  # sim.StepTable options (mode: table)
          role: both               # both | prefill | decode (disaggregated pools)
          engine: {scheduler: continuous, max_num_seqs: 256, max_num_batched_tokens: 2048,
                   block_size: 16, memory_gb: 80, activation_reserve_gb: 0, host_s: 0,
                   cuda_graph_sizes: [], ordering: fcfs, kv_blocks: null}
      router: {name: round_robin, params: {}}
      decode_router: {name: least_loaded, params: {}}   # disaggregated only
      pairing: global, kv_transfer: whole, link: {bandwidth_gbps, latency_s, shared}
    outputs: {plots: [latency_cdf, timeline, compare], trace: false, steps: memory}  # steps: memory | file | none
    variants:                      # optional: several clusters over the same requests
      - {name: continuous, set: {cluster.clients.0.engine.scheduler: continuous}}
      - {name: chunked, set: {cluster.clients.0.engine.scheduler: chunked}}

``variants:`` entries are the base experiment with some keys changed (dotted keys as with
``--set``; a value may be a whole section, ``cluster: {...}``); :func:`serving_points` resolves
them, each validated like an experiment of its own, errors keyed ``variants.<i>.set.<key>``.
Variants whose ``workload:`` is the same serve the identical requests frame.

:func:`cluster_spec` maps it onto the ``cluster`` mapping of
:func:`sim.system.serve_frames`. All clients of a pool (all of them when co-located; the
``prefill`` and the ``decode`` ones when disaggregated) run one model under one engine
configuration: they must agree on everything but their name and their hardware, else a
one-line error names the first key that differs. The hardware keys (``arch``, ``precision``, ``tp``,
``mode``, ``table``: :data:`HARDWARE_KEYS`) may differ within a pool, so a pool can mix GPU
types or chip counts; each client is then priced by its own backend (the engine's
``memory_gb`` is still one per pool). Engine keys
are exactly :data:`sim.system.engine.ENGINE_KEYS`; the engine validates their values.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from sim.config.errors import ConfigError, InvalidValue, short_repr
from sim.config.schema import (FrozenList, FrozenMapping, Name, NonNegFloat, PosFloat,
                               PosInt, Seed, StrictModel, VariantConfig, _Hashable,
                               _safe_file_name)

from .arrivals import WorkloadConfig
from .engine import ENGINE_KEYS
from .routers import ROUTERS
from .schedulers import SCHEDULERS

from .plots import SERVING_PLOTS  # noqa: F401  (the names outputs.plots takes)


class EngineConfig(StrictModel):
    """An LLM engine's scheduler and its knobs (the keys of ``LLMEngine``)."""

    scheduler: Name = "continuous"
    max_num_seqs: PosInt = 256
    max_num_batched_tokens: PosInt = 2048
    block_size: PosInt = 16
    memory_gb: PosFloat = 80.0
    activation_reserve_gb: NonNegFloat = 0.0
    kv_blocks: PosInt | None = None
    host_s: NonNegFloat = 0.0
    cuda_graph_sizes: FrozenList[PosInt] = ()
    ordering: Literal["fcfs", "least_work_left"] = "fcfs"

    @model_validator(mode="after")
    def _known(self):
        if self.scheduler not in SCHEDULERS:
            raise InvalidValue(f"one of {sorted(SCHEDULERS)}", loc=("scheduler",))
        return self


assert set(EngineConfig.model_fields) == ENGINE_KEYS, "EngineConfig must mirror ENGINE_KEYS"


#: client keys that may differ within one pool (each client gets its own backend)
HARDWARE_KEYS = ("arch", "precision", "tp", "mode", "table")


class ClientConfig(StrictModel):
    name: Name
    count: PosInt = 1            # identical clients this entry stands for
    arch: Name
    model: Name
    precision: Name | None = None   # 'w4a8', the steps' (wbits, abits); None: the model's
    tp: Literal[1, 2, 4, 8] = 1
    mode: Literal["exact", "table"] = "exact"
    # sim.StepTable options (mode: table): ranges, and for a coarser (faster) grid
    # points_per_octave and tol
    table: dict[Literal["max_tokens", "max_chunk", "max_past", "max_context",
                        "points_per_octave", "tol"], PosInt | PosFloat] = \
        Field(default_factory=dict)
    role: Literal["both", "prefill", "decode"] = "both"
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @model_validator(mode="after")
    def _tp_priced(self):
        for key, v in self.table.items():
            if key != "tol" and not isinstance(v, int):
                raise InvalidValue("an integer", loc=("table", key), got=short_repr(v))
            if key == "tol" and not v < 1:
                raise InvalidValue("a tolerance in (0, 1)", loc=("table", key), got=short_repr(v))
        if self.precision is not None:
            from sim.workload.precision import parse_precision
            try:
                parse_precision(self.precision)
            except ConfigError as e:
                raise InvalidValue(e.expected, loc=("precision",), got=e.got) from None
        if self.tp > 1 and self.mode == "table":      # sim.StepTable prices one chip
            raise InvalidValue("tp 1 with mode 'table' (step tables price one chip; use "
                               "mode 'exact' for tensor parallelism)", loc=("tp",))
        if self.table and self.mode != "table":
            raise InvalidValue("no table options unless mode is 'table'", loc=("table",))
        return self

    def pool_key(self) -> dict:
        """What every client of one pool must share: all but its name, count and hardware."""
        return self.model_dump(exclude={"name", "count", *HARDWARE_KEYS})

    def names(self) -> list[str]:
        """The names of the clients this entry stands for."""
        return [self.name] if self.count == 1 else [f"{self.name}-{i}" for i in range(self.count)]


class RouterConfig(StrictModel):
    name: Name = "round_robin"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self):
        if self.name not in ROUTERS:
            raise InvalidValue(f"one of {sorted(ROUTERS)}", loc=("name",))
        return self

    def spec(self) -> dict:
        return {"type": self.name, **self.params}


class LinkConfig(StrictModel):
    bandwidth_gbps: PosFloat = 50.0
    latency_s: NonNegFloat = 0.0
    shared: bool = False


class ClusterConfig(StrictModel):
    clients: FrozenList[ClientConfig] = Field(min_length=1)
    router: RouterConfig = Field(default_factory=RouterConfig)
    decode_router: RouterConfig = Field(default_factory=lambda: RouterConfig(name="least_loaded"))
    pairing: Literal["global", "local"] = "global"
    kv_transfer: Literal["whole", "layer"] = "whole"
    link: LinkConfig = Field(default_factory=LinkConfig)

    @model_validator(mode="after")
    def _pools(self):
        roles = {c.role for c in self.clients}
        if "both" in roles and len(roles) > 1:
            i = next(i for i, c in enumerate(self.clients) if c.role != self.clients[0].role)
            raise InvalidValue(f"role {self.clients[0].role!r} like clients.0 (a cluster is "
                               "co-located or has prefill and decode pools)",
                               loc=("clients", i, "role"))
        if "both" not in roles and roles != {"prefill", "decode"}:
            raise InvalidValue("both a prefill and a decode client (disaggregated serving)",
                               loc=("clients", 0, "role"))
        seen: set[str] = set()
        for i, c in enumerate(self.clients):
            names = c.names()
            if seen & set(names):
                raise InvalidValue("a client name used once", loc=("clients", i, "name"),
                                   got=short_repr(sorted(seen & set(names))[0]))
            seen |= set(names)
        for role in roles:
            pool = [(i, c) for i, c in enumerate(self.clients) if c.role == role]
            i0, first = pool[0]
            ref = first.pool_key()
            for i, c in pool[1:]:
                got = c.pool_key()
                for key in ref:
                    if got[key] != ref[key]:
                        sub = key
                        if key == "engine":
                            sub = "engine." + next(k for k in ref[key] if got[key][k] != ref[key][k])
                        raise InvalidValue(
                            f"the same value as clients.{i0} (clients of one pool differ only "
                            "in name and hardware)", loc=("clients", i, *sub.split(".")))
        return self

    @property
    def disaggregated(self) -> bool:
        return self.clients[0].role != "both"


class ServingOutputs(StrictModel):
    plots: FrozenList[Literal["latency_cdf", "timeline", "compare"]] = ()
    trace: bool = False
    # where the per-step rows go: 'memory' (a frame; steps.csv written from it), 'file'
    # (streamed to <out>/steps.csv in bounded chunks from the engines' compact storage, read
    # back lazily; for runs of millions of steps), 'none' (no rows, no steps.csv)
    steps: Literal["memory", "file", "none"] = "memory"

    @model_validator(mode="after")
    def _timeline_needs_steps(self):
        if self.steps == "none" and "timeline" in self.plots:
            raise InvalidValue("memory or file: the timeline plot draws the step rows",
                               loc=("steps",), got="none")
        return self


class ServingExperiment(_Hashable):
    """A serving experiment (the module docstring documents the keys)."""

    name: Name
    description: str = ""
    seed: Seed = 0
    pipeline: Name = "prefill_decode"
    workload: WorkloadConfig
    cluster: ClusterConfig
    outputs: ServingOutputs = Field(default_factory=ServingOutputs)
    variants: FrozenList[VariantConfig] = ()      # clusters to compare over the same requests

    # the block `strata sweep` reads (sim.dse.spec); `strata run` serves the base experiment.
    # Left out of dumps and of the content hash, as in ExperimentConfig.
    sweep: FrozenMapping[str, Any] | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _variant_names(self):
        seen: dict[str, int] = {}
        for i, v in enumerate(self.variants):
            try:
                _safe_file_name(v.name)   # <out>/<variant>/ is a folder
            except InvalidValue as e:
                raise InvalidValue(e.expected, loc=("variants", i, "name"), got=e.got) from None
            if v.name in seen:
                raise InvalidValue("a variant name used once", loc=("variants", i, "name"),
                                   got=short_repr(v.name),
                                   hint=f"also the name of variants.{seen[v.name]}")
            seen[v.name] = i
            for key in v.set:
                if key.split(".")[0] in ("name", "variants"):
                    raise InvalidValue("keys other than name and variants",
                                       loc=("variants", i, "set", key))
        return self


def serving_points(exp: ServingExperiment) -> list[tuple[str | None, ServingExperiment]]:
    """(variant name, experiment) per cluster to run: ``[(None, exp)]`` without variants, else
    one per ``variants:`` entry, the base with that entry's keys set and no variants."""
    from sim.config.loader import load_validated
    if not exp.variants:
        return [(None, exp)]
    points = []
    for i, v in enumerate(exp.variants):
        try:
            cfg = load_validated(exp, ServingExperiment,
                                 [("variants", [])] + list(v.set.items()))
        except ConfigError as e:     # name the experiment file and the variant's key
            key = f"variants.{i}.set" + (f".{e.key}" if e.key else "")
            raise ConfigError(e.expected, file=exp.origin, key=key, got=e.got,
                              hint=e.hint) from None
        points.append((v.name, cfg))
    return points


def _backend(c: ClientConfig) -> dict:
    return {"type": "strata", "arch": c.arch, "model": c.model, "chips": c.tp, "mode": c.mode,
            **({"table_options": dict(c.table)} if c.table else {}),
            **({"precision": c.precision} if c.precision is not None else {}),
            **({"tp": c.tp} if c.tp > 1 else {})}


def _engine(c: ClientConfig) -> dict:
    e = c.engine.model_dump()
    e["cuda_graph_sizes"] = tuple(e["cuda_graph_sizes"])
    if e["kv_blocks"] is None:
        del e["kv_blocks"]
    return e


def _pool_backend(members: list) -> dict | list:
    """One backend mapping for a pool of one hardware, else one per client (in order, an
    entry with ``count: n`` standing for n clients)."""
    specs = [_backend(c) for c in members for _ in range(c.count)]
    return specs[0] if all(s == specs[0] for s in specs) else specs


def backend_specs(cluster: ClusterConfig) -> dict[str, dict | list]:
    """role (``both``, or ``prefill`` and ``decode``) -> the backend mapping of that pool (a
    list of one per client when its hardware is mixed)."""
    roles = ("prefill", "decode") if cluster.disaggregated else ("both",)
    return {r: _pool_backend([c for c in cluster.clients if c.role == r]) for r in roles}


def cluster_spec(cluster: ClusterConfig, backends: dict | None = None) -> dict:
    """The ``cluster`` mapping of :func:`sim.system.serve_frames` for a validated section.
    ``backends``: role -> an already-built Backend (or a list, one per client) to use instead
    of the mapping."""
    backends = backends or {}
    if not cluster.disaggregated:
        c = cluster.clients[0]
        return {"backend": backends.get("both", _pool_backend(list(cluster.clients))),
                "clients": sum(x.count for x in cluster.clients), "engine": _engine(c),
                "router": cluster.router.spec(), "model": c.model}
    pools = {}
    for role in ("prefill", "decode"):
        members = [c for c in cluster.clients if c.role == role]
        pools[role] = {"clients": sum(c.count for c in members), "engine": _engine(members[0]),
                       "backend": backends.get(role, _pool_backend(members))}
    return {**pools, "engine": {"scheduler": "disaggregated"}, "router": cluster.router.spec(),
            "decode_router": cluster.decode_router.spec(), "pairing": cluster.pairing,
            "kv_transfer": cluster.kv_transfer, "link": cluster.link.model_dump(),
            "model": cluster.clients[0].model}


def client_names(cluster: ClusterConfig) -> dict[str, str]:
    """serve_frames' client names (client0.., prefill0.., decode0..) -> the experiment's names."""
    out = {}
    roles = ("prefill", "decode") if cluster.disaggregated else ("both",)
    for role in roles:
        names = [n for c in cluster.clients if c.role == role for n in c.names()]
        for i, n in enumerate(names):
            out[f"{'client' if role == 'both' else role}{i}"] = n
    return out
