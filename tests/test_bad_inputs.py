"""The bad-input corpus: every input a new user can get wrong, and the one-line error it gives.

Each case is an input (an experiment's YAML text, a ``--set`` list on the quickstart experiment,
a whole CLI argv, or an API call) and the fragments the error must contain (the file, the key
and what was expected). Through the CLI every case must end with exit status 2 and exactly one
line on stderr, ``error: ...``, with no traceback; through the API, a ``ConfigError``.

Cases run on a one-layer model wherever the error comes from the simulation itself, so the whole
corpus stays fast.
"""
from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

import sim
from sim.cli import main

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    id: str
    kind: str                      # "set" | "yaml" | "argv" | "api" | "file"
    input: object
    fragments: tuple = ()
    extra: dict = field(default_factory=dict)


CASES: list[Case] = []


def case(id, kind, input, *fragments, **extra):
    CASES.append(Case(id, kind, input, tuple(fragments), extra))


# ----------------------------------------------------------------- sizes, by field and value ----
ARCH_INT = ["arch.array.rows", "arch.array.cols", "arch.vector.lanes"]
ARCH_NONNEG_INT = ["arch.memory.l2.latency_cycles"]
ARCH_FLOAT = ["arch.clock_ghz", "arch.memory.sram.ifmap_kb", "arch.memory.sram.weight_kb",
              "arch.memory.sram.ofmap_kb", "arch.memory.sram.bytes_per_cycle",
              "arch.memory.l2.size_kb", "arch.memory.l2.bytes_per_cycle",
              "arch.memory.dram.bandwidth_gbps"]
ARCH_NONNEG_FLOAT = ["arch.memory.dram.latency_ns"]
MODEL_INT = ["model.hidden_size", "model.num_layers", "model.num_heads", "model.num_kv_heads",
             "model.intermediate_size", "model.vocab_size", "model.max_position"]
RUN_INT = ["runs.0.batch", "runs.0.seq_len", "runs.1.batch"]
RUN_NONNEG_INT = ["runs.1.context"]

INT_BAD = {                        # value written after '=' -> what the error says
    "inf": (".inf", "an integer"),
    "nan": (".nan", "an integer"),
    "float": ("64.5", "an integer"),
    "huge_float": ("1e30", "an integer"),
    "huge": (str(2**40), "<= 2147483647"),
    "string": ("'64'", "an integer"),
    "bool": ("true", "an integer"),
    "negative": ("-3", "an integer >"),
    "list": ("[64]", "an integer"),
}
FLOAT_BAD = {
    "inf": (".inf", "a finite number"),
    "minus_inf": ("-.inf", "a finite number"),
    "nan": (".nan", "a finite number"),
    "huge": ("1e30", "<= 1e+09"),
    "string": ("'1.0'", "a number"),
    "bool": ("true", "a number"),
    "negative": ("-1.5", "a number >"),
}
for key in ARCH_INT + MODEL_INT + RUN_INT + ARCH_NONNEG_INT + RUN_NONNEG_INT:
    for name, (value, expected) in INT_BAD.items():
        case(f"set-{key}-{name}", "set", [f"{key}={value}"], "--set", key, expected)
for key in ARCH_INT + MODEL_INT + RUN_INT:
    case(f"set-{key}-zero", "set", [f"{key}=0"], "--set", key, "an integer > 0")
for key in ARCH_FLOAT + ARCH_NONNEG_FLOAT:
    for name, (value, expected) in FLOAT_BAD.items():
        case(f"set-{key}-{name}", "set", [f"{key}={value}"], "--set", key, expected)
for key in ARCH_FLOAT:
    case(f"set-{key}-zero", "set", [f"{key}=0"], "--set", key, "a number > 0")
    case(f"set-{key}-tiny", "set", [f"{key}=1e-300"], "--set", key, "a number >= 1e-09")
for key in ("arch.memory.dram.bandwidth_gbps", "arch.memory.l2.bytes_per_cycle",
            "arch.memory.sram.bytes_per_cycle"):     # in range alone, too slow for the run
    case(f"set-{key}-too-slow", "set", [f"{key}=1e-9"], "--set", key, "take at most 2^53")

# ------------------------------------------------------------- the defects of issue 7 (must 7) ----
case("steps-on-prefill", "set", ["runs.0.steps=2"], "--set", "runs.0.steps",
     "no steps for a prefill run")
case("seq_len-on-decode", "set", ["runs.1.seq_len=128"], "--set", "runs.1.seq_len",
     "no seq_len for a decode run")
case("decode_batch-on-prefill", "set", ["runs.0.decode_batch=2"], "runs.0.decode_batch",
     "no decode_batch for a prefill run")
case("decode_batch-on-decode", "set", ["runs.1.decode_batch=2"], "runs.1.decode_batch",
     "no decode_batch for a decode run")
case("seq_len-1e30", "set", ["runs.0.seq_len=1e30"], "runs.0.seq_len", "an integer")
case("clock-1e30", "set", ["arch.clock_ghz=1e30"], "arch.clock_ghz", "<= 1e+09")
case("rows-1e20", "set", ["arch.array.rows=1e20"], "arch.array.rows", "an integer")
case("rows-10**20-int", "set", [f"arch.array.rows={10**20}"], "arch.array.rows",
     "<= 2147483647")
case("hidden-1e12", "set", [f"model.hidden_size={10**12}"], "model.hidden_size",
     "<= 2147483647")
case("clock-inf", "set", ["arch.clock_ghz=.inf"], "arch.clock_ghz", "finite")
case("bandwidth-inf", "set", ["arch.memory.dram.bandwidth_gbps=.inf"], "bandwidth_gbps",
     "finite")
case("latency-inf", "set", ["arch.memory.dram.latency_ns=.inf"], "latency_ns", "finite")
case("sram-inf", "set", ["arch.memory.sram.weight_kb=.inf"], "weight_kb", "finite")
case("prefill-past-max-position", "set", ["runs.0.seq_len=100000000"], "runs.0.seq_len",
     "max_position", "4096")
case("prefill-context-past-max-position", "set", ["runs.0.context=4000"], "runs.0.seq_len",
     "context + seq_len", "4512")
case("decode-past-max-position", "set", ["runs.1.context=4096"], "runs.1.context",
     "context + steps", "4097")
case("decode-steps-past-max-position", "set", ["runs.1.steps=4000"], "runs.1.context",
     "max_position")
case("max-position-shrunk", "set", ["model.max_position=128"], "runs.0.seq_len",
     "max_position (128 tokens")
case("layer-precision-misspelt-op", "set",
     ["model.layer_precision=[{ops: [down_prj], wbits: 4, abits: 8}]"],
     "model.layer_precision.0.ops.0", "an op name of this model", "did you mean 'down_proj'")
case("layer-precision-unknown-op", "set",
     ["model.layer_precision=[{ops: [q_proj, attention], wbits: 4, abits: 8}]"],
     "model.layer_precision.0.ops.1", "an op name of this model", "'attention'")
case("layer-precision-gate-on-plain-ffn", "set",
     ["model.ffn=plain", "model.layer_precision=[{ops: [gate_proj], wbits: 4, abits: 8}]"],
     "model.layer_precision.0.ops.0", "'gate_proj'")
case("native-precision-string", "set", ["arch.native_precision=w8a8"],
     "arch.native_precision", "a mapping")
case("native-precision-not-a-mode", "set", ["arch.native_precision={wbits: 2, abits: 2}"],
     "arch.native_precision", "one of the pe.modes precisions")
case("native-precision-missing-abits", "set", ["arch.native_precision={wbits: 8}"],
     "arch.native_precision.abits", "required")
case("compress-not-a-bool", "set", ["compress=1"], "compress", "true or false")
case("run-precision-malformed", "set", ["runs.0.precision=w4"], "runs.0.precision",
     "a precision such as 'w4a8'")
case("run-precision-three-numbers", "set", ["runs.0.precision=[4, 8, 1]"],
     "runs.0.precision", "a precision such as")
case("run-precision-unsupported", "set", ["runs.0.precision=w2a2"], "--set",
     "runs.0.precision", "a precision arch 'quickstart' supports")
case("duplicate-plot-names", "set", ["outputs.plots=[breakdown, breakdown]"],
     "outputs.plots.1", "a plot name listed once")
case("unknown-plot-name", "set", ["outputs.plots=[breakdwn]"], "outputs.plots.0",
     "a plot name", "did you mean 'breakdown'")
case("name-dotdot", "set", ["name=.."], "--set", "name", "file-name-safe")
case("name-traversal", "set", ["name=../../../tmp/x"], "--set", "name", "file-name-safe")
case("name-slash", "set", ["name=a/b"], "name", "file-name-safe")
case("name-absolute", "set", ["name=/tmp/x"], "name", "file-name-safe")
case("name-hidden", "set", ["name=.hidden"], "name", "file-name-safe")
case("name-dash", "set", ["name=-rf"], "name", "file-name-safe")
case("name-space", "set", ["name='a b'"], "name", "file-name-safe")
case("name-too-long", "set", ["name=" + "a" * 200], "name", "at most 128")
case("technology-3nm", "set", ["arch.technology=3nm"], "--set", "arch.technology",
     "28nm, 45nm, 7nm", "did you mean '7nm'")
case("sram-1-byte", "set", [f"arch.memory.sram.{b}_kb=0.001" for b in
                            ("ifmap", "weight", "ofmap")],
     "--set", "arch.memory.sram.", "_kb", "at least", "KB")
case("weight-sram-1-byte", "set", ["arch.memory.sram.weight_kb=0.001"],
     "--set: arch.memory.sram.weight_kb:", "one fold's weight data", "at least 8 KB")
case("ifmap-sram-tiny", "set", ["arch.memory.sram.ifmap_kb=0.01"],
     "arch.memory.sram.ifmap_kb", "one fold's ifmap data")
case("ofmap-sram-tiny", "set", ["arch.memory.sram.ofmap_kb=0.001"],
     "arch.memory.sram.ofmap_kb", "one fold's ofmap data")
case("gemm-too-many-tiles", "set", ["runs.0.batch=100000000"], "experiments/quickstart.yaml",
     "runs.0", "memory tiles", "4,194,304")
case("overrides-as-one-string", "api",
     lambda: sim.run("quickstart", overrides="runs.0.seq_len=1"), "--set", "a single string",
     "wrap it in a list")

# ------------------------------------------------------------------------ --set syntax ----
case("set-no-equals", "set", ["arch.array.rows"], "--set", "key.path=value")
case("set-empty-key", "set", ["=4"], "--set")
case("set-unknown-key", "set", ["arch.array.rowz=4"], "arch.array.rowz", "did you mean 'rows'")
case("set-unknown-top", "set", ["nmae=x"], "nmae", "did you mean 'name'")
case("set-bad-index", "set", ["runs.5.seq_len=4"], "runs.5", "0..1")
case("set-index-not-number", "set", ["runs.x.seq_len=4"], "runs.x", "a list index")
case("set-through-scalar", "set", ["arch.clock_ghz.x=1"], "arch.clock_ghz.x", "a mapping")
case("set-bad-yaml", "set", ["arch.array.rows=[1,"], "--set", "YAML value")
case("set-phase-unknown", "set", ["runs.0.phase=train"], "runs.0.phase", "one of")
case("set-dataflow-unknown", "set", ["arch.array.dataflow=wss"], "arch.array.dataflow",
     "did you mean 'ws'")
case("set-dram-kind", "set", ["arch.memory.dram.kind=hbm9"], "arch.memory.dram.kind", "one of")
case("set-ffn", "set", ["model.ffn=glu"], "model.ffn", "one of")
case("set-norm", "set", ["model.norm=batchnorm"], "model.norm", "one of")
case("set-model-unknown", "set", ["model=llama-9"], "llama-9", "llama-2-7b")
case("set-arch-unknown", "set", ["arch=quickstrt"], "quickstrt", "did you mean 'quickstart'")
case("set-kv-heads-divide", "set", ["model.num_kv_heads=3"], "model.num_kv_heads",
     "a divisor of num_heads")
case("set-head-dim-zero", "set", ["model.head_dim=0"], "model.head_dim", "> 0")
case("set-architecture-unknown", "set", ["model.architecture=rwkv"], "model.architecture",
     "one of")
case("set-ssm-in-transformer", "set", ["model.ssm.d_state=16"], "model.ssm")
case("set-ssm-d-state-zero", "set", ["model=mamba-2.8b", "model.ssm.d_state=0"],
     "model.ssm.d_state", "> 0")
case("set-ssm-unknown-key", "set", ["model=mamba-2.8b", "model.ssm.d_states=8"],
     "model.ssm.d_states", "did you mean 'd_state'")
case("set-ssm-dt-rank", "set", ["model=mamba-2.8b", "model.ssm.dt_rank=automatic"],
     "model.ssm.dt_rank", "'auto'")
case("set-ssm-heads", "set", ["model=mamba-2.8b", "model.num_heads=32"], "model.num_heads",
     "no num_heads in a mamba model")
case("set-pe-bits", "set", ["arch.pe.modes.0.wbits=3"], "arch.pe.modes.0.wbits", "one of")
case("set-macs-per-cycle", "set", ["arch.pe.modes.0.macs_per_cycle=0.3"],
     "arch.pe.modes.0.macs_per_cycle", "fused")
case("set-duplicate-modes", "set", ["arch.pe.modes.1.wbits=8", "arch.pe.modes.1.abits=8"],
     "arch.pe.modes.1", "at most once")
case("set-mode-missing", "set", ["arch.pe.modes.0.wbits=2"], "pe.modes", "wbits=8, abits=8")
case("set-fused-wider-than-array", "set", ["arch.array.cols=1"], "macs_per_cycle", "fused")
case("set-runs-empty", "set", ["runs=[]"], "runs", "at least 1")
case("set-run-name-dup", "set", ["runs.1.name=prefill"], "runs.1.name", "used once")
case("set-seed-negative", "set", ["seed=-1"], "seed", "an integer >= 0")
case("set-seed-string", "set", ["seed='7'"], "seed", "an integer")
case("set-trace-string", "set", ["outputs.trace=yes please"], "outputs.trace", "true or false")
case("set-plots-string", "set", ["outputs.plots=breakdown"], "outputs.plots", "a list")
case("set-name-empty", "set", ["name=''"], "name", "non-empty")
case("set-name-number", "set", ["name=7"], "name", "a string")
case("set-layer-precision-layers", "set",
     ["model.layer_precision=[{layers: '5-2', wbits: 4, abits: 8}]"],
     "model.layer_precision.0.layers", "a <= b")
case("set-layer-precision-range", "set",
     ["model.layer_precision=[{layers: [40], wbits: 4, abits: 8}]"],
     "model.layer_precision.0.layers", "0..31")
case("set-layer-precision-bits", "set",
     ["model.layer_precision=[{wbits: 64, abits: 8}]"], "model.layer_precision.0.wbits", "<= 32")
case("set-precision-zero", "set", ["model.precision.wbits=0"], "model.precision.wbits", ">= 1")
case("bandwidth-per-cycle-too-slow", "set", ["arch.clock_ghz=1e9",
                                              "arch.memory.dram.bandwidth_gbps=1e-3"],
     "arch.memory.dram.bandwidth_gbps", "2^53 cycles")
case("set-outlier-share", "set", ["model.outlier_channel_share=1.5"],
     "model.outlier_channel_share", "<= 1")
case("set-variants-bad-key", "set", ["variants=[{name: a, set: {arch.array.rowz: 4}}]"],
     "variants.0.set.arch.array.rowz", "rows")
case("set-variants-dup", "set", ["variants=[{name: a}, {name: a}]"], "variants.1.name",
     "used once")

# --------------------------------------------------------------------- experiment YAML text ----
BASE = """\
name: bad
arch: quickstart
model: {extends: llama-2-7b, num_layers: 1}
runs:
  - {name: p, phase: prefill, seq_len: 16}
"""


def yaml_case(id, text, *fragments):
    case(id, "yaml", textwrap.dedent(text), "bad.yaml", *fragments)


yaml_case("yaml-syntax", "name: [unclosed\n", "valid YAML", "line")
yaml_case("yaml-duplicate-key", BASE + "name: again\n", "duplicate key 'name'")
yaml_case("yaml-empty", "", "an empty file")
yaml_case("yaml-comment-only", "# nothing\n", "an empty file")
yaml_case("yaml-top-list", "- a\n- b\n", "a mapping", "a list")
yaml_case("yaml-top-scalar", "42\n", "a mapping")
yaml_case("yaml-two-documents", BASE + "---\nname: other\n", "valid YAML")
yaml_case("yaml-recursive-alias", "a: &x [1, *x]\n" + BASE, "do not contain themselves")
yaml_case("yaml-unknown-key", BASE + "sede: 1\n", "sede", "did you mean 'seed'")
yaml_case("yaml-missing-runs", "name: bad\narch: quickstart\nmodel: llama-2-7b\n", "runs",
          "required")
yaml_case("yaml-missing-arch", "name: bad\nmodel: llama-2-7b\nruns: [{name: p, phase: prefill, "
          "seq_len: 4}]\n", "arch", "required")
yaml_case("yaml-run-missing-seq-len", BASE.replace("seq_len: 16", "batch: 1"), "runs.0.seq_len",
          "needs seq_len")
yaml_case("yaml-decode-missing-context", BASE.replace("phase: prefill, seq_len: 16",
                                                      "phase: decode"),
          "runs.0.context", "needs context")
yaml_case("yaml-mixed-missing-context", BASE.replace("phase: prefill", "phase: mixed"),
          "runs.0.context", "needs context")
yaml_case("yaml-seq-len-on-decode", BASE.replace("phase: prefill, seq_len: 16",
                                                 "phase: decode, context: 8, seq_len: 16"),
          "runs.0.seq_len", "no seq_len for a decode run")
yaml_case("yaml-steps-on-mixed", BASE.replace("phase: prefill", "phase: mixed, context: 0, "
                                              "steps: 3"),
          "runs.0.steps", "no steps for a mixed run")
yaml_case("yaml-176-day-prefill", BASE.replace("seq_len: 16", "seq_len: 2000000000"),
          "runs.0.seq_len", "max_position")
yaml_case("yaml-name-traversal", BASE.replace("name: bad", "name: ../../../tmp/x"), "name",
          "file-name-safe")
yaml_case("yaml-name-dotdot", BASE.replace("name: bad", "name: '..'"), "name", "file-name-safe")
yaml_case("yaml-technology-3nm", BASE.replace("arch: quickstart",
                                              "arch: {extends: quickstart, technology: 3nm}"),
          "arch.technology", "7nm")
yaml_case("yaml-outlier-profile-unknown", BASE.replace(
    "num_layers: 1}", "num_layers: 1, outlier_profile: nosuch}").replace(
    "arch: quickstart", "arch: microscopiq-64x64"), "model.outlier_profile", "nosuch")
yaml_case("yaml-sram-1-byte", BASE.replace(
    "arch: quickstart", "arch: {extends: quickstart, memory: {sram: {ifmap_kb: 0.001, "
    "weight_kb: 0.001, ofmap_kb: 0.001, bytes_per_cycle: 1024}}}"),
    "arch.memory.sram.", "at least")
yaml_case("yaml-inf-clock", BASE.replace("arch: quickstart",
                                         "arch: {extends: quickstart, clock_ghz: .inf}"),
          "arch.clock_ghz", "finite")
yaml_case("yaml-nan-bandwidth", BASE.replace(
    "arch: quickstart", "arch: {extends: quickstart, memory: {dram: {kind: hbm2, "
    "bandwidth_gbps: .nan, latency_ns: 1}}}"), "bandwidth_gbps", "finite")


def flexcim_case(id, arch_extra, *fragments):
    """A FlexCiM arch change inside an experiment (issue 8): errors name bad.yaml and the key."""
    yaml_case(id, BASE.replace("arch: quickstart", "arch: {extends: flexcim, " + arch_extra + "}"),
              *fragments)


flexcim_case("yaml-flexcim-pattern-unknown", "macro: {patterns: ['3:3:3']}",
             "arch.macro.patterns", "N:M")
flexcim_case("yaml-flexcim-pattern-n-gt-m", "macro: {patterns: ['5:4']}",
             "arch.macro.patterns", "N <= M")
flexcim_case("yaml-flexcim-uniform-n-gt-m", "sparsity: {pattern: '9:4'}",
             "arch.sparsity.pattern", "N <= M")
flexcim_case("yaml-flexcim-target-1", "sparsity: {target: 1.0}", "arch.sparsity.target", "< 1")
flexcim_case("yaml-flexcim-target-negative", "sparsity: {target: -0.1}",
             "arch.sparsity.target", ">= 0")
flexcim_case("yaml-flexcim-macros-0", "macros: 0", "arch.macros", ">= 1")
# a missing schedule names the schedule file itself (resolved next to the file that wrote it)
case("yaml-flexcim-schedule-missing", "yaml", BASE.replace(
    "arch: quickstart",
    "arch: {extends: flexcim, sparsity: {target: null, schedule: nosuch-schedule.yaml}}"),
    "nosuch-schedule.yaml", "an existing YAML file")

yaml_case("yaml-string-size", BASE.replace("seq_len: 16", "seq_len: '16'"), "runs.0.seq_len",
          "an integer")
yaml_case("yaml-bool-size", BASE.replace("seq_len: 16", "seq_len: true"), "runs.0.seq_len",
          "an integer")
yaml_case("yaml-float-size", BASE.replace("seq_len: 16", "seq_len: 16.5"), "runs.0.seq_len",
          "an integer")
yaml_case("yaml-duplicate-plots", BASE + "outputs: {plots: [breakdown, breakdown]}\n",
          "outputs.plots.1", "listed once")
yaml_case("yaml-unknown-plot", BASE + "outputs: {plots: [pie]}\n", "outputs.plots.0",
          "a plot name")
yaml_case("yaml-extends-missing", BASE.replace("extends: llama-2-7b", "extends: llama-9"),
          "model.extends", "llama-9")
yaml_case("yaml-layer-precision-op", BASE.replace(
    "num_layers: 1}", "num_layers: 1, layer_precision: [{ops: [qkv], wbits: 4, abits: 8}]}"),
    "model.layer_precision.0.ops.0", "an op name of this model")
yaml_case("yaml-seed-huge", BASE + f"seed: {2**70}\n", "seed")
yaml_case("yaml-variants-in-variants", BASE + "variants: [{name: a, set: {variants: []}}]\n",
          "variants.0.set", "keys outside variants")

# ------------------------------------------------- a section the chosen arch type requires ----
# the error blames what made the section required (the --set or the file that set the type)
case("set-type-needs-recon", "set", ["arch.type=microscopiq"], "--set: arch.recon:",
     "arch.type 'microscopiq' requires 'recon'", "arch/quickstart.yaml gives none")
case("set-type-needs-baseline-keys", "set", ["arch.type=olive"], "--set: arch.",
     "arch.type 'olive' requires", "arch/quickstart.yaml gives none")
yaml_case("yaml-type-needs-recon", BASE.replace("arch: quickstart",
                                                "arch: {extends: quickstart, type: microscopiq}"),
          "bad.yaml: arch.recon:", "arch.type 'microscopiq' requires 'recon'")
case("set-type-unknown", "set", ["arch.type=microscopic"], "--set", "arch.type",
     "a registered accelerator type", "did you mean 'microscopiq'")

# ------------------------------------------------------------------ technology tables ----
# A copy of arch/tech/7nm.yaml with one value changed, written to {tmp}/tech/bad-7nm.yaml and
# named by path from an experiment's arch (kind "tech"), or installed as 7nm under a
# $STRATA_HOME (kind "tech-home"). Energies, areas and leakage are bounded, finite numbers.
TECH_POS = ["feature_nm", "vdd", "controller_area_um2", "mac.per_bitproduct_pj",
            "mac.accumulate_pj", "pe.fixed_area_um2", "pe.area_per_bitproduct_um2",
            "dram.hbm2", "noc.wire_pj_per_bit_mm", "noc.distance_mm", "vector.pj_per_op",
            "vector.lane_area_um2"] + [
    f"{mem}.{k}" for mem in ("sram", "l2")
    for k in ("ref_kb", "read_pj_per_byte_at_ref", "write_pj_per_byte_at_ref", "cell_um2")]
TECH_NONNEG = ["logic_leakage_uw_per_um2", "mac.operand_pj", "sram.leakage_uw_per_um2",
               "l2.leakage_uw_per_um2"]
TECH_UNIT = ["sram.size_exponent", "sram.array_efficiency", "l2.array_efficiency"]
for key in TECH_POS + TECH_NONNEG + TECH_UNIT:
    for name, value in (("inf", math.inf), ("nan", math.nan)):
        case(f"tech-{key}-{name}", "tech", {key: value}, "bad-7nm.yaml", key,
             "a finite number")
for key in ("mac.accumulate_pj", "sram.cell_um2", "dram.hbm2", "vector.lane_area_um2"):
    case(f"tech-{key}-minus-inf", "tech", {key: -math.inf}, "bad-7nm.yaml", key, "finite")
    case(f"tech-{key}-huge", "tech", {key: 1e30}, "bad-7nm.yaml", key, "<= 1e+09")
    case(f"tech-{key}-zero", "tech", {key: 0.0}, "bad-7nm.yaml", key, "a number > 0")
    case(f"tech-{key}-tiny", "tech", {key: 1e-300}, "bad-7nm.yaml", key, ">= 1e-09")
    case(f"tech-{key}-negative", "tech", {key: -2.0}, "bad-7nm.yaml", key, "a number > 0")
case("tech-leakage-huge", "tech", {"logic_leakage_uw_per_um2": 1e30}, "bad-7nm.yaml",
     "logic_leakage_uw_per_um2", "<= 1e+09")
case("tech-exponent-above-1", "tech", {"sram.size_exponent": 3.0}, "bad-7nm.yaml",
     "sram.size_exponent", "<= 1")
for key in ("recon.switch_pj", "recon.switch_area_um2", "recon.sync_buffer_area_um2_per_col"):
    for name, value in (("inf", math.inf), ("nan", math.nan)):
        case(f"tech-{key}-{name}", "tech", {key: value}, "bad-7nm.yaml", key,
             "a finite number", arch="microscopiq-64x64")
case("tech-recon-switch-pj-huge", "tech", {"recon.switch_pj": 1e30}, "bad-7nm.yaml",
     "recon.switch_pj", "<= 1e+09", arch="microscopiq-64x64")
case("tech-home-inf", "tech-home", {"mac.accumulate_pj": math.inf},
     "arch/tech/7nm.yaml", "mac.accumulate_pj", "a finite number")
case("tech-home-dram-nan", "tech-home", {"dram.hbm2": math.nan}, "arch/tech/7nm.yaml",
     "dram.hbm2", "a finite number")

# ------------------------------------------------------------------------------- CLI argv ----
case("argv-missing-experiment", "argv", ["run", "no-such-experiment"], "no-such-experiment",
     "expected")
case("argv-experiment-is-dir", "argv", ["run", str(ROOT / "arch")], "a YAML file", "directory")
case("argv-out-is-file", "argv", ["run", "quickstart", "--out", "{tmp}/afile"], "afile",
     "--out", "an existing file")
case("argv-out-under-file", "argv", ["run", "quickstart", "--out", "{tmp}/afile/sub"],
     "--out", "under the file")
case("argv-out-unwritable", "argv", ["run", "quickstart", "--out", "/proc/strata-x"],
     "/proc/strata-x", "--out")
case("argv-out-foreign-folder", "argv", ["run", "quickstart", "--out", "{tmp}/foreign"],
     "foreign", "--force")
case("argv-plots-is-file", "argv", ["run", "quickstart", "--plots", "{tmp}/afile"], "--plots",
     "an existing file")
case("argv-strata-home-nowhere", "argv", ["run", "quickstart"], "$STRATA_HOME",
     "no such folder", env={"STRATA_HOME": "/no/such/strata/home"})
case("argv-strata-home-empty", "argv", ["list"], "$STRATA_HOME", "none of",
     env={"STRATA_HOME": "{tmp}/empty_home"})

# ---------------------------------------------------------------- special experiment files ----
case("file-symlink-loop", "file", "symlink_loop", "symbolic-link loop")
case("file-fifo", "file", "fifo", "a regular YAML file", "FIFO")
case("file-alias-bomb", "file", "alias_bomb", "1,000,000 values", "aliases")
case("file-too-large", "file", "too_large", "at most 16 MiB")
case("file-not-utf8", "file", "not_utf8", "UTF-8")


# ----------------------------------------------------------------------------------- API ----
def gemm(*args, **kw):
    return lambda: sim.simulate_gemm("quickstart", *args, **kw)


def model(**kw):
    m = {"extends": "llama-2-7b", "num_layers": 1}
    return lambda: sim.simulate_model("quickstart", m, **kw)


for name, value, expected in [("nan", math.nan, "an integer"), ("inf", math.inf, "an integer"),
                              ("10**30", 10**30, "1..2147483647"), ("float", 64.5, "an integer"),
                              ("string", "64", "an integer"), ("bool", True, "an integer"),
                              ("zero", 0, "1..2147483647"), ("negative", -64, "1..2147483647"),
                              ("none", None, "an integer"), ("np-float", np.float64(64), "an integer")]:
    for i, dim in enumerate("MKN"):
        args = [64, 64, 64]
        args[i] = value
        case(f"api-gemm-{dim}-{name}", "api", gemm(*args), "<simulate_gemm()>", dim, expected)
case("api-gemm-wbits-float", "api", gemm(64, 64, 64, wbits=8.0), "wbits", "an integer")
case("api-gemm-abits-bool", "api", gemm(64, 64, 64, abits=True), "abits", "an integer")
case("api-gemm-dataflow", "api", gemm(64, 64, 64, dataflow="wss"), "dataflow", "'ws'")
case("api-gemm-dataflow-upper", "api", gemm(64, 64, 64, dataflow="WS"), "dataflow", "one of")
case("api-gemm-convention", "api", gemm(64, 64, 64, convention="scale"), "convention",
     "'scalesim'")
case("api-gemm-array-shape", "api", gemm(64, 64, 64, array=(32,)), "array", "(rows, cols)")
case("api-gemm-array-float", "api", gemm(64, 64, 64, array=(32.5, 32)), "array.rows",
     "an integer")
case("api-gemm-array-zero", "api", gemm(64, 64, 64, array=(32, 0)), "array.cols", "1..")
case("api-gemm-precision-missing", "api", gemm(64, 64, 64, wbits=2, abits=2), "pe.modes",
     "wbits=2, abits=2")
case("api-gemm-too-many-folds", "api", gemm(2**31 - 1, 2**31 - 1, 64, dataflow="os"),
     "array folds", "4,194,304")
case("api-gemm-arch-unknown", "api", lambda: sim.simulate_gemm("no-arch", 8, 8, 8), "no-arch",
     "quickstart")
case("api-gemm-sram-1-byte", "api", lambda: sim.simulate_gemm(
    sim.load_arch("quickstart", ["memory.sram.weight_kb=0.001"]), 64, 64, 64),
     "memory.sram.weight_kb", "at least")
case("api-model-steps-0", "api", model(phase="decode", context=8, steps=0), "<simulate_model()>",
     "steps", "> 0")
case("api-model-steps-prefill", "api", model(seq_len=8, steps=2), "steps", "no steps")
case("api-model-mixed-no-context", "api", model(phase="mixed", seq_len=8), "context",
     "needs context")
case("api-model-decode-no-context", "api", model(phase="decode"), "context", "needs context")
case("api-model-prefill-no-seq-len", "api", model(), "seq_len", "needs seq_len")
case("api-model-seq-len-float", "api", model(seq_len=64.5), "seq_len", "an integer")
case("api-model-seq-len-string", "api", model(seq_len="64"), "seq_len", "an integer")
case("api-model-seq-len-bool", "api", model(seq_len=True), "seq_len", "an integer")
case("api-model-batch-zero", "api", model(seq_len=8, batch=0), "batch", "> 0")
case("api-model-phase", "api", model(phase="train", seq_len=8), "phase", "one of")
case("api-model-seq-len-on-decode", "api", model(phase="decode", context=8, seq_len=8),
     "seq_len", "no seq_len")
case("api-model-past-max-position", "api", model(seq_len=10**6), "seq_len", "max_position")
case("api-model-context-past-max-position", "api", model(phase="decode", context=4096),
     "context", "max_position")
case("api-model-unknown", "api", lambda: sim.simulate_model("quickstart", "llama-9",
                                                            seq_len=8), "llama-9")
case("api-run-overrides-string", "api", lambda: sim.run("quickstart", overrides="a=1"),
     "a single string")
case("api-run-overrides-bad-item", "api", lambda: sim.run("quickstart", overrides=[3]),
     "key.path=value")
case("api-run-name-traversal", "api", lambda: sim.run("quickstart",
                                                      overrides=["name=../x"]), "name")


# ---------------------------------------------------------------------------------- runner ----
def _materialize(c: Case, tmp: Path) -> list[str]:
    """The argv of a CLI case (writing whatever files it needs)."""
    (tmp / "afile").write_text("not a folder\n")
    (tmp / "foreign").mkdir(exist_ok=True)
    (tmp / "foreign" / "notes.txt").write_text("mine\n")
    (tmp / "empty_home").mkdir(exist_ok=True)
    out = ["--out", str(tmp / "out")]
    if c.kind == "set":
        argv = ["run", "quickstart"]
        for s in c.input:
            argv += ["--set", s]
        return argv + out
    if c.kind == "yaml":
        p = tmp / "bad.yaml"
        p.write_text(c.input)
        return ["run", str(p)] + out
    if c.kind == "argv":
        argv = [a.replace("{tmp}", str(tmp)) for a in c.input]
        return argv + (out if argv[0] == "run" and "--out" not in argv else [])
    if c.kind == "file":
        p = tmp / "special.yaml"
        if c.input == "symlink_loop":
            os.symlink(tmp / "other.yaml", p)
            os.symlink(p, tmp / "other.yaml")
        elif c.input == "fifo":
            os.mkfifo(p)
        elif c.input == "alias_bomb":
            lines = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]"]
            lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 11)]
            p.write_text("\n".join(lines) + "\n" + BASE)
        elif c.input == "too_large":
            with open(p, "w") as f:
                f.write(BASE)
                f.write("#" * (16 * 2**20) + "\n")
        elif c.input == "not_utf8":
            p.write_bytes(BASE.encode() + b"description: \xff\xfe\n")
        return ["run", str(p)] + out
    if c.kind in ("tech", "tech-home"):
        table = yaml.safe_load((ROOT / "arch" / "tech" / "7nm.yaml").read_text())
        for key, value in c.input.items():
            *path, last = key.split(".")
            node = table
            for part in path:
                node = node[part]
            node[last] = value
        if c.kind == "tech":
            p = tmp / "tech" / "bad-7nm.yaml"
            p.parent.mkdir(exist_ok=True)
            p.write_text(yaml.safe_dump(table))
            exp = tmp / "bad.yaml"
            exp.write_text(BASE.replace("arch: quickstart", "arch: {extends: "
                                        f"{c.extra.get('arch', 'quickstart')}, "
                                        f"technology: {p}}}"))
            return ["run", str(exp)] + out
        home = tmp / "home"                      # $STRATA_HOME with the bad table as 7nm
        for rel in ("experiments/quickstart.yaml", "arch/quickstart.yaml",
                    "workloads/llama-2-7b.yaml"):
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            (home / rel).write_text((ROOT / rel).read_text())
        (home / "arch" / "tech").mkdir(exist_ok=True)
        (home / "arch" / "tech" / "7nm.yaml").write_text(yaml.safe_dump(table))
        return ["run", "quickstart"] + out
    raise AssertionError(c.kind)


def test_corpus_has_at_least_250_cases():
    assert len(CASES) >= 250, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c: Case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                  # nothing may land in the cwd
    if c.kind == "api":
        with pytest.raises(sim.ConfigError) as info:
            c.input()
        msg = str(info.value)
        assert "\n" not in msg
    else:
        for k, v in c.extra.get("env", {}).items():
            monkeypatch.setenv(k, v.replace("{tmp}", str(tmp_path)))
        if c.kind == "tech-home":
            monkeypatch.setenv("STRATA_HOME", str(tmp_path / "home"))
        argv = _materialize(c, tmp_path)
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        err = captured.err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert "Traceback" not in err
        msg = err
        assert not (tmp_path / "out").exists()   # a failed run writes no results
        assert not (tmp_path / "results").exists()
    for fragment in c.fragments:
        assert fragment in msg, (fragment, msg)
