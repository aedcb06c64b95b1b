"""Serving metrics against numpy on random runs and against hand-built tiny cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from sim.system import (HERMES_SLO, HERMES_SLO_RETRIEVAL, batch_size, goodput, kv_usage,
                        latency_stats, meets_slo, percentile, queue_length, request_latencies,
                        requests_in_system, slo_attainment, summarize, throughput,
                        time_weighted_mean, tokens_per_joule, value_at)


def run(rows):
    """A run's requests frame from (arrival, first, finish, out, status) tuples."""
    a, f, e, o, s = zip(*rows)
    n = len(rows)
    return pd.DataFrame({"request_id": np.arange(n), "arrival_s": a, "client": 0,
                         "first_token_s": f, "finish_s": e, "prompt_tokens": 10,
                         "output_tokens": o, "status": s})


def random_run(seed=0, n=500, reject=0.05):
    rng = np.random.default_rng(seed)
    a = np.sort(rng.uniform(0, 60, n))
    f = a + rng.exponential(0.4, n)
    out = rng.integers(1, 300, n)
    e = f + (out - 1) * rng.uniform(0.01, 0.06, n)
    st = np.where(rng.random(n) < reject, "rejected:kv_full", "completed")
    done = st == "completed"
    return pd.DataFrame({"request_id": np.arange(n), "arrival_s": a,
                         "client": rng.integers(0, 3, n),
                         "first_token_s": np.where(done, f, np.nan),
                         "finish_s": np.where(done, e, np.nan),
                         "prompt_tokens": rng.integers(1, 4000, n), "output_tokens": out,
                         "status": st})


def test_percentile_matches_numpy():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 10, 101, 1000):
        x = rng.lognormal(0, 2, n)
        for q in (0, 1, 25, 50, 90, 99, 99.9, 100):
            assert percentile(x, q) == pytest.approx(np.percentile(x, q), rel=1e-12)
    assert math.isnan(percentile([], 50))
    assert percentile([1, 2, np.inf], 50) == 2.0
    assert percentile([1, 2, np.inf], 60) == math.inf        # upper neighbour is infinite
    assert percentile([1, np.nan, 3], 50) == 2.0             # NaN dropped


def test_tiny_case_by_hand():
    r = run([(0.0, 0.2, 1.2, 11, "completed"),     # ttft .2, tpot .1, e2e 1.2
             (1.0, 1.5, 1.5, 1, "completed"),      # one token: no TPOT
             (2.0, 2.1, 2.6, 6, "completed"),      # ttft .1, tpot .1, e2e .6
             (3.0, np.nan, np.nan, 5, "rejected:too_long")])
    lat = request_latencies(r)
    np.testing.assert_allclose(lat["ttft_s"], [0.2, 0.5, 0.1, np.nan])
    np.testing.assert_allclose(lat["tpot_s"], [0.1, np.nan, 0.1, np.nan])
    np.testing.assert_allclose(lat["e2e_s"], [1.2, 0.5, 0.6, np.nan])
    s = summarize(r, energy_j=20.0)
    assert s["completed"] == 3 and s["rejected_by_reason"] == {"too_long": 1}
    assert s["duration_s"] == pytest.approx(3.0)             # first arrival to last event
    assert s["ttft_s"]["mean"] == pytest.approx(0.8 / 3)
    assert s["ttft_s"]["p50"] == pytest.approx(0.2)
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx(18 / 3.0)
    assert s["efficiency"]["output_tokens_per_j"] == pytest.approx(18 / 20)
    assert s["efficiency"]["total_tokens_per_j"] == pytest.approx(48 / 20)
    # SLO: TTFT values (.2, .5, .1, inf): P50 = .35 <= .5; P90 -> inf fails
    att = slo_attainment(r).set_index(["metric", "percentile"])
    assert att.loc[("ttft", 50), "value_s"] == pytest.approx(0.35)
    assert att.loc[("ttft", 50), "met"] and not att.loc[("ttft", 90), "met"]
    assert att.loc[("ttft", 50), "attainment"] == pytest.approx(3 / 4)  # .5 <= .5 counts
    # TPOT values (.1, .1, inf) without the one-token request; limits .03125/.0375/.125
    assert att.loc[("tpot", 99), "attainment"] == pytest.approx(2 / 3)
    assert not att["met"].all() and not s["slo"]["all_met"]
    # goodput at P99: TTFT <= 1.5 and TPOT <= .125 -> requests 0, 1, 2
    np.testing.assert_array_equal(meets_slo(r, HERMES_SLO, 99), [True, True, True, False])
    np.testing.assert_array_equal(meets_slo(r, HERMES_SLO, 50), [False, True, False, False])
    assert s["goodput"]["p99"]["requests_per_s"] == pytest.approx(1.0)
    assert s["goodput"]["p50"]["tokens_per_s"] == pytest.approx(1 / 3)
    json.dumps(s, allow_nan=False)                            # JSON-ready


def test_slo_table_is_hermes_table_ii():
    rows = {(m, p): v for m, p, v in HERMES_SLO.rows()}
    assert rows == pytest.approx({("ttft", 50): 0.5, ("ttft", 90): 0.75, ("ttft", 99): 1.5,
                                  ("tpot", 50): 0.03125, ("tpot", 90): 0.0375,
                                  ("tpot", 99): 0.125})
    assert HERMES_SLO_RETRIEVAL.limit("ttft", 99) == pytest.approx(6.0)
    assert "2504.09775" in HERMES_SLO.source and len(HERMES_SLO.rows()) == 6
    with pytest.raises(TypeError):
        HERMES_SLO.ttft_slowdown[50] = 9


def test_random_run_against_numpy():
    r = random_run()
    s = summarize(r, itl_s=[np.full(3, 0.02), np.array([0.01, 0.05])])
    done = r["status"] == "completed"
    d = r[done]
    ttft = (d["first_token_s"] - d["arrival_s"]).to_numpy()
    multi = d["output_tokens"] > 1
    tpot = ((d["finish_s"] - d["first_token_s"]) / (d["output_tokens"] - 1))[multi].to_numpy()
    e2e = (d["finish_s"] - d["arrival_s"]).to_numpy()
    for name, x in (("ttft_s", ttft), ("tpot_s", tpot), ("e2e_s", e2e)):
        assert s[name]["count"] == x.size
        assert s[name]["mean"] == pytest.approx(x.mean(), rel=1e-12)
        for p in (50, 90, 99):
            assert s[name][f"p{p}"] == pytest.approx(np.percentile(x, p), rel=1e-12)
    assert s["itl_s"]["p50"] == pytest.approx(0.02) and s["itl_s"]["max"] == 0.05
    # SLO value over all requests, rejected as +inf, against numpy on the same values
    att = slo_attainment(r).set_index(["metric", "percentile"])
    all_ttft = np.where(done, r["first_token_s"] - r["arrival_s"], np.inf)
    lim = HERMES_SLO.limit("ttft", 90)
    assert att.loc[("ttft", 90), "attainment"] == pytest.approx(np.mean(all_ttft <= lim))
    finite_p50 = np.percentile(np.where(np.isinf(all_ttft), 1e300, all_ttft), 50)
    assert att.loc[("ttft", 50), "value_s"] == pytest.approx(finite_p50)
    span = max(np.nanmax(r["finish_s"]), r["arrival_s"].max()) - r["arrival_s"].min()
    thr = throughput(r)
    assert thr["output_tokens_per_s"] == pytest.approx(d["output_tokens"].sum() / span)
    good = goodput(r)
    ok = (done & (r["first_token_s"] - r["arrival_s"] <= 1.5)
          & ((r["output_tokens"] == 1)
             | ((r["finish_s"] - r["first_token_s"]) / (r["output_tokens"] - 1) <= 0.125)))
    assert good[99]["requests_per_s"] == pytest.approx(ok.sum() / span)
    assert good[99]["tokens_per_s"] == pytest.approx(r["output_tokens"][ok].sum() / span)
    with pytest.raises(ValueError):
        tokens_per_joule(r, 0.0)


def test_series_against_brute_force():
    r = random_run(seed=3, n=80)
    grid = np.linspace(-1, 80, 2001)
    q = queue_length(r)
    done = (r["status"] == "completed").to_numpy()
    leave = np.where(done, r["first_token_s"], r["arrival_s"])   # rejected at arrival (NaN)
    brute = ((r["arrival_s"].to_numpy()[None] <= grid[:, None])
             & (leave[None] > grid[:, None])).sum(axis=1)
    np.testing.assert_array_equal(value_at(q, grid), brute)
    ins = requests_in_system(r, client=1)
    c1 = (r["client"] == 1).to_numpy()
    end = np.where(done, r["finish_s"], r["arrival_s"])
    brute = ((r["arrival_s"].to_numpy()[c1][None] <= grid[:, None])
             & (end[c1][None] > grid[:, None])).sum(axis=1)
    np.testing.assert_array_equal(value_at(ins, grid), brute)


def steps_frame():
    return pd.DataFrame({
        "client": ["a", "a", "b", "a"], "kind": ["prefill", "decode", "decode", "decode"],
        "start_s": [0.0, 1.0, 0.5, 2.0], "end_s": [0.5, 1.5, 1.0, 2.5],
        "sequences": [2, 3, 4, 3], "padded_sequences": [2, 4, 4, 4],
        "tokens": [300, 3, 4, 3], "context_tokens": [0, 300, 500, 303],
        "kv_blocks_used": [10, 12, 5, 13]})


def test_batch_and_kv_series_by_hand():
    st = steps_frame()
    b = batch_size(st)
    np.testing.assert_array_equal(value_at(b, [0.0, 0.49, 0.5, 0.99, 1.0, 1.2, 1.7, 2.2, 3]),
                                  [2, 2, 4, 4, 3, 3, 0, 3, 0])
    assert value_at(batch_size(st, column="padded_sequences"), [1.2])[0] == 4
    kv = kv_usage(st)
    # a: 10 from 0, 12 from 1, 13 from 2; b: 5 from 0.5 on
    np.testing.assert_array_equal(value_at(kv, [-1, 0, 0.6, 1.1, 2.1]), [0, 10, 15, 17, 18])
    np.testing.assert_array_equal(value_at(kv_usage(st, client="a"), [0.6, 2.1]), [10, 13])
    # time-weighted mean of batch size over [0, 3]: (2*.5 + 4*.5 + 3*.5 + 3*.5) / 3
    assert time_weighted_mean(b, 0.0, 3.0) == pytest.approx(6.0 / 3)
    r = run([(0.0, 0.2, 2.5, 11, "completed")])
    s = summarize(r, steps=st)["steps"]
    assert s["by_kind"] == {"decode": 3, "prefill": 1}
    assert s["padding_fraction"] == pytest.approx(1 - 12 / 14)
    assert s["busy_fraction"] == pytest.approx({"a": 1.5 / 2.5, "b": 0.5 / 2.5})
    assert s["kv_blocks_used"]["max"] == 18


def test_latency_stats_empty_and_bad_frames():
    assert latency_stats([])["count"] == 0 and math.isnan(latency_stats([])["p99"])
    r = run([(0.0, 0.2, 1.2, 11, "done")])
    with pytest.raises(ValueError, match="status"):
        summarize(r)
    r = run([(1.0, 0.5, 1.2, 11, "completed")])               # first token before arrival
    with pytest.raises(ValueError, match="request 0"):
        request_latencies(r)
    with pytest.raises(ValueError, match="missing client"):
        summarize(run([(0.0, 0.2, 1.2, 11, "completed")]).drop(columns="client"))
