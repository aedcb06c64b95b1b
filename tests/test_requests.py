"""Request traces and workloads: the reader, its bad-trace corpus, arrival processes and length
distributions (checked against their defining moments), seeding and the workload schema."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.config import ConfigError
from sim.system import (build_requests, load_workload, read_trace, requests_frame,
                        write_trace)

ROOT = Path(__file__).resolve().parents[1]
AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
PL = "arrival_s,prompt_tokens,output_tokens\n"

# ------------------------------------------------------------------ the reader -------------


def write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_azure_trace_seconds_from_first(tmp_path):
    p = write(tmp_path, AZ + "2023-11-16 18:15:46.6805900,374,44\n"
              "2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:16:46.6805900,5,1\n\n")
    df = read_trace(p)
    assert list(df.columns) == ["request_id", "arrival_s", "prompt_tokens", "output_tokens"]
    assert [str(t) for t in df.dtypes] == ["int64", "float64", "int64", "int64"]
    np.testing.assert_allclose(df["arrival_s"], [0.0, 4.314579, 60.0], atol=1e-9)
    assert df["request_id"].tolist() == [0, 1, 2]
    assert df["prompt_tokens"].tolist() == [374, 396, 5]


def test_plain_trace_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frame = requests_frame(np.sort(rng.uniform(0, 100, 50)).round(6), rng.integers(1, 9999, 50),
                           rng.integers(1, 999, 50))
    write_trace(frame, tmp_path / "p.csv")
    back = read_trace(tmp_path / "p.csv")
    pd.testing.assert_frame_equal(back, frame)
    assert read_trace(tmp_path / "p.csv", schema="plain").equals(frame)


def test_reader_returns_a_private_copy(tmp_path):
    p = write(tmp_path, PL + "0,1,2\n1,3,4\n")
    a = read_trace(p)
    a.loc[0, "prompt_tokens"] = 999
    assert read_trace(p)["prompt_tokens"].iloc[0] == 1
    p.write_text(PL + "0,7,2\n")                # edited file: the cache is keyed by content
    assert read_trace(p)["prompt_tokens"].tolist() == [7]


@pytest.mark.skipif(not (ROOT.parent / "shared/traces/AzureLLMInferenceTrace_conv.csv").is_file(),
                    reason="Azure traces not present")
def test_real_azure_conv_trace():
    df = read_trace(ROOT.parent / "shared/traces/AzureLLMInferenceTrace_conv.csv")
    raw = pd.read_csv(ROOT.parent / "shared/traces/AzureLLMInferenceTrace_conv.csv")
    t = pd.to_datetime(raw["TIMESTAMP"])
    np.testing.assert_allclose(df["arrival_s"], (t - t.iloc[0]).dt.total_seconds(), atol=1e-6)
    assert (df["prompt_tokens"].to_numpy() == raw["ContextTokens"].to_numpy()).all()


# Bad-trace corpus: (id, file bytes, fragments the one-line message must hold besides the file)
BAD = [
    ("empty", "", ["empty file"]),
    ("blank", "\n\n", ["empty file"]),
    ("header-only", PL, ["at least one request row"]),
    ("no-known-columns", "a,b\n1,2\n", ["line 1", "Azure schema", "plain schema"]),
    ("missing-column", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n",
     ["line 1", "'GeneratedTokens'"]),
    ("misspelt-column", "arrival_s,prompt_tokens,outputtokens\n0,1,2\n",
     ["'output_tokens'", "did you mean 'outputtokens'"]),
    ("negative-tokens", AZ + "2023-11-16 18:15:46,3,4\n2023-11-16 18:15:47,-3,4\n",
     ["line 3, ContextTokens", "integer token count >= 1", "'-3'"]),
    ("zero-output", PL + "0,3,0\n", ["line 2, output_tokens", "'0'"]),
    ("fractional-tokens", AZ + "2023-11-16 18:15:46,3.5,4\n",
     ["line 2, ContextTokens", "'3.5'"]),
    ("text-tokens", PL + "0,1,2\n0.5,abc,3\n", ["line 3, prompt_tokens", "'abc'"]),
    ("nan-tokens", PL + "0,1,2\n0.5,nan,3\n", ["line 3, prompt_tokens", "'nan'"]),
    ("empty-cell", PL + "0,1,2\n0.5,,3\n", ["line 3, prompt_tokens", "an empty cell"]),
    ("short-row", PL + "0,1,2\n0.5,3\n", ["line 3, output_tokens", "an empty cell"]),
    ("long-row", PL + "0,1,2\n0.5,3,3,4\n", ["line 3", "3 comma-separated fields", "4 fields"]),
    ("long-first-row", AZ + "2023-11-16 18:15:46,3,4,5\n", ["line 2", "got 4 fields"]),
    ("huge-tokens", PL + f"0,{2**40},3\n", ["line 2, prompt_tokens", "<= 2147483647"]),
    ("unsorted-azure", AZ + "2023-11-16 18:15:47,3,4\n\n2023-11-16 18:15:46,3,4\n",
     ["line 4, TIMESTAMP", "non-decreasing", "on line 2"]),
    ("unsorted-plain", PL + "1.5,1,2\n0.5,3,3\n", ["line 3, arrival_s", "non-decreasing"]),
    ("bad-timestamp", AZ + "2023-11-16 18:15:46,3,4\nyesterday,3,4\n",
     ["line 3, TIMESTAMP", "date-time", "'yesterday'"]),
    ("bad-date", AZ + "2023-13-45 18:15:46,3,4\n", ["line 2, TIMESTAMP", "date-time"]),
    ("missing-timestamp", AZ + "2023-11-16 18:15:46,3,4\n,3,4\n",
     ["line 3, TIMESTAMP", "an empty cell"]),
    ("negative-arrival", PL + "-1,3,4\n", ["line 2, arrival_s", ">= 0"]),
    ("nan-arrival", PL + "nan,3,4\n", ["line 2, arrival_s", "finite"]),
    ("inf-arrival", PL + "0,1,1\ninf,3,4\n", ["line 3, arrival_s", "finite"]),
    ("text-arrival", PL + "soon,3,4\n", ["line 2, arrival_s", "'soon'"]),
    ("non-utf8", AZ.encode() + b"2023-11-16 18:15:46,3,4\n2023-11-16 18:15:47,\xff,4\n",
     ["line 3", "UTF-8", "0xff"]),
    ("latin1-header", "TIMESTAMP,ContextTokens,GeneratedTokens\xe9\n".encode("latin-1"),
     ["line 1", "UTF-8"]),
    ("unclosed-quote", PL + "0,1,2\n\"0.5,3,3\n", ["well-formed CSV"]),
]


@pytest.mark.parametrize("text,fragments", [(t, f) for _, t, f in BAD], ids=[i for i, _, _ in BAD])
def test_bad_trace(tmp_path, text, fragments):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_trace(p)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(p) + ": ")
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_trace(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="a folder"):
        read_trace(tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'plain'"):
        read_trace(tmp_path / "x.csv", schema="plian")


def test_blank_lines_keep_line_numbers(tmp_path):
    p = write(tmp_path, PL + "0,1,2\n\n\n0.5,3,x\n")
    with pytest.raises(ConfigError, match="line 5, output_tokens"):
        read_trace(p)


# ------------------------------------------------------------------ arrivals and lengths ----

FIXED = {"prompt": {"dist": "fixed", "value": 10}, "output": {"dist": "fixed", "value": 5}}


def synth(process, n=20000, seed=7, lengths=FIXED, **params):
    return build_requests(load_workload({"arrivals": {"process": process, **params},
                                         "lengths": lengths, "requests": n, "seed": seed}))


@pytest.mark.parametrize("process,params,cv", [
    ("poisson", {"rate": 4.0}, 1.0),
    ("gamma", {"rate": 4.0, "cv": 3.0}, 3.0),
    ("gamma", {"rate": 4.0, "cv": 0.5}, 0.5),
    ("uniform", {"rate": 4.0}, 1 / np.sqrt(3)),
    ("uniform", {"rate": 4.0, "spread": 0.3}, 0.3 / np.sqrt(3)),
    ("deterministic", {"rate": 4.0}, 0.0),
])
def test_arrival_process_moments(process, params, cv):
    df = synth(process, **params)
    t = df["arrival_s"].to_numpy()
    assert t[0] == 0.0 and (np.diff(t) >= 0).all() and len(t) == 20000
    gaps = np.diff(t)
    n = gaps.size
    # mean gap 1/rate within 5 standard errors; CV within 10 %
    assert abs(gaps.mean() - 0.25) <= 5 * 0.25 * max(cv, 1e-3) / np.sqrt(n) + 1e-12
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1, abs=1e-9)


def test_duration_limit_and_chunk_independence():
    a = synth("poisson", n=50, rate=10.0)
    cfg = load_workload({"arrivals": {"process": "poisson", "rate": 10.0}, "lengths": FIXED,
                         "duration_s": 2000.0, "seed": 7})
    b = build_requests(cfg)
    assert b["arrival_s"].max() < 2000.0 and len(b) > 15000     # ~20,000 expected
    # the same stream whichever limit stops it
    np.testing.assert_array_equal(a["arrival_s"], b["arrival_s"][:50])


def test_same_seed_identical_and_streams_independent():
    lengths = {"prompt": {"dist": "lognormal", "mean": 1000, "std": 900},
               "output": {"dist": "normal", "mean": 200, "std": 80, "min": 5, "max": 400}}
    a = synth("gamma", n=500, rate=3.0, cv=2.0, lengths=lengths)
    b = synth("gamma", n=500, rate=3.0, cv=2.0, lengths=lengths)
    pd.testing.assert_frame_equal(a, b)
    c = synth("gamma", n=500, seed=8, rate=3.0, cv=2.0, lengths=lengths)
    assert not np.array_equal(a["arrival_s"], c["arrival_s"])
    # changing the output distribution leaves arrivals and prompts where they were
    d = synth("gamma", n=500, rate=3.0, cv=2.0,
              lengths={**lengths, "output": {"dist": "uniform", "low": 1, "high": 9}})
    np.testing.assert_array_equal(a["arrival_s"], d["arrival_s"])
    np.testing.assert_array_equal(a["prompt_tokens"], d["prompt_tokens"])


def test_length_distributions():
    n = 40000
    def lengths(prompt):
        return synth("deterministic", n=n, rate=1.0,
                     lengths={"prompt": prompt, "output": {"dist": "fixed", "value": 1}}
                     )["prompt_tokens"].to_numpy()
    x = lengths({"dist": "uniform", "low": 3, "high": 7})
    assert set(np.unique(x)) == {3, 4, 5, 6, 7}
    assert np.bincount(x)[3:].min() > n / 5 * 0.9
    x = lengths({"dist": "normal", "mean": 500, "std": 50})
    assert x.mean() == pytest.approx(500, abs=2) and x.std() == pytest.approx(50, rel=0.03)
    x = lengths({"dist": "normal", "mean": 10, "std": 50, "min": 4, "max": 30})
    assert x.min() == 4 and x.max() == 30                      # clipped, not redrawn
    x = lengths({"dist": "lognormal", "mean": 1000, "std": 1500})
    assert x.mean() == pytest.approx(1000, rel=0.05) and x.std() == pytest.approx(1500, rel=0.15)
    x = lengths({"dist": "zipf", "a": 1.5, "min": 10, "max": 20})
    p = np.arange(1, 12) ** -1.5
    np.testing.assert_allclose(np.bincount(x - 10, minlength=11) / n, p / p.sum(), atol=0.01)
    x = lengths({"dist": "lognormal_mixture", "weights": [3, 1], "medians": [100, 10000],
                 "sigmas": [0.1, 0.1]})
    assert (x < 1000).mean() == pytest.approx(0.75, abs=0.01)
    assert np.median(x[x < 1000]) == pytest.approx(100, rel=0.02)


def test_trace_replay_scale_rate_window(tmp_path):
    t = np.arange(100) * 2.0                                   # 0.5 req/s
    p = tmp_path / "tr.csv"
    write_trace(requests_frame(t, np.arange(1, 101), np.arange(101, 201)), p)
    base = {"trace": str(p)}
    df = build_requests(load_workload(base))
    np.testing.assert_allclose(df["arrival_s"], t)
    assert df["output_tokens"].tolist() == list(range(101, 201))
    df = build_requests(load_workload({**base, "arrivals": {"process": "trace", "scale": 4.0}}))
    np.testing.assert_allclose(df["arrival_s"], t / 4)
    df = build_requests(load_workload({**base, "arrivals": {"process": "trace", "rate": 2.0}}))
    np.testing.assert_allclose(np.diff(df["arrival_s"]), 0.5)
    df = build_requests(load_workload({**base, "requests": 5, "arrivals": {
        "process": "trace", "window_s": [9.0, 31.0]}}))
    np.testing.assert_allclose(df["arrival_s"], [1.0, 3.0, 5.0, 7.0, 9.0])   # from t0 = 9
    assert df["prompt_tokens"].tolist() == [6, 7, 8, 9, 10]
    assert df["request_id"].tolist() == [0, 1, 2, 3, 4]
    # synthetic arrivals with the trace's lengths in order, or resampled jointly
    df = build_requests(load_workload({**base, "arrivals": {"process": "poisson", "rate": 1.0},
                                       "requests": 30}))
    assert df["prompt_tokens"].tolist() == list(range(1, 31))
    df = build_requests(load_workload({**base, "arrivals": {"process": "poisson", "rate": 1.0},
                                       "lengths": {"prompt": {"dist": "empirical"},
                                                   "output": {"dist": "empirical"}},
                                       "requests": 500}))
    assert (df["output_tokens"] - df["prompt_tokens"] == 100).all()   # rows kept together
    assert df["prompt_tokens"].nunique() > 90
    with pytest.raises(ConfigError, match=r"workload.requests: expected at most 100 requests"):
        build_requests(load_workload({**base, "arrivals": {"process": "poisson", "rate": 1.0},
                                      "requests": 101}))


def test_shipped_synthetic_trace_is_its_recipe(tmp_path):
    df = read_trace(ROOT / "traces/synthetic_conv_1k.csv")
    assert len(df) == 1000
    write_trace(build_requests(load_workload(ROOT / "traces/synthetic_conv_1k.yaml")),
                tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == \
        (ROOT / "traces/synthetic_conv_1k.csv").read_bytes()
    # by name, as an experiment's workload names it
    assert build_requests(load_workload({"trace": "synthetic_conv_1k"})).equals(df)


BAD_WORKLOADS = [
    ({"arrivals": {"process": "poison", "rate": 5}}, "workload.arrivals.process",
     "did you mean 'poisson'"),
    ({"arrivals": {"process": "poisson", "rate": 5, "cv": 2}, "lengths": FIXED, "requests": 3},
     "workload.arrivals.cv", "cv is a key of gamma"),
    ({"arrivals": {"process": "gamma", "rate": 5}, "lengths": FIXED, "requests": 3},
     "workload.arrivals.cv", "requires 'cv'"),
    ({"arrivals": {"process": "poisson", "rate": 0}, "lengths": FIXED, "requests": 3},
     "workload.arrivals.rate", "> 0"),
    ({"arrivals": {"process": "poisson", "rate": "5"}, "lengths": FIXED, "requests": 3},
     "workload.arrivals.rate", "a number"),
    ({"arrivals": {"process": "poisson", "rate": 5}, "lengths": FIXED},
     "workload.requests", "requests or duration_s"),
    ({"arrivals": {"process": "poisson", "rate": 5}, "requests": 3},
     "workload.lengths.prompt", "required when no trace"),
    ({"arrivals": {"process": "poisson", "rate": 5}, "requests": 3,
      "lengths": {**FIXED, "output": {"dist": "empirical"}}},
     "workload.lengths.output.dist", "a workload trace"),
    ({"arrivals": {"process": "poisson", "rate": 5}, "requests": 3,
      "lengths": {**FIXED, "output": {"dist": "uniform", "low": 9, "high": 2}}},
     "workload.lengths.output.high", "high >= low"),
    ({"arrivals": {"process": "poisson", "rate": 5}, "requests": 3,
      "lengths": {**FIXED, "output": {"dist": "fixed"}}},
     "workload.lengths.output.value", "requires 'value'"),
    ({"arrivals": {"process": "poisson", "rate": 5}, "requests": 3,
      "lengths": {**FIXED, "output": {"dist": "lognormal_mixture", "weights": [1, 2],
                                      "medians": [3], "sigmas": [1, 1]}}},
     "workload.lengths.output.medians", "2 values"),
    ({"arrivals": {"process": "trace", "scale": 2, "rate": 3}, "trace": "synthetic_conv_1k"},
     "workload.arrivals.rate", "not both"),
    ({"arrivals": {"process": "trace", "window_s": [5, 1]}, "trace": "synthetic_conv_1k"},
     "workload.arrivals.window_s", "t0 < t1"),
    ({"arivals": {}}, "workload.arivals", "did you mean 'arrivals'"),
    ({"trace": "synthetic_conv"}, "workload.trace", "did you mean 'synthetic_conv_1k'"),
    ({"trace": "no/such.csv"}, "workload.trace", "no file at"),
    ({"trace": "synthetic_conv_1k", "arrivals": {"process": "trace", "window_s": [1e6, 2e6]}},
     "workload.arrivals.window_s", "a window holding requests"),
    ({"arrivals": {"process": "deterministic", "rate": 1e6}, "lengths": FIXED,
      "duration_s": 1e9}, "workload.duration_s", "at most 50,000,000"),
]


@pytest.mark.parametrize("section,key,fragment", BAD_WORKLOADS,
                         ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(BAD_WORKLOADS)])
def test_bad_workload(section, key, fragment):
    with pytest.raises(ConfigError) as info:
        build_requests(load_workload(section, source="exp.yaml"), source="exp.yaml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"exp.yaml: {key}: "), msg
    assert fragment in msg, msg
