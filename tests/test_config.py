"""Config layer: schemas, YAML loading, extends, --set overrides and error messages."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import yaml

from sim.config import (
    ArchConfig,
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    data_dir,
    list_shipped,
    load_arch,
    load_experiment,
    load_model,
    load_validated,
    parse_overrides,
    read_yaml,
    repo_root,
)

ARCH = {
    "name": "tiny",
    "description": "a small test array",
    "clock_ghz": 1.0,
    "technology": "7nm",
    "array": {"rows": 8, "cols": 8, "dataflow": "ws"},
    "pe": {
        "modes": [
            {"wbits": 8, "abits": 8, "macs_per_cycle": 1},
            {"wbits": 4, "abits": 4, "macs_per_cycle": 2},
            {"wbits": 16, "abits": 16, "macs_per_cycle": 0.25},
        ]
    },
    "memory": {
        "sram": {"ifmap_kb": 64, "weight_kb": 64, "ofmap_kb": 32, "bytes_per_cycle": 64},
        "l2": {"size_kb": 1024, "bytes_per_cycle": 128, "latency_cycles": 10},
        "dram": {"kind": "hbm2", "bandwidth_gbps": 256, "latency_ns": 100},
    },
    "vector": {"lanes": 16},
}

MODEL = {
    "name": "toy",
    "source": "made up for tests",
    "hidden_size": 256,
    "num_layers": 4,
    "num_heads": 8,
    "num_kv_heads": 2,
    "intermediate_size": 512,
    "ffn": "gated",
    "vocab_size": 1000,
    "max_position": 2048,
    "norm": "rmsnorm",
}


def write(path: Path, data) -> Path:
    """Write a dict as YAML, or a string verbatim."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(textwrap.dedent(data))
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def arch(**changes) -> dict:
    d = copy.deepcopy(ARCH)
    d.update(changes)
    return d


def experiment(tmp_path: Path, **changes) -> dict:
    write(tmp_path / "tiny_arch.yaml", ARCH)
    write(tmp_path / "toy_model.yaml", MODEL)
    d = {
        "name": "exp",
        "arch": "tiny_arch.yaml",
        "model": "toy_model.yaml",
        "runs": [
            {"name": "pf", "phase": "prefill", "seq_len": 64},
            {"name": "dec", "phase": "decode", "context": 128, "steps": 4},
        ],
    }
    d.update(changes)
    return d


def error_of(fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value


def check(err: ConfigError, file: str | None, key: str | None, *expected: str) -> None:
    """The error names the file, the key path and what was expected (all in one line)."""
    msg = str(err)
    assert "\n" not in msg
    if file is None:
        assert err.file is None
    else:
        assert err.file is not None and err.file.endswith(file), (err.file, file)
        assert msg.startswith(err.file + ": ")
    assert err.key == key, (err.key, key)
    if key:
        assert f": {key}: " in msg
    for text in expected:
        assert text in msg, (text, msg)


# ------------------------------------------------------------------------------------------
# Malformed input: each names file, key and what was expected
# ------------------------------------------------------------------------------------------


def test_wrong_type_string_for_int(tmp_path):
    d = arch()
    d["array"]["rows"] = "8"
    p = write(tmp_path / "a.yaml", d)
    err = error_of(load_arch, p)
    check(err, "a.yaml", "array.rows", "expected an integer", "got '8'")


def test_unknown_key_has_did_you_mean(tmp_path):
    d = arch()
    d["array"]["rowz"] = d["array"].pop("rows")
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    check(err, "a.yaml", "array.rowz", "a known key of 'array'", "did you mean 'rows'?")
    assert err.hint == "did you mean 'rows'?"
    # the missing 'rows' is reported too, after the misspelling
    assert any(e.key == "array.rows" and "required" in e.expected for e in err.errors)


def test_unknown_top_level_key(tmp_path):
    err = error_of(load_arch, write(tmp_path / "a.yaml", arch(clock_ghx=2.0)))
    check(err, "a.yaml", "clock_ghx", "a known key of the top level", "did you mean 'clock_ghz'?")


def test_missing_file(tmp_path):
    err = error_of(load_arch, tmp_path / "nope.yaml")
    check(err, "nope.yaml", None, "expected an existing YAML file", "no such file")


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "d.yaml").mkdir()
    err = error_of(read_yaml, tmp_path / "d.yaml")
    check(err, "d.yaml", None, "expected a YAML file", "got a directory")


def test_negative_size(tmp_path):
    d = arch()
    d["memory"]["sram"]["ifmap_kb"] = -4
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    check(err, "a.yaml", "memory.sram.ifmap_kb", "expected a number > 0", "got -4")


def test_zero_size(tmp_path):
    d = arch()
    d["array"]["cols"] = 0
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    check(err, "a.yaml", "array.cols", "expected an integer > 0", "got 0")


def test_negative_latency_allows_zero_only(tmp_path):
    d = arch()
    d["memory"]["l2"]["latency_cycles"] = 0
    assert load_arch(d).memory.l2.latency_cycles == 0
    d["memory"]["l2"]["latency_cycles"] = -1
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    check(err, "a.yaml", "memory.l2.latency_cycles", "expected an integer >= 0")


def test_missing_required_key(tmp_path):
    d = arch()
    del d["clock_ghz"]
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    check(err, "a.yaml", "clock_ghz", "this key is required")


def test_literal_enum(tmp_path):
    d = arch()
    d["array"]["dataflow"] = "xs"
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    check(err, "a.yaml", "array.dataflow", "one of 'ws', 'os' or 'is'", "got 'xs'")


def test_mapping_expected(tmp_path):
    err = error_of(load_arch, write(tmp_path / "a.yaml", arch(array=5)))
    check(err, "a.yaml", "array", "expected a mapping", "got 5")


def test_bool_is_not_an_int(tmp_path):
    d = arch()
    d["vector"]["lanes"] = True
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    check(err, "a.yaml", "vector.lanes", "expected an integer", "got True")


def test_extends_loop_names_chain(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "b.yaml", "name": "a"})
    write(tmp_path / "b.yaml", {"extends": "a.yaml", "name": "b"})
    err = error_of(load_arch, tmp_path / "a.yaml")
    check(err, "b.yaml", "extends", "an extends chain without a loop", "a.yaml -> b.yaml -> a.yaml")


def test_extends_self_loop(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "./a.yaml", "name": "a"})
    err = error_of(load_arch, tmp_path / "a.yaml")
    check(err, "a.yaml", "extends", "without a loop", "a.yaml -> a.yaml")


def test_extends_missing_parent(tmp_path):
    write(tmp_path / "child.yaml", {"extends": "parent.yaml", "name": "c"})
    err = error_of(load_arch, tmp_path / "child.yaml")
    check(err, "child.yaml", "extends", "a path to an existing YAML file", "'parent.yaml'")


def test_malformed_yaml_line_column(tmp_path):
    p = write(tmp_path / "bad.yaml", "name: x\narray:\n  rows: 8\n cols: [1, 2\n")
    err = error_of(load_arch, p)
    check(err, "bad.yaml", None, "expected valid YAML", "line 4, column")


def test_duplicate_yaml_key(tmp_path):
    p = write(tmp_path / "dup.yaml", "name: x\narray:\n  rows: 8\n  rows: 16\n")
    err = error_of(load_arch, p)
    check(err, "dup.yaml", None, "expected valid YAML", "duplicate key 'rows'", "line 4")


def test_empty_file(tmp_path):
    p = write(tmp_path / "empty.yaml", "# just a comment\n")
    err = error_of(load_arch, p)
    check(err, "empty.yaml", None, "expected a mapping", "got an empty file")


def test_top_level_list(tmp_path):
    p = write(tmp_path / "list.yaml", "- name: x\n- name: y\n")
    err = error_of(load_arch, p)
    check(err, "list.yaml", None, "a mapping of keys to values at the top level", "got a list")


def test_set_without_equals():
    err = error_of(parse_overrides, ["array.rows"])
    check(err, "--set", None, "expected key.path=value", "got 'array.rows'")


def test_set_empty_key():
    for item in ["=3", "a..b=3", ".a=1"]:
        err = error_of(parse_overrides, [item])
        check(err, "--set", None, "a dotted key path before '='")


def test_set_malformed_value():
    err = error_of(parse_overrides, ["array.rows=[1, 2"])
    check(err, "--set", "array.rows", "a YAML value after '='")


def test_set_unknown_key_did_you_mean(tmp_path):
    p = write(tmp_path / "a.yaml", ARCH)
    err = error_of(load_arch, p, ["array.rowz=16"])
    check(err, "--set", "array.rowz", "an existing key of array", "did you mean 'rows'?")
    err = error_of(load_arch, p, ["arry.rows=16"])
    check(err, "--set", "arry.rows", "an existing key of the top level", "did you mean 'array'?")


def test_set_bad_list_index(tmp_path):
    p = write(tmp_path / "a.yaml", ARCH)
    err = error_of(load_arch, p, ["pe.modes.3.macs_per_cycle=1"])
    check(err, "--set", "pe.modes.3.macs_per_cycle", "a list index of pe.modes in 0..2", "got 3")
    err = error_of(load_arch, p, ["pe.modes.first.wbits=8"])
    check(err, "--set", "pe.modes.first.wbits", "a list index of pe.modes")


def test_set_through_a_scalar(tmp_path):
    err = error_of(load_arch, write(tmp_path / "a.yaml", ARCH), ["name.first=x"])
    check(err, "--set", "name.first", "a mapping or list at name", "got 'tiny'")


def test_set_value_invalid_is_blamed_on_set(tmp_path):
    err = error_of(load_arch, write(tmp_path / "a.yaml", ARCH), ["array.rows=-2"])
    check(err, "--set", "array.rows", "expected an integer > 0", "got -2")


def test_unknown_shipped_name(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_HOME", str(tmp_path))
    write(tmp_path / "arch" / "small.yaml", arch(name="small"))
    write(tmp_path / "arch" / "large.yaml", arch(name="large"))
    err = error_of(load_arch, "smal")
    check(err, None, None, "a shipped arch name (large, small)", "got 'smal'",
          "did you mean 'small'?")


def test_unknown_shipped_name_in_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_HOME", str(tmp_path))
    write(tmp_path / "arch" / "small.yaml", arch(name="small"))
    p = write(tmp_path / "e.yaml", experiment(tmp_path, arch="smll"))
    err = error_of(load_experiment, p)
    check(err, "e.yaml", "arch", "a shipped arch name (small)", "did you mean 'small'?")


def test_duplicate_pe_modes(tmp_path):
    d = arch()
    d["pe"]["modes"].append({"wbits": 8, "abits": 8, "macs_per_cycle": 2})
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    check(err, "a.yaml", "pe.modes.3", "each (wbits, abits) pair at most once",
          "first given as modes.0")


@pytest.mark.parametrize("m", [0.3, 1.5, 1 / 3, 1 / 16, 0])
def test_bad_macs_per_cycle(tmp_path, m):
    d = arch()
    d["pe"]["modes"][0]["macs_per_cycle"] = m
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    want = "> 0" if m == 0 else "an integer >= 1, or 1/2, 1/4 or 1/8"
    check(err, "a.yaml", "pe.modes.0.macs_per_cycle", want)


def test_pe_bits_literal(tmp_path):
    d = arch()
    d["pe"]["modes"][0]["wbits"] = 3
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    check(err, "a.yaml", "pe.modes.0.wbits", "one of 2, 4, 8 or 16", "got 3")


def test_num_kv_heads_must_divide(tmp_path):
    p = write(tmp_path / "m.yaml", dict(MODEL, num_kv_heads=3))
    err = error_of(load_model, p)
    check(err, "m.yaml", "num_kv_heads", "a divisor of num_heads (8)", "got 3")


def test_head_dim_needed_when_not_divisible(tmp_path):
    p = write(tmp_path / "m.yaml", dict(MODEL, hidden_size=250))
    err = error_of(load_model, p)
    check(err, "m.yaml", "head_dim", "head_dim must be given")
    assert load_model(dict(MODEL, hidden_size=250, head_dim=32)).head_dim == 32


def test_layer_precision_out_of_range(tmp_path):
    rule = {"layers": "2-7", "wbits": 4, "abits": 8}
    p = write(tmp_path / "m.yaml", dict(MODEL, layer_precision=[rule]))
    err = error_of(load_model, p)
    check(err, "m.yaml", "layer_precision.0.layers", "layer indices in 0..3", "got '2-7'")


@pytest.mark.parametrize("layers", ["first", "5-2", [0, -1], [0, "x"], True])
def test_layer_precision_bad_spec(tmp_path, layers):
    rule = {"layers": layers, "wbits": 4, "abits": 8}
    p = write(tmp_path / "m.yaml", dict(MODEL, layer_precision=[rule]))
    err = error_of(load_model, p)
    assert err.file.endswith("m.yaml")
    assert err.key.startswith("layer_precision.0.layers")
    assert "expected" in str(err) and ("range" in err.expected or "layer index" in err.expected)


def test_run_missing_seq_len(tmp_path):
    d = experiment(tmp_path)
    del d["runs"][0]["seq_len"]
    err = error_of(load_experiment, write(tmp_path / "e.yaml", d))
    check(err, "e.yaml", "runs.0.seq_len", "a prefill run needs seq_len")


def test_run_missing_context(tmp_path):
    d = experiment(tmp_path)
    d["runs"].append({"name": "mx", "phase": "mixed", "seq_len": 32})
    err = error_of(load_experiment, write(tmp_path / "e.yaml", d))
    check(err, "e.yaml", "runs.2.context", "a mixed run needs context")


def test_no_runs_and_duplicate_run_names(tmp_path):
    err = error_of(load_experiment, write(tmp_path / "e.yaml", experiment(tmp_path, runs=[])))
    check(err, "e.yaml", "runs", "a list with at least 1 item")
    d = experiment(tmp_path)
    d["runs"][1]["name"] = "pf"
    err = error_of(load_experiment, write(tmp_path / "e.yaml", d))
    check(err, "e.yaml", "runs.1.name", "a run name used once", "also the name of runs.0")


def test_error_in_parent_through_extends(tmp_path):
    parent = arch()
    parent["array"]["rows"] = -8
    write(tmp_path / "base" / "parent.yaml", parent)
    child = write(tmp_path / "child.yaml", {"extends": "base/parent.yaml", "name": "child"})
    err = error_of(load_arch, child)
    check(err, "parent.yaml", "array.rows", "an integer > 0", "got -8")


def test_error_in_child_through_extends(tmp_path):
    write(tmp_path / "parent.yaml", ARCH)
    child = write(tmp_path / "child.yaml", {"extends": "parent.yaml", "array": {"colz": 4}})
    err = error_of(load_arch, child)
    check(err, "child.yaml", "array.colz", "did you mean 'cols'?")


def test_missing_key_blamed_on_the_file_that_wrote_the_mapping(tmp_path):
    parent = arch()
    del parent["memory"]["dram"]["kind"]
    write(tmp_path / "parent.yaml", parent)
    child = write(tmp_path / "child.yaml", {"extends": "parent.yaml", "vector": {"lanes": 4}})
    err = error_of(load_arch, child)
    check(err, "parent.yaml", "memory.dram.kind", "required")


def test_experiment_error_located_in_arch_file(tmp_path):
    d = experiment(tmp_path)
    bad = arch()
    bad["array"]["rows"] = 0
    write(tmp_path / "archs" / "bad.yaml", bad)
    d["arch"] = "archs/bad.yaml"
    err = error_of(load_experiment, write(tmp_path / "e.yaml", d))
    check(err, "bad.yaml", "arch.array.rows", "an integer > 0")


def test_experiment_set_into_arch_blamed_on_set(tmp_path):
    p = write(tmp_path / "e.yaml", experiment(tmp_path))
    err = error_of(load_experiment, p, ["arch.array.rows=0"])
    check(err, "--set", "arch.array.rows", "an integer > 0")
    err = error_of(load_experiment, p, ["model.num_layerz=2"])
    check(err, "--set", "model.num_layerz", "did you mean 'num_layers'?")


def test_arch_mode_missing_lists_supported(tmp_path):
    a = load_arch(write(tmp_path / "a.yaml", ARCH))
    err = error_of(a.mode, 2, 2)
    check(err, "a.yaml", "pe.modes", "(wbits=8, abits=8)", "(wbits=4, abits=4)",
          "got (wbits=2, abits=2)")


def test_precision_for_bad_layer():
    m = load_model(MODEL)
    err = error_of(m.precision_for, 4, "qkv")
    assert err.key == "layer" and "0..3" in err.expected


def test_data_dir_unknown_kind():
    err = error_of(data_dir, "workload")
    assert "did you mean 'workloads'?" in str(err)


def test_all_errors_kept(tmp_path):
    d = arch(clock_ghz=-1)
    d["array"]["rows"] = "x"
    d["vector"]["lanes"] = 0
    err = error_of(load_arch, write(tmp_path / "a.yaml", d))
    keys = [e.key for e in err.errors]
    assert keys == ["clock_ghz", "array.rows", "vector.lanes"]
    assert str(err) == str(err.errors[0])


# ------------------------------------------------------------------------------------------
# Positive behaviour
# ------------------------------------------------------------------------------------------


def test_valid_arch_and_mode_properties():
    a = load_arch(ARCH)
    assert isinstance(a, ArchConfig)
    assert a.kind == "accelerator" and a.array.dataflow == "ws"
    m8, m4, m16 = (a.mode(8, 8), a.mode(4, 4), a.mode(16, 16))
    assert (m8.lanes, m8.fusion) == (1, 1)
    assert (m4.lanes, m4.fusion) == (2, 1)
    assert (m16.lanes, m16.fusion) == (1, 4)


def test_model_defaults_and_precision_for():
    rules = [
        {"layers": "all", "ops": ["down_proj"], "wbits": 4, "abits": 8},
        {"layers": [0, 3], "wbits": 8, "abits": 8},
        {"layers": "1-2", "ops": ["q_proj", "down_proj"], "wbits": 2, "abits": 4},
        {"layers": 3, "ops": ["lm_head"], "wbits": 16, "abits": 16},
    ]
    m = load_model(dict(MODEL, precision={"wbits": 4, "abits": 4}, layer_precision=rules))
    assert isinstance(m, ModelConfig)
    assert m.head_dim == 32 and m.qkv_bias is False
    assert m.precision_for(0, "up_proj") == (8, 8)  # rule 2 (later rules win)
    assert m.precision_for(0, "down_proj") == (8, 8)
    assert m.precision_for(1, "down_proj") == (2, 4)
    assert m.precision_for(1, "up_proj") == (4, 4)  # model default
    assert m.precision_for(2, "q_proj") == (2, 4)
    assert m.precision_for(3, "lm_head") == (16, 16)
    assert m.layer_precision[3].layers == (3,)   # lists are held as tuples (frozen)


def test_extends_deep_merge(tmp_path):
    write(tmp_path / "parent.yaml", ARCH)
    child = write(
        tmp_path / "child.yaml",
        """
        extends: parent.yaml
        name: child
        array: {rows: 32}
        pe:
          modes:
            - {wbits: 8, abits: 8, macs_per_cycle: 4}
        memory:
          dram: {kind: hbm3}
        """,
    )
    a = load_arch(child)
    assert a.name == "child"
    assert (a.array.rows, a.array.cols, a.array.dataflow) == (32, 8, "ws")  # dict merged
    assert len(a.pe.modes) == 1 and a.pe.modes[0].macs_per_cycle == 4  # list replaced
    assert a.memory.dram.kind == "hbm3" and a.memory.dram.bandwidth_gbps == 256
    assert a.memory.sram.ifmap_kb == 64
    assert a.description == "a small test array"
    assert a.origin.endswith("child.yaml")


def test_extends_chain_of_three(tmp_path):
    write(tmp_path / "a.yaml", ARCH)
    write(tmp_path / "sub" / "b.yaml", {"extends": "../a.yaml", "array": {"cols": 16}})
    c = write(tmp_path / "c.yaml", {"extends": "sub/b.yaml", "clock_ghz": 2})
    a = load_arch(c)
    assert (a.array.cols, a.clock_ghz, a.array.rows) == (16, 2.0, 8)


def test_extends_shipped_name(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_HOME", str(tmp_path / "home"))
    write(tmp_path / "home" / "arch" / "base.yaml", ARCH)
    c = write(tmp_path / "mine.yaml", {"extends": "base", "name": "mine"})
    assert load_arch(c).name == "mine"
    assert repo_root() == (tmp_path / "home").resolve()
    assert list_shipped("arch") == ["base"]
    assert load_arch("base").name == "tiny"


def test_provenance_names_each_file(tmp_path):
    parent = arch()
    parent["array"]["rows"] = "p"
    write(tmp_path / "parent.yaml", parent)
    child = write(tmp_path / "child.yaml", {"extends": "parent.yaml", "vector": {"lanes": "c"}})
    err = error_of(load_arch, child, ["array.cols=s"])
    where = {e.key: e.file for e in err.errors}
    assert where["array.rows"].endswith("parent.yaml")
    assert where["vector.lanes"].endswith("child.yaml")
    assert where["array.cols"] == "--set"


def test_child_replacing_parent_value_takes_the_blame(tmp_path):
    write(tmp_path / "parent.yaml", ARCH)
    child = write(tmp_path / "child.yaml",
                  {"extends": "parent.yaml", "pe": {"modes": [{"wbits": 8}]}})
    err = error_of(load_arch, child)
    check(err, "child.yaml", "pe.modes.0.abits", "required")


def test_parse_overrides_values():
    got = parse_overrides(
        ["a.b=32", "c=1.5", "d=true", "e=[1, 2]", "f=hbm3", "g=", "h=1e-3", "i= x=y"]
    )
    assert got == [
        ("a.b", 32), ("c", 1.5), ("d", True), ("e", [1, 2]), ("f", "hbm3"), ("g", None),
        ("h", 0.001), ("i", "x=y"),
    ]


def test_overrides_nested_and_list(tmp_path):
    p = write(tmp_path / "a.yaml", ARCH)
    a = load_arch(p, ["array.rows=32", "pe.modes.1.macs_per_cycle=4", "memory.dram.kind=hbm3",
                      "array.dataflow=os"])
    assert (a.array.rows, a.pe.modes[1].macs_per_cycle, a.memory.dram.kind) == (32, 4, "hbm3")
    assert a.array.dataflow == "os"
    # tuples and dicts work as well as strings
    assert load_arch(p, [("array.cols", 4)]).array.cols == 4
    assert load_arch(p, {"vector.lanes": 2}).vector.lanes == 2


def test_override_key_left_at_default(tmp_path):
    d = arch()
    del d["array"]["dataflow"]
    del d["description"]
    a = load_arch(write(tmp_path / "a.yaml", d), ["array.dataflow=is", "description=hi"])
    assert a.array.dataflow == "is" and a.description == "hi"


def test_experiment_overrides_reach_arch_model_runs(tmp_path):
    p = write(tmp_path / "e.yaml", experiment(tmp_path))
    e = load_experiment(p, ["arch.array.rows=32", "model.num_layers=2", "runs.0.seq_len=128",
                            "outputs.trace=true", "seed=7"])
    assert isinstance(e, ExperimentConfig)
    assert e.arch.array.rows == 32 and e.model.num_layers == 2
    assert e.runs[0].seq_len == 128 and e.runs[1].context == 128
    assert e.outputs.trace is True and e.outputs.plots == ("breakdown",) and e.seed == 7
    assert e.arch.origin.endswith("tiny_arch.yaml") and e.model.origin.endswith("toy_model.yaml")


def test_experiment_set_arch_to_other_file(tmp_path):
    p = write(tmp_path / "e.yaml", experiment(tmp_path))
    write(tmp_path / "other.yaml", arch(name="other"))
    e = load_experiment(p, [f"arch={tmp_path / 'other.yaml'}", "arch.array.cols=4"])
    assert e.arch.name == "other" and e.arch.array.cols == 4


def test_experiment_inline_arch_relative_to_experiment_file(tmp_path):
    d = experiment(tmp_path)
    d["arch"] = {"extends": "../tiny_arch.yaml", "name": "inline", "array": {"rows": 4}}
    d["model"] = dict(MODEL)
    e = load_experiment(write(tmp_path / "exps" / "e.yaml", d))
    assert e.arch.name == "inline" and e.arch.array.rows == 4 and e.arch.array.cols == 8
    assert e.model.name == "toy"
    d["arch"]["array"]["rows"] = -1
    err = error_of(load_experiment, write(tmp_path / "exps" / "e.yaml", d))
    check(err, "e.yaml", "arch.array.rows", "an integer > 0")


def test_experiment_extends_other_experiment(tmp_path):
    write(tmp_path / "base.yaml", experiment(tmp_path))
    p = write(tmp_path / "e2.yaml", {"extends": "base.yaml", "name": "e2",
                                     "runs": [{"name": "only", "phase": "decode", "context": 0}]})
    e = load_experiment(p)
    assert e.name == "e2" and [r.name for r in e.runs] == ["only"]
    assert e.arch.name == "tiny"


def test_object_and_dict_refs(tmp_path):
    a = load_arch(ARCH)
    assert load_arch(a) is a
    b = load_arch(a, ["array.rows=64"])
    assert b.array.rows == 64 and a.array.rows == 8
    # the caller's dict is not modified
    d = arch()
    load_arch(d, ["array.rows=2"])
    assert d == ARCH
    # an experiment built from objects
    e = load_experiment({"name": "x", "arch": a, "model": load_model(MODEL),
                         "runs": [{"name": "r", "phase": "prefill", "seq_len": 1}]},
                        ["arch.array.cols=4"])
    assert e.arch.array.cols == 4


def test_load_validated_generic_schema(tmp_path):
    from sim.config.schema import StrictModel

    class Table(StrictModel):
        node: str
        energy_pj: dict[str, float]

    write(tmp_path / "base.yaml", {"node": "7nm", "energy_pj": {"mac8": 0.2}})
    p = write(tmp_path / "t.yaml", {"extends": "base", "energy_pj": {"mac4": 0.1}})
    t = load_validated(p, Table, ["energy_pj.sram_read=1.5"])
    assert t.energy_pj == {"mac8": 0.2, "mac4": 0.1, "sram_read": 1.5}
    err = error_of(load_validated, p, Table, ["energy_pj.mac4=cheap"])
    check(err, "--set", "energy_pj.mac4", "expected a number")


def test_hash_round_trip_stable(tmp_path):
    a = load_arch(write(tmp_path / "a.yaml", ARCH))
    dumped = write(tmp_path / "dumped.yaml", a.model_dump(mode="json"))
    again = load_arch(dumped)
    assert again.hash() == a.hash() and len(a.hash()) == 64
    assert again == a
    # int vs float spelling of the same value hashes the same
    assert load_arch(arch(clock_ghz=1)).hash() == a.hash()
    assert load_arch(a, ["array.rows=16"]).hash() != a.hash()
    m = load_model(MODEL)
    m2 = load_model(write(tmp_path / "m.yaml", m.model_dump(mode="json")))
    assert m2.hash() == m.hash() and m2.head_dim == 32
    assert load_model(MODEL, ["precision.wbits=4"]).hash() != m.hash()


def test_yaml_float_exponent(tmp_path):
    text = yaml.safe_dump(ARCH).replace("clock_ghz: 1.0", "clock_ghz: 15e-1")
    p = write(tmp_path / "a.yaml", text)
    assert load_arch(p).clock_ghz == 1.5


def test_shipped_arch_files_validate():
    names = list_shipped("arch")
    if not names:
        pytest.skip("no arch/*.yaml shipped yet")
    for name in names:
        a = load_arch(name)
        assert a.name and (a.type == "gpu" or a.pe.modes)


def test_fused_mode_wider_than_the_array_is_rejected():
    with pytest.raises(ConfigError) as e:
        load_arch(arch(), ["array.cols=2"])
    assert e.value.key == "pe.modes.2.macs_per_cycle" and "fused" in str(e.value)


def test_edited_file_is_read_again(tmp_path):
    p = write(tmp_path / "a.yaml", arch())
    assert load_arch(p).array.rows == ARCH["array"]["rows"]
    write(p, {**arch(), "array": {**ARCH["array"], "rows": 48}})   # new size and mtime
    assert load_arch(p).array.rows == 48
    d = read_yaml(p)
    d["array"]["rows"] = 1                    # callers get copies, the cache stays intact
    assert read_yaml(p)["array"]["rows"] == 48
