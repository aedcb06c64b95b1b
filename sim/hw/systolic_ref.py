"""Register-level, cycle-stepped reference of the multi-precision systolic PE array.

This is the slow twin of the fast timing model. It is written independently of that model (it
does not import it): every register of every PE is held in numpy arrays and stepped one clock at
a time, the controllers decide when to load and when to stream by looking at the state of the
machine (what is in flight, which bank rows are still needed, which bus slots are taken), and
the datapath really computes the GEMM. Cycle counts that match the closed forms are therefore a
consequence of the hardware, not a copy of the formulas. Use it on small shapes only.

The machine
-----------
``O[M,N] = A[M,K] @ W[K,N]`` on ``R x C`` physical PEs. ``macs_per_cycle`` m gives either
``p = m`` lanes per PE (m >= 1) or ``q = 1/m`` physical PEs of a row fused into one logical PE
(m < 1); the array then has ``CL = C // q`` logical columns. Mapping (rows hold / columns hold /
stream length T): WS K / N (p consecutive n per PE) / M; OS M / N (p consecutive n) / K;
IS K / M / ceil(N/p) (p weights per element). Folds: column fold outer, row fold inner; the
output buffer accumulates across row folds.

Clocking convention: the arrays below hold each register's content *during* a cycle; a cycle
computes from them and the updates land at the end of the cycle (shift right / shift down,
bank writes, accumulator updates). An element issued by a controller in cycle x is in the edge
register of row 0 (or column 0) in that same cycle. Output-buffer writes happen in the cycle the
value reaches the buffer's write port; ``cycles`` = index of the last write + 1.

Skew registers: row k of the streamed operand passes through k delay registers before PE column
0 (and, for OS, column j of the weights through j registers before PE row 0). They are stored
as extra columns (rows) in front of the PE registers: an element for row k is inserted at
position ``R - k`` and shifts along with everything else.

Decisions where the written spec leaves room (the fast model must make the same ones)
------------------------------------------------------------------------------------
1. Bank rewrite (WS/IS): the loader writes bank b row k at the end of a cycle only if no
   streamed element that reads bank b in row k is present in that row in that cycle or still to
   come. An element read in the same cycle therefore blocks the write although a flip-flop could
   take it (read-before-write); this is the spec's ``l_f >= s_{f-2} + T + CL - 1`` bound.
2. Streamed elements always traverse all CL logical columns (and partial sums all R rows), even
   when the fold uses fewer; unused PEs hold zeros (WS/IS) or see no valid operand (OS).
3. Fusion: a logical PE is q physical PEs of one row. The activation reaches all q in the same
   cycle, each multiplies its own weight slice (low slices unsigned, top slice signed, each
   ceil(wbits/q) bits) and the slice products are shifted and summed in the same cycle, so
   fusion adds no latency and data moves one *logical* column per cycle. For IS the stationary
   activation is replicated in the q physical PEs and the streamed weights are sliced.
   Physical columns beyond CL*q stay idle.
4. OS: a PE's p accumulators leave on its column's output bus together (the bus is p lanes wide).
   The next fold's first MAC may happen in the cycle the bus reads the finished accumulator
   (read-before-write), so accumulator reuse needs T cycles between fold starts and the bus
   needs r_f (the controller checks both: PE(0,0) finished, and a bus reservation table).
5. Accounting: ``macs`` counts logical MACs on real (non-padding) operands and lanes, so it is
   M*K*N; ``writes`` counts output elements written (p per OS bus transfer with p lanes);
   ``busy_pe_cycles`` counts physical PEs doing at least one useful MAC in a cycle (all q PEs of
   a busy fused logical PE are busy).
6. Taken from the spec as written (listed because a faster machine is conceivable): a fold's
   stream starts only once its whole tile is in the bank (s_f >= l_f + R), not row by row; the
   loader writes rows strictly one per cycle in order 0..R-1 and starts the next tile only after
   the previous one (l_f >= l_{f-1} + R); a WS/IS partial sum is written to the buffer in the
   cycle of the bottom PE's MAC (no extra output register stage); an OS result drives the bus
   the cycle after the PE's last MAC.

Self-checks: the datapath verifies that operands belong together: a WS/IS PE's bank row holds
the tile of the fold its streamed element belongs to; an OS PE's activation and weight are the
same element, its accumulator sees k = 0, 1, ... T-1 in order and was drained before reuse, and
at most one result drives a column bus per cycle, in a slot the controller reserved. A
controller that broke the hardware's rules raises :class:`DatapathHazard`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DATAFLOWS = ("ws", "os", "is")


class DatapathHazard(RuntimeError):
    """The simulated datapath saw operands that do not belong together (a controller bug)."""


@dataclass
class RefResult:
    cycles: int            # index of the last output-buffer write + 1 (convention "strata")
    output: np.ndarray     # int64 M x N, what the simulated datapath wrote to the output buffer
    macs: int              # useful MACs performed (real operands and lanes; equals M*K*N)
    writes: int            # output-buffer writes (one per output element written)
    busy_pe_cycles: int    # sum over cycles of physical PEs doing a useful MAC


# ---------------------------------------------------------------------------------------------
# Shared pieces: PE mode, weight slicing, padded operands
# ---------------------------------------------------------------------------------------------

def _lanes_and_fusion(macs_per_cycle: float) -> tuple[int, int]:
    m = float(macs_per_cycle)
    if not m > 0:
        raise ValueError(f"macs_per_cycle must be > 0, got {macs_per_cycle!r}")
    if m >= 1:
        p = round(m)
        if abs(p - m) > 1e-9:
            raise ValueError(f"macs_per_cycle >= 1 must be an integer, got {macs_per_cycle!r}")
        return p, 1
    q = round(1.0 / m)
    if abs(q * m - 1.0) > 1e-9:
        raise ValueError(f"macs_per_cycle < 1 must be 1/integer, got {macs_per_cycle!r}")
    return 1, q


def split_weight(w: np.ndarray, fusion: int, slice_bits: int) -> np.ndarray:
    """Bit slices of two's-complement weights, shape ``w.shape + (fusion,)``.

    Slice s holds bits ``[s*slice_bits, (s+1)*slice_bits)``; the lower slices are unsigned, the
    top slice is signed (it carries the sign), so ``sum_s slice_s << (s*slice_bits) == w``.
    """
    w = np.asarray(w, dtype=np.int64)
    out = np.empty(w.shape + (fusion,), dtype=np.int64)
    low_mask = (1 << slice_bits) - 1
    for s in range(fusion - 1):
        out[..., s] = (w >> (s * slice_bits)) & low_mask
    out[..., fusion - 1] = w >> ((fusion - 1) * slice_bits)
    return out


def _padded(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """x zero-padded at the high end of every axis to `shape`."""
    out = np.zeros(shape + x.shape[len(shape):], dtype=x.dtype)
    out[tuple(slice(0, n) for n in x.shape[:len(shape)])] = x
    return out


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class _Array:
    """What every dataflow shares: geometry, operands, output buffer and the counters."""

    def __init__(self, A: np.ndarray, W: np.ndarray, rows: int, cols: int,
                 macs_per_cycle: float, wbits: int):
        self.R = rows
        self.p, self.q = _lanes_and_fusion(macs_per_cycle)
        self.CL = cols // self.q
        if self.CL < 1:
            raise ValueError(f"a {self.q}-way fused PE needs >= {self.q} columns, array has {cols}")
        self.slice_bits = _ceil_div(wbits, self.q)
        # shift applied to each physical PE's slice product before the logical PE sums them
        self.slice_shift = np.arange(self.q, dtype=np.int64) * self.slice_bits
        self.A = A
        self.W = W
        self.M, self.K = A.shape
        self.N = W.shape[1]
        # output buffer, flat, plus one discard slot that padding lanes are addressed to (their
        # write enable is off: they are neither stored nor counted)
        self.discard = self.M * self.N
        self.out = np.zeros(self.discard + 1, dtype=np.int64)
        self.macs = 0
        self.writes = 0
        self.busy_pe_cycles = 0
        self.last_write = -1

    def address(self, m: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Output-buffer address of O[m, n]; the discard slot where (m, n) is padding."""
        return np.where((m < self.M) & (n < self.N), m * self.N + n, self.discard)

    def fused_product(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-lane products of a logical PE: slice products (last axis) shifted and summed."""
        if self.q == 1:
            return (x * y)[..., 0]
        return np.left_shift(x * y, self.slice_shift).sum(axis=-1)

    def count_useful(self, useful: np.ndarray) -> None:
        """useful: (R, CL, p) lanes doing a MAC on real operands this cycle."""
        n = int(np.count_nonzero(useful))
        self.macs += n
        if self.p > 1:
            n = int(np.count_nonzero(useful.any(axis=-1)))
        self.busy_pe_cycles += self.q * n

    def write_outputs(self, cycle: int, addr: np.ndarray, values: np.ndarray) -> None:
        """Output-buffer write port: accumulate values at addresses (distinct, except discard)."""
        n = int(np.count_nonzero(addr != self.discard))
        if n:
            self.out[addr] += values
            self.writes += n
            self.last_write = cycle

    def run(self) -> RefResult:
        limit = self.cycle_limit()
        cycle = 0
        while not self.finished():
            if cycle >= limit:
                raise RuntimeError(f"systolic reference did not finish in {limit} cycles")
            self.step(cycle)
            cycle += 1
        output = self.out[:self.discard].reshape(self.M, self.N)
        return RefResult(cycles=self.last_write + 1, output=output, macs=self.macs,
                         writes=self.writes, busy_pe_cycles=self.busy_pe_cycles)

    def cycle_limit(self) -> int:
        """Deadlock guard, far above any schedule the controllers can produce."""
        return 4 * (self.nf + 2) * (self.T + 2 * self.R + self.CL + 2)

    # subclasses
    def step(self, cycle: int) -> None:
        raise NotImplementedError

    def finished(self) -> bool:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# WS and IS: stationary operand in two banks per PE, streamed operand moving right,
# partial sums moving down.
# ---------------------------------------------------------------------------------------------

class _StationaryArray(_Array):
    def __init__(self, A, W, rows, cols, dataflow, macs_per_cycle, wbits):
        super().__init__(A, W, rows, cols, macs_per_cycle, wbits)
        R, CL, p, q = self.R, self.CL, self.p, self.q
        self.ws = dataflow == "ws"
        self.T = self.M if self.ws else _ceil_div(self.N, p)
        self.FR = _ceil_div(self.K, R)
        self.col_cap = CL * p if self.ws else CL
        self.FC = _ceil_div(self.N if self.ws else self.M, self.col_cap)
        self.nf = self.FR * self.FC
        self._prepare_operands()

        # stationary banks, 2 per PE, stored flat as [bank * R*CL + row * CL + col]: WS holds
        # p lanes x q slices of weights, IS one activation (the same in all q fused PEs)
        stat_shape = (p, q) if self.ws else (1, 1)
        strm_shape = (1, 1) if self.ws else (p, q)
        self.bank_val = np.zeros((2 * R * CL,) + stat_shape, dtype=np.int64)
        self.bank_real = np.zeros((2 * R * CL, stat_shape[0]), dtype=bool)
        self.bank_fold = np.full(2 * R * CL, -1, dtype=np.int64)  # fold whose tile it holds
        self.pe_index = np.arange(R * CL).reshape(R, CL)
        self.all_rows = np.arange(R)
        # streamed-operand registers: skew registers (positions 0..R-1) then PE columns (R..)
        width = R + CL
        self.s_id = np.full((R, width), -1, dtype=np.int64)    # element id f*T + t, -1 = empty
        self.s_bank = np.zeros((R, width), dtype=np.int64)     # bank id travels with the data
        self.s_val = np.zeros((R, width) + strm_shape, dtype=np.int64)
        self.s_real = np.zeros((R, width, strm_shape[0]), dtype=bool)
        self.skew_entry = (np.arange(R), R - np.arange(R))     # row k enters at position R - k
        # partial-sum registers entering each PE from above (row 0's entry stays empty: zero);
        # a psum moves down as its element moves right, so the element's id labels it too
        self.psum = np.zeros((R, CL, p), dtype=np.int64)

        # controller state
        # outstanding[b, k]: passes of streamed elements through row k that read bank b and are
        # still to come or in progress (committed when a tile finishes loading, retired as
        # elements leave the row's last column)
        self.outstanding = np.zeros((2, R), dtype=np.int64)
        self.load_fold = 0          # fold the loader is writing
        self.load_row = 0           # next row it writes
        self.loaded = np.zeros(self.nf, dtype=bool)
        self.stream_fold = 0        # next fold to stream
        self.stream_t = -1          # next element of the fold being streamed, -1 = idle
        self.in_flight = 0          # (element, row) pairs in the skew and PE registers

    def _prepare_operands(self) -> None:
        """Zero-padded tiles as the loader and the stream source read them from the buffers,
        and the output address of every (element, column, lane) leaving the bottom row."""
        R, CL, p, q, T = self.R, self.CL, self.p, self.q, self.T
        FR, FC = self.FR, self.FC
        Kp = FR * R
        ft = np.arange(self.nf * T)
        fold, t = ft // T, ft % T
        cf = (fold // FR)[:, None, None]
        c = np.arange(CL)[None, :, None]
        lane = np.arange(p)[None, None, :]
        if self.ws:
            Np = FC * CL * p
            w = _padded(split_weight(self.W, q, self.slice_bits), (Kp, Np))
            w_real = _padded(np.ones(self.W.shape, bool), (Kp, Np))
            a = _padded(self.A, (T, Kp))
            a_real = _padded(np.ones(self.A.shape, bool), (T, Kp))
            # tile[rf, cf] -> (R, CL, p, q) weight slices; stream[rf, t] -> (R, 1, 1) activations
            self.tile_val = w.reshape(FR, R, FC, CL, p, q).transpose(0, 2, 1, 3, 4, 5)
            self.tile_real = w_real.reshape(FR, R, FC, CL, p).transpose(0, 2, 1, 3, 4)
            self.strm_val = a.reshape(T, FR, R).transpose(1, 0, 2)[..., None, None]
            self.strm_real = a_real.reshape(T, FR, R).transpose(1, 0, 2)[..., None]
            # psum of element t in column c, lane l is O[t, cf*CL*p + c*p + l]
            addr = self.address(t[:, None, None], cf * self.col_cap + c * p + lane)
        else:
            Mp = FC * CL
            Np = T * p
            a = _padded(self.A, (Mp, Kp))
            a_real = _padded(np.ones(self.A.shape, bool), (Mp, Kp))
            w = _padded(split_weight(self.W, q, self.slice_bits), (Kp, Np))
            w_real = _padded(np.ones(self.W.shape, bool), (Kp, Np))
            # tile[rf, cf] -> (R, CL, 1, 1) holding A[cf*CL + c, rf*R + k]
            self.tile_val = a.reshape(FC, CL, FR, R).transpose(2, 0, 3, 1)[..., None, None]
            self.tile_real = a_real.reshape(FC, CL, FR, R).transpose(2, 0, 3, 1)[..., None]
            # stream[rf, t] -> (R, p, q) holding slices of W[rf*R + k, t*p + l]
            self.strm_val = w.reshape(FR, R, T, p, q).transpose(0, 2, 1, 3, 4)
            self.strm_real = w_real.reshape(FR, R, T, p).transpose(0, 2, 1, 3)
            # psum of element t in column c, lane l is O[cf*CL + c, t*p + l]
            addr = self.address(cf * CL + c, t[:, None, None] * p + lane)
        # one extra entry for element id -1 (empty register): everything to the discard slot
        self.out_addr = np.concatenate(
            [np.broadcast_to(addr, (self.nf * T, CL, p)),
             np.full((1, CL, p), self.discard)])

    def finished(self) -> bool:
        # partial sums travel with their elements, so no element in flight = no psum in flight
        return self.stream_fold == self.nf and self.stream_t < 0 and self.in_flight == 0

    # --- controllers ---------------------------------------------------------------------------

    def row_is_free(self, bank: int, row: int) -> bool:
        """No streamed element that reads this bank row is in the row now or still to come."""
        return self.outstanding[bank, row] == 0

    def loader_decision(self):
        """(fold, row) the loader writes at the end of this cycle, or None (stalled / done)."""
        if self.load_fold >= self.nf:
            return None
        if not self.row_is_free(self.load_fold % 2, self.load_row):
            return None
        return self.load_fold, self.load_row

    def issue_stream(self) -> None:
        """Stream source: start a fold once its tile is loaded and the previous fold is issued."""
        if self.stream_t < 0 and self.stream_fold < self.nf and self.loaded[self.stream_fold]:
            self.stream_t = 0
        if self.stream_t < 0:
            return
        f, t = self.stream_fold, self.stream_t
        rf = f % self.FR
        entry = self.skew_entry
        self.s_id[entry] = f * self.T + t
        self.s_bank[entry] = f % 2
        self.s_val[entry] = self.strm_val[rf, t]
        self.s_real[entry] = self.strm_real[rf, t]
        self.in_flight += self.R
        self.stream_t += 1
        if self.stream_t == self.T:
            self.stream_t = -1
            self.stream_fold += 1

    # --- one clock -----------------------------------------------------------------------------

    def step(self, cycle: int) -> None:
        load = self.loader_decision()          # decided on the state at the start of the cycle
        self.issue_stream()
        if self.in_flight:
            self._clock_datapath(cycle)
        if load is not None:                   # end of cycle: the bank row takes the tile row
            self._write_bank_row(*load)

    def _clock_datapath(self, cycle: int) -> None:
        R, CL, T = self.R, self.CL, self.T
        # every PE reads its streamed register, its stationary bank and the psum from above
        sid = self.s_id[:, R:]
        valid = sid >= 0
        bank = self.s_bank[:, R:]
        slot = bank * (R * CL) + self.pe_index
        if ((self.bank_fold[slot] != sid // T) & valid).any():
            raise DatapathHazard("a PE read a bank row that holds another fold's tile")
        psum_out = self.psum + self.fused_product(self.bank_val[slot], self.s_val[:, R:])
        # s_real is False in empty registers, so it also says "an element is here"
        self.count_useful(self.s_real[:, R:] & self.bank_real[slot])
        # the bottom row's partial sums go to the output buffer (accumulating over row folds)
        self.write_outputs(cycle, self.out_addr[sid[R - 1], self.pe_index[0]], psum_out[R - 1])
        # elements in the last column leave their row: retire their use of the bank there
        leaving = valid[:, CL - 1]
        self.outstanding[bank[:, CL - 1], self.all_rows] -= leaving
        self.in_flight -= int(np.count_nonzero(leaving))

        # end of cycle: psums move down, streamed operands (and skew registers) move right.
        # Position 0 is never an entry point (row k enters at R - k >= 1), so it stays empty and
        # shifting it in empties the registers behind the data.
        self.psum[1:] = psum_out[:-1]
        for reg in (self.s_id, self.s_bank, self.s_val, self.s_real):
            reg[:, 1:] = reg[:, :-1]

    def _write_bank_row(self, fold: int, row: int) -> None:
        R, CL = self.R, self.CL
        bank = fold % 2
        rf, cf = fold % self.FR, fold // self.FR
        first = bank * R * CL + row * CL
        self.bank_val[first:first + CL] = self.tile_val[rf, cf, row]
        self.bank_real[first:first + CL] = self.tile_real[rf, cf, row]
        self.bank_fold[first:first + CL] = fold
        self.load_row += 1
        if self.load_row == R:                # tile complete: its stream may start next cycle
            self.loaded[fold] = True
            self.outstanding[bank] += self.T
            self.load_fold += 1
            self.load_row = 0


# ---------------------------------------------------------------------------------------------
# OS: accumulators in place, activations moving right, weights moving down, a result bus per
# column.
# ---------------------------------------------------------------------------------------------

class _OutputStationaryArray(_Array):
    def __init__(self, A, W, rows, cols, macs_per_cycle, wbits):
        super().__init__(A, W, rows, cols, macs_per_cycle, wbits)
        R, CL, p, q = self.R, self.CL, self.p, self.q
        self.T = self.K
        self.FR = _ceil_div(self.M, R)
        self.col_cap = CL * p
        self.FC = _ceil_div(self.N, self.col_cap)
        self.nf = self.FR * self.FC
        Np = self.FC * self.col_cap
        self.a_src = _padded(self.A, (self.FR * R, self.K))
        self.w_src = _padded(split_weight(self.W, q, self.slice_bits),
                             (self.K, Np)).reshape(self.K, self.FC, CL, p, q)
        self.w_src_real = _padded(np.ones(self.W.shape, bool),
                                  (self.K, Np)).reshape(self.K, self.FC, CL, p)
        # output address of accumulator (fold, row i, column j, lane l)
        fold = np.arange(self.nf)[:, None, None, None]
        i = np.arange(R)[None, :, None, None]
        n = np.arange(self.col_cap).reshape(1, 1, CL, p)
        self.out_addr = self.address((fold % self.FR) * R + i, (fold // self.FR) * self.col_cap + n)

        # activations: row skew registers (0..R-1) then PE columns (R..R+CL-1), moving right
        self.a_id = np.full((R, R + CL), -1, dtype=np.int64)
        self.a_val = np.zeros((R, R + CL), dtype=np.int64)
        # weights: column skew registers (0..CL-1) then PE rows (CL..CL+R-1), moving down
        self.w_id = np.full((CL + R, CL), -1, dtype=np.int64)
        self.w_val = np.zeros((CL + R, CL, p, q), dtype=np.int64)
        self.w_real = np.zeros((CL + R, CL, p), dtype=bool)
        # accumulators and their bookkeeping
        self.acc = np.zeros((R, CL, p), dtype=np.int64)
        self.acc_last = np.full((R, CL), -1, dtype=np.int64)  # id of the last element added,
        #                                                       -1 once drained (free)
        self.drain = np.zeros((R, CL), dtype=bool)            # result goes on the bus this cycle

        # controller state
        self.fold = 0           # next fold to start
        self.k = -1             # next element of the fold being streamed, -1 = idle
        self.bus_reserved = [set() for _ in range(CL)]     # cycles each column bus is promised
        self.in_flight = 0      # operand entries (activation rows + weight columns) in registers
        self.results_waiting = 0  # accumulators whose result goes on the bus next cycle
        self.corner_folds_done = 0  # folds whose last MAC PE(0,0) has done

    def finished(self) -> bool:
        return (self.fold == self.nf and self.k < 0 and self.in_flight == 0
                and self.results_waiting == 0)

    def fold_extent(self, fold: int) -> tuple[int, int]:
        """(rows used, PE columns used) by a fold."""
        rf, cf = fold % self.FR, fold // self.FR
        r = min(self.R, self.M - rf * self.R)
        c = _ceil_div(min(self.col_cap, self.N - cf * self.col_cap), self.p)
        return r, c

    # --- controller ----------------------------------------------------------------------------

    def accumulators_free(self) -> bool:
        """PE(0,0) has done the previous folds' last MACs. Every fold uses PE(0,0) and reaches
        PE(i,j) i+j cycles after it, so this frees each accumulator just in time."""
        return self.corner_folds_done == self.fold

    def bus_slots(self, fold: int, start: int) -> list[tuple[int, range]]:
        """Bus cycles the fold's results would take if it started at `start`, per column."""
        r, c = self.fold_extent(fold)
        return [(j, range(start + j + self.T, start + j + self.T + r)) for j in range(c)]

    def bus_is_free(self, fold: int, start: int) -> bool:
        return all(self.bus_reserved[j].isdisjoint(cycles)
                   for j, cycles in self.bus_slots(fold, start))

    def issue(self, cycle: int) -> None:
        """Start the next fold when its accumulators and bus slots are free, then feed it."""
        if self.k < 0 and self.fold < self.nf and self.accumulators_free() \
                and self.bus_is_free(self.fold, cycle):
            for j, cycles in self.bus_slots(self.fold, cycle):
                self.bus_reserved[j].update(cycles)
            self.k = 0
        if self.k < 0:
            return
        f, k = self.fold, self.k
        rf, cf = f % self.FR, f // self.FR
        r, c = self.fold_extent(f)
        R, CL = self.R, self.CL
        rows, cols = np.arange(r), np.arange(c)
        e = f * self.T + k
        self.a_id[rows, R - rows] = e
        self.a_val[rows, R - rows] = self.a_src[rf * R + rows, k]
        self.w_id[CL - cols, cols] = e
        self.w_val[CL - cols, cols] = self.w_src[k, cf, :c]
        self.w_real[CL - cols, cols] = self.w_src_real[k, cf, :c]
        self.in_flight += r + c
        self.k += 1
        if self.k == self.T:
            self.k = -1
            self.fold += 1

    # --- one clock -----------------------------------------------------------------------------

    def step(self, cycle: int) -> None:
        self.issue(cycle)
        if self.results_waiting:         # column buses: finished accumulators to the buffer
            self._drive_buses(cycle)
        if self.in_flight:
            self._clock_datapath()

    def _clock_datapath(self) -> None:
        R, CL, T = self.R, self.CL, self.T
        a_id = self.a_id[:, R:]
        w_id = self.w_id[CL:]
        mac = (a_id >= 0) & (w_id >= 0)
        if mac.any():
            if ((a_id != w_id) & mac).any():
                raise DatapathHazard("activation and weight of different elements met in a PE")
            k = a_id % T
            # a free accumulator takes element 0 of a fold, a busy one the next element
            expected = np.where(self.acc_last < 0, k != 0, a_id != self.acc_last + 1)
            if (expected & mac).any():
                raise DatapathHazard("accumulator got an element out of order or before draining")
            # operands are zero where absent, so non-MAC PEs add zero
            prod = self.fused_product(self.a_val[:, R:, None, None], self.w_val[CL:])
            self.count_useful(mac[..., None] & self.w_real[CL:])
            # end of cycle: accumulators update (clear-and-load on a fold's first element)
            first = mac & (k == 0)
            self.acc = np.where(first[..., None], prod, self.acc + prod)
            self.acc_last = np.where(mac, a_id, self.acc_last)
            done = mac & (k == T - 1)
            if done.any():
                self.drain |= done
                self.results_waiting += int(np.count_nonzero(done))
                self.corner_folds_done += int(done[0, 0])

        # end of cycle: activations shift right, weights shift down (the last column/row leave).
        # Position 0 is never an entry point, so shifting it in empties the registers behind.
        self.in_flight -= int(np.count_nonzero(a_id[:, CL - 1] >= 0))
        self.in_flight -= int(np.count_nonzero(w_id[R - 1] >= 0))
        self.a_id[:, 1:] = self.a_id[:, :-1]
        self.a_val[:, 1:] = self.a_val[:, :-1]
        for reg in (self.w_id, self.w_val, self.w_real):
            reg[1:] = reg[:-1]

    def _drive_buses(self, cycle: int) -> None:
        rows, cols = np.nonzero(self.drain)
        if np.unique(cols).size != cols.size:
            raise DatapathHazard("two results on one column bus in the same cycle")
        for j in cols:
            if cycle not in self.bus_reserved[j]:
                raise DatapathHazard("a result used a column-bus cycle nobody reserved")
            self.bus_reserved[j].discard(cycle)
        addr = self.out_addr[self.acc_last[rows, cols] // self.T, rows, cols]
        self.write_outputs(cycle, addr, self.acc[rows, cols])
        self.drain[rows, cols] = False
        self.acc_last[rows, cols] = -1        # free for the next fold
        self.results_waiting -= rows.size


# ---------------------------------------------------------------------------------------------

def _check_inputs(A, W, rows, cols, dataflow, wbits) -> tuple[np.ndarray, np.ndarray]:
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {dataflow!r}")
    for name, v in (("rows", rows), ("cols", cols), ("wbits", wbits)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    A = np.asarray(A)
    W = np.asarray(W)
    if A.ndim != 2 or W.ndim != 2 or A.shape[1] != W.shape[0] or 0 in A.shape + W.shape:
        raise ValueError(f"need A (M x K) and W (K x N), got {A.shape} and {W.shape}")
    for name, x in (("A", A), ("W", W)):
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{name} must hold integers (quantized operands), got {x.dtype}")
    lo, hi = -(1 << (wbits - 1)), (1 << (wbits - 1)) - 1
    if W.min() < lo or W.max() > hi:
        raise ValueError(f"W does not fit in {wbits}-bit two's complement [{lo}, {hi}]")
    return A.astype(np.int64), W.astype(np.int64)


def simulate_array(A: np.ndarray, W: np.ndarray, rows: int, cols: int, dataflow: str,
                   macs_per_cycle: float = 1, wbits: int = 8) -> RefResult:
    """Step the array clock by clock on O = A @ W and report cycles, output and activity.

    A: M x K integer activations; W: K x N integer weights within ``wbits`` two's complement.
    """
    A, W = _check_inputs(A, W, rows, cols, dataflow, wbits)
    if dataflow == "os":
        array = _OutputStationaryArray(A, W, rows, cols, macs_per_cycle, wbits)
    else:
        array = _StationaryArray(A, W, rows, cols, dataflow, macs_per_cycle, wbits)
    return array.run()
