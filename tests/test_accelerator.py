"""The accelerator model: memory stalls, traffic, energy and area behave as the hardware would."""
import random

import pytest

import sim
from sim.api import accelerator_for
from sim.config import load_arch
from sim.hw.accelerator import SystolicAccelerator
from sim.hw.memory_plan import OperandPlacement
from sim.hw.systolic import array_timing


def arch_with(**overrides):
    return load_arch("quickstart", overrides=overrides)


def gemm(arch, M, K, N, **kw):
    return accelerator_for(arch).gemm(M, K, N, **kw)


@pytest.mark.parametrize("seed", range(40))
def test_invariants_on_random_gemms(seed):
    rng = random.Random(seed)
    M, K, N = (rng.choice([1, 3, 17, 64, 100, 256, 700]) for _ in range(3))
    df = rng.choice(["ws", "os", "is"])
    arch = arch_with(**{"memory.dram.bandwidth_gbps": rng.choice([8.0, 64.0, 256.0]),
                        "memory.sram.ifmap_kb": rng.choice([16, 64, 512]),
                        "memory.sram.weight_kb": rng.choice([16, 64, 512])})
    r = gemm(arch, M, K, N, dataflow=df)
    r.check()                                   # stall >= 0, util <= 1, energy >= 0, sums
    assert r.macs == M * K * N                  # work conserved
    assert r.compute_cycles == array_timing(M, K, N, 64, 64, df).total
    # every operand byte comes from DRAM at least once, every output goes back once
    assert r.dram_read_bytes >= M * K + K * N
    assert r.dram_write_bytes == M * N


def test_stall_grows_as_dram_bandwidth_shrinks():
    stalls = [gemm(arch_with(**{"memory.dram.bandwidth_gbps": bw}), 64, 4096, 4096).stall_cycles
              for bw in (1024.0, 256.0, 64.0, 16.0)]
    assert stalls == sorted(stalls) and stalls[-1] > stalls[0]
    # at 16 GB/s the 16 MB weight stream alone needs 1 M cycles: the GEMM is DRAM bound
    r = gemm(arch_with(**{"memory.dram.bandwidth_gbps": 16.0}), 64, 4096, 4096)
    assert r.cycles >= 4096 * 4096 / 16
    assert r.dram_busy_cycles > 0.95 * r.cycles          # the DRAM port never rests
    fast = gemm(arch_with(**{"memory.dram.bandwidth_gbps": 1024.0}), 64, 4096, 4096)
    assert fast.dram_busy_cycles < 0.5 * fast.cycles


def test_decode_gemv_is_weight_load_bound_on_ws():
    # one token: every fold pays the R-cycle weight load; HBM keeps up, so no memory stall
    r = gemm("quickstart", 1, 4096, 4096)
    folds = (4096 // 64) ** 2
    assert r.compute_cycles == 64 * folds + 1 + 64 + 64 - 2
    assert r.stall_cycles < 0.05 * r.cycles


def test_streamed_operand_refetch_follows_buffer_sizes():
    big = gemm(arch_with(**{"memory.sram.ifmap_kb": 4096}), 256, 1024, 1024)
    small = gemm(arch_with(**{"memory.sram.ifmap_kb": 64, "memory.l2.size_kb": 64}), 256, 1024, 1024)
    assert big.dram_read_bytes == 256 * 1024 + 1024 * 1024        # everything read once
    assert small.dram_read_bytes > big.dram_read_bytes


def test_onchip_operands_skip_dram():
    place = OperandPlacement(a_src="l2", w_src="dram", o_dst="l2")
    r = gemm("quickstart", 128, 512, 512, place=place)
    assert r.dram_read_bytes == 512 * 512 and r.dram_write_bytes == 0


def test_energy_breakdown_and_scaling():
    r = sim.simulate_gemm("quickstart", 256, 256, 256)
    # the systolic type's declared components, in its order; nothing else is charged
    assert tuple(r.energy_pj) == SystolicAccelerator.energy_components
    assert sum(r.energy_pj.values()) == pytest.approx(r.energy_total_pj)
    assert all(v >= 0 for v in r.energy_pj.values())
    assert r.energy_pj["pe_array"] > 0 and r.energy_pj["dram"] > 0 and r.energy_pj["static"] > 0
    r2 = sim.simulate_gemm("quickstart", 512, 256, 256)
    assert r2.energy_pj["pe_array"] == pytest.approx(2 * r.energy_pj["pe_array"])
    # a 45 nm build of the same design spends more energy per MAC
    old = sim.simulate_gemm(arch_with(technology="45nm"), 256, 256, 256)
    assert old.energy_pj["pe_array"] > 5 * r.energy_pj["pe_array"]


def test_lower_precision_mode_is_faster_on_multiprecision_array():
    w2 = sim.simulate_gemm("multiprec-64x64", 256, 1024, 1024, wbits=2, abits=8)
    w4 = sim.simulate_gemm("multiprec-64x64", 256, 1024, 1024, wbits=4, abits=8)
    w8 = sim.simulate_gemm("multiprec-64x64", 256, 1024, 1024, wbits=8, abits=8)
    assert w2.compute_cycles < w4.compute_cycles < w8.compute_cycles


def test_unsupported_precision_is_a_config_error():
    with pytest.raises(sim.ConfigError, match="w2a8|wbits"):
        sim.simulate_gemm("quickstart", 8, 8, 8, wbits=2, abits=8)


def test_area_breakdown_positive_and_grows_with_array():
    small = accelerator_for(arch_with(**{"array.rows": 32, "array.cols": 32})).area_um2()
    big = accelerator_for("quickstart").area_um2()
    assert all(v > 0 for v in big.values())
    assert big["pe_array"] == pytest.approx(4 * small["pe_array"])


def test_repeated_calls_are_memoized_and_identical():
    # the memo hands out one frozen result: equal answers, and nothing to change in it
    a = gemm("quickstart", 300, 200, 100)
    b = gemm(load_arch("quickstart"), 300, 200, 100)
    assert (a.cycles, dict(a.energy_pj), dict(a.counters)) == \
        (b.cycles, dict(b.energy_pj), dict(b.counters))
    with pytest.raises(Exception):
        a.cycles = 0
    with pytest.raises(TypeError):
        a.energy_pj["dram"] = 0.0
    with pytest.raises(TypeError):
        a.energy.add("dram", "read_bit", 1, 1.0)
    assert gemm("quickstart", 300, 200, 100).energy_pj["dram"] > 0
