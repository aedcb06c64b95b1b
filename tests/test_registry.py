"""The accelerator registry: built-in types found without a shared list, the arch schema
dispatching on ``type:``, and technology sections required only by the types that read them."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import sim
from sim.config import ConfigError, load_arch, read_yaml
from sim.hw import registry

REPO = Path(__file__).resolve().parents[1]


def test_builtin_types_come_from_their_modules_declarations():
    index = registry._builtin_index()
    assert index == {"systolic": "accelerator", "microscopiq": "microscopiq",
                     "sparse_systolic": "sparse_systolic", "flexcim": "flexcim", "gpu": "gpu",
                     **{t: "baselines" for t in ("olive", "ant", "gobo", "olaccel",
                                                  "adaptivfloat")}}
    assert set(registry.accelerator_types()) >= set(index)
    for kind, module in index.items():
        mod = importlib.import_module(f"sim.hw.{module}")
        cls = registry.accelerator_class(kind)
        assert kind in mod.ACCELERATOR_TYPES and cls.__module__ == mod.__name__
        # the tech sections a class reads are declared by its module (found without import)
        assert set(cls.tech_sections) <= set(getattr(mod, "TECH_SECTIONS", ()))
        assert set(cls.energy_components) and cls.type_name == kind


def test_a_plain_run_does_not_import_other_types():
    code = ("import sys, sim; sim.simulate_gemm('quickstart', 64, 64, 64); "
            "print(sorted(m for m in sys.modules if m.startswith('sim.hw.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sim.hw.microscopiq" not in out.stdout and "sim.hw.baselines" not in out.stdout
    assert "sim.hw.accelerator" in out.stdout


def test_unknown_type_is_a_one_line_error_with_a_hint():
    with pytest.raises(ConfigError) as e:
        load_arch("quickstart", ["type=microscopic"])
    assert e.value.key == "type" and "did you mean 'microscopiq'" in str(e.value)
    assert "\n" not in str(e.value)


def test_null_sections_of_other_types_mean_absent_but_typos_stay_errors():
    a = load_arch("quickstart").model_dump()
    assert load_arch({**a, "recon": None, "baseline": None}) == load_arch(a)
    with pytest.raises(ConfigError) as e:
        load_arch({**a, "reconn": None})
    assert e.value.key == "reconn"


def test_recon_tech_section_is_required_only_by_microscopiq(tmp_path):
    table = read_yaml(REPO / "arch" / "tech" / "7nm.yaml")
    del table["recon"]
    path = tmp_path / "norecon.yaml"
    path.write_text(yaml.safe_dump(table))
    plain = sim.simulate_gemm(load_arch("quickstart", [f"technology={path}"]), 64, 64, 64)
    assert plain.cycles == sim.simulate_gemm("quickstart", 64, 64, 64).cycles
    with pytest.raises(ConfigError) as e:
        sim.simulate_gemm(load_arch("microscopiq-64x64", [f"technology={path}"]), 64, 64, 64,
                          wbits=4, abits=4)
    assert e.value.key == "recon" and "norecon.yaml" in str(e.value)
    table["recon"] = {"switch_area_um2": 1.0, "switch_pj": 0.01}
    path.write_text(yaml.safe_dump(table))
    with pytest.raises(ConfigError) as e:
        sim.simulate_gemm(load_arch("microscopiq-64x64", [f"technology={path}"]), 64, 64, 64,
                          wbits=4, abits=4)
    assert e.value.key == "recon.sync_buffer_area_um2_per_col"
