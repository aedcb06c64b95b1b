"""What a caller receives is read-only or its own copy, and the step memo's key covers the
synthetic-profile recipe (issue 7, must-deliver 2 and 7).

* ``ModelResult.outlier_profile``, ``Result.outlier_profiles`` and ``StepResult``'s mappings
  refuse changes; the summaries are fresh dicts; nothing a caller does to them reaches the
  next identical call.
* A model that names no outlier profile runs on MicroScopiQ with a profile generated from
  ``workloads/outliers/recipes/default.yaml``; editing that recipe must give a new answer
  from ``simulate_step`` (its memo used to be keyed by the profile file only, None here).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import sim
from sim.config import load_arch, load_model
from sim.workload import step as step_mod

ROOT = Path(__file__).resolve().parents[1]
ARCH = "microscopiq-64x64"


def _small_mistral():
    """mistral-7b (no shipped outlier profile) with two layers: its profile builds fast."""
    return {"extends": "mistral-7b", "num_layers": 2}


def test_model_result_outlier_profile_is_read_only_and_the_next_call_unchanged():
    m = sim.simulate_model(ARCH, _small_mistral(), phase="decode", context=64)
    info = m.outlier_profile
    assert info["generated_for_this_run"] is True and info["seed"] == 0
    before = dict(info)
    with pytest.raises(TypeError):
        info["seed"] = 99
    with pytest.raises(TypeError):
        info.update(synthetic=False)
    with pytest.raises(TypeError):
        del info["name"]
    again = sim.simulate_model(ARCH, _small_mistral(), phase="decode", context=64)
    assert dict(again.outlier_profile) == before and dict(m.outlier_profile) == before
    assert again.cycles == m.cycles


def test_experiment_outlier_profiles_are_read_only_and_summaries_are_copies():
    exp = {"name": "ownership", "arch": ARCH, "model": _small_mistral(),
           "runs": [{"name": "decode", "phase": "decode", "batch": 1, "context": 64}],
           "outputs": {"plots": []}}
    r = sim.run(exp)
    info = r.outlier_profiles["ownership"]
    with pytest.raises(TypeError):
        info["seed"] = 99
    with pytest.raises(TypeError):
        r.outlier_profiles["other"] = {}
    s = r.summary()
    expected = dict(info)
    assert s["outlier_profiles"] == {"ownership": expected}
    s["outlier_profiles"]["ownership"]["seed"] = 99      # the summary is the caller's own
    s["runs"][0]["cycles"] = 0
    s2 = r.summary()
    assert s2["outlier_profiles"]["ownership"] == expected
    assert s2["runs"][0]["cycles"] == r.runs.cycles.iloc[0] > 0
    assert sim.run(exp).summary()["outlier_profiles"] == {"ownership": expected}


def test_step_result_mappings_are_read_only_and_summaries_fresh():
    step_mod.clear_step_cache()
    s = sim.simulate_step("quickstart", "llama-2-7b", decode=[64, 128], precision="w8a8")
    energy = dict(s.energy_pj)
    with pytest.raises(TypeError):
        s.energy_pj["dram"] = 0.0
    assert isinstance(s.notes, tuple) and isinstance(s.precision, tuple)
    summary = s.summary()
    summary["cycles"] = 0
    summary["notes"].append("changed")
    summary["energy_dram_j"] = 0.0
    hit = sim.simulate_step("quickstart", "llama-2-7b", decode=[128, 64], precision="w8a8")
    assert hit.summary()["cycles"] == s.cycles > 0
    assert hit.summary()["notes"] == list(s.notes)
    assert dict(hit.energy_pj) == energy


@pytest.fixture
def recipe_home(tmp_path, monkeypatch):
    """A $STRATA_HOME holding the 7 nm table and a copy of the default recipe; the arch and
    the model are loaded (as configs) from the repo first."""
    arch, model = load_arch(ARCH), load_model(_small_mistral())
    assert model.outlier_profile is None
    home = tmp_path / "home"
    for rel in ("arch/tech/7nm.yaml", "workloads/outliers/recipes/default.yaml"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, home / rel)
    monkeypatch.setenv("STRATA_HOME", str(home))
    step_mod.clear_step_cache()
    yield arch, model, home / "workloads/outliers/recipes/default.yaml"
    step_mod.clear_step_cache()


def test_an_edited_recipe_gives_a_new_step_answer(recipe_home):
    arch, model, recipe = recipe_home
    first = sim.simulate_step(arch, model, decode=[64])
    text = recipe.read_text()
    assert "base_rate: 0.01197" in text
    recipe.write_text(text.replace("base_rate: 0.01197", "base_rate: 0.05"))
    st = recipe.stat()
    os.utime(recipe, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a clearly newer file
    edited = sim.simulate_step(arch, model, decode=[64])
    # more outlier micro-blocks: more ReCoN traffic, so more ReCoN energy and more cycles
    assert edited.energy_pj["recon"] > first.energy_pj["recon"] > 0
    assert edited.cycles > first.cycles
    # and it is the answer a cold memo gives for the edited recipe
    step_mod.clear_step_cache()
    cold = sim.simulate_step(arch, model, decode=[64])
    assert (cold.cycles, dict(cold.energy_pj)) == (edited.cycles, dict(edited.energy_pj))
    # an unchanged recipe still hits the memo
    assert sim.simulate_step(arch, model, decode=[64]) is cold
