"""The accelerator interface: what every accelerator type provides, whatever its hardware.

An accelerator type is a class deriving from :class:`Accelerator`, registered by name with
:func:`sim.hw.registry.register` (an arch file's ``type:`` picks it). It declares:

* ``config_class``: its arch schema, a subclass of :class:`sim.config.ArchConfig` holding the
  type's own sections (the base holds only name, description, kind, type, clock_ghz and
  technology); registering the type makes ``load_arch`` / ``load_experiment`` / ``sim.run``
  validate ``type: <name>`` with it;
* ``tech_sections``: the technology-table sections the type reads beyond the common ones
  (name -> pydantic schema), validated when an accelerator is built (:attr:`tech_parts`);
* ``operators``: graph-node kind -> the method that prices it. Every type runs ``gemm``
  (``attention`` is a GEMM against the KV cache), ``vector`` and ``memory``; a type adds its
  own by extending the mapping (``{**Accelerator.operators, "sparse_gemm": "sparse_gemm"}``);
* ``energy_components``: the components its ledgers charge, in report order. Tables list
  these first, then any other component a ledger charged (sorted): nothing charged is ever
  dropped;
* ``capabilities``: what the workload layer may hand it, e.g. ``"outlier_profile"`` (wants
  per-weight outlier statistics) or ``"nm_sparsity"``;
* :meth:`op_annotations` (optional): per-weight-GEMM keyword arguments the workload layer
  passes to :meth:`gemm` (e.g. each layer's N:M pattern from a sparsity schedule), with a
  content key that memo keys include;
* :meth:`area_um2`, the clock (``clock``), :meth:`native_precisions`,
  :meth:`peak_macs_per_cycle` and :meth:`describe` (one line for the CLI).

Results are :class:`OpResult` objects, frozen: accelerators memoize them, so nothing a caller
gets back may be changed.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping

from ..config.schema import ArchConfig, FrozenDict
from ..core import Clock, EnergyLedger
from ..core.invariants import require

__all__ = ["Accelerator", "OpResult", "OpAnnotations", "ReadOnlyLedger", "ordered_components",
           "merge_component_orders",
           "energy_by_component", "BASE_OPERATORS"]

BASE_OPERATORS: Mapping[str, str] = FrozenDict(
    {"gemm": "gemm", "attention": "gemm", "vector": "vector", "memory": "memory_op"})


class ReadOnlyLedger(EnergyLedger):
    """An energy ledger that can be read and merged into others but not changed (the ledger
    of a memoized result). :meth:`copy` gives a writable one."""

    @classmethod
    def of(cls, ledger: EnergyLedger) -> "ReadOnlyLedger":
        if isinstance(ledger, ReadOnlyLedger):
            return ledger
        ro = cls.__new__(cls)
        ro._rows = dict(ledger._rows)
        return ro

    def _refuse(self, *args: Any, **kwargs: Any):
        raise TypeError("this ledger belongs to a (memoized) result and is read-only; "
                        "use .copy() for a writable one")

    add = merge = _refuse


def ordered_components(declared: Iterable[str], charged: Iterable[str]) -> tuple[str, ...]:
    """Declared components first (in their order), then every other charged one, sorted."""
    declared = tuple(declared)
    seen = set(declared)
    return declared + tuple(sorted({c for c in charged if c not in seen}))


def merge_component_orders(first: Iterable[str], other: Iterable[str]) -> tuple[str, ...]:
    """Both component lists in one order: ``first`` as it is, and each component only
    ``other`` has placed right after its predecessor in ``other`` (so an experiment comparing
    a design with ReCoN against one without lists ``recon`` where the ReCoN design does)."""
    out = list(first)
    prev = None
    for c in other:
        if c not in out:
            out.insert(out.index(prev) + 1 if prev is not None else len(out), c)
        prev = c
    return tuple(out)


def energy_by_component(ledger: EnergyLedger, declared: Iterable[str]) -> dict[str, float]:
    """pJ per component: every declared component (0 when not charged) and every charged
    one, so the values always sum to the ledger's total."""
    by = ledger.by_component()
    return {c: float(by.get(c, 0.0)) for c in ordered_components(declared, by)}


@dataclass(frozen=True)
class OpResult:
    """Timing, traffic and energy of one operation (one GEMM, vector op or memory op).

    Frozen, with a read-only ledger and counters: accelerators hand out their memoized
    results, so nothing a caller holds can change the next identical call's answer."""

    cycles: int
    compute_cycles: int
    stall_cycles: int
    stall_memory: int = 0      # array waiting for DRAM/L2 fills
    stall_sram: int = 0        # SRAM port slower than the array's operand demand
    stall_drain: int = 0       # last outputs still draining to L2/DRAM after the array is done
    macs: int = 0
    peak_macs_per_cycle: float = 0.0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    dram_busy_cycles: int = 0  # cycles the DRAM port spent transferring (<= cycles)
    l2_busy_cycles: int = 0    # cycles the L2 port spent transferring (<= cycles)
    tiles: int = 0
    folds: int = 0
    chunks: int = 1            # sub-GEMMs the mapper cut the GEMM into (outer tiling)
    energy: EnergyLedger = field(default_factory=EnergyLedger)
    counters: Mapping = field(default_factory=dict)   # accelerator-specific event counts
    components: tuple = ()     # the producing accelerator's declared energy components
    operator: str = "op"       # for invariant messages

    def __post_init__(self) -> None:
        object.__setattr__(self, "energy", ReadOnlyLedger.of(self.energy))
        if not isinstance(self.counters, FrozenDict):
            object.__setattr__(self, "counters", FrozenDict(self.counters))

    @property
    def utilization(self) -> float:
        """Fraction of the array's peak MACs used over the whole op (0 for non-array ops)."""
        if not self.macs or not self.cycles:
            return 0.0
        return self.macs / (self.cycles * self.peak_macs_per_cycle)

    @property
    def energy_pj(self) -> Mapping[str, float]:
        """Energy by component (pJ): the declared components, then any other charged one;
        read-only, computed once per result."""
        cached = self.__dict__.get("_energy_pj")
        if cached is None:
            cached = FrozenDict(energy_by_component(self.energy, self.components))
            self.__dict__["_energy_pj"] = cached
        return cached

    def check(self, component: str = "accelerator") -> "OpResult":
        """Invariants every op satisfies; :class:`~sim.core.invariants.InvariantError` (with
        the component, the operator and the values) otherwise, also under ``python -O``."""
        op = self.operator
        require(self.stall_cycles >= 0, component, op, "stall >= 0",
                stall_cycles=self.stall_cycles)
        require(self.cycles == self.compute_cycles + self.stall_cycles, component, op,
                "cycles == compute + stall", cycles=self.cycles,
                compute_cycles=self.compute_cycles, stall_cycles=self.stall_cycles)
        require(self.stall_cycles == self.stall_memory + self.stall_sram + self.stall_drain,
                component, op, "stall == memory + sram + drain", stall_cycles=self.stall_cycles,
                stall_memory=self.stall_memory, stall_sram=self.stall_sram,
                stall_drain=self.stall_drain)
        util = self.utilization
        require(0.0 <= util <= 1.0 + 1e-12, component, op, "0 <= utilization <= 1",
                utilization=util)
        require(self.dram_busy_cycles <= self.cycles and self.l2_busy_cycles <= self.cycles,
                component, op, "DRAM and L2 ports busy <= cycles", cycles=self.cycles,
                dram_busy_cycles=self.dram_busy_cycles, l2_busy_cycles=self.l2_busy_cycles)
        bad = {k: v for k, v in self.energy_pj.items() if not v >= 0}
        require(not bad, component, op, "every energy >= 0", **bad)
        # a port or unit cannot be busy for longer than the op lasts
        busy = {k: v for k, v in self.counters.items()
                if k.endswith("_busy_cycles") and v > self.cycles}
        require(not busy, component, op, "no unit busy longer than the op",
                cycles=self.cycles, **busy)
        return self


@dataclass(frozen=True)
class OpAnnotations:
    """Per-op keyword arguments an accelerator wants with each weight GEMM of one model.

    ``key`` is a hashable value that equals another's only when every ``lookup`` answer does
    (the content itself, e.g. the tuple of per-layer patterns): memo keys include it, so a
    changed schedule never gets a result priced for the old one. ``lookup(layer, op)`` gives a
    tuple of ``(name, value)`` pairs (hashable, sorted by name) for :meth:`Accelerator.gemm`,
    ``()`` for none; ``layer`` is -1 for ops outside the decoder blocks (the lm_head)."""

    key: Any
    lookup: Any = field(compare=False)

    def __call__(self, layer: int, op: str) -> tuple:
        return tuple(sorted(self.lookup(layer, op)))


class Accelerator(abc.ABC):
    """Base of every accelerator type (see the module docstring for what a type declares)."""

    type_name: ClassVar[str] = ""                       # set by sim.hw.registry.register
    config_class: ClassVar[type] = ArchConfig
    tech_sections: ClassVar[Mapping[str, type]] = FrozenDict()
    operators: ClassVar[Mapping[str, str]] = BASE_OPERATORS
    energy_components: ClassVar[tuple[str, ...]] = ("static",)
    capabilities: ClassVar[frozenset] = frozenset()

    def __init__(self, arch, tech=None):
        from ..config.tech import load_tech
        self.arch = arch
        self.tech = tech if tech is not None else load_tech(arch.technology)
        self.clock = Clock(arch.clock_ghz)
        # the type's own technology sections, validated now (errors name the tech file)
        self.tech_parts = {name: self.tech.section(name, schema)
                           for name, schema in self.tech_sections.items()}

    # ---------------------------------------------------------------- what the type is ----
    @property
    def uses_outlier_profile(self) -> bool:
        """The workload layer hands weight GEMMs their outlier statistics."""
        return "outlier_profile" in self.capabilities

    def supports(self, operator: str) -> bool:
        return operator in self.operators

    def run_operator(self, operator: str, *args: Any, **kwargs: Any) -> OpResult:
        """Price one node of kind ``operator`` with the method the type declared for it."""
        try:
            method = self.operators[operator]
        except KeyError:
            raise ValueError(f"accelerator type {self.arch.type!r} has no operator "
                             f"{operator!r} (it runs {', '.join(self.operators)})") from None
        return getattr(self, method)(*args, **kwargs)

    def components(self, charged: Iterable[str] = ()) -> tuple[str, ...]:
        """Energy components for reports: the declared ones, then other charged ones."""
        return ordered_components(self.energy_components, charged)

    # ------------------------------------------------------------------- operators ----
    @abc.abstractmethod
    def gemm(self, M: int, K: int, N: int, **kwargs: Any) -> OpResult:
        """``O[M,N] = A[M,K] @ W[K,N]``."""

    @abc.abstractmethod
    def vector(self, elements: int, ops_per_element: float, in_bytes: int, out_bytes: int,
               **kwargs: Any) -> OpResult:
        """An element-wise op (softmax, norms, activations, residuals)."""

    @abc.abstractmethod
    def memory_op(self, read_bytes: int, write_bytes: int = 0) -> OpResult:
        """A pure DRAM move (an embedding gather)."""

    # ----------------------------------------------------------- static properties ----
    @abc.abstractmethod
    def area_um2(self) -> dict:
        """Area per component (um^2)."""

    @abc.abstractmethod
    def native_precisions(self) -> tuple[tuple[int, int], ...]:
        """(wbits, abits) pairs the hardware computes natively, preferred first."""

    @abc.abstractmethod
    def peak_macs_per_cycle(self, wbits: int, abits: int) -> float:
        """MACs a cycle the whole accelerator can do at this precision."""

    def on_chip_bytes(self) -> float:
        """Bytes of on-chip storage an activation tensor may stay in between ops (the
        workload layer's placement rule); 0: everything streams from DRAM."""
        return 0.0

    def op_annotations(self, model, seed: int = 0) -> OpAnnotations | None:
        """What each weight GEMM of ``model`` needs beyond its shape (see
        :class:`OpAnnotations`); None (the default): nothing."""
        return None

    def causal_query_block(self) -> int | None:
        """Queries a causal prefill prices together (the query tile the hardware's attention
        works on: keys beyond a block's last query are skipped, within it they are computed);
        None: the type names none, and a causal ragged step must be given ``causal_block``."""
        return None

    def price_nodes(self, ops: list, seed: int = 0) -> list | None:
        """A type that prices a step as a whole (kernels spanning several graph nodes, as on a
        GPU) returns one :class:`OpResult` per node of ``ops``, each covering all ``count``
        instances of its node; None (the default): every node is priced on its own."""
        return None

    def chip_link(self) -> tuple[float, float, float]:
        """(bytes/s per direction, seconds per ring hop, pJ per bit) of the arch's
        ``chip_link``; a one-line ConfigError naming the missing key when it declares none."""
        from ..config import ConfigError
        link = getattr(self.arch, "chip_link", None)
        if link is None:
            raise ConfigError("a chip_link {bandwidth_gbps, latency_ns} for tensor parallelism "
                              "(tp > 1)", file=self.arch.origin, key="chip_link", got="nothing")
        return link.bandwidth_gbps * 1e9, link.latency_ns * 1e-9, link.pj_per_bit

    def collective(self, kind: str, nbytes: int, chips: int) -> OpResult:
        """A ring collective over ``chips`` chips on the chip link: ``allreduce`` sends
        2(p-1)/p of the buffer per chip in 2(p-1) hops, ``allgather`` (p-1)/p in p-1 hops."""
        bw, hop, pj_bit = self.chip_link()
        steps = {"allreduce": 2 * (chips - 1), "allgather": chips - 1}[kind]
        sent = nbytes * steps / chips
        cycles = self.clock.cycles(sent / bw + steps * hop)
        led = EnergyLedger()
        led.add("link", f"{kind}_bit", 8 * sent, pj_bit)
        return OpResult(cycles=cycles, compute_cycles=0, stall_cycles=cycles,
                        stall_memory=cycles, energy=led, components=self.energy_components,
                        operator=kind).check(f"{self.arch.name} ({self.arch.type})")

    def describe(self) -> str:
        """One line for the CLI, e.g. ``64x64 WS, 1 GHz``."""
        return f"{self.arch.type}, {self.arch.clock_ghz:g} GHz"
