"""Compact serving outputs: inter-token gaps as weighted samples, typed step columns.

The engines keep no per-token timestamps: a decode run adds its step durations once, weighted
by its sequences. These tests check the gaps against invariants a per-token list satisfies
(every completed request contributes generated - 1 gaps summing to finish - first token), the
weighted percentiles against numpy on the written-out sample, and the step frame's types."""
import numpy as np
import pandas as pd
import pytest

from sim.system import AnalyticBackend, serve_frames
from sim.system.metrics import latency_stats, weighted_latency_stats


def _inputs(sched="continuous"):
    """A requests frame and a 3-client cluster that preempts (also used by test_steps_stream)."""
    rng = np.random.default_rng(5)
    n = 150
    r = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.sort(rng.uniform(0, 4, n)),
                      "prompt_tokens": rng.integers(1, 300, n),
                      "output_tokens": rng.integers(1, 90, n)})
    c = {"backend": AnalyticBackend(), "clients": 3, "router": "round_robin",
         "engine": {"scheduler": sched, "max_num_batched_tokens": 512, "max_num_seqs": 16,
                    "block_size": 8, "kv_blocks": 120, "cuda_graph_sizes": [1, 2, 4, 8, 16]}}
    return r, c


def _run(sched="continuous"):
    return serve_frames(*_inputs(sched))


@pytest.mark.parametrize("sched", ["continuous", "chunked"])
def test_gaps_add_up_to_each_requests_decode_time(sched):
    f = _run(sched)
    g, req = f.token_gaps, f.requests
    done = req[req.status == "completed"]
    assert f.requests.preemptions.sum() > 0          # gaps across a recompute are counted
    assert int(g.tokens.sum()) == int((done.generated_tokens - 1).sum())
    gap_ns = np.round(g.gap_s.to_numpy() / 1e-9).astype(np.int64)
    span_ns = np.round((done.finish_s - done.first_token_s).to_numpy() / 1e-9).astype(np.int64)
    assert int((gap_ns * g.tokens.to_numpy()).sum()) == int(span_ns.sum())
    assert g.gap_s.is_monotonic_increasing and g.gap_s.is_unique and (g.tokens > 0).all()


def test_weighted_stats_equal_stats_of_the_written_out_sample():
    rng = np.random.default_rng(2)
    for _ in range(20):
        v = rng.choice(rng.exponential(1.0, 30), rng.integers(1, 30), replace=False)
        c = rng.integers(0, 6, len(v))
        c[0] = max(c[0], 1)
        got = weighted_latency_stats(v, c)
        ref = latency_stats(np.repeat(v, c))
        for k in ("count", "p50", "p90", "p99", "max"):
            assert got[k] == ref[k], k
        assert got["mean"] == pytest.approx(ref["mean"], rel=1e-12)
    assert np.isnan(weighted_latency_stats([], [])["p50"])


def test_step_frame_is_typed_and_compact():
    s = _run().steps
    assert isinstance(s.client.dtype, pd.CategoricalDtype) and isinstance(s.kind.dtype,
                                                                          pd.CategoricalDtype)
    for col in ("sequences", "padded_sequences", "tokens", "kv_blocks_used"):
        assert s[col].dtype == np.int32
    assert s.context_tokens.dtype == np.int64 and s.energy_j.dtype == np.float64
    order = s[["start_s"]].assign(c=s.client.cat.codes)
    assert order.sort_values(["start_s", "c"], kind="stable").index.equals(s.index)


def _run_with(**kw):
    rng = np.random.default_rng(9)
    n = 80
    r = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.sort(rng.uniform(0, 3, n)),
                      "prompt_tokens": rng.integers(1, 200, n),
                      "output_tokens": rng.integers(1, 120, n)})
    c = {"backend": AnalyticBackend(), "clients": 2,
         "engine": {"scheduler": "continuous", "kv_blocks": 400, "block_size": 8}}
    return serve_frames(r, c, **kw)


def test_without_step_rows_everything_else_is_the_same(monkeypatch):
    import sim.system.engine as engine_mod
    full = _run_with()
    monkeypatch.setattr(engine_mod.GapSamples, "LIMIT", 7)     # merge the gaps many times
    lean = _run_with(keep_steps=False)
    assert len(lean.steps) == 0 and list(lean.steps.columns) == list(full.steps.columns)
    pd.testing.assert_frame_equal(full.requests, lean.requests, check_exact=True)
    pd.testing.assert_frame_equal(full.clients, lean.clients, check_exact=True)
    pd.testing.assert_frame_equal(full.token_gaps, lean.token_gaps, check_exact=True)
    assert full.events == lean.events and full.clients.steps.sum() == len(full.steps)
    busy = (full.steps.end_s - full.steps.start_s).groupby(full.steps.client).sum()
    assert np.allclose(busy.to_numpy(), full.clients.busy_s.to_numpy(), rtol=1e-12)


def test_requests_beyond_the_model_context_are_rejected_not_fatal():
    from sim.system import StrataBackend
    b = StrataBackend("h100-sxm", "llama-3.2-1b", mode="table",
                      table_options=dict(max_tokens=1024, max_chunk=512))
    window = b.max_position
    r = pd.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 0.0, 0.0],
                      "prompt_tokens": [100, window - 9, window - 9],
                      "output_tokens": [5, 10, 11]})
    f = serve_frames(r, {"backend": b, "clients": 1,
                         "engine": {"scheduler": "chunked", "max_num_batched_tokens": 512}})
    st = f.requests.set_index("request_id")
    assert list(st.status) == ["completed", "completed", "rejected"]
    assert st.reason[2] == "exceeds_model_context"
