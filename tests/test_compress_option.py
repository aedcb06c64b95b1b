"""``compress=False``: every user can check a result against the uncompressed simulation.

The flag reaches the tile pipeline (repeated tiles simulated one by one) and the MicroScopiQ
fold stream (priced whole) through ``SystolicAccelerator.gemm``, ``sim.simulate_gemm``,
``sim.simulate_model`` and the experiment option ``compress:``. Every shipped experiment,
shrunk, gives identical tables both ways, and the probes show that the compressed run did
compress and the uncompressed one did not.
"""
from pathlib import Path

import pandas as pd
import pytest
import yaml

import sim
import sim.hw.flexcim as flexcim_module
import sim.hw.microscopiq as msq_module
from sim.config import ConfigError, load_experiment, load_model
from sim.hw import tile_pipeline

# hardware experiments only (a cluster: section makes a serving experiment, see sim.serve)
EXPERIMENTS = sorted(p for p in (Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml")
                     if "cluster" not in (yaml.safe_load(p.read_text()) or {}))
LAYERS = 2


@pytest.fixture
def probes(monkeypatch):
    """Counts of skipped tile blocks, extended ReCoN streams and FlexCiM tile-run jumps."""
    seen = {"tile_skips": 0, "stream_extensions": 0, "flexcim_jumps": 0}

    class Skipper(tile_pipeline._Skipper):
        def visit(self, *args):
            jump = super().visit(*args)
            seen["tile_skips"] += jump is not None
            return jump

    prefix_groups = msq_module.exact_prefix_groups

    def extension(*args, **kw):
        groups = prefix_groups(*args, **kw)
        seen["stream_extensions"] += groups is not None
        return groups

    jump = flexcim_module._jump

    def counted_jump(*args):
        seen["flexcim_jumps"] += 1
        return jump(*args)

    monkeypatch.setattr(flexcim_module, "_jump", counted_jump)
    monkeypatch.setattr(tile_pipeline, "_Skipper", Skipper)
    monkeypatch.setattr(msq_module, "exact_prefix_groups", extension)
    return seen


def shrunk(path: Path) -> tuple[dict, list[str]]:
    """The experiment as a mapping plus overrides that keep its structure (runs, variants,
    archs, per-layer precisions) and make it fast: two layers of smaller shapes, short
    prefills, at most two decode steps. Layer lists past the second layer keep their layers
    that exist (or the last one)."""
    raw = yaml.safe_load(path.read_text())
    for variant in raw.get("variants", []):
        for rule in variant.get("set", {}).get("model.layer_precision") or []:
            if isinstance(rule.get("layers"), list):
                rule["layers"] = [i for i in rule["layers"] if i < LAYERS] or [LAYERS - 1]
    # a vocabulary of its own per experiment: memoized ops of an earlier experiment's run
    # cannot stand in for all of this one's (the probes must see this run compress)
    vocab = 8192 + 64 * EXPERIMENTS.index(path) if path in EXPERIMENTS else 8192
    overrides = [f"model.num_layers={LAYERS}", "model.hidden_size=1024",
                 f"model.vocab_size={vocab}"]
    if load_model(raw["model"]).architecture == "transformer":
        overrides += ["model.num_heads=8", "model.num_kv_heads=8", "model.head_dim=128",
                      "model.intermediate_size=2048"]
    if "flexcim" in path.stem:               # FLOW of the shrunk model: its synthetic profile
        overrides.append("model.outlier_profile=null")
    for i, run in enumerate(raw["runs"]):
        if run.get("seq_len"):
            overrides.append(f"runs.{i}.seq_len=128")
        if run.get("steps", 1) > 1:
            overrides.append(f"runs.{i}.steps=2")
    return raw, overrides


def test_every_shipped_experiment_is_covered():
    assert len(EXPERIMENTS) >= 10
    for path in EXPERIMENTS:
        raw, overrides = shrunk(path)
        load_experiment(raw, overrides=overrides)        # the shrunk config is valid


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_experiment_gives_identical_tables_uncompressed(path, probes):
    raw, overrides = shrunk(path)
    fast = sim.run(raw, overrides=overrides)
    engaged = dict(probes)
    probes.update(tile_skips=0, stream_extensions=0, flexcim_jumps=0)
    full = sim.run(raw, overrides=overrides + ["compress=false"])
    assert probes == {"tile_skips": 0, "stream_extensions": 0, "flexcim_jumps": 0}
    assert fast.experiment.compress and not full.experiment.compress
    for table in ("runs", "ops", "energy", "area"):
        pd.testing.assert_frame_equal(getattr(fast, table), getattr(full, table),
                                      check_exact=True)
    # the compressed run did compress: repeated tiles skipped, or ReCoN streams extended
    assert sum(engaged.values()) > 0, engaged


def test_simulate_gemm_and_model_uncompressed(probes):
    fast = sim.simulate_gemm("quickstart", 2048, 4096, 4096)
    assert probes["tile_skips"] > 0
    probes["tile_skips"] = 0
    full = sim.simulate_gemm("quickstart", 2048, 4096, 4096, compress=False)
    assert probes["tile_skips"] == 0             # not answered from the compressed memo entry
    assert fast == full
    kw = dict(phase="prefill", seq_len=256)
    m = load_model("llama-3-8b", overrides=["num_layers=1", "precision.wbits=4",
                                             "precision.abits=4", "vocab_size=8192"])
    probes.update(tile_skips=0, stream_extensions=0)
    a = sim.simulate_model("microscopiq-64x64", m, **kw)
    assert probes["stream_extensions"] > 0
    probes.update(tile_skips=0, stream_extensions=0)
    b = sim.simulate_model("microscopiq-64x64", m, compress=False, **kw)
    assert probes == {"tile_skips": 0, "stream_extensions": 0, "flexcim_jumps": 0}
    assert (a.cycles, a.energy_pj) == (b.cycles, b.energy_pj)
    pd.testing.assert_frame_equal(a.ops, b.ops, check_exact=True)


@pytest.mark.parametrize("value", ["maybe", "1", "[]"])
def test_compress_option_must_be_a_bool(value):
    with pytest.raises(ConfigError) as e:
        load_experiment("quickstart", overrides=[f"compress={value}"])
    assert e.value.key == "compress"
