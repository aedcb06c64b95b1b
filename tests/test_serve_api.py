"""sim.serve and `strata run` on a serving experiment: conservation, determinism, errors, summary."""
import json

import numpy as np
import pytest
import yaml

import sim
from sim.cli import main
from sim.system import HERMES_SLO


def _exp(**cluster_over):
    client = {"arch": "h100-sxm", "model": "llama-3.2-1b", "mode": "exact",
              "engine": {"scheduler": "continuous", "max_num_seqs": 4}}
    cluster = {"clients": [{"name": "a", **client}, {"name": "b", **client}],
               "router": {"name": "round_robin"}, **cluster_over}
    return {"name": "serve_test", "seed": 0,
            "workload": {"arrivals": {"process": "poisson", "rate": 40.0},
                         "lengths": {"prompt": {"dist": "uniform", "low": 16, "high": 160},
                                     "output": {"dist": "uniform", "low": 2, "high": 12}},
                         "requests": 16, "seed": 3},
            "cluster": cluster}


@pytest.fixture(scope="module")
def served():
    return sim.serve(_exp())


def test_frames_conserve_requests_and_tokens(served):
    req, steps = served.requests, served.steps
    assert len(req) == 16 and set(req["status"]) == {"completed"}
    assert (req["generated_tokens"] == req["output_tokens"]).all()
    assert set(req["client"]) == {"a", "b"} and set(steps["client"]) == {"a", "b"}
    # round robin in arrival order alternates the two clients
    order = req.sort_values(["arrival_s", "request_id"])["client"].tolist()
    assert order == ["a", "b"] * 8
    # every prompt token is prefilled once and every output token after the first decoded once
    # (no preemption here): token counts of the steps add up to the requests' work
    assert req["preemptions"].sum() == 0
    assert int(steps["tokens"].sum()) == int(req["prompt_tokens"].sum()
                                             + (req["output_tokens"] - 1).sum())
    assert (req["arrival_s"] <= req["first_token_s"]).all()
    assert (req["first_token_s"] <= req["finish_s"]).all()
    # a client runs one step at a time
    for _, s in steps.groupby("client"):
        s = s.sort_values("start_s")
        assert (s["end_s"].to_numpy()[:-1] <= s["start_s"].to_numpy()[1:] + 1e-12).all()
    busy = (steps["end_s"] - steps["start_s"]).groupby(steps["client"]).sum()
    clients = served.clients.set_index("client")
    assert np.allclose(clients.loc[busy.index, "busy_s"], busy)
    assert np.isclose(clients["energy_j"].sum(), steps["energy_j"].sum())


def test_energy_is_steps_plus_idle_chips_over_the_span(served):
    """Each chip draws the GPU model's zero-utilisation power while its client runs no step,
    from the first arrival to the last finish; tokens per joule divide by steps + idle."""
    from sim.api import accelerator_for
    acc = accelerator_for("h100-sxm")
    idle_w = float(acc.power_w(0.0, 0.0, 0.0)[0])
    req, cl, s = served.requests, served.clients, served.summary
    span = float(np.nanmax(req["finish_s"]) - req["arrival_s"].min())
    assert idle_w > 50 and np.isclose(s["duration_s"], span)
    want = idle_w * (span - cl["busy_s"]).clip(lower=0)
    assert np.allclose(cl["idle_energy_j"], want) and (want > 0).all()
    assert np.isclose(s["step_energy_j"], served.steps["energy_j"].sum())
    assert np.isclose(s["idle_energy_j"], want.sum())
    assert np.isclose(s["energy_j"], s["step_energy_j"] + s["idle_energy_j"])
    done = req[req["status"] == "completed"]
    assert np.isclose(s["efficiency"]["output_tokens_per_j"],
                      done["output_tokens"].sum() / s["energy_j"])


def test_summary_has_all_six_hermes_slos_goodput_and_efficiency(served):
    s = served.summary
    got = {(c["metric"], c["percentile"]) for c in s["slo"]["checks"]}
    assert got == {(m, p) for m, p, _ in HERMES_SLO.rows()} and len(got) == 6
    assert set(s["goodput"]) == {"p50", "p90", "p99"}
    assert s["throughput"] and s["efficiency"]["output_tokens_per_j"] > 0
    json.dumps(s)     # JSON-ready


def test_tensor_parallel_clients_run_faster_steps():
    """tp: 2 prices steps on two chips through simulate_step (exact mode)."""
    exp = _exp()
    for c in exp["cluster"]["clients"]:
        c["tp"] = 2
    one, two = sim.serve(_exp()).steps, sim.serve(exp).steps
    assert (two["end_s"] - two["start_s"]).mean() < (one["end_s"] - one["start_s"]).mean()


def _write(tmp_path, exp, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(exp))
    return p


def test_cli_same_seed_byte_identical_csvs(tmp_path, capsys):
    p = _write(tmp_path, _exp())
    for out in ("o1", "o2"):
        assert main(["run", str(p), "--out", str(tmp_path / out), "--trace"]) == 0
    for f in ("requests.csv", "steps.csv"):
        assert (tmp_path / "o1" / f).read_bytes() == (tmp_path / "o2" / f).read_bytes()
    summary = json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert summary["requests"] == 16 and len(summary["slo"]["checks"]) == 6
    trace = json.loads((tmp_path / "o1" / "trace.json").read_text())["traceEvents"]
    steps = (tmp_path / "o1" / "steps.csv").read_text().count("\n") - 1
    assert sum(e["ph"] == "X" for e in trace) == steps
    assert sum(e["ph"] == "b" for e in trace) == 16
    # a different workload seed changes the run
    assert main(["run", str(p), "--out", str(tmp_path / "o3"), "--set", "workload.seed=4"]) == 0
    assert (tmp_path / "o3" / "requests.csv").read_bytes() != \
        (tmp_path / "o1" / "requests.csv").read_bytes()


@pytest.mark.parametrize("where,value,key", [
    (("cluster",), {"bogus": 1}, "cluster.bogus"),
    (("cluster", "clients", 0, "engine"), {"max_num_seqz": 4}, "cluster.clients.0.engine.max_num_seqz"),
    (("cluster", "clients", 1), {"model": "llama-3-8b"}, "cluster.clients.1.model"),
    (("cluster", "clients", 0, "engine"), {"scheduler": "fifo"}, "cluster.clients.0.engine.scheduler"),
    (("cluster", "router"), {"name": "random"}, "cluster.router.name"),
    (("cluster", "clients", 1), {"name": "a"}, "cluster.clients.1.name"),
    (("cluster", "clients", 0), {"tp": 2, "mode": "table"}, "cluster.clients.0.tp"),
    (("cluster", "clients", 0), {"tp": 3}, "cluster.clients.0.tp"),
])
def test_bad_serving_keys_one_line_errors(tmp_path, capsys, where, value, key):
    exp = _exp()
    node = exp
    for k in where:
        node = node[k]
    node.update(value)
    p = _write(tmp_path, exp)
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and key in err and str(p) in err
    assert not (tmp_path / "o").exists()
