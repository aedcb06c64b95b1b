"""GPU step table (sim.system.gpu_steps): every step equals simulate_step, runs equal steps.

The reference is ``sim.simulate_step`` (the GPU model pricing the whole step graph node by
node); the table must agree exactly in cycles and to float rounding in energy on random
ragged steps, for the shipped calibration and for a variant that launches every kernel from
the host and merges split-KV partials unpadded (the other branches of the scalar model).
"""
import math

import numpy as np
import pytest

import sim
from sim.config import ConfigError, load_arch
from sim.system import StrataBackend
from sim.system.gpu_steps import GpuStepTable, decode_kernels

MODEL = "llama-3.2-1b"
MAX_TOKENS = 1024


def _variant():
    return load_arch("h100-sxm", overrides=["calibration.cuda_graph=false",
                                            "calibration.kernels.decode_combine_padded=false",
                                            "calibration.kernels.lm_gather=1"])


@pytest.fixture(scope="module", params=["shipped", "host_launch"])
def arch(request):
    return "h100-sxm" if request.param == "shipped" else _variant()


@pytest.fixture(scope="module")
def table(arch):
    return GpuStepTable(arch, MODEL, max_tokens=MAX_TOKENS, max_chunk=512, max_past=3072)


def _random_step(rng):
    pre = [(int(rng.integers(1, 400)), int(rng.integers(0, 3000)))
           for _ in range(rng.integers(0, 3))]
    dec = [int(c) for c in rng.integers(0, 8000, rng.integers(0 if pre else 1, 60))]
    return pre, dec


def test_random_steps_equal_simulate_step(arch, table):
    rng = np.random.default_rng(7)
    fixed = [([], [4321]), ([(100, 50)], [777]), ([(300, 0)], [])]
    for pre, dec in fixed + [_random_step(rng) for _ in range(6)]:
        ref = sim.simulate_step(arch, MODEL, prefill=pre, decode=dec)
        got = table.estimate(prefill=pre, decode=dec)
        assert got.cycles == ref.cycles, (pre, dec)
        assert got.seconds == pytest.approx(ref.seconds, rel=1e-12)
        for comp in ("compute", "memory", "idle"):
            assert math.isclose(got.energy_pj[comp], ref.energy_pj.get(comp, 0.0),
                                rel_tol=1e-9), comp


def test_batched_decode_is_one_kernel_per_layer(table):
    """Not the sum of one-sequence steps: 64 sequences share each layer's kernel overheads."""
    one = table.estimate(decode=[1000]).seconds
    many = table.estimate(decode=[1000] * 64).seconds
    assert many < 4 * one
    ref = sim.simulate_step(table.arch, MODEL, decode=[1000] * 64)
    assert many == pytest.approx(ref.seconds, rel=1e-12)


def test_decode_kernels_match_the_scalar_kernel(arch):
    accel = sim.api.accelerator_for(arch)
    rng = np.random.default_rng(3)
    nkv, g, d = 8, 4, 64
    for _ in range(20):
        lkv = rng.integers(1, 8000, rng.integers(1, 200))
        cycles, energy = decode_kernels(accel, lkv[None, :], nkv=nkv, group=g, head_dim=d,
                                        abits=16)
        shapes = tuple((int(c) * nkv, g, d, int(k)) for k, c in
                       zip(*np.unique(lkv, return_counts=True)))
        r = accel._attention_kernel("decode", shapes, 16, False)
        if not accel.cal.cuda_graph:
            r = accel._plus_time(r, r.counters["kernels"] * accel.cal.launch_overhead_us * 1e-6)
        assert int(cycles[0]) == r.cycles
        by = r.energy.by_component()
        for i, comp in enumerate(("compute", "memory", "idle")):
            assert math.isclose(energy[0, i], by.get(comp, 0.0), rel_tol=1e-12, abs_tol=1e-9)


def test_decode_run_equals_its_steps_one_by_one(arch):
    b = StrataBackend(arch, MODEL, mode="table",
                      table_options=dict(max_tokens=MAX_TOKENS, max_chunk=512))
    for ctx, pads, steps in (([5, 130, 2047, 4000], 3, 40), ([3000], 0, 300), ([77], 1, 9)):
        secs, joules = b.price_decode_run(ctx, pads, steps)
        for k in (0, 1, steps // 2, steps - 1):
            cost = b.price((), [c + k for c in ctx] + [0] * pads)
            assert secs[k] == cost.seconds and joules[k] == cost.joules


def test_bad_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="max_chunk"):
        GpuStepTable("h100-sxm", MODEL, max_tokens=64, max_chunk=128)
    with pytest.raises(ConfigError, match="table_options.tol"):
        StrataBackend("h100-sxm", MODEL, mode="table", table_options=dict(tol=0.01))
    t = GpuStepTable("h100-sxm", MODEL, max_tokens=64, max_chunk=64, max_past=100)
    with pytest.raises(ConfigError, match="max_tokens"):
        t.estimate(decode=[1] * 65)
    t.estimate(prefill=[(10, 154)])        # keys (new + past) up to max_past + max_chunk
    with pytest.raises(ConfigError, match=r"new \+ past tokens <= 164"):
        t.estimate(prefill=[(10, 155)])


def test_layers_at_other_precisions_are_priced_apart():
    """A layer_precision rule makes blocks differ (GEMMs and attention at 16 bits in two
    layers): the table prices every block, and each attention group at its own bits."""
    from sim.config import load_model
    model = load_model(MODEL, overrides=["layer_precision=[{layers: [0, 3], wbits: 16, abits: 16}]"])
    t = GpuStepTable("h100-sxm", model, max_tokens=256, max_chunk=256)
    assert len(t.attention_bits) == 2 and not t._uniform_blocks()
    for pre, dec in (([(200, 30)], [5, 900]), ([], [1, 2000, 3000])):
        ref = sim.simulate_step("h100-sxm", model, prefill=pre, decode=dec)
        got = t.estimate(prefill=pre, decode=dec)
        assert got.cycles == ref.cycles
        assert math.isclose(got.energy_total_pj, ref.energy_total_pj, rel_tol=1e-9)
