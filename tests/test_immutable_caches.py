"""Configs and results are immutable and caches never answer for different content.

Reproductions of issue 7's defects 1 and 2 (a cached accelerator answering for a changed
config; results that were the cache's own objects) and of the tech-file edit that was ignored.
Reference values come from accelerators built directly (``build_accelerator``), bypassing
every cache, so the checks do not rest on the caches they test.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

import sim
from sim import api
from sim.config import load_arch, load_experiment
from sim.hw.registry import build_accelerator

REPO = Path(__file__).resolve().parents[1]


def uncached_cycles(arch, M, K, N):
    return build_accelerator(load_arch(arch)).gemm(M, K, N).cycles


def test_defect1_a_changed_config_cannot_reach_the_cache():
    a = load_arch("quickstart")
    first = sim.simulate_gemm(a, 512, 512, 512)
    with pytest.raises(ValidationError):
        a.array.rows = 128                      # configs are frozen
    with pytest.raises(ValidationError):
        a.clock_ghz = 2.0
    with pytest.raises(AttributeError):
        a.pe.modes.append(a.pe.modes[0])        # lists are tuples
    fresh = sim.simulate_gemm(load_arch("quickstart"), 512, 512, 512)
    assert fresh.cycles == first.cycles == uncached_cycles("quickstart", 512, 512, 512)
    # the way to change a config is to load a new one: a new object, a new answer
    b = load_arch(a, overrides=["array.rows=128"])
    assert b is not a and a.array.rows == 64 and b.array.rows == 128
    assert sim.simulate_gemm(b, 512, 512, 512).cycles == uncached_cycles(b, 512, 512, 512)
    assert sim.simulate_gemm(b, 512, 512, 512).cycles != first.cycles
    assert load_arch(a) is a                    # a frozen object may be handed back as is


def test_defect2_mutating_a_result_does_not_change_the_next_answer():
    g = sim.simulate_gemm("quickstart", 256, 512, 512)
    dram = g.energy_pj["dram"]
    assert dram > 0
    try:
        g.energy_pj["dram"] = 0.0               # the caller's own copy, or refused
    except TypeError:
        pass
    again = sim.simulate_gemm("quickstart", 256, 512, 512)
    assert again.energy_pj["dram"] == dram and again.cycles == g.cycles
    with pytest.raises(Exception):
        g.cycles = 1                            # GemmResult is frozen
    # the accelerator's memoized OpResult is frozen, with read-only energy and counters
    r = api.accelerator_for("quickstart").gemm(256, 512, 512)
    with pytest.raises(Exception):
        r.cycles = 0
    with pytest.raises(TypeError):
        r.energy_pj["dram"] = 0.0
    with pytest.raises(TypeError):
        r.energy.add("dram", "read_bit", 10**9, 1.0)
    with pytest.raises(TypeError):
        r.counters["x"] = 1
    assert api.accelerator_for("quickstart").gemm(256, 512, 512).energy_pj["dram"] == dram


def test_model_and_experiment_results_are_the_callers_own():
    m = sim.simulate_model("quickstart", "llama-2-7b", phase="decode", context=64)
    cycles, dram = m.cycles, m.energy_pj["dram"]
    m.ops["cycles"] = 0
    m.energy_pj["dram"] = 0.0
    m2 = sim.simulate_model("quickstart", "llama-2-7b", phase="decode", context=64)
    assert m2.cycles == cycles and m2.energy_pj["dram"] == dram
    assert int(m2.ops.cycles.sum()) == cycles
    exp = {"name": "t", "arch": "quickstart", "model": "llama-2-7b",
           "runs": [{"name": "d", "phase": "decode", "context": 64}]}
    r = sim.run(exp)
    r.ops["cycles"] = 0
    r.energy["energy_pj"] = 0.0
    r2 = sim.run(exp)
    assert int(r2.ops.cycles.sum()) == cycles and r2.energy.energy_pj.sum() > 0


def test_experiment_configs_are_frozen_and_variants_make_new_objects():
    e = load_experiment("microscopiq_recon_units")
    with pytest.raises(ValidationError):
        e.seed = 3
    with pytest.raises(TypeError):
        e.variants[0].set["arch.recon.units"] = 8
    with pytest.raises(AttributeError):
        e.runs.append(e.runs[0])
    points = api.design_points(e)
    assert len({id(cfg) for _, cfg in points}) == len(points)
    assert all(cfg is not e for _, cfg in points)
    assert [cfg.arch.recon.units for _, cfg in points] == [1, 2, 4, 8]


def test_hash_is_memoized_and_is_the_content_hash():
    import hashlib
    a = load_arch("quickstart")
    h = a.hash()
    assert h == hashlib.sha256(a.canonical_json().encode()).hexdigest()
    assert a._content_hash == h                 # computed once per frozen object
    assert load_arch("quickstart").hash() == h
    assert load_arch("quickstart", ["clock_ghz=2.0"]).hash() != h


def test_editing_a_tech_file_in_a_running_process_is_seen(tmp_path):
    tech = tmp_path / "mytech.yaml"
    shutil.copyfile(REPO / "arch" / "tech" / "7nm.yaml", tech)
    arch = load_arch("quickstart", [f"technology={tech}"])
    before = sim.simulate_gemm(arch, 256, 256, 256).energy_pj["pe_array"]
    text = tech.read_text()
    assert "accumulate_pj: 0.01607" in text
    tech.write_text(text.replace("accumulate_pj: 0.01607", "accumulate_pj: 0.5"))
    st = tech.stat()
    os.utime(tech, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # a visibly newer file
    after = sim.simulate_gemm(arch, 256, 256, 256).energy_pj["pe_array"]
    assert after > 5 * before
    direct = build_accelerator(load_arch(arch)).gemm(256, 256, 256).energy_pj["pe_array"]
    assert after == pytest.approx(direct)


def test_accelerator_cache_is_bounded():
    size = api._ACCEL_CACHE.maxsize
    for i in range(size + 8):
        api.accelerator_for(load_arch("quickstart", [f"clock_ghz={1 + i / 1000}"]))
    assert len(api._ACCEL_CACHE) == size


def test_an_arch_named_by_path_is_reread_when_it_or_its_parent_changes(tmp_path):
    """simulate_gemm reuses a validated arch named by path only while its file and its
    extends chain are unchanged on disk."""
    import yaml
    root = Path(__file__).resolve().parents[1]
    base = yaml.safe_load((root / "arch" / "quickstart.yaml").read_text())
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\n")
    child = str(tmp_path / "child.yaml")
    first = sim.simulate_gemm(child, 512, 512, 512).cycles
    assert sim.simulate_gemm(child, 512, 512, 512).cycles == first
    base["array"]["rows"] = 128
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base) + "# edited\n")
    second = sim.simulate_gemm(child, 512, 512, 512).cycles
    assert second != first
    assert second == sim.simulate_gemm(
        sim.load_arch("quickstart", overrides={"array.rows": 128}), 512, 512, 512).cycles
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\narray: {rows: 32}\n")
    assert sim.simulate_gemm(child, 512, 512, 512).cycles == sim.simulate_gemm(
        sim.load_arch("quickstart", overrides={"array.rows": 32}), 512, 512, 512).cycles
