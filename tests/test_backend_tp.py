"""StrataBackend clients of several chips: tensor parallelism timed through simulate_step."""
from pathlib import Path

import pytest

import sim
from sim.config import ConfigError
from sim.system import StrataBackend

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "source": "test", "hidden_size": 256, "num_layers": 2, "num_heads": 4,
        "num_kv_heads": 2, "intermediate_size": 512, "ffn": "gated", "vocab_size": 1000,
        "max_position": 2048, "norm": "rmsnorm"}


def _linked_quickstart(tmp_path, bandwidth=50, latency=800):
    """The quickstart systolic array with a chip link (no shipped Strata arch has one)."""
    p = tmp_path / "qs-link.yaml"
    p.write_text(f"extends: {ROOT / 'arch' / 'quickstart.yaml'}\nname: qs-link\n"
                 f"chip_link: {{bandwidth_gbps: {bandwidth}, latency_ns: {latency}}}\n")
    return str(p)


@pytest.mark.parametrize("chips", [2, 4])
def test_chips_price_steps_as_simulate_step_with_tp(tmp_path, chips):
    arch = _linked_quickstart(tmp_path)
    b = StrataBackend(arch, TINY, chips=chips)
    prefill, decode = [(40, 8)], [30, 7, 100]
    ref = sim.simulate_step(arch, TINY, prefill=prefill, decode=decode, tp=chips)
    cost = b.price(prefill, decode)
    assert cost.seconds == ref.seconds
    assert cost.joules == pytest.approx(ref.energy_total_pj * 1e-12, rel=1e-12)   # all chips
    one = sim.simulate_step(arch, TINY, prefill=prefill, decode=decode)
    assert ref.seconds != one.seconds          # the shard and its collectives, not one chip
    ops = ref.ops
    assert (ops["kind"] == "collective").sum() == 2 * TINY["num_layers"] + 1


def test_gpu_client_of_two_chips_pays_nvlink_and_speeds_up_compute():
    b1 = StrataBackend("h100-sxm", "llama-3-8b")
    b2 = StrataBackend("h100-sxm", "llama-3-8b", chips=2)
    step = ([(2048, 0)], [])
    ref = sim.simulate_step("h100-sxm", "llama-3-8b", prefill=step[0], tp=2)
    assert b2.price(*step).seconds == ref.seconds
    ops = ref.ops
    coll = ops[ops["kind"] == "collective"]
    assert len(coll) == 65 and (coll["cycles"] > 0).all()
    # compute-bound prefill: the shard takes well under the whole model's time, but more than
    # half of it (collectives, replicated norms and embedding)
    t1, t2 = b1.price(*step).seconds, b2.price(*step).seconds
    assert 0.5 * t1 < t2 < 0.8 * t1


def test_memory_facts_are_those_of_one_chip():
    m = sim.load_model("qwen2.5-3b")          # 2 KV heads
    per_head = 2 * m.num_layers * m.head_dim * m.precision.abits / 8
    b1 = StrataBackend("h100-sxm", "qwen2.5-3b")
    b2 = StrataBackend("h100-sxm", "qwen2.5-3b", chips=2)
    b4 = StrataBackend("h100-sxm", "qwen2.5-3b", chips=4)
    assert b1.kv_bytes_per_token == 2 * per_head
    assert b2.kv_bytes_per_token == per_head
    assert b4.kv_bytes_per_token == per_head          # 4 chips > 2 KV heads: replicated
    assert b2.weight_bytes == pytest.approx(b1.weight_bytes / 2, rel=0.02)
    assert b4.weight_bytes < b2.weight_bytes


def test_bad_chip_counts_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="chip_link") as e:
        StrataBackend("arch/quickstart.yaml", TINY, chips=2)
    assert "quickstart.yaml" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="chips"):
        StrataBackend("h100-sxm", TINY, chips=3)
    with pytest.raises(ConfigError, match="tp"):
        StrataBackend("h100-sxm", TINY, chips=2, tp=4)
    with pytest.raises(ConfigError, match="mode"):
        StrataBackend("h100-sxm", TINY, chips=2, mode="table")
    with pytest.raises(ConfigError, match="num_heads"):      # 4 heads on 8 chips
        StrataBackend("h100-sxm", TINY, chips=8)
