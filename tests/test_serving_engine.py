"""Serving layer: schedulers, KV blocks, disaggregation, routers and invariants against small
hand-worked scenarios on an analytic backend (closed-form step cost)."""
import math

import numpy as np
import pandas as pd
import pytest

from sim.config import ConfigError
from sim.core.invariants import InvariantError
from sim.system import AnalyticBackend, StrataBackend, serve_frames
from sim.system.coordinator import Coordinator

NS = 1e-9


def reqs(prompts, outputs, arrivals=None):
    n = len(prompts)
    return pd.DataFrame({"request_id": np.arange(n), "arrival_s": arrivals or [0.0] * n,
                         "prompt_tokens": prompts, "output_tokens": outputs})


def cluster(backend=None, clients=1, **engine):
    engine.setdefault("kv_blocks", 10_000)
    return {"backend": backend or AnalyticBackend(), "clients": clients, "engine": engine}


def step_ns(backend, prefill=(), decode=(), host_s=0.0):
    return max(1, math.ceil(backend.price(list(prefill), list(decode)).seconds / NS + host_s / NS))


def test_continuous_admits_up_to_max_num_seqs_then_decodes():
    f = serve_frames(reqs([10, 20, 30, 40, 50], [3, 3, 3, 3, 3]),
                     cluster(scheduler="continuous", max_num_seqs=3))
    s = f.steps
    assert (s.kind.iloc[0], s.sequences.iloc[0], s.tokens.iloc[0]) == ("prefill", 3, 60)
    # the two first decode steps carry the three admitted requests; then they finish and
    # the next prefill admits the last two (FCFS)
    assert list(s.kind[:4]) == ["prefill", "decode", "decode", "prefill"]
    assert list(s.sequences[1:3]) == [3, 3] and s.tokens.iloc[3] == 90
    assert (f.requests.status == "completed").all()
    assert (f.requests.generated_tokens == 3).all()


def test_continuous_respects_token_budget_and_rejects_too_long_prompts():
    f = serve_frames(reqs([60, 60, 500], [2, 2, 2]),
                     cluster(scheduler="continuous", max_num_batched_tokens=100))
    assert f.steps.tokens.iloc[0] == 60 and f.steps.sequences.iloc[0] == 1
    r = f.requests.set_index("request_id")
    assert r.status[2] == "rejected" and r.reason[2] == "prompt_exceeds_max_num_batched_tokens"
    assert (r.status[[0, 1]] == "completed").all()


def test_chunked_fills_exactly_the_token_budget():
    f = serve_frames(reqs([10, 300], [6, 2]), cluster(scheduler="chunked", max_num_batched_tokens=64))
    s = f.steps
    # step 1: A's 10 tokens + 54 of B; then A decodes (1 token) + 63 of B per step until B's
    # 300 tokens are in: 54 + 63 * 3 = 243, then 57 remain
    assert list(s.tokens[:4]) == [64, 64, 64, 64]
    assert s.kind.iloc[0] == "prefill" and list(s.kind[1:4]) == ["mixed"] * 3
    assert s.tokens.iloc[4] == 1 + 57
    assert (f.requests.generated_tokens == f.requests.output_tokens).all()


def test_mixed_never_chunks_a_prefill():
    f = serve_frames(reqs([10, 60], [4, 2], [0.0, 0.0]), cluster(scheduler="mixed", max_num_batched_tokens=64))
    s = f.steps
    assert s.tokens.iloc[0] == 10          # B (60) does not fit beside A (10): not chunked
    assert s.kind.iloc[1] == "mixed" and s.tokens.iloc[1] == 1 + 60


def test_static_batch_runs_to_completion_before_the_next():
    f = serve_frames(reqs([10, 10, 10], [2, 5, 2], [0.0, 0.0, 1e-6]),
                     cluster(scheduler="static", max_num_seqs=8))
    s = f.steps
    assert s.kind.iloc[0] == "prefill" and s.sequences.iloc[0] == 2  # the third arrives later
    prefills = s.index[s.kind == "prefill"].tolist()
    assert len(prefills) == 2 and prefills[1] == 1 + 4   # after 4 decode steps of the batch
    assert (f.requests.status == "completed").all()


def test_preemption_when_kv_runs_out_and_requests_still_complete():
    # blocks of 4 tokens, 6 blocks: each request reaches 8 + 10 - 1 = 17 cached tokens
    # (5 blocks), so two cannot decode side by side to the end
    f = serve_frames(reqs([8, 8], [10, 10]), cluster(scheduler="continuous", block_size=4, kv_blocks=6))
    r = f.requests
    assert r.preemptions.sum() >= 1 and (r.status == "completed").all()
    assert (r.generated_tokens == 10).all()
    assert f.steps.kv_blocks_used.max() <= 6
    # the preempted one was recomputed: a later prefill of prompt + generated tokens
    assert (f.steps.kind == "prefill").sum() >= 2


def test_request_larger_than_kv_is_rejected_with_reason():
    f = serve_frames(reqs([8, 100], [4, 4]), cluster(block_size=4, kv_blocks=10))
    r = f.requests.set_index("request_id")
    assert r.status[1] == "rejected" and r.reason[1] == "exceeds_kv_capacity"
    assert r.status[0] == "completed"


def test_cuda_graph_padding_costs_compute_not_tokens():
    b = AnalyticBackend()
    f = serve_frames(reqs([5, 6, 7], [3, 3, 3]),
                     cluster(b, scheduler="continuous", cuda_graph_sizes=[1, 2, 4, 8]))
    d = f.steps[f.steps.kind == "decode"].iloc[0]
    assert (d.sequences, d.padded_sequences, d.tokens) == (3, 4, 3)
    assert round((d.end_s - d.start_s) / NS) == step_ns(b, decode=[5, 6, 7, 0])


def test_host_time_is_added_to_every_step():
    b = AnalyticBackend()
    f = serve_frames(reqs([5], [2]), cluster(b, host_s=1e-3))
    s = f.steps
    assert round((s.end_s[0] - s.start_s[0]) / NS) == step_ns(b, prefill=[(5, 0)], host_s=1e-3)
    # inter-token gap = the decode step (context 5) with its host time
    assert round(f.token_gaps.gap_s[0] / NS) == step_ns(b, decode=[5], host_s=1e-3)


def test_least_work_left_ordering_admits_the_shorter_first():
    f = serve_frames(reqs([50, 10], [20, 2]),
                     cluster(scheduler="continuous", max_num_seqs=1, ordering="least_work_left"))
    r = f.requests.set_index("request_id")
    assert r.first_token_s[1] < r.first_token_s[0]
    f2 = serve_frames(reqs([50, 10], [20, 2]), cluster(scheduler="continuous", max_num_seqs=1))
    r2 = f2.requests.set_index("request_id")
    assert r2.first_token_s[0] < r2.first_token_s[1]


def _disagg(mode, bw=10.0, lat=2e-6, shared=False, prefill=1, decode=1, pairing="global"):
    b = AnalyticBackend(layers=4, kv_heads=2, head_dim=8, kv_bytes=2)
    return b, {"backend": b, "engine": {"scheduler": "disaggregated", "kv_blocks": 1000},
               "prefill": {"clients": prefill}, "decode": {"clients": decode},
               "kv_transfer": mode, "pairing": pairing,
               "link": {"bandwidth_gbps": bw, "latency_s": lat, "shared": shared}}


def test_disaggregated_whole_kv_transfer_time():
    b, c = _disagg("whole")
    f = serve_frames(reqs([100], [3]), c)
    s = f.steps
    pre, dec = s[s.client == "prefill0"].iloc[0], s[s.client == "decode0"].iloc[0]
    nbytes = 4 * 2 * 2 * 8 * 100 * 2              # layers * 2 * kv_heads * head_dim * tokens * bytes
    expect = math.ceil(nbytes / 10.0) + 2000       # bytes / (GB/s = bytes per ns) + latency (ns)
    assert round((dec.start_s - pre.end_s) / NS) == expect
    assert f.requests.decode_client[0] == "decode0" and f.requests.generated_tokens[0] == 3
    # the first token came from the prefill client; the decode client made the other two
    assert s[s.client == "decode0"].tokens.sum() == 2


def test_disaggregated_layer_by_layer_overlaps_the_prefill():
    b, c = _disagg("layer", bw=1.0, lat=0.0)
    f = serve_frames(reqs([100], [2]), c)
    s = f.steps
    pre, dec = s[s.client == "prefill0"].iloc[0], s[s.client == "decode0"].iloc[0]
    start, dur = round(pre.start_s / NS), round((pre.end_s - pre.start_s) / NS)
    per = 4 * 2 * 2 * 8 * 100 * 2 / 4 / 1.0           # one layer's bytes at 1 byte/ns
    t = 0
    for i in range(4):                             # FIFO link: each layer once it is computed
        t = max(t, start + -(-(i + 1) * dur // 4)) + math.ceil(per)
    assert round(dec.start_s / NS) == t
    whole = serve_frames(reqs([100], [2]), _disagg("whole", bw=1.0, lat=0.0)[1]).steps
    assert dec.start_s < whole[whole.client == "decode0"].start_s.iloc[0]


def test_shared_link_is_contended():
    _, c = _disagg("whole", bw=1.0, lat=0.0, shared=True, prefill=2, decode=2, pairing="local")
    f = serve_frames(reqs([100, 100], [2, 2]), c)
    d = f.steps[f.steps.kind == "decode"].sort_values("start_s")
    hold = math.ceil(4 * 2 * 2 * 8 * 100 * 2 / 1.0)
    # both prefills end together; the second transfer waits for the first one
    assert round((d.start_s.iloc[1] - d.start_s.iloc[0]) / NS) == hold
    _, c2 = _disagg("whole", bw=1.0, lat=0.0, shared=False, prefill=2, decode=2, pairing="local")
    d2 = serve_frames(reqs([100, 100], [2, 2]), c2).steps
    d2 = d2[d2.kind == "decode"]
    assert d2.start_s.iloc[0] == d2.start_s.iloc[1]


def test_routers():
    r = reqs([10, 500, 20, 30, 600, 40], [2] * 6)
    rr = serve_frames(r, {**cluster(clients=3), "router": "round_robin"}).requests
    assert list(rr.client) == ["client0", "client1", "client2"] * 2
    hl = serve_frames(r, {**cluster(clients=2),
                          "router": {"type": "heavy_light", "threshold": 100}}).requests
    assert list(hl.client) == ["client1", "client0", "client1", "client1", "client0", "client1"]
    # least loaded by input length, all arriving at once: the second request goes to the
    # other client, the third to whichever holds fewer prompt tokens
    ll = serve_frames(reqs([500, 10, 20], [2] * 3),
                      {**cluster(clients=2), "router": {"type": "least_loaded", "by": "input"}}).requests
    assert list(ll.client) == ["client0", "client1", "client1"]
    with pytest.raises(ConfigError, match="router"):
        serve_frames(r, {**cluster(clients=2), "router": {"type": "least_loaded", "by": "mood"}})


def test_power_of_two_is_seeded_and_deterministic():
    rng = np.random.default_rng(3)
    n = 200
    r = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.sort(rng.uniform(0, 2, n)),
                      "prompt_tokens": rng.integers(1, 300, n), "output_tokens": rng.integers(1, 40, n)})
    c = {**cluster(clients=4, scheduler="chunked", max_num_batched_tokens=256, block_size=8, kv_blocks=200),
         "router": "power_of_two"}
    a, b = serve_frames(r, c, seed=5), serve_frames(r, c, seed=5)
    pd.testing.assert_frame_equal(a.requests, b.requests, check_exact=True)
    pd.testing.assert_frame_equal(a.steps, b.steps, check_exact=True)
    pd.testing.assert_frame_equal(a.token_gaps, b.token_gaps, check_exact=True)
    assert (a.requests.generated_tokens == a.requests.output_tokens).all()
    other = serve_frames(r, c, seed=6).requests
    assert not a.requests.client.equals(other.client)


def test_conservation_invariant_is_checked():
    co = Coordinator(reqs([5, 5], [3, 3]), cluster())
    co.run()
    co.reqs[0].seq.generated -= 1
    with pytest.raises(InvariantError, match="tokens generated"):
        co._check()
    co.reqs[0].seq.generated += 1
    co.reqs[1].status = "pending"
    with pytest.raises(InvariantError, match="completed or rejected"):
        co._check()


def test_pipeline_fixed_stages_shift_times():
    pipe = {"stages": [{"kind": "fixed", "latency_s": 0.01}, {"kind": "prefill"},
                       {"kind": "decode"}, {"kind": "fixed", "latency_s": 0.02}]}
    f = serve_frames(reqs([5], [2]), cluster(), pipeline=pipe)
    assert f.steps.start_s[0] == pytest.approx(0.01)
    assert f.requests.finish_s[0] == pytest.approx(f.steps.end_s.iloc[-1] + 0.02)
    with pytest.raises(ConfigError, match="prefill stage directly followed"):
        serve_frames(reqs([5], [2]), cluster(), pipeline={"stages": [{"kind": "decode"}]})


def test_bad_requests_frame():
    with pytest.raises(ConfigError, match="output_tokens"):
        serve_frames(pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [3]}), cluster())


TINY = {"name": "tiny", "source": "test", "hidden_size": 256, "num_layers": 2, "num_heads": 4,
        "num_kv_heads": 2, "intermediate_size": 512, "ffn": "gated", "vocab_size": 1000,
        "max_position": 2048, "norm": "rmsnorm"}


def test_strata_backend_memo_is_exact_and_keyed_on_the_step():
    import sim
    b = StrataBackend("arch/quickstart.yaml", TINY)
    direct = sim.simulate_step("arch/quickstart.yaml", TINY, prefill=[(7, 3)], decode=[5, 9])
    c1 = b.price([(7, 3)], [9, 5])
    assert c1.seconds == direct.seconds and c1.joules == pytest.approx(direct.energy_total_pj * 1e-12)
    assert b.price([(7, 3)], [5, 9]) is c1 and b.priced == 1   # a permutation is the same step
    c2 = b.price([(7, 3)], [5, 10])
    assert b.priced == 2 and c2 != c1
    # KV bytes per token: layers * 2 * kv_heads * head_dim * bytes (the model's activation bits)
    abits = sim.load_model(TINY).precision.abits
    assert b.kv_bytes_per_token == 2 * 2 * 2 * 64 * abits / 8
    f = serve_frames(reqs([20, 30], [3, 2]), {"backend": b, "engine": {"kv_blocks": 100}})
    assert (f.requests.status == "completed").all()


@pytest.mark.parametrize("sched", ["continuous", "chunked", "static", "mixed"])
def test_decode_runs_equal_step_by_step(monkeypatch, sched):
    """The engine waits for stable decode stretches with one timeout; frames must be the same
    as stepping one decode at a time (MAX_RUN = 1), KV shortages and preemptions included."""
    import sim.system.engine as engine_mod
    rng = np.random.default_rng(11)
    n = 120
    r = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.sort(rng.uniform(0, 3, n)),
                      "prompt_tokens": rng.integers(1, 200, n), "output_tokens": rng.integers(1, 80, n)})
    c = {**cluster(clients=3, scheduler=sched, max_num_batched_tokens=256, max_num_seqs=12,
                   block_size=8, kv_blocks=90, cuda_graph_sizes=[1, 2, 4, 8, 16]),
         "router": {"type": "least_loaded", "by": "tokens_left"}}
    fast = serve_frames(r, c)
    monkeypatch.setattr(engine_mod, "MAX_RUN", 1)
    slow = serve_frames(r, c)
    pd.testing.assert_frame_equal(fast.requests, slow.requests, check_exact=True)
    pd.testing.assert_frame_equal(fast.steps, slow.steps, check_exact=True)
    pd.testing.assert_frame_equal(fast.token_gaps, slow.token_gaps, check_exact=True)
    assert fast.requests.preemptions.sum() > 0 or sched == "static"


def test_strata_table_decode_run_matches_single_estimates():
    b = StrataBackend("arch/quickstart.yaml", TINY, mode="table",
                      table_options=dict(max_tokens=256, max_chunk=128, max_past=384,
                                         max_context=768, points_per_octave=1, tol=0.01))
    secs, joules = b.price_decode_run([5, 100, 37], 1, 20)
    for k in (0, 7, 19):
        one = b.price((), [5 + k, 100 + k, 37 + k, 0])
        assert secs[k] == pytest.approx(one.seconds, rel=1e-12)
        assert joules[k] == pytest.approx(one.joules, rel=1e-12)


def test_requests_for_another_model_are_rejected():
    r = reqs([5, 5], [2, 2]).assign(model=["llama-3-8b", "qwen2.5-3b"])
    f = serve_frames(r, {**cluster(), "model": "llama-3-8b"})
    assert list(f.requests.status) == ["completed", "rejected"]
    assert f.requests.reason[1] == "no_client_for_model"
