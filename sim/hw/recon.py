"""ReCoN, MicroScopiQ's redistribution network: functional butterfly and fast timing model.

Three things live here:

1. :class:`ReconNetwork` / :func:`configure` / :meth:`ReconConfig.evaluate`: the switches, the
   routing computed from a row's micro-block permutation lists, and the data moving through the
   switches (the merge of an outlier's Upper and Lower halves, proven on every legal
   permutation by the tests);
2. :func:`recon_fold_cycles`: what outlier rows cost a weight-stationary fold (the extra
   pipeline depth and the stalls when rows contend for a shared unit), closed form over
   events. :mod:`sim.hw.recon_ref` steps the same machine cycle by cycle, and the tests show
   that the two agree exactly;
3. :func:`functional_gemm`: a GEMM computed row by row through PE products and ReCoN merges on
   :class:`sim.numerics.mx.MXWeights`, equal to ``A @ W.dequantize()``.

Topology (paper Sec. 5.4 and the released RTL ``scope.v``)
-----------------------------------------------------------
``n`` columns (a power of two), ``L = log2 n``, ``L + 1`` stages of ``n`` 2x2 switches, so
``n * (log2 n + 1)`` switches (448 for n = 64, 32 for the RTL's 8x8 toy). Stage 0 is the input
stage: switch ``i`` takes column ``i`` on its first input, its second input is tied to 0.
Stage ``L`` is the output stage: switch ``i`` drives column ``i`` from its first output, the
second output is unused. Between stages every switch has two output ports; port ``p`` of switch
``i`` in stage ``j`` feeds switch ``i`` with bit ``j`` set to ``p`` in stage ``j + 1``, arriving
on input side ``bit j of i`` (0 = left, 1 = right). So stage ``j`` chooses bit ``j`` of where a
value ends up and stage ``L`` only combines; a value's path from column ``a`` to column ``b`` is
unique. A column's *straight* path stays in switch ``i`` at every stage (leaving stage ``j`` on
port ``bit j of i``); the other port of each switch is its *spare* port.

Links carry two lanes
---------------------
The paper's PE sends ReCoN its product *concatenated with* its incoming partial sum, so a link
is two values wide; we call the two lanes ``main`` and ``aux``. Both lanes are needed: with one
value per link the butterfly above cannot route every permutation. In a unique-path network a
Lower travelling from column ``l`` to its Upper ``u`` must share a link with another column's
straight path whenever ``l`` and ``u`` agree on a bit below the highest bit they differ in
(e.g. Lower in column 0, Upper in column 5 collides with column 1's path), and two Lowers can
need the same spare link (Lower 2 -> Upper 0 and Lower 3 -> Upper 4 in one micro-block). With
two lanes every legal permutation of a micro-block of 8 (up to 4 outliers) routes on 8, 16 and
64 columns, and of a micro-block of 4 with up to 2 outliers; the tests check all of them.

Switch operations (per lane): ``=`` Pass (left to port 0, right to port 1), ``x`` Swap (crossed),
``m`` Merge (the two values added, the sum leaving on the Upper's straight port; the Lower may
arrive in either lane), ``.`` idle. The input switch of a Lower column splits the column's bus:
the Lower's product leaves towards its Upper, its partial sum stays on the column's straight
path ("the freed output carries iAcc", the paper's Fig. 8 stage 1).

Routing (:func:`configure`)
---------------------------
Every column's own value rides the ``main`` lane of its straight path. The Lower of pair
``(u, l)`` leaves input switch ``l`` and, in stage ``j``, takes port ``bit j of u``; after stage
``h`` (``h`` = highest bit in which ``u`` and ``l`` differ) it sits in switch ``u`` of stage
``h + 1``, on the opposite side from the Upper, and merges there; the merged value then follows
the Upper's straight path. A travelling Lower must use the ``aux`` lane where it shares a link
with a straight path, and two Lowers on one link must use different lanes; those constraints are
a 2-colouring problem solved per micro-block (micro-blocks never share links: their columns
differ only in low bits and the routing only rewrites those). An unsatisfiable pattern raises
:class:`RoutingError`.

Merge arithmetic
----------------
Slot integers hold ``sign * magnitude`` (Upper ``U``, Lower ``L``, ``bb - 1`` bits each), so the
PE products are ``U_res = sign*U*iAct`` and ``L_res = sign*L*iAct``; the outlier's sign comes
from the metadata with the permutation entry (a zero half loses it). Exact mode (default), in
the ``2**(2(bb-1))``-scaled frame::

    merged = (U_res << (bb-1)) + L_res + ((sign*iAct) << 2(bb-1)) + (iAcc << acc_shift)

with ``acc_shift = 2(bb-1)`` by default (iAcc in the outlier's ``2**e`` frame, the convention of
the issue); callers whose partial sums already live in a finer common frame pass
``acc_shift=0`` and pre-aligned products (see :func:`functional_gemm`). ``truncate=True``
reproduces the paper's integer merge, ``(U_res >> (bb-1)) + (L_res >> 2(bb-1)) + sign*iAct +
iAcc`` (for bb = 2: ``(U >> 1) + (L >> 2) + iAct + iAcc``, arithmetic shifts, Fig. 8 gives 56).
The terms of either form are produced where their operands enter the network: the Upper
column's input switch forms its part (it receives the row activation, as every stage does in
the RTL), the Lower column's input switch shifts the Lower's product, and the Merge switch adds
the two. Same integer as the paper's single-switch formula; forming the Upper's part early is
what leaves a free lane on every straight link, which the two-lane routing needs (keeping the
Upper's product and partial sum apart until the merge blocks 880 of the 5937 permutations of a
micro-block of 8). Inlier columns output ``Res + iAcc``, a pruned (Lower) column its own iAcc.

Timing (:func:`recon_fold_cycles`, one weight-stationary fold of ``T`` streamed elements on an
``R x C`` array, the ``"strata"`` convention of :mod:`sim.hw.systolic`)
--------------------------------------------------------------------------------------------
* **Sync buffer.** Row ``k``'s PE in column ``c`` produces element ``t``'s output ``c`` cycles
  after column 0 (the systolic skew). The sync buffer delays column ``c`` by ``C - 1 - c``
  cycles (the earliest column gets the longest chain), so the whole row vector is complete at
  the end of the cycle in which column ``C - 1`` computed it and requests a ReCoN unit in the
  next cycle: ``C - 1`` cycles of de-skew for every outlier row, counted on the full physical
  width (fixed delay chains).
* **ReCoN depth.** ``D = ceil(log2 C) + 1`` stages (the network of the next power of two),
  one cycle each. A vector granted in cycle ``y`` is in stage ``D`` in cycle ``y + D - 1``; the
  next PE row can use it from cycle ``y + D``, the oAct buffer writes it in cycle ``y + D - 1``
  (as the plain array writes a bottom-row psum in the cycle it is computed).
* **Re-skew.** The consumer (next PE row or the oAct buffer's write port) takes column ``c`` of
  the result ``c`` cycles after column 0, so the array below keeps its skew.
* Hence every outlier row adds ``delta = (C - 1) + D`` cycles to every partial sum that passes
  it; the controller delays the iAct feed of each row by ``delta`` per outlier row above it
  (the paper's handshake throttle), so a fold with ``m`` outlier rows and no contention ends
  ``m * delta`` cycles after the plain fold.
* **Contention.** ``u`` units (dividing ``R``); unit ``g`` serves rows
  ``g*R/u .. (g+1)*R/u - 1``. Each unit accepts one row vector per cycle. Row vectors completed
  in the same cycle form a batch; in each cycle every unit grants its lowest-numbered waiting
  row, so the N-th contender of a unit waits N - 1 cycles.
* **Stall rule.** While any row waits, the *whole array* stalls: PEs, streams, sync buffers and
  the oAct write port hold (clock enable low); only the arbiters and the ReCoN pipelines keep
  moving. A batch therefore costs ``max over units (N_g - 1)`` stall cycles (units arbitrate in
  parallel), and since the array is frozen no new vector joins a batch while it drains. Results
  of contenders served during the stall wait in the output buffer; the consumer takes them at
  its unchanged (throttled) schedule.
* ``extra_cycles = m * delta + stall_cycles`` (every stall happens before the fold's last
  output), ``accesses = m * T`` row passes, ``conflicts`` = row vectors not granted in their
  first request cycle, ``stall_cycles`` = cycles the array was frozen.

With ``m`` outlier rows sharing one unit over a long stream, every cycle has ``m`` requests, so
the fold runs about ``m`` times slower: the physics of one row vector per cycle per unit.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from sim.config.errors import ConfigError
from sim.core.invariants import require
from sim.numerics.mx import LOWER_LOC, UPPER_LOC

__all__ = [
    "MAIN", "AUX", "ROUTED", "MERGED", "COLUMN_PORT", "INLIER", "UPPER", "LOWER",
    "OutlierPair", "RoutingError", "ReconNetwork", "ReconConfig", "configure",
    "pairs_from_perm", "merge_exact", "merge_truncating",
    "ReconTiming", "recon_depth", "recon_row_latency", "recon_fold_cycles",
    "functional_gemm",
]

MAIN, AUX = 0, 1                   # lanes of a link
ROUTED, MERGED = 0, 1              # terms of a gather-table output: the input routed to it,
                                   # and the travelling Lower merged into it (summed)
COLUMN_PORT = 0                    # port of a last-stage switch that is its column's output
INLIER, UPPER, LOWER = 0, 1, 2     # what a column holds in a row with outliers
_NONE = -1                         # "no source" in a routing table before compilation


class RoutingError(ValueError):
    """A permutation the network cannot route (never raised for micro-blocks of 4 or 8)."""


def _is_pow2(x: int) -> bool:
    return isinstance(x, (int, np.integer)) and x >= 1 and (x & (x - 1)) == 0


def _bit(x: int, b: int) -> int:
    return (x >> b) & 1


def _with_bit(x: int, b: int, v: int) -> int:
    return (x & ~(1 << b)) | (v << b)


# ---------------------------------------------------------------------------------------------
# Merge arithmetic (scalar or array), the reference formulas the network must reproduce
# ---------------------------------------------------------------------------------------------

def merge_exact(u_res, l_res, iact, iacc, sign, bb: int, acc_shift: int | None = None):
    """``(U_res << (bb-1)) + L_res + ((sign*iAct) << 2(bb-1)) + (iAcc << acc_shift)``."""
    s = bb - 1
    a = 2 * s if acc_shift is None else acc_shift
    return (u_res << s) + l_res + ((sign * iact) << (2 * s)) + (iacc << a)


def merge_truncating(u_res, l_res, iact, iacc, sign, bb: int):
    """The paper's integer merge: ``(U_res >> (bb-1)) + (L_res >> 2(bb-1)) + sign*iAct + iAcc``."""
    s = bb - 1
    return (u_res >> s) + (l_res >> (2 * s)) + sign * iact + iacc


# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------

class ReconNetwork:
    """The butterfly of ``n`` columns: ``log2(n) + 1`` stages of ``n`` 2x2 switches."""

    def __init__(self, n: int):
        if not _is_pow2(n) or n < 2:
            raise ConfigError("a power of two >= 2", key="recon.columns", got=repr(n))
        self.n = int(n)
        self.levels = self.n.bit_length() - 1       # L = log2 n
        self.stages = self.levels + 1

    @property
    def switch_count(self) -> int:
        return self.n * self.stages

    def straight_port(self, stage: int, switch: int) -> int:
        """Port on which column ``switch``'s own value leaves ``stage`` (0 at the output stage)."""
        return _bit(switch, stage) if stage < self.levels else 0

    def straight_side(self, stage: int, switch: int) -> int:
        """Input side on which column ``switch``'s own value arrives (0 = the column input)."""
        return 0 if stage == 0 else _bit(switch, stage - 1)

    def feeds(self, stage: int, switch: int, port: int) -> tuple[int, int]:
        """(switch, side) in ``stage + 1`` driven by output ``port`` of ``switch`` in ``stage``."""
        if not 0 <= stage < self.levels:
            raise ValueError(f"stage {stage} has no next stage (stages 0..{self.levels})")
        return _with_bit(switch, stage, port), _bit(switch, stage)

    def source(self, stage: int, switch: int, side: int) -> tuple[int, int]:
        """(switch, port) in ``stage - 1`` that drives input ``side`` of ``switch`` in ``stage``."""
        if not 1 <= stage <= self.levels:
            raise ValueError(f"stage {stage} has no previous stage")
        return _with_bit(switch, stage - 1, side), _bit(switch, stage - 1)

    # -- compiled gather tables ----------------------------------------------------------------
    # Stage 0 reads the column inputs, a flat vector of 2n fields: 2i = the column's straight
    # value, 2i+1 = its travelling product (a Lower's). Stage j >= 1 reads stage j-1's outputs,
    # a flat vector of 4n entries: 4*switch + 2*port + lane. Index ``size`` reads a constant 0.

    def input_size(self, stage: int) -> int:
        return 2 * self.n if stage == 0 else 4 * self.n

    def flat_source(self, stage: int, switch: int, side: int, lane: int) -> int:
        """Flat index (into ``stage``'s input vector) of input (side, lane) of ``switch``."""
        if stage == 0:
            if side != 0:
                return self.input_size(0)            # tied to 0
            return 2 * switch + lane                 # lane MAIN = value, AUX = product field
        sw, port = self.source(stage, switch, side)
        return 4 * sw + 2 * port + lane

    @lru_cache(maxsize=None)
    def _straight_tables(self) -> tuple[np.ndarray, ...]:
        """Per stage int64[4n + 1, 2]: for output ``4*switch + 2*port + lane`` the flat indices
        of the (up to two, summed) inputs it takes; every column on its straight path. The
        extra last output reads the constant 0, which the next stage finds at its end."""
        tables = []
        for j in range(self.stages):
            t = np.full((4 * self.n + 1, 2), self.input_size(j), dtype=np.int64)
            for i in range(self.n):
                t[4 * i + 2 * self.straight_port(j, i) + MAIN, ROUTED] = self.flat_source(
                    j, i, self.straight_side(j, i), MAIN)
            t.setflags(write=False)
            tables.append(t)
        return tuple(tables)

    def __repr__(self) -> str:
        return f"ReconNetwork(n={self.n}, stages={self.stages}, switches={self.switch_count})"


@lru_cache(maxsize=None)
def _network(n: int) -> ReconNetwork:
    return ReconNetwork(n)


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutlierPair:
    """One permutation-list entry: the outlier's own column, its pruned slot, its sign."""

    upper: int
    lower: int
    sign: int = 1


@dataclass(frozen=True)
class _Travel:
    """A Lower's trip (micro-block-local columns): wires used and the merge stage."""

    upper: int
    lower: int
    merge_stage: int                          # h + 1
    wires: tuple[tuple[int, int, int], ...]   # (stage, switch, port) for stages 0..h


def _travel(upper: int, lower: int) -> _Travel:
    h = (upper ^ lower).bit_length() - 1
    wires, sw = [], lower
    for j in range(h + 1):
        p = _bit(upper, j)
        wires.append((j, sw, p))
        sw = _with_bit(sw, j, p)
    require(sw == upper, "recon", "route", "a Lower's path ends at its Upper's switch",
            upper=upper, lower=lower, reached=sw)
    return _Travel(upper, lower, h + 1, tuple(wires))


@lru_cache(maxsize=65536)
def _route_block(local_pairs: tuple[tuple[int, int], ...]) -> tuple[tuple[_Travel, int], ...]:
    """Lane of every Lower of one micro-block (local columns), by 2-colouring.

    A Lower whose trip uses a straight link (one where its port equals that switch's straight
    port, i.e. ``lower`` and ``upper`` agree on that bit) must ride ``aux``; Lowers sharing a
    link need different lanes. Unconstrained Lowers take ``main``.
    """
    travels = [_travel(u, l) for u, l in local_pairs]
    k = len(travels)
    forced = [any(_bit(t.upper, j) == _bit(t.lower, j) for j, _, _ in t.wires) for t in travels]
    users: dict[tuple[int, int, int], list[int]] = {}
    for idx, t in enumerate(travels):
        for w in t.wires:
            users.setdefault(w, []).append(idx)
    adj: list[set[int]] = [set() for _ in range(k)]
    for idx_list in users.values():
        if len(idx_list) > 2:
            raise RoutingError(f"{len(idx_list)} Lowers need one link: {local_pairs}")
        if len(idx_list) == 2:
            a, b = idx_list
            adj[a].add(b)
            adj[b].add(a)
    lane = [None] * k
    # forced nodes first, so that their components are coloured from them
    for start in sorted(range(k), key=lambda i: not forced[i]):
        if lane[start] is not None:
            continue
        lane[start] = AUX if forced[start] else MAIN
        todo = deque([start])
        while todo:
            a = todo.popleft()
            for b in adj[a]:
                want = 1 - lane[a]
                if lane[b] is None:
                    lane[b] = want
                    todo.append(b)
                elif lane[b] != want:
                    raise RoutingError(f"no lane assignment for {local_pairs}")
    for idx in range(k):
        if forced[idx] and lane[idx] != AUX:
            raise RoutingError(f"no lane assignment for {local_pairs}")
    return tuple(zip(travels, lane))


def _check_pairs(n: int, ub: int, pairs: Sequence[OutlierPair]) -> None:
    if not _is_pow2(ub) or ub < 2 or ub > n:
        raise ConfigError(f"a power of two in [2, {n}] (micro-block size)", key="recon.micro",
                          got=repr(ub))
    seen: set[int] = set()
    per_block: dict[int, int] = {}
    for p in pairs:
        for name, c in (("upper", p.upper), ("lower", p.lower)):
            if not isinstance(c, (int, np.integer)) or not 0 <= c < n:
                raise ConfigError(f"a column in [0, {n})", key=f"recon.pairs.{name}",
                                  got=repr(c))
            if c in seen:
                raise ConfigError("each column at most once in a row's permutation list",
                                  key=f"recon.pairs.{name}", got=repr(int(c)))
            seen.add(int(c))
        if p.upper // ub != p.lower // ub:
            raise ConfigError(f"Upper and Lower in the same micro-block of {ub} columns",
                              key="recon.pairs", got=f"({p.upper}, {p.lower})")
        if p.sign not in (1, -1):
            raise ConfigError("+1 or -1", key="recon.pairs.sign", got=repr(p.sign))
        b = p.upper // ub
        per_block[b] = per_block.get(b, 0) + 1
        if per_block[b] > ub // 2:
            raise ConfigError(f"at most {ub // 2} outliers per micro-block of {ub}",
                              key="recon.pairs", got=f"{per_block[b]} in block {b}")


class _Route(NamedTuple):
    """An output port of a switch lane and the flat index of the input routed to it."""

    port: int
    src: int


@dataclass(frozen=True, eq=False)
class ReconConfig:
    """Switch settings of one ReCoN pass (one row vector), compiled to gather tables."""

    network: ReconNetwork
    ub: int
    pairs: tuple[OutlierPair, ...]
    kind: np.ndarray          # int8[n]: INLIER / UPPER / LOWER
    sign: np.ndarray          # int64[n]: outlier sign at UPPER columns, 0 elsewhere
    lanes: tuple[int, ...]    # lane of each pair's travelling Lower (MAIN / AUX)
    tables: tuple[np.ndarray, ...] = field(repr=False)   # per stage int64[4n + 1, 2]

    @property
    def n(self) -> int:
        return self.network.n

    def switch_table(self, stage: int) -> np.ndarray:
        """int64[n, 2 ports, 2 lanes, 2 terms]: for each output, the flat indices of the inputs
        it sums; an index equal to ``network.input_size(stage)`` means "no input" (reads 0)."""
        return self.tables[stage][:4 * self.n].reshape(self.n, 2, 2, 2)

    # -- the datapath ---------------------------------------------------------------------------
    def evaluate(self, res, iacc, iact, *, bb: int, truncate: bool = False,
                 acc_shift: int | None = None, full: bool = False):
        """Push one or many row vectors through the switches.

        Args:
            res: PE products ``[..., n]`` (slot integer times activation), integers.
            iacc: incoming partial sums ``[..., n]``.
            iact: the row activation, ``[...]`` or per column ``[..., n]`` (only the Upper
                columns use it, for the hidden bit).
            bb: bit budget (Upper/Lower halves have ``bb - 1`` bits).
            truncate: the paper's shifting merge instead of the exact one.
            acc_shift: exact mode only: left shift of iAcc in a merge (default ``2(bb-1)``).
            full: also return the raw output-stage ports ``[..., n, 2 ports, 2 lanes]``.
        Returns:
            ``[..., n]`` column outputs (and the raw ports when ``full``).
        """
        res = np.asarray(res)
        iacc = np.asarray(iacc)
        if res.shape[-1:] != (self.n,) or iacc.shape != res.shape:
            raise ValueError(f"res and iacc must have shape [..., {self.n}], got "
                             f"{res.shape} and {iacc.shape}")
        dtype = np.result_type(res, iacc, np.asarray(iact))
        if dtype.kind not in "iO":
            raise ValueError(f"ReCoN carries integers, got dtype {dtype}")
        iact = np.asarray(iact, dtype=dtype)
        if iact.ndim < res.ndim:                     # one activation per row vector
            iact = iact[..., None]
        iact = np.broadcast_to(iact, res.shape)
        res = res.astype(dtype, copy=False)
        iacc = iacc.astype(dtype, copy=False)
        s = bb - 1
        sign = self.sign.astype(dtype)
        # input-stage adders: what each column puts on its straight path / sends travelling
        if truncate:
            if acc_shift not in (None, 0):
                raise ValueError("acc_shift applies to the exact merge only")
            upper_part = (res >> s) + sign * iact + iacc
            travel = res >> (2 * s)
        else:
            a = 2 * s if acc_shift is None else int(acc_shift)
            upper_part = (res << s) + ((sign * iact) << (2 * s)) + (iacc << a)
            travel = res
        kind = self.kind
        value = np.where(kind == INLIER, res + iacc, np.where(kind == UPPER, upper_part, iacc))
        travel = np.where(kind == LOWER, travel, np.zeros_like(travel))
        batch = res.shape[:-1]
        # flat stage input with a trailing constant 0 (the tied / empty source)
        x = np.zeros(batch + (2 * self.n + 1,), dtype=dtype)
        x[..., 0:2 * self.n:2] = value
        x[..., 1:2 * self.n:2] = travel
        for table in self.tables:
            x = x[..., table[:, ROUTED]] + x[..., table[:, MERGED]]
        ports = x[..., :4 * self.n].reshape(*batch, self.n, 2, 2)
        out = ports[..., COLUMN_PORT, MAIN]
        return (out, ports) if full else out

    # -- inspection ---------------------------------------------------------------------------
    def ops(self) -> list[list[str]]:
        """``ops()[stage][switch]`` = two characters (main lane, aux lane) from ``= x m .``."""
        net = self.network
        result = []
        for j in range(net.stages):
            table = self.switch_table(j)
            size = net.input_size(j)
            row = []
            for i in range(net.n):
                chars = []
                for lane in (MAIN, AUX):
                    t = table[i, :, lane]                 # [port, term]
                    if (t[:, MERGED] != size).any():
                        chars.append("m")
                        continue
                    routed = [_Route(p, int(t[p, ROUTED])) for p in (0, 1)
                              if t[p, ROUTED] != size]
                    if not routed:
                        chars.append(".")
                        continue
                    if j == 0:
                        # the column input is on side 0: Pass = the column's value (or, in a
                        # lane without it, the travelling product) leaves on port 0
                        p = min(routed, key=lambda r: r.src % 2).port
                        chars.append("=" if p == 0 else "x")
                        continue
                    p, src = routed[0]
                    side = self._side_of(j, i, src)
                    chars.append("=" if side == p else "x")
                row.append("".join(chars))
            result.append(row)
        return result

    def _side_of(self, stage: int, switch: int, flat: int) -> int:
        sw = flat // 4
        return _bit(sw, stage - 1)

    def counts(self) -> dict[str, int]:
        """How many switch lanes pass, swap, merge or idle in this configuration."""
        c = {"=": 0, "x": 0, "m": 0, ".": 0}
        for stage in self.ops():
            for pair in stage:
                for ch in pair:
                    c[ch] += 1
        return {"pass": c["="], "swap": c["x"], "merge": c["m"], "idle": c["."]}


def configure(n: int, pairs: Iterable, ub: int = 8) -> ReconConfig:
    """Switch settings for a row of ``n`` columns holding ``n // ub`` micro-blocks.

    ``pairs``: the row's outliers as :class:`OutlierPair` or ``(upper, lower[, sign])`` tuples
    with *global* columns (see :func:`pairs_from_perm` for the per-micro-block list form).
    """
    net = _network(n)
    plist = tuple(p if isinstance(p, OutlierPair) else OutlierPair(*(int(v) for v in p))
                  for p in pairs)
    _check_pairs(net.n, ub, plist)
    kind = np.zeros(net.n, dtype=np.int8)
    sign = np.zeros(net.n, dtype=np.int64)
    for p in plist:
        kind[p.upper], kind[p.lower] = UPPER, LOWER
        sign[p.upper] = p.sign
    tables = [t.copy() for t in net._straight_tables()]
    lanes = [MAIN] * len(plist)
    blocks: dict[int, list[int]] = {}
    for idx, p in enumerate(plist):
        blocks.setdefault(p.upper // ub, []).append(idx)
    for b, members in blocks.items():
        base = b * ub
        local = tuple((plist[i].upper - base, plist[i].lower - base) for i in members)
        for i, (trip, lane) in zip(members, _route_block(local)):
            lanes[i] = lane
            _add_travel(net, tables, trip, lane, base)
    for t in tables:
        t.setflags(write=False)
    return ReconConfig(net, ub, plist, kind, sign, tuple(lanes), tuple(tables))


def _add_travel(net: ReconNetwork, tables: list[np.ndarray], trip: _Travel, lane: int,
                base: int) -> None:
    """Write one Lower's trip (micro-block offset ``base``) into the gather tables."""
    lower, upper = trip.lower + base, trip.upper + base
    for j, sw, port in trip.wires:
        sw += base
        if j == 0:
            src = 2 * lower + 1                      # the column's product field
        else:
            src = net.flat_source(j, sw, _bit(lower, j - 1), lane)
        out = 4 * sw + 2 * port + lane
        if tables[j][out, ROUTED] != net.input_size(j):
            raise RoutingError(f"link (stage {j}, switch {sw}, port {port}, lane {lane}) "
                               f"is already used")
        tables[j][out, ROUTED] = src
    j = trip.merge_stage
    h = j - 1
    src = net.flat_source(j, upper, _bit(lower, h), lane)
    out = 4 * upper + 2 * net.straight_port(j, upper) + MAIN
    if tables[j][out, MERGED] != net.input_size(j):
        raise RoutingError(f"two merges in switch {upper} of stage {j}")
    tables[j][out, MERGED] = src


def pairs_from_perm(perm, signs=None, micro: int = 8) -> list[OutlierPair]:
    """Global pairs from a row's permutation lists.

    ``perm``: ``[n_blocks, micro//2, 2]`` local ``(upper_loc, lower_loc)`` entries (negative =
    unused), as in :class:`sim.numerics.mx.MXWeights` for one ``k``; ``signs`` the matching
    ``+1/-1`` (default +1).
    """
    perm = np.asarray(perm)
    out = []
    for b in range(perm.shape[0]):
        for j in range(perm.shape[1]):
            u, l = int(perm[b, j, UPPER_LOC]), int(perm[b, j, LOWER_LOC])
            if u < 0:
                continue
            s = 1 if signs is None else int(np.asarray(signs)[b, j])
            out.append(OutlierPair(b * micro + u, b * micro + l, s))
    return out


# ---------------------------------------------------------------------------------------------
# Timing (closed form over request events)
# ---------------------------------------------------------------------------------------------

def recon_depth(cols: int) -> int:
    """ReCoN stages for ``cols`` columns: ``ceil(log2 cols) + 1``."""
    return (int(cols) - 1).bit_length() + 1


def recon_row_latency(cols: int) -> int:
    """Cycles an outlier row adds to every partial sum: sync de-skew ``cols - 1`` + depth."""
    return (cols - 1) + recon_depth(cols)


@dataclass(frozen=True)
class ReconTiming:
    """What ReCoN costs one weight-stationary fold (see the module docstring)."""

    extra_cycles: int      # cycles beyond the plain array model (latency + stalls)
    accesses: int          # row vectors through ReCoN (outlier rows x T)
    conflicts: int         # row vectors not granted in their first request cycle
    stall_cycles: int      # cycles the whole array was frozen
    depth: int             # ReCoN stages
    sync_cycles: int       # sync-buffer de-skew, C - 1
    row_latency: int       # sync_cycles + depth, added per outlier row
    outlier_rows: int
    units: int


def _check_int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ConfigError(f"an integer >= {lo}", key=f"recon.{name}", got=repr(v))
    return int(v)


def validate_shape(T, rows, cols, units) -> tuple[int, int, int, int]:
    """``(T, rows, cols, units)`` as ints: T, rows, cols >= 1 and units dividing rows."""
    T = _check_int("T", T, 1)
    rows = _check_int("rows", rows, 1)
    cols = _check_int("cols", cols, 1)
    units = _check_int("units", units, 1)
    if rows % units:
        raise ConfigError(f"a number of ReCoN units that divides the {rows} array rows",
                          key="recon.units", got=repr(units))
    return T, rows, cols, units


def _validate_fold(T, outlier_rows, rows, cols, units) -> tuple[int, np.ndarray, int, int, int]:
    T, rows, cols, units = validate_shape(T, rows, cols, units)
    o = np.asarray(list(outlier_rows) if not isinstance(outlier_rows, np.ndarray)
                   else outlier_rows)
    if o.size and (o.ndim != 1 or not np.issubdtype(o.dtype, np.integer)):
        raise ConfigError("a 1-D list of row indices", key="recon.outlier_rows",
                          got=repr(outlier_rows))
    o = np.unique(o.astype(np.int64))
    if o.size and (o[0] < 0 or o[-1] >= rows):
        raise ConfigError(f"row indices in [0, {rows})", key="recon.outlier_rows",
                          got=repr(o.tolist()))
    return T, o, rows, cols, units


def recon_fold_cycles(T: int, outlier_rows, rows: int, cols: int, units: int = 1) -> ReconTiming:
    """Extra cycles, accesses, conflicts and stalls of one WS fold (closed form, no stepping):
    a stream of one fold, :func:`sim.hw.recon_stream.recon_stream_cycles`.

    Row ``k`` (the ``r``-th outlier row from the top) completes row vectors for elements
    ``0..T-1`` at cycles ``b_k + t`` with ``b_k = k + r * delta`` (up to a common offset); each
    cycle in which unit ``g`` sees ``N_g`` requests costs ``max_g (N_g - 1)`` stall cycles and
    ``sum_g (N_g - 1)`` waiting requests; the fold's outputs leave ``m * delta`` later.
    """
    from .recon_stream import recon_stream_cycles    # it builds on this module's helpers
    T, o, rows, cols, units = _validate_fold(T, outlier_rows, rows, cols, units)
    s = recon_stream_cycles(T, [o], rows, cols, units, issue=[0])
    return ReconTiming(s.extra_cycles, s.accesses, s.conflicts, s.stall_cycles, s.depth,
                       cols - 1, s.row_latency, int(o.size), units)


# ---------------------------------------------------------------------------------------------
# Functional GEMM through PE products and ReCoN merges
# ---------------------------------------------------------------------------------------------

def functional_gemm(A_int, mx, *, cols: int = 64) -> np.ndarray:
    """``A_int @ W`` computed the way the MicroScopiQ array does it; float64 ``[M, N]``.

    Weight-stationary, one PE row per input feature ``k``: row ``k`` multiplies ``A[:, k]``
    by the slot integers ``q[k, :]`` (a pruned slot multiplies its Lower half like any other
    weight). Each ``cols``-wide tile of a row whose micro-blocks carry outliers sends its
    products and incoming partial sums through a :class:`ReconConfig` configured from the
    tile's permutation lists; other tiles accumulate in the PEs. Partial sums live in one
    fixed-point frame ``2**F`` (``F`` the smallest scale exponent of the matrix): an inlier
    product is shifted left by ``inlier_exp - F``, an outlier's operands by
    ``outlier_exp - 2(bb-1) - F`` before they meet (exact power-of-two alignment; the merge
    uses ``acc_shift=0``). Every weight slot is one ReCoN column (at bb = 2 a PE holds two).
    """
    A = np.asarray(A_int)
    if A.ndim != 2 or not np.issubdtype(A.dtype, np.integer):
        raise ValueError(f"A_int must be an integer matrix [M, K], got {A.dtype} {A.shape}")
    q = np.asarray(mx.q).astype(np.int64)
    K, N = q.shape
    if A.shape[1] != K:
        raise ValueError(f"A_int has {A.shape[1]} columns, the weights {K} rows")
    bb, micro, macro = int(mx.bb), int(mx.micro), int(mx.macro)
    if not _is_pow2(cols) or cols < micro or cols % micro:
        raise ConfigError(f"a power of two that is a multiple of micro ({micro})",
                          key="recon.cols", got=repr(cols))
    m_bits = 2 * (bb - 1)
    col_exp = np.repeat(mx.inlier_exp.astype(np.int64), macro, axis=1)       # [K, N]
    valid = mx.perm[..., UPPER_LOC] >= 0                                    # [K, nub, cap]
    out_exp = np.where(valid, mx.outlier_exp.astype(np.int64) - m_bits, 0)
    F = int(min(col_exp.min(), out_exp[valid].min() if valid.any() else col_exp.min()))
    span = int(max(col_exp.max(), out_exp.max() if valid.any() else F)) - F
    amax = int(np.abs(A).max()) if A.size else 0
    # |row term| <= amax * 2**(m_bits + 2) * 2**span; K rows of them must fit in int64
    bits = amax.bit_length() + m_bits + 2 + span + max(1, K).bit_length()
    dtype = np.int64 if bits < 62 else object
    A = A.astype(np.int64).astype(dtype)
    ntile = -(-N // cols)
    Np = ntile * cols
    psum = np.zeros((A.shape[0], Np), dtype=dtype)
    ub_per_tile = cols // micro
    for k in range(K):
        a = A[:, k]
        res = np.zeros((A.shape[0], Np), dtype=dtype)
        res[:, :N] = a[:, None] * q[k].astype(dtype)[None, :]
        shift = np.zeros(Np, dtype=np.int64)
        shift[:N] = col_exp[k] - F
        has = np.zeros(ntile * ub_per_tile, dtype=bool)
        has[:N // micro] = mx.has_outlier[k]
        tile_has = has.reshape(ntile, ub_per_tile).any(axis=1)
        for tile in range(ntile):
            sl = slice(tile * cols, (tile + 1) * cols)
            sh = shift[sl].copy()
            if not tile_has[tile]:
                psum[:, sl] += _lshift(res[:, sl], sh)        # plain PE accumulate
                continue
            pairs = []
            for b in range(ub_per_tile):
                ub_idx = tile * ub_per_tile + b
                if ub_idx >= N // micro:
                    break
                for j in np.nonzero(valid[k, ub_idx])[0]:
                    up = b * micro + int(mx.perm[k, ub_idx, j, UPPER_LOC])
                    lo = b * micro + int(mx.perm[k, ub_idx, j, LOWER_LOC])
                    pairs.append(OutlierPair(up, lo, int(mx.outlier_sign[k, ub_idx, j])))
                    d = int(out_exp[k, ub_idx, j]) - F
                    sh[up] = sh[lo] = d                       # the outlier's frame
            cfg = configure(cols, pairs, ub=micro)
            iact = _lshift(np.broadcast_to(a[:, None], (a.shape[0], cols)).astype(dtype), sh)
            psum[:, sl] = cfg.evaluate(_lshift(res[:, sl], sh), psum[:, sl], iact, bb=bb,
                                       acc_shift=0)
    out = psum[:, :N]
    if dtype is object:
        return np.vectorize(lambda v: math.ldexp(float(v), F), otypes=[np.float64])(out)
    return np.ldexp(out.astype(np.float64), F)


def _lshift(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``x << shift`` column-wise (shift >= 0), for int64 and object arrays."""
    if x.dtype == object:
        return x * np.array([1 << int(s) for s in shift], dtype=object)
    return x << shift
