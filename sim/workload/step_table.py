"""Step-time tables: price ragged steps by interpolation in a grid built once per (arch, model).

A serving simulator asks for the time and energy of millions of scheduler steps; HERMES fits a
regression over profiled steps (prefill on past tokens, prefill tokens, batch and tokens²;
decode by a polynomial) and Vidur predicts each operator from a table of profiled shapes. A
:class:`StepTable` does the Vidur-like thing on Strata's own cycle-level results: operators run
one after another, so a step's cycles and energy are the **sum over its operators**, and the
operators fall into four groups whose cost depends on few numbers:

* token ops (embedding, norms, q/k/v/o projections, FFN, residual adds): the step's token
  count ``T`` only, one curve ``f_tok(T)``;
* head ops (final norm, ``lm_head``): the number of sequences ``S``, ``f_head(S)``;
* decode attention (Q·Kᵀ, softmax, P·V) of one sequence at context ``c``: ``f_dec(c)``;
* prefill attention of one chunk of ``n`` new tokens on ``p`` past tokens (causal query
  blocks included): ``f_pre(n, p)``.

A state-space model (``architecture: mamba``) has no attention groups; its state writes are
priced with the head ops (one per sequence) and its state reads by a curve over the resumed
sequences ``R`` (decodes, and chunks on a past context), probed with the token ops: a step is
``f_tok(T) + f_head(S) + f_load(R)``.

The table probes ``simulate_step`` (with the table's precision, causal and seed options) and
splits each probe's per-operator table into the groups. ``f_tok`` and ``f_head`` come from
probes of ``T`` decodes at context 0, ``f_dec`` from one decode at ``c``. Prefill attention is
cut the way the step cuts it, by causal query blocks of ``B`` queries (the arch's
``array.cols`` unless ``causal_block`` says otherwise; the whole chunk when ``causal=False``):
``f_pre(n, p) = sum over the full blocks j of g_B(p + (j+1) B) + g(r, p + n)``, with ``g_B(k)``
the cost of a full block on ``k`` keys (probed as a chunk of ``B`` tokens on ``k - B`` past)
and ``g(r, k)`` the last block of ``r <= B`` queries (a chunk of ``r`` tokens on ``k - r``).
The 1D curves (``f_tok``/``f_head``, ``f_dec``, ``g_B``) start from a geometric grid
(``points_per_octave`` nodes per doubling) and are refined where linear interpolation misses
a probed midpoint by more than ``tol`` of (value + the cost of the cheapest step), so jumps
(an operand that stops fitting in L2) end up between adjacent integers; ``g(r, k)`` is a
geometric grid in ``r`` times ``g_B``'s key nodes, interpolated bilinearly. A step is then
``f_tok(T) + f_head(S) + sum_i f_dec(c_i) + sum_j f_pre(n_j, p_j)``. On grid points the answer
is exact: a step's cycles and energy are the sum over its operators, and each group's operators
depend only on those numbers (sequences of equal shape share one softmax node in a real step,
which makes the sum approximate there).

Measured against direct ``simulate_step`` calls (``bench/step_speed.py``: quickstart arch,
llama-3-8b, default options and ranges, 200 random ragged steps of 0-4 prefill chunks of 1-2048
new tokens on 0-6144 past tokens and 0-64 decodes at contexts 0-8191, seed 1): cycles mean
0.078 %, max 0.56 %; energy mean 0.012 %, max 0.16 %; the build took 58 s (859 probes) on the
shared 2-core machine, an estimate ~0.1 ms. ``tests/test_step_table.py`` holds a coarser table
of a small model (``points_per_octave=1``, ``tol=0.01``) to a 3 % bound on random steps.

The table is a snapshot of the configs it was built from: changing the arch or model object
afterwards does not change it. Steps outside the table's ranges raise :class:`ConfigError`: the table never extrapolates.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from sim.config import ConfigError
from sim.config.errors import short_repr
from sim.workload.graph import ATTENTION_OPS, ragged_step

#: the per-sequence ops (priced by each sequence's own shape): Q·Kᵀ, softmax, P·V
SEQUENCE_OPS = (*ATTENTION_OPS, "softmax")
# a table value is a vector [cycles, energy of each component (pJ)...]: its parts
CYCLES = 0
ENERGY = slice(1, None)

WHERE = "<StepTable>"
HEAD_OPS = ("final_norm", "lm_head")
#: a state-space model's recurrent state: written for every sequence of a step (priced with
#: the head ops, by sequences) and read back for every resumed one (its own curve)
STATE_STORE_OPS = ("state_store",)
STATE_LOAD_OPS = ("state_load",)


@dataclass(frozen=True)
class StepEstimate:
    """Interpolated time and energy of one step (cycles are a float between grid points)."""

    cycles: float
    seconds: float
    energy_pj: Mapping[str, float]

    @property
    def energy_total_pj(self) -> float:
        return float(sum(self.energy_pj.values()))


def geometric_grid(lo: int, hi: int, per_octave: int) -> np.ndarray:
    """Integers lo..hi (lo >= 1): every integer up to ``per_octave``, then ``per_octave`` nodes
    per doubling (rounded), always ending at ``hi``."""
    nodes = set(range(lo, min(hi, per_octave) + 1))
    x = float(max(lo, per_octave))
    while x < hi:
        nodes.add(int(round(x)))
        x *= 2 ** (1 / per_octave)
    nodes.add(hi)
    return np.array(sorted(v for v in nodes if lo <= v <= hi), dtype=np.int64)


def _check_size(key: str, value, minimum: int) -> int:
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"an integer >= {minimum}", file=WHERE, key=key, got=short_repr(value))
    return int(value)


def table_ranges(max_pos: int, max_tokens, max_chunk, max_past, max_context, where: str,
                 any_past: bool = False) -> tuple[int, int, int, int]:
    """(max_tokens, max_chunk, max_past, max_context) checked against the model's
    ``max_position``. ``max_past`` defaults to ``max_position - max_chunk`` (a grid's range),
    or with ``any_past`` to ``max_position - 1`` (a chunk is then only held to new + past <=
    max_position); ``max_context`` to ``max_position - 1``."""
    max_tokens = _check_size("max_tokens", max_tokens, 1)
    chunk = _check_size("max_chunk", max_chunk, 1)
    if chunk > min(max_tokens, max_pos):
        raise ConfigError(f"max_chunk <= max_tokens ({max_tokens}) and <= the model's "
                          f"max_position ({max_pos})", file=where, key="max_chunk",
                          got=str(max_chunk))
    if max_past is None:
        past = max_pos - 1 if any_past else max_pos - chunk
    else:
        past = _check_size("max_past", max_past, 0)
        if past + chunk > max_pos:
            raise ConfigError(f"max_past + max_chunk <= the model's max_position ({max_pos})",
                              file=where, key="max_past", got=str(max_past))
    context = max_pos - 1 if max_context is None else _check_size("max_context", max_context, 0)
    if context + 1 > max_pos:
        raise ConfigError(f"max_context < the model's max_position ({max_pos})", file=where,
                          key="max_context", got=str(max_context))
    return max_tokens, chunk, past, context


class StepTable:
    """Time and energy of ragged steps of one model on one arch, interpolated from a grid.

    ``StepTable(arch, model, max_tokens=8192, max_chunk=2048, max_past=None, max_context=None,
    points_per_octave=4, precision=None, causal=True, causal_block=None, seed=0)``; arch and
    model take any form ``sim.simulate_step`` takes. ``max_past`` defaults to
    ``max_position - max_chunk``, ``max_context`` (largest decode context) to
    ``max_position - 1``. ``estimate(prefill=[(new, past), ...], decode=[context, ...])``
    returns a :class:`StepEstimate`; ``probes`` counts the ``simulate_step`` calls the build
    made. See the module docstring for the method and its measured error.
    """

    def __init__(self, arch, model, *, max_tokens: int = 8192, max_chunk: int = 2048,
                 max_past: int | None = None, max_context: int | None = None,
                 points_per_octave: int = 2, precision=None, causal: bool = True,
                 causal_block: int | None = None, seed: int = 0, tol: float = 0.005,
                 max_nodes: int = 400, simulate=None):
        from sim.config import load_model
        if simulate is None:     # the API's simulate_step (handed in: this layer is below it)
            raise ConfigError("a simulate_step function (use sim.step_table or sim.StepTable)",
                              file=WHERE, key="simulate", got="None")
        self._simulate = simulate
        self.options = dict(precision=precision, causal=causal, causal_block=causal_block,
                            seed=seed)
        self.arch, self.model = arch, model
        cfg = model if hasattr(model, "max_position") else load_model(model)
        max_pos = cfg.max_position
        # a state-space model has no attention: its steps depend on tokens, sequences and
        # resumed sequences only (see _build)
        self.ssm = cfg.architecture != "transformer"
        self.max_tokens, self.max_chunk, self.max_past, self.max_context = table_ranges(
            max_pos, max_tokens, max_chunk, max_past, max_context, WHERE)
        self.points_per_octave = _check_size("points_per_octave", points_per_octave, 1)
        self.max_nodes = _check_size("max_nodes", max_nodes, 2)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
            raise ConfigError("a tolerance in (0, 1)", file=WHERE, key="tol", got=short_repr(tol))
        self.tol = float(tol)
        self.probes = 0
        self.causal_block = None       # from the first probe with a prefill part
        self._build()
        # a built table is shared (sim.system.backends.shared_step_table): nothing a holder
        # does to its arrays may change what it answers for anyone else
        for v in vars(self).values():
            if isinstance(v, np.ndarray):
                v.flags.writeable = False

    # ------------------------------------------------------------------------- build ----
    def _probe(self, **step):
        self.probes += 1
        r = self._simulate(self.arch, self.model, **step, **self.options)
        if self.probes == 1:
            self.clock_seconds_per_cycle = r.seconds / r.cycles if r.cycles else 0.0
            self.precision = r.precision
        if step.get("prefill") and self.causal_block is None:
            self.causal_block = r.causal_block
        return r

    def _columns(self, frame):
        """[cycles, energy by component...] of the rows of a per-op frame."""
        return np.array([frame.cycles.sum(), *(frame[c].sum() for c in self._energy_cols)],
                        dtype=float)

    def _refine(self, probe, seeds, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A 1D grid over integers: the seed nodes, then interval midpoints wherever linear
        interpolation misses the probed midpoint by more than ``tol`` of (value + scale) in
        cycles or total energy (jumps, e.g. where an operand stops fitting in L2, end up
        between two adjacent integers). ``probe(x)`` -> array of columns (or a tuple)."""
        vals = {int(x): probe(int(x)) for x in seeds}
        todo = list(zip(sorted(vals)[:-1], sorted(vals)[1:]))
        while todo and len(vals) < self.max_nodes:
            a, b = todo.pop()
            if b - a < 2:
                continue
            m = (a + b) // 2
            vm = vals[m] = probe(m)
            w = (m - a) / (b - a)
            lin = (1 - w) * vals[a] + w * vals[b]
            va, vl = np.atleast_2d(vm), np.atleast_2d(lin)
            sc = np.atleast_2d(scale)
            err_c = np.abs(vl[:, CYCLES] - va[:, CYCLES]) / (va[:, CYCLES] + sc[:, CYCLES])
            err_e = np.abs(vl[:, ENERGY].sum(1) - va[:, ENERGY].sum(1)) / (
                va[:, ENERGY].sum(1) + sc[:, ENERGY].sum(1))
            if max(err_c.max(), err_e.max()) > self.tol:
                todo += [(a, m), (m, b)]
        xs = np.array(sorted(vals), dtype=np.int64)
        return xs, np.array([vals[x] for x in xs])

    def _build(self) -> None:
        first = self._probe(decode=[0])
        if self.options["causal"]:      # the query block a causal prefill is priced in
            self._probe(prefill=[(1, 0)])
        ops = first.ops
        self._energy_cols = [c for c in ops.columns
                             if c.startswith("energy_") and c.endswith("_pj") and c != "energy_pj"]
        self.components = tuple(c[len("energy_"):-len("_pj")] for c in self._energy_cols)
        is_seq = lambda f: f.op.isin(SEQUENCE_OPS)
        is_head = lambda f: f.op.isin(HEAD_OPS + STATE_STORE_OPS)
        is_load = lambda f: f.op.isin(STATE_LOAD_OPS)
        scale = self._columns(ops)           # the cheapest step: errors are judged against it
        k = self.points_per_octave

        def tok_head(T):                     # T decodes at context 0: T tokens, T sequences
            f = self._probe(decode=[0] * T).ops     # (and T resumed states, for an SSM)
            return np.stack([self._columns(f[~is_seq(f) & ~is_head(f) & ~is_load(f)]),
                             self._columns(f[is_head(f)]),              # per sequence
                             self._columns(f[is_load(f)])])             # per resumed one
        self.token_grid, th = self._refine(tok_head, geometric_grid(1, self.max_tokens, k),
                                           np.stack([scale, scale, scale]))
        per_token, per_sequence, per_resumed = 0, 1, 2     # the rows of a tok_head value
        self._tok, self._head = th[:, per_token], th[:, per_sequence]
        self._load = th[:, per_resumed]
        if self.ssm:           # no attention: nothing priced by context or by query block
            zero = np.zeros((1, len(scale)))
            self.context_grid, self._dec = np.array([0]), zero
            self.block, self.full_keys, self._full = None, None, None
            self.tail_rows = self.tail_keys = np.array([1])
            self._tail = zero[None]
            return

        def attention(**step):
            f = self._probe(**step).ops
            return self._columns(f[is_seq(f)])
        ctx_seeds = np.concatenate(([0], geometric_grid(1, self.max_context, k))) \
            if self.max_context else np.array([0])
        self.context_grid, self._dec = self._refine(lambda c: attention(decode=[c]), ctx_seeds,
                                                    scale)
        # prefill attention, by query block: full blocks of B queries on k keys (1D), and the
        # last (or only) block of r <= B queries on k keys (2D, r x k)
        B = self.causal_block if self.causal_block is not None else self.max_chunk
        self.block = B
        kmax = self.max_past + self.max_chunk
        if self.causal_block is not None and self.max_chunk > B:
            self.full_keys, self._full = self._refine(
                lambda kk: attention(prefill=[(B, kk - B)]), geometric_grid(B, kmax, k), scale)
        else:
            self.full_keys, self._full = None, None
        self.tail_rows = geometric_grid(1, min(B, self.max_chunk), k)
        # the last block sees the same keys as a full block beside it: reuse the refined keys
        self.tail_keys = geometric_grid(1, kmax, k) if self.full_keys is None else \
            np.union1d(geometric_grid(1, B, k), self.full_keys)
        tail = np.full((len(self.tail_rows), len(self.tail_keys), len(scale)), np.nan)
        for i, r in enumerate(self.tail_rows):
            for j, kk in enumerate(self.tail_keys):
                if kk >= r:     # the last block of a chunk: past + earlier blocks <= kmax
                    tail[i, j] = attention(prefill=[(int(r), int(kk - r))])
        # keys < rows cannot occur (a block sees at least its own queries): copy the k = r value
        for i, r in enumerate(self.tail_rows):
            row = tail[i]
            valid = ~np.isnan(row[:, CYCLES])
            first_valid = np.argmax(valid)
            row[:first_valid] = row[first_valid]
            last_valid = len(valid) - 1 - np.argmax(valid[::-1])
            row[last_valid + 1:] = row[last_valid]
        self._tail = tail

    # ------------------------------------------------------------------------ lookup ----
    @staticmethod
    def _interp(grid: np.ndarray, table: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Piecewise-linear rows of ``table`` at each x (grid sorted, x inside it); summed."""
        if len(grid) == 1:
            return table[0] * len(x)
        i = np.searchsorted(grid, x, side="right") - 1
        np.minimum(np.maximum(i, 0, out=i), len(grid) - 2, out=i)
        x0, x1 = grid[i], grid[i + 1]
        w = (x - x0) / (x1 - x0)
        return (1 - w) @ table[i] + w @ table[i + 1]

    def _tail_value(self, r: float, kk: float) -> np.ndarray:
        gr, gk, t = self.tail_rows, self.tail_keys, self._tail
        if len(gr) > 1:
            i = min(max(int(np.searchsorted(gr, r, side="right")) - 1, 0), len(gr) - 2)
            wi, i1 = (r - gr[i]) / (gr[i + 1] - gr[i]), i + 1
        else:
            i, wi, i1 = 0, 0.0, 0
        if len(gk) > 1:
            j = min(max(int(np.searchsorted(gk, kk, side="right")) - 1, 0), len(gk) - 2)
            wj, j1 = (kk - gk[j]) / (gk[j + 1] - gk[j]), j + 1
        else:
            j, wj, j1 = 0, 0.0, 0
        return ((1 - wi) * (1 - wj) * t[i, j] + wi * (1 - wj) * t[i1, j]
                + (1 - wi) * wj * t[i, j1] + wi * wj * t[i1, j1])

    def _prefill(self, n: int, p: int) -> np.ndarray:
        B = self.block
        full = (n - 1) // B                   # blocks before the last one
        out = self._tail_value(n - full * B, p + n)
        if full:
            keys = p + B * np.arange(1, full + 1, dtype=float)
            out = out + self._interp(self.full_keys, self._full, keys)
        return out

    def estimate(self, prefill=(), decode=()) -> StepEstimate:
        """Interpolated cycles, seconds and energy by component (pJ) of one ragged step."""
        step = ragged_step(prefill, decode, where=WHERE)
        T, S = step.tokens, step.sequences
        if T > self.max_tokens:
            raise ConfigError(f"at most max_tokens ({self.max_tokens}) tokens in a step of "
                              "this table", file=WHERE, key="prefill", got=f"{T} tokens")
        for i, (n, p) in enumerate(step.prefill):
            # the attention grids span keys up to max_past + max_chunk, so a short chunk may
            # sit on more than max_past past tokens
            if n > self.max_chunk or p + n > self.max_past + self.max_chunk:
                raise ConfigError(f"a chunk inside this table: new_tokens <= {self.max_chunk}, "
                                  f"new + past tokens <= {self.max_past + self.max_chunk}",
                                  file=WHERE, key="prefill", got=str((n, p)))
        deepest = max(step.decode, default=0)      # contexts are sorted: the last one
        if deepest > self.max_context:
            raise ConfigError(f"decode contexts <= max_context ({self.max_context})",
                              file=WHERE, key="decode", got=str(deepest))
        v = self._interp(self.token_grid, self._tok, np.array([T], dtype=float))
        v = v + self._interp(self.token_grid, self._head, np.array([S], dtype=float))
        if step.decode:
            v = v + self._interp(self.context_grid, self._dec,
                                 np.array(step.decode, dtype=float))
        if self.ssm:
            resumed = sum(1 for _, p in step.prefill if p > 0) + len(step.decode)
            if resumed:
                v = v + self._interp(self.token_grid, self._load,
                                     np.array([resumed], dtype=float))
        else:
            for n, p in step.prefill:
                v = v + self._prefill(n, p)
        cycles = float(v[CYCLES])
        energy = MappingProxyType({c: float(e) for c, e in zip(self.components, v[ENERGY])})
        return StepEstimate(cycles=cycles, seconds=cycles * self.clock_seconds_per_cycle,
                            energy_pj=energy)

    def grid_info(self) -> dict:
        return {"tokens": len(self.token_grid), "contexts": len(self.context_grid),
                "block": self.block,
                "full_block_keys": 0 if self.full_keys is None else len(self.full_keys),
                "tail": (len(self.tail_rows), len(self.tail_keys)), "probes": self.probes}

