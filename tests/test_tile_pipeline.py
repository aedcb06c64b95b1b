"""The memory-tile pipeline: hand-checked timings, and compression of repeats equal to the full run."""
import random

import numpy as np
import pytest

from sim.api import accelerator_for
from sim.hw.memory_plan import OperandPlacement, plan_gemm
from sim.hw.systolic import array_timing
from sim.hw.tile_pipeline import PortSpec, find_repeat, run_tiles, simulate_tiles

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
    full = simulate_tiles(X, ports)
    fast = run_tiles(X, ports)
    assert (fast.total, fast.stall_memory, fast.stall_sram, fast.array_end) == \
           (full.total, full.stall_memory, full.stall_sram, full.array_end)


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
    full, fast = simulate_tiles(X, accel.ports), run_tiles(X, accel.ports)
    assert (fast.total, fast.stall_memory, fast.array_end) == \
           (full.total, full.stall_memory, full.array_end)
