#!/usr/bin/env python3
"""Longer fuzz campaigns of the exact compressions than the test suite runs.

    .venv/bin/python bench/compression_fuzz.py                 # 3,000 tile + 1,200 ReCoN streams
    .venv/bin/python bench/compression_fuzz.py --tiles 30000 --recon 12000 --first 100000

The streams come from the generators of ``tests/test_compression_fuzz.py`` (``--first`` picks
seeds the tests do not use). Tile streams: :func:`sim.hw.tile_pipeline.run_tiles` against
:func:`~sim.hw.tile_pipeline.simulate_tiles`, every field. ReCoN streams: the MicroScopiQ
stream extension against pricing the whole stream with
:func:`sim.hw.recon_stream.recon_stream_cycles`. Prints mismatches (the first seeds of any),
how often each compression engaged, and the time each side took.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import numpy as np  # noqa: E402

import test_compression_fuzz as fuzz  # noqa: E402
from sim.hw import tile_pipeline  # noqa: E402
from sim.hw.recon_stream import exact_prefix_groups, recon_stream_cycles  # noqa: E402


def tiles(seeds) -> None:
    bad, engaged, skipped, total, t_fast, t_full = [], 0, 0, 0, 0.0, 0.0
    for seed in seeds:
        X, ports = fuzz.random_tile_stream(random.Random(seed))
        t = time.perf_counter()
        fast, n_skipped = tile_pipeline._simulate(tile_pipeline._check_tiles(X), ports, None,
                                                  False, tile_pipeline.find_repeat(X))
        t_fast += time.perf_counter() - t
        t = time.perf_counter()
        full = tile_pipeline.simulate_tiles(X, ports)
        t_full += time.perf_counter() - t
        if not fuzz.same_result(fast, full):
            bad.append(seed)
        engaged += n_skipped > 0
        skipped += n_skipped
        total += len(X)
    print(f"tile streams {len(seeds)}: {len(bad)} mismatches {bad[:10]}; copies skipped in "
          f"{engaged} streams ({skipped / max(total, 1):.0%} of all tiles); "
          f"compressed {t_fast:.2f} s, full {t_full:.2f} s")


def recon(seeds) -> None:
    bad, engaged, t_fast, t_full = [], 0, 0.0, 0.0
    for seed in seeds:
        accel, T, group, R, C, FC, issue = fuzz.random_recon_stream(random.Random(10**6 + seed))
        t = time.perf_counter()
        fast = accel._stream(T, group, R, C, FC, issue)
        t_fast += time.perf_counter() - t
        t = time.perf_counter()
        s = recon_stream_cycles(T, np.tile(group, (FC, 1)), R, C, accel.units, issue,
                                accel.throttle)
        t_full += time.perf_counter() - t
        whole = (s.fold_extra, s.fold_stalls, s.fold_bubbles, s.fold_conflicts)
        if not all(np.array_equal(x, y) for x, y in zip(fast, whole)):
            bad.append(seed)
        engaged += exact_prefix_groups(T, group, R, C, FC, issue, accel.throttle) is not None
    print(f"ReCoN streams {len(seeds)}: {len(bad)} mismatches {bad[:10]}; extended "
          f"{engaged}; extension {t_fast:.2f} s, whole {t_full:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=fuzz.TILE_STREAMS)
    ap.add_argument("--recon", type=int, default=fuzz.RECON_STREAMS)
    ap.add_argument("--first", type=int, default=0, help="first seed")
    args = ap.parse_args()
    tiles(range(args.first, args.first + args.tiles))
    recon(range(args.first, args.first + args.recon))


if __name__ == "__main__":
    main()
