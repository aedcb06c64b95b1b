"""The shipped serving comparison experiments load, resolve their variants and run shrunk (few
requests); the equal-area MicroScopiQ/INT8 cluster is equal by the area model. The Azure traces
are not in the repository: runs that need them skip only when their name does not resolve
(traces/, $STRATA_TRACES, ../shared/traces)."""
import itertools
from pathlib import Path

import pytest
import yaml

import sim
from sim.api import accelerator_for
from sim.config import ConfigError
from sim.system.arrivals import resolve_trace
from sim.system.experiment import serving_points

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("serving_azure_conv", "serving_azure_code", "serving_microscopiq_vs_int8")


def _has_trace(name: str) -> bool:
    try:
        resolve_trace(name)
        return True
    except ConfigError:
        return False


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_serving_comparisons_load_with_their_variants(name):
    exp = sim.load_serving(name)
    points = serving_points(exp)
    assert len(points) >= 2 and all(cfg.variants == () for _, cfg in points)
    # every variant serves the base workload: the same requests
    assert {cfg.workload for _, cfg in points} == {exp.workload}
    assert "compare" in exp.outputs.plots and "latency_cdf" in exp.outputs.plots


def _shrunk(name: str, requests: int) -> dict:
    data = _load(name)
    data["workload"]["requests"] = requests
    return data


@pytest.mark.parametrize("name", ["serving_azure_conv", "serving_azure_code"])
def test_azure_policy_comparisons_run_shrunk(name):
    data = _shrunk(name, 24)
    if not _has_trace(data["workload"]["trace"]):
        pytest.skip(f"{data['workload']['trace']} not on the trace search path")
    r = sim.serve(data)
    assert list(r.variants) == [v["name"] for v in data["variants"]]
    for v, res in r.variants.items():
        req = res.requests
        assert len(req) == 24 and (req["status"] == "completed").all()
        assert (req["generated_tokens"] == req["output_tokens"]).all()
    disagg = next(v for v in r.variants if v.startswith("disagg"))
    kinds = set(r.variants[disagg].clients["client"])
    assert any(k.startswith("prefill") for k in kinds) and any(k.startswith("decode")
                                                               for k in kinds)


def _chip_mm2(arch: str) -> float:
    return sum(accelerator_for(arch).area_um2().values()) * 1e-6


def test_microscopiq_and_int8_clusters_have_equal_area_by_the_area_model():
    exp = sim.load_serving("serving_microscopiq_vs_int8")
    totals, counts = {}, {}
    for name, cfg in serving_points(exp):
        (c,) = cfg.cluster.clients
        totals[c.arch] = c.count * c.tp * _chip_mm2(c.arch)
        counts[c.arch] = c.count * c.tp
    mq, i8 = "microscopiq-64x64", "int8-64x64"
    assert set(totals) == {mq, i8}
    mismatch = abs(totals[mq] - totals[i8]) / totals[i8]
    assert mismatch < 0.005
    # no other pair of counts up to 16 chips is closer in total area
    a_m, a_i = _chip_mm2(mq), _chip_mm2(i8)
    best = min(abs(n * a_m - m * a_i) / (m * a_i)
               for n, m in itertools.product(range(1, 17), repeat=2))
    assert mismatch <= best + 1e-12


def test_microscopiq_vs_int8_runs_shrunk():
    """The experiment's clusters over a few short requests, priced exactly (its step tables
    take most of a minute to build). The arrivals come from the shipped synthetic trace of the
    same schema, so this runs without ../shared (the lengths are fixed here anyway)."""
    data = _shrunk("serving_microscopiq_vs_int8", 3)
    data["workload"]["trace"] = "synthetic_conv_1k"
    data["workload"]["lengths"] = {"prompt": {"dist": "fixed", "value": 24},
                                   "output": {"dist": "fixed", "value": 3}}
    clusters = [data["cluster"]["clients"]] + [v["set"]["cluster.clients"]
                                               for v in data["variants"] if v["set"]]
    for clients in clusters:
        for c in clients:
            c["mode"] = "exact"
            c.pop("table")
            c["count"] = 2
    r = sim.serve(data)
    rows = {row["variant"]: row for row in r.summary["comparison"]}
    assert set(rows) == {"MicroScopiQ-x8", "INT8-x8"}
    for v, res in r.variants.items():
        assert (res.requests["status"] == "completed").all()
    assert rows["MicroScopiQ-x8"]["area_mm2"] == pytest.approx(2 * _chip_mm2("microscopiq-64x64"))
    # W4 weights move half the DRAM bytes of W8: fewer joules per token
    assert rows["MicroScopiQ-x8"]["energy_j"] < rows["INT8-x8"]["energy_j"]
