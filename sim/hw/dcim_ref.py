"""Cycle-stepped reference of one FlexCiM DCiM macro (small shapes), with functional mode.

Steps the macro one clock at a time with explicit state: the weight register bank(s) and the
reload port (one column a cycle, a shadow bank when ``reload_overlap``), the stage-1/stage-2
mux selects of each row's distribution unit and the in-cell metadata mux, ``distribution_stages``
distribution registers, the cell product register, the registered levels of each sub-macro's
column adder tree, the bit-serial shift-accumulate register, the per-column psum buffers, the
merge unit's all-sub-macros-ready barrier and input register, its adder-tree levels and the
output register. Every register carries the numbers, so the same run gives the cycle count and
the GEMM result. Decisions are taken from the state of the previous cycle only (no closed
form is used here); :mod:`sim.hw.dcim` derives the closed form that must match.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..config.errors import ConfigError
from .dcim import DCiMMacro, TilePlacement, map_pattern, place_tile

__all__ = ["RefTile", "RefResult", "run_reference", "gemm_reference"]


@dataclass
class RefTile:
    placement: TilePlacement
    x: np.ndarray            # [T, K_tile'] activations of this pass (int)
    cols: int                # columns to load


@dataclass
class RefResult:
    cycles: int
    outputs: list            # per tile: int64 [T, cols]
    enters: list             # per tile: cycle its first vector entered distribution
    max_psum_occupancy: int
    barrier_waits: int       # cycles a non-empty psum buffer waited for the others


def _tree_level(v: np.ndarray) -> np.ndarray:
    """One registered adder-tree level along axis 0 (pairs summed; an odd last one passes)."""
    n = v.shape[0]
    h = n // 2
    out = v[0:2 * h:2] + v[1:2 * h:2]
    if n % 2:
        out = np.concatenate([out, v[n - 1:n]], axis=0)
    return out


def run_reference(macro: DCiMMacro, tiles: list[RefTile], max_cycles: int = 1_000_000) -> RefResult:
    P, R, C = macro.sub_macros, macro.rows, macro.cols
    ds, D, Dm = macro.distribution_stages, macro.column_tree_depth, macro.merge_tree_depth
    serial = macro.input_mode == "serial"
    c_vec, ab = macro.cycles_per_vector, macro.abits
    n_tiles = len(tiles)
    if n_tiles == 0:
        raise ConfigError("at least one tile", key="tiles", got="[]")

    n_banks = 2 if macro.reload_overlap else 1
    banks: list = [None] * n_banks            # each: tile, cols, written, start, weight, meta, select
    load_tile, load_bank = 0, None            # next tile for the port; bank being written
    first_mult = [None] * n_tiles             # cycle of a tile's first / last multiply
    last_mult = [None] * n_tiles
    cur_tile, cur_vec, next_enter_ok = 0, 0, 0
    enters = [None] * n_tiles

    dist_regs = deque([None] * ds)            # (tile, vec, pairs) per distribution register
    feed_reg = None                           # serial: (tile, vec, pairs, next bit)
    prod_reg = None                           # (tile, vec, bit, products [R, P, C])
    tree_regs = [None] * D                    # level l: (tile, vec, bit, [ceil(R/2^(l+1)), P, C])
    shift_reg = None                          # serial: (tile, vec, bit, acc [P, C])
    psum = [deque() for _ in range(P)]        # per sub-macro: (tile, vec, [C])
    merge_in = None                           # (tile, vec, [P, C])
    merge_regs = [None] * Dm
    out_reg = None
    outputs = [np.zeros((tl.x.shape[0], tl.cols), np.int64) for tl in tiles]
    done, total = 0, sum(tl.x.shape[0] for tl in tiles)
    max_occ, waits, last_write = 0, 0, -1

    def bank_of(ti: int) -> dict:
        for bank in banks:
            if bank is not None and bank["tile"] == ti:
                return bank
        raise AssertionError(f"tile {ti} is in no weight bank")

    def distribute(ti: int, v: int) -> np.ndarray:
        """Both mux stages of every row: the pair each cell sees, [R, P, C, 2]."""
        pl, bank = tiles[ti].placement, bank_of(ti)
        xv = tiles[ti].x[v]
        feed = np.where(pl.feed >= 0, xv[np.clip(pl.feed, 0, None)], 0)        # [R, P, I, 2]
        sel = bank["select"]
        if sel.ndim == 2:                     # row scope: stage 1 per (row, sub-macro), shared
            stage1 = np.take_along_axis(feed, sel[:, :, None, None], axis=2)[:, :, 0, :]
            stage2 = stage1[:, np.arange(P), :]            # stage 2: sub-macro p takes output p
            return np.broadcast_to(stage2[:, :, None, :], (R, P, C, 2))
        full = np.broadcast_to(feed[:, :, None], (R, P, C) + feed.shape[2:])  # cell scope
        return np.take_along_axis(full, sel[:, :, :, None, None], axis=3)[:, :, :, 0, :]

    def multiply(ti: int, v: int, bit: int, pairs: np.ndarray, t: int):
        bank = bank_of(ti)
        assert bank["written"] == bank["cols"], "multiply before the weights are written"
        act = np.where(bank["meta"] == 1, pairs[..., 1], pairs[..., 0])       # in-cell 2:1 mux
        if serial:
            act = (act >> bit) & 1            # two's complement bit (weighted in shift-acc)
        if first_mult[ti] is None:
            first_mult[ti] = t
        if v == tiles[ti].x.shape[0] - 1 and bit == (ab - 1 if serial else 0):
            last_mult[ti] = t
        return (ti, v, bit, bank["weight"] * act)

    for t in range(max_cycles):
        wrote = False
        # ---- back to front: every stage reads the registers of the previous cycle ----------
        if out_reg is not None:
            outputs[out_reg[0]][out_reg[1]] = out_reg[2][:tiles[out_reg[0]].cols]
            done += 1
        out_reg = None
        last = merge_regs[-1] if Dm else merge_in
        if last is not None:
            out_reg = (last[0], last[1], last[2].sum(axis=0)); wrote = True
        for lvl in range(Dm - 1, -1, -1):
            prev = merge_in if lvl == 0 else merge_regs[lvl - 1]
            merge_regs[lvl] = None if prev is None else (prev[0], prev[1], _tree_level(prev[2]))
            wrote |= prev is not None
        if all(psum[p] for p in range(P)):      # barrier: all sub-macros ready
            heads = [psum[p].popleft() for p in range(P)]
            assert len({h[:2] for h in heads}) == 1, "sub-macros out of step"
            merge_in = (heads[0][0], heads[0][1], np.stack([h[2] for h in heads])); wrote = True
        else:
            waits += any(psum[p] for p in range(P))
            merge_in = None
        top = tree_regs[-1] if D else prod_reg
        src = None
        if serial:
            if shift_reg is not None and shift_reg[2] == ab - 1:
                src = (shift_reg[0], shift_reg[1], shift_reg[3])
            if top is not None:
                ti, v, bit, val = top
                scale = -(1 << (ab - 1)) if bit == ab - 1 else (1 << bit)
                acc = val[0] * scale + (shift_reg[3] if bit else 0)
                shift_reg = (ti, v, bit, acc); wrote = True
            else:
                shift_reg = None
        elif top is not None:
            src = (top[0], top[1], top[3][0])
        if src is not None:
            for p in range(P):
                if len(psum[p]) >= macro.psum_buffer_entries:
                    raise AssertionError("psum buffer overflow")
                psum[p].append((src[0], src[1], src[2][p]))
            max_occ = max(max_occ, len(psum[0])); wrote = True
        for lvl in range(D - 1, -1, -1):
            prev = prod_reg if lvl == 0 else tree_regs[lvl - 1]
            tree_regs[lvl] = None if prev is None else (prev[0], prev[1], prev[2], _tree_level(prev[3]))
            wrote |= prev is not None

        # ---- issue: does a vector enter distribution this cycle? (state at start of cycle) --
        entering = None
        if cur_tile < n_tiles and t >= next_enter_ok:
            bank = next((b for b in banks if b is not None and b["tile"] == cur_tile), None)
            if bank is not None and bank["start"] < t and bank["cols"] - bank["written"] <= ds:
                entering = (cur_tile, cur_vec, distribute(cur_tile, cur_vec))
                if enters[cur_tile] is None:
                    enters[cur_tile] = t
                cur_vec += 1
                next_enter_ok = t + c_vec
                if cur_vec == tiles[cur_tile].x.shape[0]:
                    cur_tile, cur_vec = cur_tile + 1, 0

        # ---- cells: multiply the vector leaving distribution ----------------------------------
        arriving = dist_regs[-1] if ds else entering
        if ds:
            dist_regs.pop()
            dist_regs.appendleft(entering)
            wrote |= entering is not None
        new_prod = None
        if serial:
            if arriving is not None:
                assert feed_reg is None, "serial feed overrun"
                feed_reg = (arriving[0], arriving[1], arriving[2], 0)
            if feed_reg is not None:
                ti, v, pairs, bit = feed_reg
                new_prod = multiply(ti, v, bit, pairs, t)
                feed_reg = (ti, v, pairs, bit + 1) if bit + 1 < ab else None
        elif arriving is not None:
            new_prod = multiply(arriving[0], arriving[1], 0, arriving[2], t)
        prod_reg = new_prod
        wrote |= new_prod is not None

        # ---- reload port: start a tile when its bank is free, then write one column --------
        if load_bank is None and load_tile < n_tiles:
            i = load_tile
            if i == 0:
                target = 0
            elif n_banks == 1:
                target = 0 if last_mult[i - 1] is not None and last_mult[i - 1] < t else None
            else:   # shadow bank: free once tile i-1 swapped in (its first multiply, <= now)
                held = next(b for b in range(2) if banks[b] is not None and banks[b]["tile"] == i - 1)
                target = 1 - held if first_mult[i - 1] is not None else None
            if target is not None:
                banks[target] = {"tile": i, "cols": tiles[i].cols, "written": 0, "start": t,
                                 "weight": np.zeros((R, P, C), np.int64),
                                 "meta": np.zeros((R, P, C), np.int64),
                                 "select": np.zeros_like(tiles[i].placement.select)}
                load_bank, load_tile = target, i + 1
        if load_bank is not None:
            bank = banks[load_bank]
            pl, j = tiles[bank["tile"]].placement, bank["written"]
            bank["weight"][:, :, j] = pl.weight[:, :, j]
            bank["meta"][:, :, j] = pl.meta[:, :, j]
            if j == 0:                        # selects travel with the first column
                bank["select"] = pl.select.copy()
            bank["written"] = j + 1
            wrote = True
            if bank["written"] == bank["cols"]:
                load_bank = None
        if wrote:
            last_write = t
        if done == total:
            break
    else:
        raise AssertionError("reference did not finish")
    return RefResult(last_write + 1, outputs, enters, max_occ, waits)


def gemm_reference(macro: DCiMMacro, spec, x: np.ndarray, w: np.ndarray):
    """Y = x @ w through the simulated macro (x: [T, K] int, w: [K, Nout] masked N:M int);
    passes output-tile major, cross-pass partial sums added outside the macro (as the RTL).
    Returns (Y int64 [T, Nout], RefResult)."""
    mp = map_pattern(macro, spec)
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    T, K = x.shape
    n_out = w.shape[1]
    tiles, where = [], []
    for j0 in range(0, n_out, macro.cols):
        for k0 in range(0, K, mp.k_tile):
            wt = w[k0:k0 + mp.k_tile, j0:j0 + macro.cols]
            tiles.append(RefTile(place_tile(macro, spec, wt), x[:, k0:k0 + mp.k_tile], wt.shape[1]))
            where.append(j0)
    res = run_reference(macro, tiles)
    y = np.zeros((T, n_out), np.int64)
    for j0, out in zip(where, res.outputs):
        y[:, j0:j0 + out.shape[1]] += out
    return y, res
