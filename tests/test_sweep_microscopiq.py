"""The shipped MicroScopiQ design sweep: the space it says it has, every point valid."""
from __future__ import annotations

import itertools
from pathlib import Path

from sim.dse import load_sweep

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_microscopiq_sweep_is_the_grid_it_documents():
    sw = load_sweep(ROOT / "experiments" / "sweep_microscopiq_llama-3-8b.yaml")
    pts = list(sw.points())
    want = list(itertools.product([32, 64, 128, 256], [1, 2, 4, 8], [2, 4]))
    assert sw.size() == len(pts) == 32
    assert [p.dropped for p in pts] == [None] * 32
    got = [(p.exp.arch.array.rows, p.exp.arch.recon.units, p.exp.model.precision.wbits)
           for p in pts]
    assert got == want
    assert all(p.exp.arch.array.cols == p.exp.arch.array.rows for p in pts)
    assert len({p.hash for p in pts}) == 32                  # 32 distinct designs
    # bb is an inlier width the PE array has a mode for, at the runs' 8-bit activations
    modes = {(m.wbits, m.abits) for m in pts[0].exp.arch.pe.modes}
    assert {(bb, 8) for bb in (2, 4)} <= modes
    assert [r.phase for r in sw.base.runs] == ["decode", "prefill"]
