"""Tests of the technology tables (arch/tech/*.yaml) and their accessors (sim.config.tech)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from sim.config import ConfigError, PEMode
from sim.config.tech import TechTable, available_nodes, load_tech, pe_width, tech_dir

NODES = ["7nm", "28nm", "45nm"]  # smallest to largest feature size
DRAM_KINDS = ["hbm2", "hbm3", "ddr4", "ddr5", "lpddr5"]
MODES = [(2, 8, 2), (4, 4, 1), (4, 8, 1), (8, 8, 1), (8, 8, 0.5), (8, 16, 0.25), (16, 16, 1)]
SIZES_KB = [1, 8, 32, 256, 2048, 16384]


@pytest.fixture(scope="module")
def tables() -> dict[str, TechTable]:
    return {n: load_tech(n) for n in NODES}


def _numbers(tree, path=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, path + (k,))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield ".".join(map(str, path)), tree


def test_shipped_tables_load_by_name_and_path(tables):
    assert set(NODES) <= set(available_nodes())
    for node, t in tables.items():
        assert t.node == node
        assert t.origin is not None and t.origin.endswith(f"{node}.yaml")
        assert len(t.sources) >= 3 and len(t.scaling) > 100
        by_path = load_tech(tech_dir() / f"{node}.yaml")
        assert by_path.model_dump() == t.model_dump()
        assert load_tech(t) is t
    assert load_tech("7nm") is load_tech("7nm")  # cached


def test_every_energy_area_and_coefficient_is_positive(tables):
    for node, t in tables.items():
        for key, value in _numbers(t.model_dump()):
            assert value > 0, f"{node}: {key} = {value}"
        for w, a, m in MODES:
            assert t.mac_pj(w, a, m) > 0
        for kb in SIZES_KB:
            for f in (t.sram_read_pj_per_byte, t.sram_write_pj_per_byte, t.sram_area_um2, t.sram_leakage_uw,
                      t.l2_read_pj_per_byte, t.l2_write_pj_per_byte, t.l2_area_um2, t.l2_leakage_uw):
                assert f(kb) > 0
        for width in (4, 16, 32, 64, 256):
            assert t.pe_area_um2(width) > 0 and t.pe_leakage_uw(width) > 0
        for kind in DRAM_KINDS:
            assert t.dram_pj_per_bit(kind) > 0
        for v in (t.noc_pj_per_byte, t.vector_pj_per_op, t.vector_lane_area_um2,
                  t.vector_lane_leakage_uw, t.controller_area_um2):
            assert v > 0


def test_smaller_node_is_cheaper_and_smaller(tables):
    t7, t28, t45 = (tables[n] for n in NODES)
    for w, a, m in MODES:
        assert t7.mac_pj(w, a, m) < t28.mac_pj(w, a, m) < t45.mac_pj(w, a, m)
    for kb in SIZES_KB:
        for name in ("sram_read_pj_per_byte", "sram_write_pj_per_byte", "sram_area_um2",
                     "l2_read_pj_per_byte", "l2_write_pj_per_byte", "l2_area_um2"):
            v7, v28, v45 = (getattr(t, name)(kb) for t in (t7, t28, t45))
            assert v7 < v28 < v45, (name, kb)
    for width in (8, 16, 32, 64, 128):
        assert t7.pe_area_um2(width) < t28.pe_area_um2(width) < t45.pe_area_um2(width)
    assert t7.noc_pj_per_byte < t28.noc_pj_per_byte < t45.noc_pj_per_byte
    assert t7.vector_pj_per_op < t28.vector_pj_per_op < t45.vector_pj_per_op
    for kind in DRAM_KINDS:  # off-chip energy does not depend on the accelerator's node
        assert t7.dram_pj_per_bit(kind) == t28.dram_pj_per_bit(kind) == t45.dram_pj_per_bit(kind)


def test_mac_energy_grows_with_bits_and_shares_operands_across_lanes(tables):
    for t in tables.values():
        for bits in (2, 4, 8):
            assert t.mac_pj(bits, 8) < t.mac_pj(2 * bits, 8)
            assert t.mac_pj(8, bits) < t.mac_pj(8, 2 * bits)
        assert t.mac_pj(2, 2) < t.mac_pj(4, 4) < t.mac_pj(8, 8) < t.mac_pj(16, 16)
        # more lanes per PE share the operand registers; fused PEs each pay their own
        assert t.mac_pj(2, 8, 2) < t.mac_pj(2, 8, 1) < t.mac_pj(2, 8, 0.5)
        # the multiplier part is exactly per_bitproduct_pj per bit-product
        assert t.mac_pj(8, 8) - t.mac_pj(4, 8) == pytest.approx(32 * t.mac.per_bitproduct_pj)
        with pytest.raises(ValueError):
            t.mac_pj(0, 8)
        with pytest.raises(ValueError):
            t.mac_pj(8, 8, -1)


def test_sram_energy_per_byte_grows_with_size(tables):
    for t in tables.values():
        reads = [t.sram_read_pj_per_byte(kb) for kb in SIZES_KB]
        assert reads == sorted(reads) and len(set(reads)) == len(reads)
        assert all(t.sram_write_pj_per_byte(kb) > t.sram_read_pj_per_byte(kb) for kb in SIZES_KB)
        # area is linear in capacity, energy per byte is sublinear
        assert t.sram_area_um2(512) == pytest.approx(2 * t.sram_area_um2(256))
        assert t.sram_read_pj_per_byte(512) < 2 * t.sram_read_pj_per_byte(256)
        with pytest.raises(ValueError):
            t.sram_read_pj_per_byte(0)


def test_anchor_values_are_reproduced(tables):
    t45, t28, t7 = tables["45nm"], tables["28nm"], tables["7nm"]
    # Horowitz ISSCC'14 at 45 nm: 8b x 8b multiply 0.2 pJ; 64-bit SRAM reads 10/20/100 pJ
    assert 64 * t45.mac.per_bitproduct_pj == pytest.approx(0.2)
    for kb, pj_per_64bit in ((8, 10.0), (32, 20.0), (1024, 100.0)):
        assert t45.sram_read_pj_per_byte(kb) * 8 == pytest.approx(pj_per_64bit, rel=0.03)
    # MicroScopiQ: 28 nm synthesized PE (width 16) and 7 nm Table 5 PE (width 32)
    assert t28.pe_area_um2(16) == pytest.approx(11661.9 / 64, rel=0.002)
    assert t7.pe_area_um2(32) == pytest.approx(2.82 + 0.22, rel=0.002)
    assert t7.controller_area_um2 == pytest.approx(105.78)
    assert t45.dram_pj_per_bit("hbm2") == pytest.approx(3.9)
    # the 7 nm fixed/variable split follows the 28 nm one
    r28 = t28.pe.fixed_area_um2 / t28.pe.area_per_bitproduct_um2
    r7 = t7.pe.fixed_area_um2 / t7.pe.area_per_bitproduct_um2
    assert r7 == pytest.approx(r28, rel=0.01)


def test_pe_width_of_modes():
    modes = [PEMode(wbits=2, abits=8, macs_per_cycle=2), PEMode(wbits=4, abits=8, macs_per_cycle=1),
             PEMode(wbits=8, abits=8, macs_per_cycle=0.5)]
    assert pe_width(modes) == 32
    assert pe_width([(8, 8, 1), (4, 4, 4)]) == 64
    with pytest.raises(ValueError):
        pe_width([])


def test_unknown_dram_kind_names_file_and_key(tables):
    with pytest.raises(ConfigError) as exc:
        tables["7nm"].dram_pj_per_bit("hbm4")
    err = exc.value
    assert err.file is not None and err.file.endswith("7nm.yaml")
    assert err.key == "dram"
    assert "hbm2" in err.expected and "'hbm4'" in str(err)
    with pytest.raises(ConfigError, match="did you mean 'ddr5'"):
        tables["28nm"].dram_pj_per_bit("dr5")


def _write_variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((tech_dir() / "7nm.yaml").read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_malformed_tech_files_raise_config_error(tmp_path):
    def typo(d):
        d["mac"]["acumulate_pj"] = d["mac"].pop("accumulate_pj")

    def negative(d):
        d["sram"]["read_pj_per_byte_at_ref"] = -1.0

    def missing(d):
        del d["noc"]

    def wrong_type(d):
        d["dram"]["hbm2"] = "fast"

    cases = [(typo, "mac.acumulate_pj"), (negative, "sram.read_pj_per_byte_at_ref"),
             (missing, "noc"), (wrong_type, "dram.hbm2")]
    for edit, key in cases:
        path = _write_variant(tmp_path, edit)
        with pytest.raises(ConfigError) as exc:
            load_tech(path)
        assert exc.value.key == key, str(exc.value)
        assert "bad.yaml" in str(exc.value)
    path = _write_variant(tmp_path, typo)
    with pytest.raises(ConfigError, match="did you mean 'accumulate_pj'"):
        load_tech(path)

    broken = tmp_path / "broken.yaml"
    broken.write_text("node: 7nm\nmac: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_tech(broken)
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_tech(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError):
        load_tech(tmp_path / "absent.yaml")


def test_unknown_node_name():
    with pytest.raises(ConfigError, match="did you mean '7nm'") as exc:
        load_tech("7mn")
    assert exc.value.key == "technology"
    with pytest.raises(ConfigError):
        load_tech(7)


def test_overrides_and_immutability(tables):
    t = load_tech("7nm", overrides=["mac.accumulate_pj=0.02"])
    assert t.mac.accumulate_pj == 0.02
    assert load_tech("7nm").mac.accumulate_pj == tables["7nm"].mac.accumulate_pj != 0.02
    with pytest.raises(Exception):
        tables["7nm"].vdd = 1.0
    with pytest.raises(Exception):
        tables["7nm"].mac.accumulate_pj = 1.0
    assert math.isfinite(t.mac_pj(4, 8))
