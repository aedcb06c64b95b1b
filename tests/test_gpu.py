"""The GPU backend (type gpu) and tensor parallelism in simulate_step."""
import math

import numpy as np
import pytest

import sim
from sim.api import accelerator_for
from sim.config import ConfigError, load_arch
from sim.hw.gpu import TILES, gemm_seconds, ring_seconds

H200 = "h200-sxm"
BF16 = "w16a16"


@pytest.fixture(scope="module")
def gpu():
    return accelerator_for(H200)


def test_gpus_load_with_spec_figures():
    for name, sms, tf in (("h200-sxm", 132, 989.5), ("h100-sxm", 132, 989.5),
                          ("a100-80gb", 108, 312)):
        a = accelerator_for(name)
        assert a.spec.sms == sms and a.spec.tensor_tflops.bf16 == tf
        assert a.spec.tdp_w > a.cal.power.idle_w


def test_gemm_roofline_bounds(gpu):
    rng = np.random.default_rng(0)
    peak = gpu.peak_flops(16, 16)
    bw = gpu.spec.hbm_bandwidth_gbps * 1e9
    for _ in range(60):
        M, K, N = (int(x) for x in rng.integers(1, 9000, 3))
        r = gpu.gemm(M, K, N, wbits=16, abits=16)
        t = gpu.clock.seconds(r.cycles)
        assert t >= 2 * M * K * N / peak
        assert t >= 2 * (M * K + K * N + M * N) / bw
        assert t >= gpu.cal.kernel_overhead_us * 1e-6


def test_gemm_time_grows_with_every_dimension(gpu):
    """Non-decreasing in K; in M up to tile effects: one more row tile can give a
    memory-bound GEMM more CTAs (more SMs loading) than split-K did, a dip of < 10 %."""
    for K, N in ((4096, 4096), (4096, 14336), (14336, 4096), (2048, 128256)):
        ts = [gpu.gemm(M, K, N).cycles for M in range(1, 600, 7)]
        assert all(b >= 0.9 * a for a, b in zip(ts, ts[1:])), (K, N)
        assert all(t >= ts[0] for t in ts) and ts[-1] > ts[0]
    ts = [gpu.gemm(512, K, 4096).cycles for K in range(128, 9000, 256)]
    assert all(b >= a for a, b in zip(ts, ts[1:]))


def test_wave_quantisation_is_visible():
    """One CTA more than a full wave costs a second wave when compute bound (no split-K)."""
    kw = dict(peak=800e12, bandwidth=4e12, sms=132, knee=64.0)
    M, N, K = 128 * 11, 256 * 12, 8192           # 132 tiles of 128x256
    t1, _, _ = gemm_seconds(M, K, N, a_bytes=0, w_bytes=0, o_bytes=0, **kw)
    t2, _, _ = gemm_seconds(M + 1, K, N, a_bytes=0, w_bytes=0, o_bytes=0, **kw)
    assert t2 > 1.05 * t1
    # and the full wave runs at the tile rate: one wave of 2*128*256*K FLOPs per SM
    assert t1 == pytest.approx(2 * 128 * 256 * K / (800e12 / 132), rel=1e-9)
    assert (128, 256) in TILES


def test_decode_attention_follows_each_sequence(gpu):
    one_long = sim.simulate_step(H200, "llama-3-8b", decode=[256] * 63 + [8000], precision=BF16)
    all_long = sim.simulate_step(H200, "llama-3-8b", decode=[8000] * 64, precision=BF16)
    short = sim.simulate_step(H200, "llama-3-8b", decode=[256] * 64, precision=BF16)
    assert short.seconds <= one_long.seconds < 0.5 * all_long.seconds
    # decode attention is bound by KV bytes: all-long attention at least KV / bandwidth
    ops = all_long.ops
    attn = ops[ops.op == "qk"].cycles.sum() * 1 / (gpu.arch.clock_ghz * 1e9)
    kv = 64 * 8001 * 2 * 8 * 128 * 2 * 32           # seqs x keys x K,V x heads x d x bytes x layers
    assert attn >= kv / (gpu.spec.hbm_bandwidth_gbps * 1e9)


def test_brief_step_and_monotone_in_context():
    r = sim.simulate_step(H200, "llama-3-8b", prefill=[(512, 0)], decode=[100, 2000])
    assert r.seconds > 0 and r.energy_total_pj > 0 and r.tp == 1
    ts = [sim.simulate_step(H200, "llama-3-8b", decode=[c] * 16, precision=BF16).seconds
          for c in (0, 100, 1000, 4000, 8000)]
    assert all(b >= a for a, b in zip(ts, ts[1:]))
    ts = [sim.simulate_step(H200, "llama-3-8b", prefill=[(n, 0)], precision=BF16).seconds
          for n in (16, 128, 512, 2048, 8000)]
    assert all(b > a for a, b in zip(ts, ts[1:]))


def test_causal_prefill_costs_about_half_the_square(gpu):
    """Attention FLOPs of a causal chunk: blocks of 128 queries on their keys, ~ half."""
    r = sim.simulate_step(H200, "llama-3-8b", prefill=[(4096, 0)], precision=BF16)
    full = sim.simulate_step(H200, "llama-3-8b", prefill=[(4096, 0)], precision=BF16,
                             causal=False)
    a = r.ops[r.ops.op == "qk"].macs.sum()
    b = full.ops[full.ops.op == "qk"].macs.sum()
    blocks = 4096 // 128
    assert a / b == pytest.approx(sum(range(1, blocks + 1)) / blocks ** 2, rel=1e-9)


def test_power_between_idle_and_tdp(gpu):
    steps = [dict(decode=[128]), dict(decode=[2000] * 64), dict(prefill=[(4096, 0)] * 2),
             dict(prefill=[(512, 0)], decode=[100] * 8)]
    for kw in steps:
        r = sim.simulate_step(H200, "llama-3-8b", precision=BF16, **kw)
        ops = r.ops[r.ops.cycles > 0]
        watts = ops.energy_pj * 1e-12 / (ops.cycles / (gpu.arch.clock_ghz * 1e9))
        assert (watts >= gpu.cal.power.idle_w * (1 - 1e-6)).all()
        assert (watts <= gpu.spec.tdp_w * (1 + 1e-6)).all()
        assert r.energy_total_pj == pytest.approx(r.ops.energy_pj.sum(), rel=1e-9)


def test_step_invariants(gpu):
    r = sim.simulate_step(H200, "llama-3-8b", prefill=[(300, 64)], decode=[5, 900, 3000],
                          precision=BF16)
    ops = r.ops
    assert r.cycles == ops.cycles.sum()
    assert (ops.cycles == ops.compute_cycles + ops.stall_cycles).all()
    assert (ops.utilization <= 1 + 1e-12).all()
    assert r.seconds == pytest.approx(r.cycles / (gpu.arch.clock_ghz * 1e9))
    # permuting the sequences is the same step
    again = sim.simulate_step(H200, "llama-3-8b", prefill=[(300, 64)], decode=[3000, 5, 900],
                              precision=BF16)
    assert again is r


def test_tensor_parallel_collective_by_hand(gpu):
    T, H, p = 37, 4096, 4
    r = sim.simulate_step(H200, "llama-3-8b", decode=[50] * T, precision=BF16, tp=p)
    ops = r.ops
    ar = ops[ops.op == "allreduce"]
    assert len(ar) == 2 * 32
    nbytes = T * H * 2
    link = gpu.arch.chip_link
    seconds = (2 * (p - 1) / p * nbytes / (link.bandwidth_gbps * 1e9)
               + 2 * (p - 1) * link.latency_ns * 1e-9 + gpu.cal.kernel_overhead_us * 1e-6)
    assert (ar.cycles == math.ceil(seconds * gpu.arch.clock_ghz * 1e9)).all()
    assert ring_seconds("allreduce", nbytes, p, 1e9, 0) == pytest.approx(1.5 * nbytes / 1e9)
    # shards: q_proj columns and the FFN split p ways
    one = sim.simulate_step(H200, "llama-3-8b", decode=[50] * T, precision=BF16).ops
    q1 = one[one.name == "L0.q_proj"].iloc[0]
    qp = ops[ops.name == "L0.q_proj"].iloc[0]
    assert qp.macs * p == q1.macs
    assert r.seconds < sim.simulate_step(H200, "llama-3-8b", decode=[50] * T,
                                         precision=BF16).seconds


def test_tensor_parallel_on_a_strata_accelerator():
    with pytest.raises(ConfigError, match="chip_link") as e:
        sim.simulate_step("quickstart", "llama-3-8b", decode=[10], tp=2)
    assert "\n" not in str(e.value)
    arch = load_arch("quickstart", overrides={"chip_link": {"bandwidth_gbps": 100,
                                                             "latency_ns": 500}})
    one = sim.simulate_step(arch, "llama-3-8b", decode=[10] * 4)
    two = sim.simulate_step(arch, "llama-3-8b", decode=[10] * 4, tp=2)
    ar = two.ops[two.ops.op == "allreduce"]
    assert len(ar) == 64 and two.tp == 2
    acc = accelerator_for(arch)
    hand = acc.clock.cycles(2 * 1 / 2 * 4 * 4096 * 1 / 100e9 + 2 * 1 * 500e-9)
    assert (ar.cycles == hand).all()
    assert two.cycles < one.cycles


@pytest.mark.parametrize("kw,key", [
    ({"tp": 3}, "tp"), ({"tp": 16}, "tp"), ({"tp": True}, "tp")])
def test_bad_tp(kw, key):
    with pytest.raises(ConfigError, match=key) as e:
        sim.simulate_step(H200, "llama-3-8b", decode=[10], **kw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override,key", [
    ({"gpu.sms": 0}, "gpu.sms"), ({"gpu.hbm_bandwidth_gbps": -1}, "gpu.hbm_bandwidth_gbps"),
    ({"calibration.hbm_fraction": 1.5}, "calibration.hbm_fraction"),
    ({"gpu.tensor_tflops.bf16": "fast"}, "gpu.tensor_tflops.bf16"),
    ({"gpu.smz": 3}, "gpu.smz")])
def test_bad_arch_keys_one_line(override, key):
    with pytest.raises(ConfigError) as e:
        load_arch(H200, overrides=override)
    assert key in str(e.value) and "\n" not in str(e.value)
