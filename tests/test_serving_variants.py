"""Serving experiments with variants (several clusters over the same requests), client counts,
step precision and trace names resolved on the search path; bad specs are one-line errors."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

import sim
from sim.cli import main
from sim.config import ConfigError
from sim.system import build_requests
from sim.system.arrivals import resolve_trace, trace_search_path
from sim.system.experiment import client_names, serving_points

CLIENT = {"arch": "h100-sxm", "model": "llama-3.2-1b", "mode": "exact",
          "engine": {"scheduler": "continuous", "max_num_seqs": 4}}


def _exp(**over):
    exp = {"name": "variants_test", "seed": 0,
           "workload": {"arrivals": {"process": "poisson", "rate": 60.0},
                        "lengths": {"prompt": {"dist": "uniform", "low": 16, "high": 300},
                                    "output": {"dist": "uniform", "low": 2, "high": 10}},
                        "requests": 12, "seed": 5},
           "cluster": {"clients": [{"name": "gpu", "count": 2, **CLIENT}]},
           "variants": [
               {"name": "continuous", "set": {}},
               {"name": "chunked", "set": {"cluster.clients.0.engine.scheduler": "chunked",
                                           "cluster.clients.0.engine.max_num_batched_tokens":
                                               64}},
               {"name": "disagg-1P+2D", "set": {"cluster.clients": [
                   {"name": "p", "role": "prefill", **CLIENT},
                   {"name": "d", "count": 2, "role": "decode", **CLIENT}]}}]}
    exp.update(over)
    return exp


@pytest.fixture(scope="module")
def compared():
    return sim.serve(_exp())


def test_variants_serve_the_same_requests_and_conserve_tokens(compared):
    assert list(compared.variants) == ["continuous", "chunked", "disagg-1P+2D"]
    base = None
    for name, r in compared.variants.items():
        req = r.requests.sort_values("request_id")
        assert set(req["status"]) == {"completed"}
        assert (req["generated_tokens"] == req["output_tokens"]).all()
        ident = req[["request_id", "arrival_s", "prompt_tokens", "output_tokens"]]
        if base is None:
            base = ident.reset_index(drop=True)
        pd.testing.assert_frame_equal(ident.reset_index(drop=True), base)
        # prompt tokens are prefilled once and each output token after the first decoded once
        # (chunking splits prefills but adds no tokens)
        assert int(r.steps["tokens"].sum()) == int(req["prompt_tokens"].sum()
                                                   + (req["output_tokens"] - 1).sum())
    chunked = compared.variants["chunked"].steps
    prefill_tokens = chunked["tokens"]
    assert prefill_tokens.max() <= 64        # the chunk budget holds
    d = compared.variants["disagg-1P+2D"].requests
    assert set(d["client"]) == {"p"} and set(d["decode_client"]) <= {"d-0", "d-1"}
    # the combined frames carry the variant first
    assert list(compared.requests.columns[:1]) == ["variant"]
    assert len(compared.requests) == 3 * 12


def test_a_variant_without_changes_is_the_base_experiment(compared):
    alone = sim.serve({k: v for k, v in _exp().items() if k != "variants"})
    pd.testing.assert_frame_equal(alone.requests, compared.variants["continuous"].requests)
    pd.testing.assert_frame_equal(alone.steps, compared.variants["continuous"].steps)


def test_same_config_and_seed_same_frames(compared):
    again = sim.serve(_exp())
    for v, r in compared.variants.items():
        pd.testing.assert_frame_equal(again.variants[v].requests, r.requests)
        pd.testing.assert_frame_equal(again.variants[v].steps, r.steps)
    assert again.summary["comparison"] == compared.summary["comparison"]


def test_comparison_rows_are_the_variants_summaries(compared):
    rows = {r["variant"]: r for r in compared.summary["comparison"]}
    assert list(rows) == list(compared.variants)
    for name, r in compared.variants.items():
        s, row = r.summary, rows[name]
        assert row["ttft_p99_s"] == s["ttft_s"]["p99"]
        assert row["tpot_p50_s"] == s["tpot_s"]["p50"]
        assert row["total_tokens_per_j"] == s["efficiency"]["total_tokens_per_j"]
        assert row["slo_p90_fraction"] == s["goodput"]["p90"]["fraction"]
        # independent: output tokens of completed requests over the run's span
        done = r.requests[r.requests["status"] == "completed"]
        assert np.isclose(row["output_tokens_per_s"],
                          done["output_tokens"].sum() / s["duration_s"])
        assert row["clients"] == (2 if name != "disagg-1P+2D" else 3)
    json.dumps(compared.summary)


def test_client_count_expands_names():
    exp = sim.load_serving(_exp())
    assert client_names(exp.cluster) == {"client0": "gpu-0", "client1": "gpu-1"}
    _, dis = serving_points(exp)[2]
    assert client_names(dis.cluster) == {"prefill0": "p", "decode0": "d-0", "decode1": "d-1"}


def test_cli_writes_per_variant_folders_comparison_and_plots(tmp_path, capsys):
    exp = _exp(outputs={"plots": ["latency_cdf", "compare", "timeline"]})
    exp["workload"]["requests"] = 4
    p = tmp_path / "v.yaml"
    p.write_text(yaml.safe_dump(exp))
    out = tmp_path / "out"
    assert main(["run", str(p), "--out", str(out), "--plots", str(tmp_path / "plots"),
                 "--trace"]) == 0
    for v in ("continuous", "chunked", "disagg-1P+2D"):
        for f in ("requests.csv", "steps.csv", "clients.csv", "summary.json", "trace.json"):
            assert (out / v / f).is_file()
        assert (out / f"timeline_{v}.png").is_file()
    cmp_ = pd.read_csv(out / "comparison.csv")
    assert list(cmp_["variant"]) == ["continuous", "chunked", "disagg-1P+2D"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["variants"] == list(cmp_["variant"])
    assert (tmp_path / "plots" / "variants_test_compare.png").is_file()
    assert (tmp_path / "plots" / "variants_test_latency_cdf.png").is_file()
    assert "[disagg-1P+2D]" in capsys.readouterr().out


BAD_VARIANTS = [
    ("duplicate-name", [{"name": "a"}, {"name": "a"}], "variants.1.name", "used once"),
    ("unsafe-name", [{"name": "a/b"}], "variants.0.name", "file-name-safe"),
    ("sets-variants", [{"name": "a", "set": {"variants": []}}], "variants.0.set.variants",
     "keys other than"),
    ("sets-name", [{"name": "a", "set": {"name": "b"}}], "variants.0.set.name", "keys other"),
    ("unknown-key", [{"name": "a", "set": {"cluster.routr": {}}}], "variants.0.set.cluster.routr",
     None),
    ("bad-value", [{"name": "ok"}, {"name": "a", "set": {
        "cluster.clients.0.engine.scheduler": "fifo"}}],
     "variants.1.set.cluster.clients.0.engine.scheduler", "continuous"),
    ("bad-section", [{"name": "a", "set": {"cluster.clients": []}}],
     "variants.0.set.cluster.clients", None),
]


@pytest.mark.parametrize("variants,key,fragment", [b[1:] for b in BAD_VARIANTS],
                         ids=[b[0] for b in BAD_VARIANTS])
def test_bad_variant_specs_are_one_line_errors(variants, key, fragment):
    with pytest.raises(ConfigError) as e:
        sim.serve(_exp(variants=variants))
    msg = str(e.value)
    assert "\n" not in msg and key in msg, msg
    if fragment:
        assert fragment in msg, msg


@pytest.mark.parametrize("client,key", [
    ({"name": "a", "count": 0}, "cluster.clients.0.count"),
    ({"name": "a", "precision": "w3x"}, "cluster.clients.0.precision"),
    ({"name": "a", "count": "two"}, "cluster.clients.0.count"),
    ({"name": "a", "count": 1.5}, "cluster.clients.0.count"),
    ({"name": "a", "precision": 4}, "cluster.clients.0.precision"),
    ({"name": "a", "mode": "table", "table": {"tol": 1.5}}, "cluster.clients.0.table.tol"),
    ({"name": "a", "mode": "table", "table": {"tol": 0}}, "cluster.clients.0.table.tol"),
    ({"name": "a", "mode": "table", "table": {"points_per_octave": 0}},
     "cluster.clients.0.table.points_per_octave"),
    ({"name": "a", "mode": "table", "table": {"points_per_octave": 1.5}},
     "cluster.clients.0.table.points_per_octave"),
])
def test_bad_client_keys(client, key):
    exp = _exp(variants=[])
    exp["cluster"]["clients"] = [{**CLIENT, **client}]
    with pytest.raises(ConfigError) as e:
        sim.load_serving(exp)
    assert key in str(e.value) and "\n" not in str(e.value)


def test_expanded_client_names_must_be_unique():
    exp = _exp(variants=[])
    exp["cluster"]["clients"] = [{**CLIENT, "name": "g", "count": 2},
                                 {**CLIENT, "name": "g-1"}]
    with pytest.raises(ConfigError) as e:
        sim.load_serving(exp)
    assert "cluster.clients.1.name" in str(e.value) and "g-1" in str(e.value)


def test_step_precision_sets_weight_and_kv_bytes():
    from sim.system.backends import StrataBackend
    w8 = StrataBackend("int8-64x64", "llama-3-8b")                  # the model's w8a8
    w4 = StrataBackend("int8-64x64", "llama-3-8b", precision="w4a4")
    assert w4.weight_bytes == pytest.approx(w8.weight_bytes / 2)
    assert w4.kv_bytes_per_token == pytest.approx(w8.kv_bytes_per_token / 2)


# ---------------------------------------------------------------------------- traces ----
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def test_trace_names_resolve_on_the_search_path(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "tiny_trace.csv").write_text(AZURE + "2023-11-16 18:15:46.0,10,3\n"
                                           "2023-11-16 18:15:47.5,20,4\n")
    monkeypatch.setenv("STRATA_TRACES", str(folder))
    assert folder in trace_search_path()
    assert resolve_trace("tiny_trace") == folder / "tiny_trace.csv"
    # shipped names come first, then $STRATA_TRACES, then ../shared/traces
    assert trace_search_path()[0].name == "traces"
    assert trace_search_path()[-1].parts[-2:] == ("shared", "traces")
    cfg = sim.load_serving({**_exp(variants=[]), "workload": {"trace": "tiny_trace"}})
    reqs = build_requests(cfg.workload)
    assert reqs["arrival_s"].tolist() == [0.0, 1.5] and reqs["prompt_tokens"].tolist() == [10, 20]


def test_missing_trace_name_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("STRATA_TRACES", raising=False)
    with pytest.raises(ConfigError) as e:
        sim.serve({**_exp(variants=[]), "workload": {"trace": "no_such_trace_anywhere"}})
    msg = str(e.value)
    assert "\n" not in msg and "workload.trace" in msg and "no_such_trace_anywhere" in msg
    assert "STRATA_TRACES" in msg and "shared" in msg


def test_requests_longer_than_the_model_context_are_rejected():
    """Llama-3-8B attends over 8192 positions: a request needing more is rejected with a
    reason (a vLLM engine refuses it), the others run."""
    exp = _exp(variants=[])
    exp["cluster"]["clients"] = [{**CLIENT, "name": "g", "model": "llama-3-8b",
                                  "engine": {"max_num_batched_tokens": 8192}}]
    reqs = pd.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 0.0, 0.1],
                         "prompt_tokens": [8191, 8000, 16], "output_tokens": [2, 194, 2]})
    from sim.system import serve_frames
    from sim.system.experiment import cluster_spec
    cfg = sim.load_serving(exp)
    f = serve_frames(reqs, cluster_spec(cfg.cluster)).requests.set_index("request_id")
    assert f.loc[0, "status"] == "completed"          # 8191 + 2 - 1 = 8192 positions
    assert f.loc[1, "status"] == "rejected" and f.loc[1, "reason"] == "exceeds_model_context"
    assert f.loc[2, "status"] == "completed"


def test_count_in_a_mixed_hardware_pool_gives_each_client_its_own_arch():
    exp = _exp(variants=[])
    exp["workload"]["requests"] = 6
    exp["cluster"]["clients"] = [{**CLIENT, "name": "h", "count": 2},
                                 {**CLIENT, "name": "a", "arch": "a100-80gb"}]
    from sim.system.experiment import cluster_spec
    cfg = sim.load_serving(exp)
    spec = cluster_spec(cfg.cluster)
    assert spec["clients"] == 3
    assert [b["arch"] for b in spec["backend"]] == ["h100-sxm", "h100-sxm", "a100-80gb"]
    r = sim.serve(exp)
    assert set(r.requests["client"]) == {"h-0", "h-1", "a"}
    assert (r.requests["status"] == "completed").all()
