"""The public API and the `strata` command, end to end on shipped and temporary configs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.cli import main
from sim.config import load_arch, load_model
from sim.workload import model_summary

ROOT = Path(__file__).resolve().parents[1]


def test_arch_and_model_accept_name_path_dict_and_object():
    by_name = sim.simulate_gemm("quickstart", 64, 128, 96)
    by_path = sim.simulate_gemm(str(ROOT / "arch" / "quickstart.yaml"), 64, 128, 96)
    obj = load_arch("quickstart")
    by_obj = sim.simulate_gemm(obj, 64, 128, 96)
    by_dict = sim.simulate_gemm(obj.model_dump(), 64, 128, 96)
    assert by_name.cycles == by_path.cycles == by_obj.cycles == by_dict.cycles


def test_simulate_gemm_array_override_and_conventions():
    r = sim.simulate_gemm("quickstart", 64, 64, 64, dataflow="os", array=(32, 32),
                          convention="scalesim")
    assert r.array == (32, 32) and r.compute_cycles == 503
    d = sim.simulate_gemm("quickstart", 64, 64, 64, dataflow="os", array=(32, 32))
    assert d.compute_cycles < 503
    assert r.cycles == r.compute_cycles + r.stall_cycles and r.stall_cycles >= 0
    assert 0 < r.utilization <= 1
    assert r.to_dict()["energy_total_pj"] == pytest.approx(sum(r.energy_pj.values()))


def test_simulate_model_prefill_totals_match_ops_and_flops():
    res = sim.simulate_model("quickstart", "llama-2-7b", phase="prefill", batch=1, seq_len=128)
    ops = res.ops
    assert res.cycles == int(ops.cycles.sum())
    assert res.cycles == res.compute_cycles + res.stall_cycles
    assert 0 < res.utilization <= 1
    # linear-layer MACs = params * tokens (minus embedding, lm_head on one token)
    lin = ops[ops.kind == "gemm"]
    s = model_summary(load_model("llama-2-7b"))
    weights = s["layers"] * 128  # every block weight once per token (norm params ~0)
    assert lin[lin.op != "lm_head"].macs.sum() == pytest.approx(weights, rel=0.001)
    assert res.energy_total_pj > 0 and res.tokens == 128


def test_decode_steps_grow_context_and_sum():
    one = sim.simulate_model("quickstart", "llama-2-7b", phase="decode", context=256)
    three = sim.simulate_model("quickstart", "llama-2-7b", phase="decode", context=256, steps=3)
    assert three.tokens == 3
    assert 2.9 * one.cycles < three.cycles < 3.1 * one.cycles
    qk = three.ops[three.ops.name == "L0.qk"].iloc[0]
    assert qk.N == 257            # first step's shape is reported; cycles are the sum
    with pytest.raises(sim.ConfigError, match="steps"):
        sim.simulate_model("quickstart", "llama-2-7b", phase="prefill", seq_len=8, steps=2)


def test_gqa_model_decode_reads_less_kv_than_mha():
    mha = sim.simulate_model("quickstart", "llama-2-7b", phase="decode", context=4000)
    gqa = sim.simulate_model("quickstart", "mistral-7b", phase="decode", context=4000)
    kv = lambda r: r.ops[r.ops.op.isin(["qk", "av"])].dram_read_bytes.sum()
    assert kv(gqa) * 3.5 < kv(mha)


def test_run_returns_dataframes_and_is_deterministic():
    a = sim.run("quickstart", overrides=["runs.0.seq_len=64"])
    b = sim.run("quickstart", overrides=["runs.0.seq_len=64"])
    assert isinstance(a.ops, pd.DataFrame) and set(a.runs.run) == {"prefill", "decode"}
    pd.testing.assert_frame_equal(a.ops, b.ops)
    assert a.summary() == b.summary()
    assert a.summary()["runs"][0]["tokens"] == 64


def test_cli_run_writes_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["run", str(ROOT / "experiments" / "quickstart.yaml"), "--set",
               "runs.0.seq_len=32", "--out", str(out), "--trace", "--plots", str(tmp_path / "p")])
    assert rc == 0
    for f in ("ops.csv", "energy.csv", "runs.csv", "area.csv", "summary.json", "config.json",
              "breakdown.png", "trace.json"):
        assert (out / f).stat().st_size > 0, f
    assert (tmp_path / "p" / "quickstart_breakdown.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][0]["seq_len"] == 32
    trace = json.loads((out / "trace.json").read_text())
    spans = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    assert spans and all(e["dur"] >= 0 for e in spans)
    energy = pd.read_csv(out / "energy.csv")
    assert (energy.energy_pj >= 0).all()
    assert "prefill" in capsys.readouterr().out


def test_cli_outputs_are_byte_identical_across_runs(tmp_path):
    for d in ("a", "b"):
        assert main(["run", "quickstart", "--set", "runs.0.seq_len=16", "--out",
                     str(tmp_path / d)]) == 0
    for f in ("ops.csv", "energy.csv", "runs.csv", "summary.json", "breakdown.png"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


@pytest.mark.parametrize("args, words", [
    (["run", "no-such-experiment"], ["no-such-experiment", "expected"]),
    (["run", "quickstart", "--set", "arch.array.rowz=4"], ["--set", "arch.array.rowz", "rows"]),
    (["run", "quickstart", "--set", "arch.array.rows=-4"], ["arch.array.rows", "expected"]),
    (["run", "quickstart", "--set", "runs.0.phase=train"], ["runs.0.phase", "expected"]),
    (["run", "quickstart", "--set", "model=llama-9"], ["llama-9", "expected"]),
    (["run", "quickstart", "--set", "outputs.plots=[pie]"], ["outputs.plots", "breakdown"]),
    (["run", "quickstart", "--set", "arch.pe.modes.0.wbits=2"], ["pe.modes", "wbits=8, abits=8"]),
    (["run", "quickstart", "--set", "arch.array.cols=1"], ["pe.modes.2.macs_per_cycle", "fused"]),
    (["run", "quickstart", "--out", "/proc/strata-cannot-write"], ["/proc/strata-cannot-write"]),
])
def test_cli_errors_are_one_line_without_traceback(args, words, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_cli_error_in_yaml_file_names_file_and_key(tmp_path, capsys):
    exp = tmp_path / "bad.yaml"
    exp.write_text("name: bad\narch: quickstart\nmodel: llama-2-7b\n"
                   "runs:\n  - {name: p, phase: prefill, seq_len: zero}\n")
    assert main(["run", str(exp)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "runs.0.seq_len" in err


def test_strata_list_and_python_m(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("quickstart", "llama-2-7b", "multiprec-64x64", "phi-3-mini"):
        assert name in out
    p = subprocess.run([sys.executable, "-m", "sim", "list", "models"], capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0 and "llama-3-70b" in p.stdout


def test_strata_list_gpus_clusters_and_pipelines(capsys):
    from sim.config import load_arch
    assert main(["list", "gpus"]) == 0
    gpus = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    shipped = sorted(p.stem for p in (ROOT / "arch").glob("*.yaml"))
    assert gpus == [a for a in shipped if load_arch(a).type == "gpu"] and "h100-sxm" in gpus
    assert main(["list", "clusters"]) == 0
    clusters = [line.strip() for line in capsys.readouterr().out.splitlines()[1:]]
    assert "serving_quickstart" in clusters and "quickstart" not in clusters
    assert main(["list", "pipelines"]) == 0
    assert "prefill_decode" in capsys.readouterr().out


def small_experiment(**extra):
    exp = {"name": "cmp", "arch": "quickstart",
           "model": {"extends": "llama-2-7b", "num_layers": 2},
           "runs": [{"name": "p", "phase": "prefill", "seq_len": 64},
                    {"name": "d", "phase": "decode", "context": 64}]}
    exp.update(extra)
    return exp


def test_variants_run_every_design_point(tmp_path):
    from sim.report.plots import write_plots
    r = sim.run(small_experiment(variants=[
        {"name": "small", "set": {"arch.array.rows": 32, "arch.array.cols": 32}},
        {"name": "big", "set": {"arch.array.rows": 128, "arch.array.cols": 128}}]))
    assert list(r.runs.variant) == ["small", "small", "big", "big"]
    assert set(r.ops.variant) == {"small", "big"} and set(r.area.variant) == {"small", "big"}
    sec = dict(zip(zip(r.runs.variant, r.runs.run), r.runs.seconds))
    assert sec[("big", "p")] < sec[("small", "p")]
    area = r.area.groupby("variant").area_um2.sum()
    assert area["big"] > area["small"]
    assert r.summary()["variants"] == ["small", "big"]
    for f in write_plots(r, tmp_path, ["compare", "area", "breakdown"]):
        assert f.stat().st_size > 0


@pytest.mark.parametrize("variants, key", [
    ([{"name": "a", "set": {"arch.array.rowz": 4}}], "variants.0.set.arch.array.rowz"),
    ([{"name": "a", "set": {"arch.array.rows": -1}}], "variants.0.set.arch.array.rows"),
    ([{"name": "a"}, {"name": "a"}], "variants.1.name"),
    ([{"name": "a", "set": {"variants": []}}], "variants.0.set"),
])
def test_bad_variants_name_the_key(variants, key):
    with pytest.raises(sim.ConfigError) as e:
        sim.run(small_experiment(variants=variants))
    assert e.value.key == key, str(e.value)
