"""Serving clusters of mixed hardware: one pool of several GPU types, and disaggregated pools on
different GPUs (the spec :func:`sim.system.experiment.cluster_spec` builds for the
coordinator). Requests and tokens are conserved and every step is priced by its own client's
arch (checked against a backend of that arch pricing the step directly)."""
import pandas as pd
import pytest

import sim
from sim.config import ConfigError
from sim.system import StrataBackend, serve_frames
from sim.system.experiment import ServingExperiment, cluster_spec

MODEL = "llama-3.2-1b"
ENGINE = {"scheduler": "continuous", "max_num_seqs": 1}     # one sequence a step: a step
#                                                            row says exactly what ran


def _exp(clients, requests=10, **cluster):
    return {"name": "mixed", "seed": 0,
            "workload": {"arrivals": {"process": "poisson", "rate": 60.0},
                         "lengths": {"prompt": {"dist": "uniform", "low": 16, "high": 200},
                                     "output": {"dist": "uniform", "low": 2, "high": 6}},
                         "requests": requests, "seed": 5},
            "cluster": {"clients": clients, "router": {"name": "round_robin"}, **cluster}}


def _client(name, arch, role="both", **engine):
    return {"name": name, "arch": arch, "model": MODEL, "mode": "exact", "role": role,
            "engine": {**ENGINE, **engine}}


_BACKENDS: dict = {}


def _direct(arch, row):
    """(seconds, joules) of a steps.csv row (one sequence) priced on ``arch`` directly."""
    b = _BACKENDS.setdefault(arch, StrataBackend(arch, MODEL))
    if row.kind == "prefill":
        c = b.price([(int(row.tokens), int(row.context_tokens))], [])
    else:
        c = b.price([], [int(row.context_tokens)])
    return c.seconds, c.joules


def _check_conserved(r, n):
    req = r.requests
    assert len(req) == n and set(req.status) == {"completed"}
    assert (req.generated_tokens == req.output_tokens).all()
    steps = r.steps
    assert (steps.sequences == 1).all()
    # every prompt token prefilled once, every later token decoded once (no preemption)
    assert steps[steps.kind == "prefill"].tokens.sum() == req.prompt_tokens.sum()
    assert (steps.kind == "decode").sum() == (req.output_tokens - 1).sum()


def _check_priced_by_own_arch(r, arch_of, other_of):
    for row in r.steps.itertuples():
        want_s, want_j = _direct(arch_of[row.client], row)
        assert row.end_s - row.start_s == pytest.approx(want_s, abs=2e-9), row
        assert row.energy_j == pytest.approx(want_j, rel=1e-9), row
        other_s, _ = _direct(other_of[row.client], row)
        assert abs(other_s - want_s) > 1e-6          # the check could tell the archs apart


def test_one_pool_of_two_gpu_types():
    exp = _exp([_client("h100", "h100-sxm"), _client("a100", "a100-80gb")])
    spec = cluster_spec(ServingExperiment.model_validate(exp).cluster)
    assert [b["arch"] for b in spec["backend"]] == ["h100-sxm", "a100-80gb"]
    r = sim.serve(exp)
    _check_conserved(r, 10)
    assert set(r.steps.client) == {"h100", "a100"}
    _check_priced_by_own_arch(r, {"h100": "h100-sxm", "a100": "a100-80gb"},
                              {"h100": "a100-80gb", "a100": "h100-sxm"})
    # the slower board takes longer for the same kind of work
    per_token = r.steps[r.steps.kind == "prefill"].assign(
        s=lambda d: (d.end_s - d.start_s) / d.tokens).groupby("client").s.mean()
    assert per_token["a100"] > per_token["h100"]


def test_one_hardware_pool_keeps_one_backend_and_engine_must_still_agree():
    same = ServingExperiment.model_validate(_exp([_client("a", "h100-sxm"),
                                                  _client("b", "h100-sxm")]))
    assert isinstance(cluster_spec(same.cluster)["backend"], dict)
    with pytest.raises(ConfigError, match=r"clients\.1\.engine\.max_num_seqs") as e:
        sim.serve(_exp([_client("a", "h100-sxm"), _client("b", "a100-80gb", max_num_seqs=2)]))
    assert "\n" not in str(e.value)
    one = pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [4],
                        "output_tokens": [2]})
    with pytest.raises(ConfigError, match="one backend per client"):
        serve_frames(one, {"backend": [{"type": "analytic"}], "clients": 2})


def test_disaggregated_prefill_and_decode_on_different_gpus():
    clients = [_client("p-h100", "h100-sxm", "prefill"), _client("p-h200", "h200-sxm", "prefill"),
               _client("d-a100", "a100-80gb", "decode")]
    link = {"bandwidth_gbps": 0.005, "latency_s": 1e-4, "shared": False}    # slow: it shows
    exp = _exp(clients, requests=8, link=link)
    spec = cluster_spec(ServingExperiment.model_validate(exp).cluster)
    assert spec["engine"] == {"scheduler": "disaggregated"}
    assert spec["prefill"]["clients"] == 2 and spec["decode"]["clients"] == 1
    assert [b["arch"] for b in spec["prefill"]["backend"]] == ["h100-sxm", "h200-sxm"]
    assert spec["decode"]["backend"]["arch"] == "a100-80gb"
    assert spec["link"] == link
    r = sim.serve(exp)
    _check_conserved(r, 8)
    steps = r.steps
    assert set(steps[steps.kind == "prefill"].client) == {"p-h100", "p-h200"}
    assert set(steps[steps.kind == "decode"].client) == {"d-a100"}
    assert set(r.requests.decode_client) == {"d-a100"}
    _check_priced_by_own_arch(r, {"p-h100": "h100-sxm", "p-h200": "h200-sxm",
                                  "d-a100": "a100-80gb"},
                              {"p-h100": "a100-80gb", "p-h200": "a100-80gb",
                               "d-a100": "h100-sxm"})
    # the KV cache crosses the link before a request's first decode: its whole bytes (one
    # token's KV on the prefill chip x prompt) at 0.005 GB/s plus the latency, about 0.1 s or more
    # against about a millisecond per decode step
    kv_token = StrataBackend("h100-sxm", MODEL).kv_bytes_per_token
    req = r.requests
    transfer = req.prompt_tokens * kv_token / 0.005e9 + 1e-4
    assert transfer.min() > 20 * (steps.end_s - steps.start_s).max()
    decode_min = steps[steps.kind == "decode"].pipe(lambda d: (d.end_s - d.start_s).min())
    gap = req.finish_s - req.first_token_s
    assert (gap >= transfer + (req.output_tokens - 1) * decode_min - 1e-9).all()
    first_decode = steps[steps.kind == "decode"].start_s.min()
    assert first_decode >= (req.first_token_s + transfer).min() - 1e-9
