"""The memory-tile pipeline: hand-checked timings, the event-driven simulation equal to a
cycle-stepped reference, and compression of repeats equal to the full run."""
import random
from dataclasses import fields

import numpy as np
import pytest

import sim.hw.accelerator as accelerator_module
from sim.api import accelerator_for
from sim.config import load_arch
from sim.core import Clock, TraceRecorder
from sim.hw.accelerator import WeightOutliers
from sim.hw.registry import build_accelerator
from sim.hw.memory_plan import OperandPlacement, plan_gemm
from sim.hw.systolic import array_timing
from sim.hw.tile_pipeline import PortSpec, _row_ids, find_repeat, run_tiles, simulate_tiles
from tile_pipeline_ref import reference_tiles

PORTS = PortSpec(dram_bytes_per_cycle=4.0, dram_latency=10, l2_bytes_per_cycle=8.0, l2_latency=2)


def tiles(rows):
    return np.asarray(rows, dtype=np.int64).reshape(-1, 6)


def test_single_tile_by_hand():
    # fetch 40 B over DRAM: 10 cycles + 10 latency; fill 16 B over L2: 2 + 2; compute 5;
    # drain 8 B over L2: 1 + 2; store 8 B over DRAM: 2 + 10
    r = simulate_tiles(tiles([40, 16, 5, 5, 8, 8]), PORTS)
    assert r.array_end == 20 + 4 + 5
    assert r.total == 29 + 3 + 12
    assert r.stall_memory == 24 and r.stall_sram == 0


def test_double_buffering_overlaps_fetch_with_compute():
    # compute-bound: 4 tiles of 100 cycles, each fetch takes 10 + 10 cycles
    r = simulate_tiles(tiles([[40, 0, 100, 100, 0, 0]] * 4), PORTS)
    assert r.array_end == 20 + 4 * 100 and r.stall_memory == 20
    # memory-bound: fetch 400 B = 100 cycles per tile, compute 10: the DRAM port sets the pace
    r = simulate_tiles(tiles([[400, 0, 10, 10, 0, 0]] * 4), PORTS)
    assert r.array_end == 4 * 100 + 10 + 10


def test_drains_contend_with_fetches_on_the_dram_port():
    quiet = simulate_tiles(tiles([[400, 0, 10, 10, 0, 0]] * 6), PORTS)
    busy = simulate_tiles(tiles([[400, 0, 10, 10, 40, 400]] * 6), PORTS)
    assert busy.array_end > quiet.array_end


def test_same_cycle_requests_are_served_oldest_tile_first():
    # 1 B/cycle ports without latency. Tile 0: fill 4 B (0-4), compute 4-8. Tile 1: read 8 B
    # (0-8), then its fill asks for L2 at 8, in the cycle tile 0's drain does: the drain of
    # the older tile goes first (8-10), the fill follows (10-13)
    ports = PortSpec(1.0, 0, 1.0, 0)
    r = simulate_tiles(tiles([[0, 4, 4, 4, 2, 0], [8, 3, 1, 1, 0, 0]]), ports, record=True)
    assert r.times.tolist() == [[4, 4, 8, 10], [13, 13, 14, 14]]
    assert r.total == 14 and r.stall_memory == 4 + 5


def same_result(a, b):
    return all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))


def small_stream(rng):
    """A few tiles of few bytes (short enough to step cycle by cycle), port-bound,
    compute-bound or mixed, with zero-byte stages, and now and then a zero-cycle tile."""
    regime = rng.choice(["port", "compute", "mixed"])
    sizes = {"port": (0, 1, 9, 24, 64), "compute": (0, 0, 1, 3, 8), "mixed": (0, 2, 8, 16, 40)}[regime]
    spans = {"port": (0, 1, 2, 4), "compute": (10, 17, 30), "mixed": (0, 1, 3, 7, 12)}[regime]
    rows = []
    for _ in range(rng.randint(0, 24)):
        span = rng.choice(spans) if rng.random() < 0.1 else max(1, rng.choice(spans))
        rows.append([rng.choice(sizes), rng.choice(sizes), span + rng.choice([0, 0, 2]), span,
                     rng.choice(sizes), rng.choice(sizes)])
    ports = PortSpec(rng.choice([0.75, 1.0, 2.0, 2.5, 8.0]), rng.choice([0, 0, 1, 3, 10]),
                     rng.choice([1.0, 3.5, 4.0, 16.0]), rng.choice([0, 1, 2]))
    return tiles(rows), ports


@pytest.mark.parametrize("seed", range(300))
def test_event_simulation_equals_cycle_stepped_reference(seed):
    X, ports = small_stream(random.Random(seed))
    fast = simulate_tiles(X, ports, record=True)
    ref = reference_tiles(X, ports)
    assert same_result(fast, ref), (X.tolist(), ports, fast, ref)


def test_trace_records_every_transfer_and_tile():
    X, ports = small_stream(random.Random(7))
    trace = TraceRecorder()
    r = simulate_tiles(X, ports, trace=trace, record=True)
    doc = trace.to_dict(Clock(1.0))             # 1 GHz: a cycle is 0.001 us
    track = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    spans = {name: [(round(e["ts"] * 1000), round(e["dur"] * 1000), e.get("args", {}).get("bytes"))
                    for e in doc["traceEvents"] if e["ph"] == "X" and track[e["tid"]] == name]
             for name in ("pe_array", "dram", "l2")}
    assert spans["pe_array"] == [(s, d, None) for s, d in zip(r.times[:, 1], X[:, 2])]
    for name, busy, columns in (("dram", r.dram_busy, [0, 5]), ("l2", r.l2_busy, [1, 4])):
        link = spans[name]
        assert sum(d for _, d, _ in link) == busy
        assert sorted(b for *_, b in link) == sorted(b for b in X[:, columns].ravel() if b)
        assert all(s1 + d1 <= s2 for (s1, d1, _), (s2, _, _) in zip(link, link[1:]))  # one at a time


def test_row_ids_match_numpy_unique():
    rng = np.random.default_rng(0)
    for n in (1, 2, 50, 500):
        X = rng.integers(0, 3, size=(n, 6)) * rng.choice([1, 1000, 10**9], size=6)
        assert np.array_equal(_row_ids(X), np.unique(X, axis=0, return_inverse=True)[1].ravel())


def random_stream(rng, long_block=False):
    # prefix, a block repeated many times, and a suffix: like column groups of a GEMM
    def tile():
        span = rng.randint(1, 300)
        return [rng.choice([0, 64, 4096, 20000]), rng.choice([0, 512, 8192]),
                span + rng.choice([0, 0, 7]), span, rng.choice([0, 0, 256, 4096]),
                rng.choice([0, 0, 2048])]
    prefix = [tile() for _ in range(rng.randint(0, 3))]
    if long_block:   # mostly one tile kind after a rare first tile, like a column group
        block = [tile()] + [tile()] * rng.randint(70, 150)
    else:
        block = [tile() for _ in range(rng.randint(1, 5))]
    suffix = [tile() for _ in range(rng.randint(0, 3))]
    return tiles(prefix + block * (rng.randint(9, 12) if long_block else rng.randint(8, 40))
                 + suffix)


@pytest.mark.parametrize("seed", range(70))
def test_compressed_run_equals_full_simulation(seed):
    rng = random.Random(seed)
    X = random_stream(rng, long_block=seed >= 60)
    if seed >= 60:
        assert find_repeat(X)[1] > 64          # found through the recurrence gaps
    ports = PortSpec(rng.choice([2.0, 16.0, 256.0]), rng.choice([0, 50, 300]),
                     rng.choice([8.0, 64.0, 512.0]), rng.choice([0, 10]))
    assert same_result(run_tiles(X, ports), simulate_tiles(X, ports))


@pytest.mark.parametrize("case", [
    ("quickstart", 2048, 4096, 4096, "ws"), ("quickstart", 512, 4096, 11008, "ws"),
    ("quickstart", 1, 4096, 4096, "ws"), ("int8-32x32-os", 256, 4096, 4096, "os"),
    ("quickstart", 300, 1000, 700, "is"), ("int8-32x32-os", 1000, 2048, 4096, "os"),
])
def test_compression_exact_on_real_gemm_tiles(case):
    name, M, K, N, df = case
    accel = accelerator_for(name)
    t = array_timing(M, K, N, accel.arch.array.rows, accel.arch.array.cols, df)
    plan = plan_gemm(t.mapping, M, K, N, 8, 8, accel.sram_kb, accel.arch.memory.l2.size_kb,
                     OperandPlacement())
    spans = np.diff(np.r_[0, t.issue_times()[plan.first_fold[1:]], t.total])
    X = np.stack([plan.fetch_dram, plan.fill, spans, spans, plan.drain, plan.store_dram], axis=1)
    if len(X) >= 200:
        assert find_repeat(X) is not None
    assert same_result(run_tiles(X, accel.ports), simulate_tiles(X, accel.ports))


@pytest.mark.parametrize("M,K,N", [(256, 4096, 4096), (2048, 4096, 1024), (1, 4096, 4096)])
def test_compression_exact_on_microscopiq_tiles(M, K, N, monkeypatch):
    # ReCoN stretches the folds that hold outliers: per-tile durations vary along the stream
    seen = []
    monkeypatch.setattr(accelerator_module, "run_tiles",
                        lambda X, ports, trace=None, compress=True:
                        seen.append((X, ports)) or run_tiles(X, ports, trace, compress))
    accel = build_accelerator(load_arch("microscopiq-64x64"))     # fresh: no memo hides a call
    accel.gemm(M, K, N, wbits=4, abits=4,
               outliers=WeightOutliers(0.09, ((64, 0.5), (128, 0.8))))
    assert seen                                     # the probe saw the GEMM's tile stream
    for X, ports in seen:
        assert len(np.unique(X[:, 2])) > 1
        assert same_result(run_tiles(X, ports), simulate_tiles(X, ports))
