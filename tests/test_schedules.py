"""Iso-accuracy precision schedules (sim.config.schedules, workloads/schedules/*.yaml): the shipped
files load and carry the paper's reference numbers, every design runs only modes its arch has,
v2 is mostly 2-bit, bad files are ConfigErrors naming file and key, and the schedules turn into
experiment variants that simulate."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import sim
from sim.config import ConfigError, load_arch, load_experiment, load_model, read_yaml
from sim.config.schedules import (
    DESIGN_LABELS,
    DESIGN_TYPES,
    DESIGNS,
    available_schedules,
    design_model,
    load_schedule,
    schedule_variants,
    schedules_dir,
)
from sim.workload import step_ops

SHIPPED = ["llama-2-13b", "llama-2-7b", "llama-3-8b", "opt-6.7b", "vila-7b"]

# MicroScopiQ (ISCA'25) Table 2, WikiText-2 perplexity: (FP16, W4A4).
TABLE2_W4A4 = {"llama-2-7b": (5.47, 6.11), "llama-2-13b": (4.83, 5.57),
               "llama-3-8b": (6.13, 8.12), "opt-6.7b": (10.86, 10.97)}

def _block_linears(model) -> list[str]:
    ops = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return [op for op in ops if model.ffn == "gated" or op != "gate_proj"]


def _wbits_per_op(schedule: str, design: str) -> dict[int, int]:
    """How many (block, linear op) pairs run at each weight width."""
    m = design_model(schedule, design)
    counts: dict[int, int] = {}
    for layer in range(m.num_layers):
        for op in _block_linears(m):
            w = m.precision_for(layer, op)[0]
            counts[w] = counts.get(w, 0) + 1
    return counts


# ---------------------------------------------------------------------------------- shipped --


def test_shipped_schedules_are_the_five_models():
    assert available_schedules() == SHIPPED
    assert (schedules_dir() / "llama-3-8b.yaml").is_file()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_schedule_loads_with_every_design_and_a_source(name):
    s = load_schedule(name)
    assert s.model == name and load_model(s.model).name == name
    assert s.ordered() == list(DESIGNS)
    assert s.tolerance == 0.02 and "2 %" in s.rule
    for key, design in s.designs.items():
        assert len(design.source) > 80, key          # a real explanation, not a placeholder
        assert load_arch(design.arch).type == DESIGN_TYPES[key]
        assert design.precision.abits == 4, key      # the paper's A4 iso-accuracy runs
    assert "reconstruction" in s.notes
    # loading again is served from the cache
    assert load_schedule(name) is s


@pytest.mark.parametrize("name", sorted(TABLE2_W4A4))
def test_reference_is_microscopiq_w4a4_from_table_2(name):
    s = load_schedule(name)
    fp16, w4a4 = TABLE2_W4A4[name]
    assert s.reference.design == "microscopiq-v1" and s.reference.setting == "W4A4"
    assert s.reference.value == w4a4 and s.reference.fp16 == fp16
    assert "Table 2" in s.reference.source
    low, high = s.window()
    assert low == pytest.approx(w4a4 * 0.98) and high == pytest.approx(w4a4 * 1.02)


def test_vila_has_no_published_reference_number():
    s = load_schedule("vila-7b")
    assert s.reference.value is None and s.window() is None
    assert "Fig. 10" in s.reference.source


@pytest.mark.parametrize("name", SHIPPED)
def test_every_op_runs_in_a_mode_of_its_arch(name):
    """Build the real decode-step operator list of the full model for every design and ask the
    arch for each GEMM's mode; attention reads the KV cache, so it must run at (abits, abits)."""
    s = load_schedule(name)
    for key in s.ordered():
        arch = load_arch(s.designs[key].arch)
        model = design_model(s, key)
        ops = step_ops(model, "decode", batch=1, context=8)
        pairs = {(o["wbits"], o["abits"]) for o in ops if o["kind"] in ("gemm", "attention")}
        attention = {(o["wbits"], o["abits"]) for o in ops if o["kind"] == "attention"}
        assert all(w == a for w, a in attention), (key, attention)
        assert attention, key
        for w, a in pairs:
            arch.mode(w, a)                   # ConfigError if the PE array lacks the mode
        arch.mode(model.precision.wbits, model.precision.abits)


@pytest.mark.parametrize("name", SHIPPED)
def test_v1_is_w4a4_and_v2_is_mostly_two_bit(name):
    v1 = _wbits_per_op(name, "microscopiq-v1")
    v2 = _wbits_per_op(name, "microscopiq-v2")
    assert set(v1) == {4}
    assert v2.get(2, 0) > v1.get(2, 0)
    total = sum(v2.values())
    assert v2[2] > total / 2                  # "most layers bb=2"
    assert 0 < v2[4] < total / 2              # "a few bb=4 layers"
    assert set(v2) == {2, 4}
    m2 = design_model(name, "microscopiq-v2")
    assert m2.precision_for(0, "q_proj") == (4, 4)          # edge blocks at bb=4
    assert m2.precision_for(-1, "lm_head") == (4, 4)
    assert m2.precision_for(m2.num_layers - 1, "q_proj") == (4, 4)


def test_v2_keeps_more_at_bb4_where_table_2_shows_a_bigger_w2_gap():
    share = {}
    for n in ("opt-6.7b", "llama-3-8b", "llama-2-7b"):
        counts = _wbits_per_op(n, "microscopiq-v2")
        share[n] = counts[4] / sum(counts.values())
    assert share["opt-6.7b"] < share["llama-3-8b"] < share["llama-2-7b"]


def test_baselines_follow_the_paper_statements():
    for name in SHIPPED:
        for key in ("olaccel", "adaptivfloat"):   # "end up computing at 8 bits"
            assert _wbits_per_op(name, key).keys() == {8}
        assert _wbits_per_op(name, "gobo").keys() == {4}   # 3-bit indices in 4-bit slots


# ---------------------------------------------------------------------------- bad inputs --


def _write(tmp_path: Path, data: dict, stem: str = "bad") -> Path:
    p = tmp_path / f"{stem}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def _shipped(name: str) -> dict:
    return read_yaml(schedules_dir() / f"{name}.yaml")


def _v2(data):
    return data["designs"]["microscopiq-v2"]["layer_precision"]


BAD = [
    ("unknown design key",
     lambda d: d["designs"].__setitem__("olivee", copy.deepcopy(d["designs"]["olive"])),
     "designs.olivee", "olive"),
    ("unknown top-level key", lambda d: d.__setitem__("tolerence", 0.02), "tolerence",
     "tolerance"),
    ("rule in a mode the arch lacks",
     lambda d: d["designs"]["olive"]["layer_precision"].append(
         {"layers": [0], "wbits": 2, "abits": 4}),
     "designs.olive.layer_precision.0", "olive-64x64"),
    ("default precision the arch lacks",
     lambda d: d["designs"]["ant"].__setitem__("precision", {"wbits": 2, "abits": 4}),
     "designs.ant.precision", "ant-64x64"),
    ("attention at (abits, abits) the arch lacks",  # gobo has w4a8 but no (8, 8)
     lambda d: d["designs"]["gobo"]["layer_precision"].append({"wbits": 4, "abits": 8}),
     "designs.gobo.layer_precision.0.abits", "attention"),
    ("layer past the last block",
     lambda d: _v2(d).append({"layers": [0, 32], "wbits": 4, "abits": 4}),
     "designs.microscopiq-v2.layer_precision.3.layers", "0..31"),
    ("negative layer before the first block",
     lambda d: _v2(d).append({"layers": [-33], "wbits": 4, "abits": 4}),
     "designs.microscopiq-v2.layer_precision.3.layers", "-33"),
    ("range past the last block",
     lambda d: _v2(d).append({"layers": "30-32", "wbits": 4, "abits": 4}),
     "designs.microscopiq-v2.layer_precision.3.layers", "30-32"),
    ("missing source", lambda d: d["designs"]["int8"].pop("source"), "designs.int8.source",
     "required"),
    ("empty source", lambda d: d["designs"]["int8"].__setitem__("source", ""),
     "designs.int8.source", "non-empty"),
    ("op the model lacks",
     lambda d: _v2(d).append({"ops": ["qproj"], "wbits": 4, "abits": 4}),
     "designs.microscopiq-v2.layer_precision.3.ops.0", "q_proj"),
    ("arch of another design",
     lambda d: d["designs"]["olive"].__setitem__("arch", "ant-64x64"),
     "designs.olive.arch", "type olive"),
    ("unknown arch", lambda d: d["designs"]["int8"].__setitem__("arch", "int9-64x64"),
     "designs.int8.arch", "int8-64x64"),
    ("reference design not W4A4",
     lambda d: d["designs"]["microscopiq-v1"]["layer_precision"].append(
         {"layers": [3], "ops": ["down_proj"], "wbits": 2, "abits": 4}),
     "designs.microscopiq-v1", "down_proj of layer 3"),
    ("no reference design", lambda d: d["designs"].pop("microscopiq-v1"), "designs",
     "microscopiq-v1"),
    ("unknown model", lambda d: d.__setitem__("model", "llama-2-8b"), "model", "llama-2-7b"),
    ("bits outside 2/4/8/16",
     lambda d: _v2(d).append({"layers": [5], "wbits": 3, "abits": 4}),
     "designs.microscopiq-v2.layer_precision.3.wbits", "2"),
]


@pytest.mark.parametrize("what, edit, key, words", BAD, ids=[b[0] for b in BAD])
def test_bad_schedule_is_a_config_error_naming_file_and_key(tmp_path, what, edit, key, words):
    data = _shipped("llama-2-7b")
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_schedule(path)
    err = e.value
    assert err.file is not None and err.file.endswith("bad.yaml"), err
    assert err.key == key, err
    assert words in err.message, err


def test_gate_proj_is_an_error_for_a_plain_ffn_model(tmp_path):
    data = _shipped("opt-6.7b")
    _v2(data).append({"ops": ["gate_proj"], "wbits": 4, "abits": 4})
    with pytest.raises(ConfigError) as e:
        load_schedule(_write(tmp_path, data))
    assert e.value.key == "designs.microscopiq-v2.layer_precision.2.ops.0"
    assert "up_proj" in e.value.message and "opt-6.7b" in e.value.message


def test_unknown_schedule_name_suggests_a_shipped_one():
    with pytest.raises(ConfigError) as e:
        load_schedule("llama-3-7b")
    assert e.value.key == "schedule" and "llama-3-8b" in e.value.message


def test_variants_reject_a_range_that_a_smaller_model_lacks(tmp_path):
    data = _shipped("llama-3-8b")
    _v2(data).append({"layers": "4-5", "wbits": 4, "abits": 4})
    path = _write(tmp_path, data, "ranged")
    assert len(schedule_variants(path)) == len(DESIGNS)           # fine at 32 blocks
    with pytest.raises(ConfigError) as e:
        schedule_variants(path, num_layers=2)
    assert e.value.file.endswith("ranged.yaml")
    assert e.value.key == "designs.microscopiq-v2.layer_precision.2.layers"
    with pytest.raises(ConfigError) as e:
        schedule_variants(path, designs=["olive", "tpu"])
    assert e.value.key == "designs" and "tpu" in e.value.message


# ------------------------------------------------------------------------------ variants --


def test_variants_resolve_negative_layers_for_the_model_size():
    full = {v["name"]: v["set"] for v in schedule_variants("llama-2-7b")}
    small = {v["name"]: v["set"] for v in schedule_variants("llama-2-7b", num_layers=5)}
    assert list(full) == [DESIGN_LABELS[d] for d in DESIGNS]
    v2 = full["MicroScopiQ v2"]
    assert v2["arch"] == "microscopiq-64x64"
    assert v2["model.precision"] == {"wbits": 2, "abits": 4}
    assert {"layers": [0, 1, 30, 31], "wbits": 4, "abits": 4} in v2["model.layer_precision"]
    assert {"layers": [0, 1, 3, 4], "wbits": 4, "abits": 4} in \
        small["MicroScopiQ v2"]["model.layer_precision"]
    assert full["OliVe"] == {"arch": "olive-64x64", "model.precision": {"wbits": 8, "abits": 4},
                             "model.layer_precision": []}
    picked = schedule_variants("opt-6.7b", designs=["gobo", "microscopiq-v1"])
    assert [v["name"] for v in picked] == ["GOBO", "MicroScopiQ v1"]


def _experiment(name: str, num_layers: int) -> dict:
    return {
        "name": f"iso-{name}",
        "arch": "microscopiq-64x64",
        "model": {"extends": name, "num_layers": num_layers},
        "runs": [{"name": "decode", "phase": "decode", "batch": 1, "context": 8}],
        "variants": schedule_variants(name, num_layers=num_layers),
    }


@pytest.mark.parametrize("name", SHIPPED)
def test_every_design_point_of_a_schedule_simulates(name):
    exp = load_experiment(_experiment(name, 2))
    assert [v.name for v in exp.variants] == [DESIGN_LABELS[d] for d in DESIGNS]
    result = sim.run(exp)
    runs = result.runs.set_index("variant")
    assert list(runs.index) == [DESIGN_LABELS[d] for d in DESIGNS]
    assert (runs.cycles > 0).all() and (runs.energy_total_j > 0).all()


def test_simulated_ops_run_at_the_scheduled_precisions():
    """Five blocks, so that v2's blocks 0, 1, 3, 4 (from [0, 1, -2, -1]) leave block 2 at bb=2:
    every GEMM and attention row of every variant carries the schedule's precision."""
    n = 5
    result = sim.run(_experiment("llama-2-7b", n))
    ops = result.ops
    label_to_key = {v: k for k, v in DESIGN_LABELS.items()}
    for label, rows in ops.groupby("variant"):
        model = design_model("llama-2-7b", label_to_key[label], num_layers=n)
        for row in rows.itertuples():
            if row.kind == "gemm":
                assert (row.wbits, row.abits) == model.precision_for(row.layer, row.op), row
            elif row.kind == "attention":
                a = model.precision_for(row.layer, row.op)[1]
                assert (row.wbits, row.abits) == (a, a), row
    v2 = ops[(ops.variant == "MicroScopiQ v2") & (ops.kind == "gemm")]
    assert set(v2[v2.layer == 2].set_index("op").wbits.items()) == {
        ("q_proj", 2), ("k_proj", 2), ("v_proj", 2), ("o_proj", 2), ("gate_proj", 2),
        ("up_proj", 2), ("down_proj", 4)}
    assert (v2[v2.layer.isin([0, 1, 3, 4])].wbits == 4).all()


@pytest.mark.parametrize("model", ["llama-2-7b", "llama-2-13b", "llama-3-8b", "opt-6.7b",
                                   "vila-7b"])
def test_iso_accuracy_experiments_follow_their_schedules(model):
    # the shipped comparison experiments carry generated variants: they must match the data
    from sim.config import load_experiment
    from sim.config.schedules import schedule_variants
    exp = load_experiment(f"microscopiq_iso_accuracy_{model}")
    got = [{"name": v.name, "set": v.set} for v in exp.variants]
    assert got == schedule_variants(model)
