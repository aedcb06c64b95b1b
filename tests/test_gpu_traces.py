"""Schema and physical sanity of the measured H200 traces in traces/h200 (bench/gpu_traces.py)."""
import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest

D = Path(__file__).resolve().parents[1] / "traces" / "h200"
HBM_PEAK = 4.8e12          # bytes/s, H200 datasheet: nothing may stream weights faster
BF16_PEAK = 989e12         # flop/s, dense bf16 datasheet peak
MODELS = {"llama-3-8b", "llama-3.2-1b", "llama-2-7b", "qwen2.5-3b"}


def rows(name):
    with open(D / name, newline="") as f:
        return list(csv.DictReader(f))


def test_files_and_size():
    for n in ("gemm.csv", "steps.csv", "power.csv", "power_phases.csv", "attn_check.csv",
              "env.json", "README.md"):
        assert (D / n).is_file(), n
    assert sum(p.stat().st_size for p in D.glob("*.csv")) < 2_000_000
    env = json.loads((D / "env.json").read_text())
    assert "H200" in env["gpu_name"]
    assert env["torch"] and env["triton"] and env["ceilings"]["mm8192_tflops"] > 0


def test_gemm_schema_and_physics():
    g = rows("gemm.csv")
    assert set(g[0]) >= {"model", "op", "M", "K", "N", "dtype", "time_us", "tflops"}
    assert {r["model"] for r in g} == MODELS
    by = defaultdict(dict)
    for r in g:
        M, K, N, t = int(r["M"]), int(r["K"]), int(r["N"]), float(r["time_us"]) * 1e-6
        assert t > 0 and r["dtype"] == "bf16"
        assert 2 * M * K * N / t < BF16_PEAK * 1.02, r          # no faster than the datasheet
        assert K * N * 2 / t < HBM_PEAK * 1.02, r               # weights stream from HBM
        assert int(r["weight_copies"]) * K * N * 2 > 50e6 or int(r["weight_copies"]) >= 2
        by[(r["model"], r["op"])][M] = t
    for key, ts in by.items():
        ms = sorted(m for m in ts if m >= 512)
        for a, b in zip(ms, ms[1:]):                            # compute-bound: grows with M
            assert ts[b] >= 0.95 * ts[a], (key, a, b)
        assert ts[max(ts)] > 10 * ts[min(ts)], key               # 8192 rows cost far more than 1


def test_steps_schema_and_physics():
    s = rows("steps.csv")
    assert {r["kind"] for r in s} == {"prefill", "decode", "mixed"}
    for m in MODELS:
        assert {r["kind"] for r in s if r["model"] == m} == {"prefill", "decode", "mixed"}, m
    for r in s:
        t = float(r["time_ms"]) * 1e-3
        assert t > 0
        assert int(r["tokens"]) == int(r["prompt_tokens"]) + int(r["decode_seqs"])
        assert int(r["batch"]) == int(r["prefill_seqs"]) + int(r["decode_seqs"])
        assert int(r["context_max"]) <= int(r["context_sum"])
        # a step reads every weight once: it cannot beat HBM bandwidth
        assert int(r["weight_bytes"]) / t < HBM_PEAK, r
    # decode at fixed context: more sequences never cost much less
    dec = defaultdict(dict)
    for r in s:
        if r["kind"] == "decode" and r["grid"] == "base" and not r["check"]:
            dec[(r["model"], r["context_max"])][int(r["batch"])] = float(r["time_ms"])
    for key, ts in dec.items():
        bs = sorted(ts)
        for a, b in zip(bs, bs[1:]):
            assert ts[b] >= 0.9 * ts[a], (key, a, b)


def test_long_among_short_decode_check():
    s = {r["check"]: float(r["time_ms"]) for r in rows("steps.csv")
         if r["check"] in ("all_short", "one_long", "all_long")}
    assert s["all_short"] < s["one_long"] < s["all_long"]
    assert s["one_long"] - s["all_short"] < 0.35 * (s["all_long"] - s["all_short"])
    a = {r["case"]: float(r["time_us_per_layer"]) for r in rows("attn_check.csv")}
    assert a["one_long"] < 0.3 * a["all_long"]


def test_power_phases():
    p = {r["phase"]: float(r["avg_power_w_energy"]) for r in rows("power_phases.csv")}
    assert {"idle", "gemm_8192", "copy_2GiB", "prefill_4x2048", "decode_64x2048"} <= set(p)
    for ph, w in p.items():
        assert 30 < w < 700 * 1.05, (ph, w)                     # within the board limit
        if ph != "idle":
            assert w > 2 * p["idle"], ph
    samples = rows("power.csv")
    assert len(samples) > 100 and all(float(r["power_w"]) > 0 for r in samples)


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
