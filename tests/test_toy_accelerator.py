"""A new accelerator type defined entirely in this test module runs end to end.

The toy is a compute-in-memory-like design with no PE array: its own config section
(``toy:``), its own technology section (``toy_adc:``), its own energy components (``adc``,
declared, and ``io``, charged but not declared) and its own operator list. Nothing under
``sim/`` knows about it: registering it is enough for ``load_arch``, ``load_experiment``,
``sim.run`` and the CLI.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field

import sim
from sim.config import ArchConfig, ConfigError, load_arch, load_experiment
from sim.config.schema import StrictModel
from sim.core import EnergyLedger
from sim.hw.interface import Accelerator, OpResult
from sim.hw.registry import accelerator_types, register, unregister
from sim.workload.graph import step_ops

PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]
REPO = Path(__file__).resolve().parents[1]


class ToySection(StrictModel):
    macro_rows: PosInt            # a GEMM's K is summed in chunks of this many rows
    macros: PosInt                # MACs per cycle = macros * macro_cols
    macro_cols: PosInt
    io_bytes_per_cycle: PosFloat


class ToyArchConfig(ArchConfig):
    toy: ToySection


class ToyAdcTech(StrictModel):
    pj_per_conversion: PosFloat
    pj_per_mac: PosFloat
    pj_per_io_byte: PosFloat
    macro_area_um2: PosFloat


class ToyAccelerator(Accelerator):
    config_class = ToyArchConfig
    tech_sections = {"toy_adc": ToyAdcTech}
    energy_components = ("mac", "adc")       # "io" is charged too, but not declared
    capabilities = frozenset({"nm_sparsity"})

    def __init__(self, arch, tech=None):
        super().__init__(arch, tech)
        self.t = self.tech_parts["toy_adc"]
        self.cfg = arch.toy

    def native_precisions(self):
        return ((8, 8),)

    def peak_macs_per_cycle(self, wbits, abits):
        return self.cfg.macros * self.cfg.macro_cols

    def describe(self):
        return f"toy CiM, {self.cfg.macros} macros, {self.arch.clock_ghz:g} GHz"

    def _op(self, operator, compute, io_bytes, led, macs=0):
        io = math.ceil(io_bytes / self.cfg.io_bytes_per_cycle)
        cycles = max(compute, io)
        led.add("io", "byte", io_bytes, self.t.pj_per_io_byte)
        return OpResult(cycles=cycles, compute_cycles=compute, stall_cycles=cycles - compute,
                        stall_memory=cycles - compute, macs=macs,
                        peak_macs_per_cycle=self.peak_macs_per_cycle(8, 8), energy=led,
                        components=self.energy_components, operator=operator).check("toy")

    def gemm(self, M, K, N, *, wbits=8, abits=8, **_):
        led = EnergyLedger()
        led.add("mac", "mac", M * K * N, self.t.pj_per_mac)
        led.add("adc", "conversion", adc_conversions(M, K, N, self.cfg.macro_rows),
                self.t.pj_per_conversion)
        compute = math.ceil(M * K * N / self.peak_macs_per_cycle(wbits, abits))
        return self._op("gemm", compute, (M * K + K * N + M * N) * wbits // 8, led, M * K * N)

    def vector(self, elements, ops_per_element, in_bytes, out_bytes, **_):
        return self._op("vector", math.ceil(elements * ops_per_element / 64),
                        in_bytes + out_bytes, EnergyLedger())

    def memory_op(self, read_bytes, write_bytes=0):
        return self._op("memory", 0, read_bytes + write_bytes, EnergyLedger())

    def area_um2(self):
        return {"macros": self.cfg.macros * self.t.macro_area_um2}


def adc_conversions(M, K, N, rows):
    """One ADC conversion per output per chunk of ``rows`` summed rows (the test's own rule)."""
    return M * N * math.ceil(K / rows)


@pytest.fixture(scope="module", autouse=True)
def toy_type():
    register("toy")(ToyAccelerator)
    yield
    unregister("toy")


@pytest.fixture
def tech(tmp_path):
    p = tmp_path / "toy7.yaml"
    p.write_text(f"extends: {REPO / 'arch' / 'tech' / '7nm.yaml'}\n"
                 "toy_adc: {pj_per_conversion: 2.5, pj_per_mac: 0.01, pj_per_io_byte: 0.2,"
                 " macro_area_um2: 900.0}\n")
    return p


def toy_arch(tech, **toy):
    return {"name": "toy1", "type": "toy", "clock_ghz": 1.0, "technology": str(tech),
            "toy": {"macro_rows": 64, "macros": 8, "macro_cols": 64, "io_bytes_per_cycle": 256,
                    **toy}}


def experiment(tech):
    return {"name": "toy_exp", "arch": toy_arch(tech), "model": "llama-2-7b",
            "runs": [{"name": "prefill", "phase": "prefill", "seq_len": 16},
                     {"name": "decode", "phase": "decode", "context": 32, "steps": 2}]}


def test_registered_type_loads_through_every_loader(tech):
    assert "toy" in accelerator_types()
    a = load_arch(toy_arch(tech))
    assert isinstance(a, ToyArchConfig) and a.toy.macros == 8
    e = load_experiment(experiment(tech), overrides=["arch.toy.macros=4"])
    assert isinstance(e.arch, ToyArchConfig) and e.arch.toy.macros == 4
    assert '"toy":' in e.canonical_json()        # the type's own section is part of the hash


def test_toy_runs_a_model_end_to_end_and_no_energy_is_dropped(tech):
    r = sim.run(experiment(tech))
    comps = list(dict.fromkeys(r.energy.component))
    assert comps[:2] == ["mac", "adc"] and "io" in comps    # declared first, then charged
    model = sim.load_model("llama-2-7b")
    graphs = {"prefill": [step_ops(model, "prefill", batch=1, seq_len=16)],
              "decode": [step_ops(model, "decode", batch=1, context=c) for c in (32, 33)]}
    for run in ("prefill", "decode"):
        ops = r.ops[r.ops.run == run]
        # adc energy by the test's own rule over every GEMM node of every step of the run
        conv = sum(adc_conversions(op["M"], op["K"], op["N"], 64) * max(op["count"] or 1, 1)
                   for g in graphs[run] for op in g if op["kind"] in ("gemm", "attention"))
        adc = r.energy[(r.energy.run == run) & (r.energy.component == "adc")].energy_pj.sum()
        assert adc == pytest.approx(2.5 * conv)
        assert ops.energy_adc_pj.sum() == pytest.approx(adc)
        assert (ops.energy_io_pj > 0).all()
        total = r.energy[r.energy.run == run].energy_pj.sum()
        row = r.runs[r.runs.run == run].iloc[0]
        assert total == pytest.approx(row.energy_total_j * 1e12)       # nothing dropped
        assert ops.energy_pj.sum() == pytest.approx(total)
        assert row.energy_adc_j * 1e12 == pytest.approx(adc)
    assert r.area.area_um2.sum() == pytest.approx(8 * 900.0)
    assert r.arch_description == "toy CiM, 8 macros, 1 GHz"


def test_simulate_gemm_on_the_toy(tech):
    g = sim.simulate_gemm(toy_arch(tech), 64, 128, 64)
    assert g.array is None
    assert g.energy_pj["adc"] == pytest.approx(2.5 * adc_conversions(64, 128, 64, 64))
    assert g.energy_total_pj == pytest.approx(sum(g.energy_pj.values()))
    assert g.energy_pj["io"] > 0


@pytest.mark.parametrize("toy, key, words", [
    ({"macro_rowz": 64}, "toy.macro_rowz", "did you mean 'macro_rows'"),
    ({"macros": 0}, "toy.macros", "> 0"),
    ({"macros": "8"}, "toy.macros", "an integer"),
])
def test_bad_keys_in_the_toy_section_are_one_line_errors(tech, toy, key, words):
    arch = toy_arch(tech, **toy)
    if "macro_rowz" in toy:
        del arch["toy"]["macro_rows"]
    with pytest.raises(ConfigError) as e:
        load_arch(arch)
    assert e.value.key == key and words in str(e.value) and "\n" not in str(e.value)


def test_bad_set_keys_reach_the_toy_section(tech):
    with pytest.raises(ConfigError) as e:
        load_experiment(experiment(tech), overrides=["arch.toy.macroz=4"])
    assert e.value.key == "arch.toy.macroz" and "did you mean 'macros'" in str(e.value)
    with pytest.raises(ConfigError) as e:        # a systolic key does not exist on the toy
        load_experiment(experiment(tech), overrides=["arch.array.rows=4"])
    assert e.value.key == "arch.array.rows"


def test_bad_or_missing_tech_section_names_the_tech_file(tmp_path, tech):
    bad = tmp_path / "bad7.yaml"
    bad.write_text(f"extends: {REPO / 'arch' / 'tech' / '7nm.yaml'}\n"
                   "toy_adc: {pj_per_conversion: -1, pj_per_mac: 0.01, pj_per_io_byte: 0.2,"
                   " macro_area_um2: 900.0}\n")
    with pytest.raises(ConfigError) as e:
        sim.simulate_gemm(toy_arch(bad), 8, 8, 8)
    assert e.value.key == "toy_adc.pj_per_conversion" and "bad7.yaml" in str(e.value)
    with pytest.raises(ConfigError) as e:         # the shipped 7nm table has no toy section
        sim.simulate_gemm(dict(toy_arch(tech), technology="7nm"), 8, 8, 8)
    assert e.value.key == "toy_adc" and "7nm.yaml" in str(e.value)
    typo = tmp_path / "typo7.yaml"
    typo.write_text(f"extends: {REPO / 'arch' / 'tech' / '7nm.yaml'}\n"
                    "toy_adx: {pj_per_conversion: 1}\n")
    with pytest.raises(ConfigError) as e:         # an unknown section is not ignored
        sim.simulate_gemm(toy_arch(typo), 8, 8, 8)
    assert e.value.key == "toy_adx" and "did you mean 'toy_adc'" in str(e.value)


def test_cli_runs_the_toy(tmp_path, tech, capsys):
    import yaml
    from sim.cli import main
    exp = tmp_path / "toy_exp.yaml"
    exp.write_text(yaml.safe_dump(experiment(tech)))
    assert main(["run", str(exp), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "toy CiM, 8 macros, 1 GHz" in out
    energy = (tmp_path / "out" / "energy.csv").read_text()
    assert ",adc," in energy and ",io," in energy


# ------------------------------------------------------------ per-op annotations (N:M) ----
KEEP = {}          # layer -> kept share of weights: stands for a schedule file a user edits


class ToyNMAccelerator(ToyAccelerator):
    """The toy with per-layer weight density from :data:`KEEP` through ``op_annotations``."""

    def op_annotations(self, model, seed=0):
        from sim.hw.interface import OpAnnotations
        table = tuple(KEEP.get(layer, 1.0) for layer in range(model.num_layers))

        def lookup(layer, op):
            return () if layer < 0 else (("keep", table[layer]),)
        return OpAnnotations(key=table, lookup=lookup)

    def gemm(self, M, K, N, *, wbits=8, abits=8, keep=1.0, **_):
        macs = math.ceil(M * K * N * keep)
        led = EnergyLedger()
        led.add("mac", "mac", macs, self.t.pj_per_mac)
        return self._op("gemm", math.ceil(macs / self.peak_macs_per_cycle(wbits, abits)), 0,
                        led, macs)


@pytest.fixture
def toy_nm():
    register("toy_nm")(ToyNMAccelerator)
    KEEP.clear()
    yield
    KEEP.clear()
    unregister("toy_nm")


def test_op_annotations_reach_every_weight_gemm_and_key_the_step_memo(tech, toy_nm):
    arch = {**toy_arch(tech), "name": "toy_nm1", "type": "toy_nm"}
    model = sim.load_model("llama-2-7b")
    dense = sim.simulate_step(arch, model, decode=[64])
    KEEP[0] = 0.5                 # the "schedule" changed: the memo must not answer
    half = sim.simulate_step(arch, model, decode=[64])
    ops = half.ops
    layer0 = ops[(ops.layer == 0) & (ops.kind == "gemm")]
    others = ops[(ops.layer != 0) & (ops.kind == "gemm")]
    assert (layer0.macs == [math.ceil(r.M * r.K * r.N * 0.5) for r in layer0.itertuples()]).all()
    assert (others.macs == others.M * others.K * others.N).all()     # lm_head: no keep
    assert (ops[ops.kind == "attention"].macs ==
            dense.ops[dense.ops.kind == "attention"].macs).all()   # attention untouched
    assert dense.macs - half.macs == int((layer0.M * layer0.K * layer0.N).sum() - layer0.macs.sum())
    r = sim.simulate_model(arch, model, phase="decode", batch=1, context=64)
    assert int(r.ops.macs.sum()) == half.macs
