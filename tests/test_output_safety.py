"""Where `strata run` writes: only inside the chosen folder, all files or none, and a rerun
replaces the earlier run's files instead of mixing with them. Also the small things a new user
sees on the terminal (the table, --version, no progress bar when not on a terminal)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.cli import format_table, main
from sim.config import list_shipped, load_experiment

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "model.num_layers=1", "--set", "runs.0.seq_len=8", "--set", "runs.1.context=8"]


def run_cli(*args) -> int:
    return main(["run", "quickstart", *SMALL, *args])


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_default_folder_is_results_name_inside_cwd(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli() == 0
    assert listing(tmp_path) == {"results"}
    assert listing(tmp_path / "results") == {"quickstart"}
    out = capsys.readouterr().out
    assert f"to results{os.sep}quickstart{os.sep}:" in out      # says where results went


@pytest.mark.parametrize("name", ["..", "../../../tmp/x", "/tmp/x", ".", "a/b"])
def test_experiment_name_cannot_leave_the_results_folder(tmp_path, monkeypatch, capsys, name):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert run_cli("--set", f"name={name}") == 2
    assert "file-name-safe" in capsys.readouterr().err
    assert listing(tmp_path) == {"work"} and listing(work) == set()


def test_write_failure_leaves_no_partial_folder(tmp_path, monkeypatch, capsys):
    """A failure half-way through writing (disk full) leaves neither a truncated CSV nor a
    temporary folder, and the error names the output folder."""
    import sim.report.tables as tables
    real = pd.DataFrame.to_csv
    calls = []

    def failing_to_csv(self, path, *a, **kw):
        calls.append(path)
        if len(calls) == 2:                      # ops.csv written, energy.csv fails
            Path(path).write_text("trunc")
            raise OSError(28, "No space left on device", str(path))
        return real(self, path, *a, **kw)

    monkeypatch.setattr(pd.DataFrame, "to_csv", failing_to_csv)
    out = tmp_path / "out"
    assert run_cli("--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and str(out) in err
    assert listing(tmp_path) == set()            # nothing left behind, not even a temp folder
    assert len(calls) == 2 and tables is not None


def test_failure_keeps_the_earlier_results_intact(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run_cli("--out", str(out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import sim.report.plots as plots

    def boom(*a, **kw):
        raise KeyboardInterrupt                  # Ctrl-C while the figures are drawn
    monkeypatch.setattr(plots, "write_plots", boom)
    assert run_cli("--out", str(out), "--set", "runs.0.seq_len=16") == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert listing(tmp_path) == {"out"}


def test_rerun_replaces_the_folder_contents(tmp_path):
    out = tmp_path / "out"
    assert run_cli("--out", str(out), "--trace") == 0
    assert "trace.json" in listing(out)
    (out / "stale.csv").write_text("from an older version\n")
    assert run_cli("--out", str(out)) == 0      # no --trace this time
    assert "trace.json" not in listing(out) and "stale.csv" not in listing(out)
    assert {"ops.csv", "summary.json", "breakdown.png"} <= listing(out)
    assert listing(tmp_path) == {"out"}


def test_foreign_folder_needs_force(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep\n")
    assert run_cli("--out", str(out)) == 2
    assert "--force" in capsys.readouterr().err
    assert listing(out) == {"notes.txt"}
    assert run_cli("--out", str(out), "--force") == 0
    assert "notes.txt" not in listing(out) and "ops.csv" in listing(out)


def test_out_folder_keeps_normal_permissions(tmp_path):
    out = tmp_path / "out"
    assert run_cli("--out", str(out)) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == (0o777 & ~umask)


def test_help_documents_output_policy(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "--force" in text and "temporary folder" in text and "replaced" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"strata {sim.__version__}"


def test_no_progress_bar_when_not_on_a_terminal(tmp_path, capsys):
    assert run_cli("--out", str(tmp_path / "o")) == 0
    assert capsys.readouterr().err == ""


def test_table_columns_fit_wide_values():
    runs = pd.DataFrame([
        {"variant": "a-very-long-variant-name", "run": "prefill 2048 tokens batch 16",
         "phase": "prefill", "tokens": 123456789, "seconds": 12345.678, "tokens_per_s": 1e7,
         "stall_cycles": 5, "cycles": 10, "utilization": 0.5, "energy_total_j": 12345.0,
         "energy_per_token_mj": 1e6},
        {"variant": "b", "run": "d", "phase": "decode", "tokens": 1, "seconds": 0.001,
         "tokens_per_s": 1.0, "stall_cycles": 0, "cycles": 10, "utilization": 0.01,
         "energy_total_j": 0.1, "energy_per_token_mj": 0.1}])
    lines = format_table(runs, many=True).splitlines()
    # every cell is separated from the next by at least two spaces, in every line
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines]
    assert all(len(c) == 10 for c in cells), cells
    assert "a-very-long-variant-name" in cells[1] and "prefill 2048 tokens batch 16" in cells[1]
    # right-aligned numeric columns end at the same character in every line
    ends = {line.index("tokens") + len("tokens") for line in lines[:1]}
    assert lines[1].index("123456789") + 9 in ends


def test_ops_csv_columns_name_themselves(tmp_path):
    out = tmp_path / "o"
    assert run_cli("--out", str(out)) == 0
    cols = list(pd.read_csv(out / "ops.csv", nrows=1).columns)
    assert "index" not in cols and "graph_order" in cols


def test_shipped_experiment_names_equal_their_file_names():
    from sim.cli import _is_serving
    for stem in list_shipped("experiments"):
        load = sim.load_serving if _is_serving(stem) else load_experiment   # cluster: = serving
        assert load(stem).name == stem, stem


def test_model_op_names_match_the_graph():
    from sim.config.schema import OP_NAMES
    from sim.workload.graph import OPS
    assert tuple(OP_NAMES) == tuple(OPS)


def test_sram_check_uses_the_fold_that_the_plan_keeps():
    """The minimum the error states is the real boundary: one byte less fails, that size runs."""
    arch = sim.load_arch("quickstart")
    with pytest.raises(sim.ConfigError) as e:
        sim.simulate_gemm(sim.load_arch("quickstart", ["memory.sram.weight_kb=1"]), 64, 64, 64)
    kb = float(re.search(r"at least ([\d.]+) KB", str(e.value)).group(1))
    assert kb == 2 * 64 * 64 / 1024          # one 64x64 INT8 weight tile per half
    ok = sim.simulate_gemm(sim.load_arch("quickstart", [f"memory.sram.weight_kb={kb}"]),
                           64, 64, 64)
    assert ok.cycles > 0 and arch.memory.sram.weight_kb >= kb
    with pytest.raises(sim.ConfigError):
        sim.simulate_gemm(sim.load_arch("quickstart", [f"memory.sram.weight_kb={kb - 0.01}"]),
                          64, 64, 64)


def test_breakdown_merges_small_categories_into_other(tmp_path):
    """Operator categories under MIN_SHARE_PCT of every run become one "other" segment, so no
    bar segment is a sliver; large ones keep their own segment."""
    from sim.report.plots import MIN_SHARE_PCT, _groups, _latency_segments
    r = sim.run("quickstart", overrides=["model.num_layers=1", "runs.0.seq_len=8",
                                         "runs.1.context=8"])
    groups = _groups(r)
    totals = dict(zip(zip(r.runs.variant, r.runs.run), r.runs.cycles))
    segs = _latency_segments(r, groups, totals)
    labels = [s[0] for s in segs]
    for label, _, comp, stall in segs:
        share = [c + s for c, s in zip(comp, stall)]
        if not label.startswith("other"):
            assert max(share) >= MIN_SHARE_PCT, (label, share)
    shares = [sum(c + s for c, s in zip(seg[2], seg[3])) for seg in segs]
    assert sum(shares) == pytest.approx(100.0 * len(groups), rel=1e-6)   # nothing dropped
    assert "FFN" in labels


def test_breakdown_energy_bars_are_each_components_share(tmp_path, monkeypatch):
    """The energy panel stacks one bar segment per component at that component's share of
    the run's energy (read back from the drawn figure, against Result.energy)."""
    import sim.report.plots as plots
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    r = sim.run("quickstart", overrides=["model.num_layers=1", "runs.0.seq_len=8",
                                         "runs.1.context=8"])
    plots.breakdown(r, tmp_path / "b.png")
    ax_e = [ax for ax in figs[0].axes if ax.get_title().startswith("Energy")][0]
    e = r.energy.pivot_table(index="run", columns="component", values="energy_pj",
                             aggfunc="sum")
    share = e.div(e.sum(axis=1), axis=0) * 100
    runs = list(dict.fromkeys(r.runs.run))
    for container in ax_e.containers:
        comp = container.get_label().replace(" ", "_")
        if comp.startswith("other"):
            continue
        heights = [p.get_height() for p in container.patches]
        assert heights == pytest.approx([share.loc[run, comp] for run in runs], abs=1e-9)
