"""Workload layer: shipped model descriptions, operator graphs, parameter counts, precision."""

from __future__ import annotations

import time

import networkx as nx
import pytest
from sim.config.errors import ConfigError
from sim.config.loader import list_shipped, load_model
from sim.config.schema import LayerPrecision, ModelConfig
from sim.workload import (
    NODE_KEYS, build_graph, graph_ops, model_summary,
)

#: published parameter counts (model cards / papers)
PUBLISHED = {
    "llama-2-7b": 6.74e9,
    "llama-2-13b": 13.0e9,
    "llama-2-70b": 69.0e9,
    "llama-3-8b": 8.03e9,
    "llama-3-70b": 70.6e9,
    "mistral-7b": 7.24e9,
    "opt-6.7b": 6.7e9,
    "qwen2.5-3b": 3.09e9,
    "phi-3-mini": 3.82e9,
}
#: models whose lm_head shares the token-embedding matrix (HF tie_word_embeddings)
TIED = {"qwen2.5-3b", "opt-6.7b"}


def load(name: str) -> ModelConfig:
    return load_model(name)


def variant(name: str, **update) -> ModelConfig:
    """A shipped model with top-level keys replaced (through the loader's overrides)."""
    return load_model(name, overrides=update)


def hd(m: ModelConfig) -> int:
    return m.head_dim or m.hidden_size // m.num_heads


def by_name(g) -> dict[str, dict]:
    return {op["name"]: op for op in graph_ops(g)}


# ------------------------------------------------------------------------------------------
# shipped model files


def test_every_shipped_model_is_listed_and_loads():
    shipped = list_shipped("workloads")
    assert set(PUBLISHED) <= set(shipped)
    for name in PUBLISHED:
        m = load(name)
        assert m.name == name
        assert "config.json" in m.source
        assert m.num_heads % m.num_kv_heads == 0
        assert m.precision.wbits == 8 and m.precision.abits == 8


@pytest.mark.parametrize("name, heads, kv_heads, head_dim", [
    ("llama-2-7b", 32, 32, 128), ("llama-2-13b", 40, 40, 128), ("llama-2-70b", 64, 8, 128),
    ("llama-3-8b", 32, 8, 128), ("llama-3-70b", 64, 8, 128), ("mistral-7b", 32, 8, 128),
    ("qwen2.5-3b", 16, 2, 128), ("phi-3-mini", 32, 32, 96), ("opt-6.7b", 32, 32, 128),
])
def test_attention_heads_match_hf_configs(name, heads, kv_heads, head_dim):
    m = load(name)
    assert (m.num_heads, m.num_kv_heads, hd(m)) == (heads, kv_heads, head_dim)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_within_2_percent_of_published(name):
    m = load(name)
    s = model_summary(m)
    assert s["tie_embeddings"] == (name in TIED)
    assert abs(s["total"] / PUBLISHED[name] - 1) < 0.02, s["total"]
    assert s["total"] == s["embedding"] + s["layers"] + s["final_norm"] + s["lm_head"]


def test_tied_lm_head_is_counted_once():
    data = load("qwen2.5-3b").model_dump()
    untied = model_summary(ModelConfig.model_validate({**data, "tie_embeddings": False}))
    tied = model_summary(ModelConfig.model_validate({**data, "tie_embeddings": True}))
    assert tied["lm_head"] == 0 and untied["lm_head"] == 151936 * 2048
    assert untied["total"] - tied["total"] == 151936 * 2048
    assert abs(tied["total"] / PUBLISHED["qwen2.5-3b"] - 1) < 0.02
    # the logits GEMM reads the (shared) matrix either way
    assert tied["weight_bytes"] == untied["weight_bytes"]


def test_llama2_7b_parameter_count_is_exact():
    # 6,738,415,616 = the number of elements in the HF checkpoint (untied, RMSNorm gammas)
    assert model_summary(load("llama-2-7b"))["total"] == 6_738_415_616


def test_qwen_non_embedding_count_matches_model_card():
    # Qwen2.5-3B model card: 2.77B non-embedding parameters (QKV bias counted)
    s = model_summary(load("qwen2.5-3b"))
    assert abs(s["non_embedding"] / 2.77e9 - 1) < 0.005
    per_layer = 2048 * 2048 * 2 + 2 * 2048 * 256 + (2048 + 2 * 256) + 3 * 2048 * 11008 + 2 * 2048
    assert s["per_layer"] == per_layer


def test_kv_bytes_per_token():
    assert model_summary(load("llama-2-7b"))["kv_bytes_per_token"] == 2 * 32 * 4096
    assert model_summary(load("llama-2-70b"))["kv_bytes_per_token"] == 2 * 80 * 8 * 128
    m16 = variant("llama-3-8b", precision={"wbits": 4, "abits": 16})
    assert model_summary(m16)["kv_bytes_per_token"] == 2 * 32 * 8 * 128 * 2


# ------------------------------------------------------------------------------------------
# graph structure


def test_nodes_share_one_attribute_schema_and_kinds():
    g = build_graph(load("llama-2-7b"), "prefill", seq_len=16)
    kinds = {"embed": "memory", "qk": "attention", "av": "attention", "softmax": "vector",
             "q_proj": "gemm", "lm_head": "gemm", "act": "vector", "norm_attn": "vector"}
    for op in graph_ops(g):
        assert tuple(op) == NODE_KEYS
        assert g.nodes[op["name"]]["name"] == op["name"]          # node id == name attribute
        if op["op"] in kinds:
            assert op["kind"] == kinds[op["op"]]
        assert (op["layer"] == -1) == (op["op"] in ("embed", "final_norm", "lm_head"))
    # 1 embed + 32 * 15 block ops + final_norm + lm_head
    assert g.number_of_nodes() == 1 + 32 * 15 + 2


def test_dag_is_acyclic_and_order_deterministic():
    m = load("mistral-7b")
    g1 = build_graph(m, "mixed", batch=2, seq_len=8, context=0, decode_batch=3)
    g2 = build_graph(m, "mixed", batch=2, seq_len=8, context=0, decode_batch=3)
    assert nx.is_directed_acyclic_graph(g1)
    order1 = [op["name"] for op in graph_ops(g1)]
    assert order1 == [op["name"] for op in graph_ops(g2)]
    assert order1 == [op["name"] for op in graph_ops(g1)]
    pos = {n: i for i, n in enumerate(order1)}
    assert all(pos[u] < pos[v] for u, v in g1.edges)
    # ties broken by construction order: q, k, v projections in that order
    assert pos["L0.q_proj"] < pos["L0.k_proj"] < pos["L0.v_proj"]


def test_edges_follow_data_flow_and_residuals():
    g = build_graph(load("llama-3-8b"), "decode", batch=1, context=10)
    expected = [
        ("embed", "L0.norm_attn"), ("embed", "L0.residual_attn"),
        ("L0.norm_attn", "L0.q_proj"), ("L0.norm_attn", "L0.k_proj"), ("L0.norm_attn", "L0.v_proj"),
        ("L0.q_proj", "L0.qk"), ("L0.k_proj", "L0.qk"), ("L0.qk", "L0.softmax"),
        ("L0.softmax", "L0.av"), ("L0.v_proj", "L0.av"), ("L0.av", "L0.o_proj"),
        ("L0.o_proj", "L0.residual_attn"), ("L0.residual_attn", "L0.norm_ffn"),
        ("L0.norm_ffn", "L0.gate_proj"), ("L0.norm_ffn", "L0.up_proj"),
        ("L0.gate_proj", "L0.act"), ("L0.up_proj", "L0.act"), ("L0.act", "L0.down_proj"),
        ("L0.down_proj", "L0.residual_ffn"), ("L0.residual_attn", "L0.residual_ffn"),
        ("L0.residual_ffn", "L1.norm_attn"), ("L0.residual_ffn", "L1.residual_attn"),
        ("L31.residual_ffn", "final_norm"), ("final_norm", "lm_head"),
    ]
    for u, v in expected:
        assert g.has_edge(u, v), (u, v)
    assert set(g.predecessors("L5.residual_attn")) == {"L5.o_proj", "L4.residual_ffn"}
    assert g.in_degree("embed") == 0 and g.out_degree("lm_head") == 0


def test_plain_ffn_has_no_gate_and_layernorm_costs():
    ops = by_name(build_graph(load("opt-6.7b"), "prefill", batch=2, seq_len=4))
    assert "L0.gate_proj" not in ops
    g = build_graph(load("opt-6.7b"), "prefill", batch=2, seq_len=4)
    assert set(g.predecessors("L0.act")) == {"L0.up_proj"}
    assert ops["L0.act"]["ops_per_element"] == 4 and ops["L0.act"]["elements"] == 8 * 16384
    assert ops["L0.norm_attn"]["ops_per_element"] == 5
    assert ops["L0.norm_attn"]["w_bytes"] == 2 * 4096 * 2          # gamma + beta in fp16
    assert ops["L0.q_proj"]["w_bytes"] == 4096 * 4096 + 4096 * 2   # int8 weights + fp16 bias
    assert ops["L0.o_proj"]["w_bytes"] == 4096 * 4096              # o bias not described


def test_vector_op_costs_gated_rmsnorm():
    m = load("llama-2-7b")
    ops = by_name(build_graph(m, "prefill", batch=3, seq_len=5))
    T = 15
    assert (ops["L2.norm_attn"]["elements"], ops["L2.norm_attn"]["ops_per_element"]) == (T * 4096, 4)
    assert (ops["L2.act"]["elements"], ops["L2.act"]["ops_per_element"]) == (T * 11008, 5)
    assert ops["L2.act"]["a_bytes"] == 2 * T * 11008                   # gate and up read
    assert (ops["L2.residual_ffn"]["ops_per_element"], ops["L2.residual_ffn"]["a_bytes"]) == (1, 2 * T * 4096)
    qk = ops["L2.qk"]
    assert ops["L2.softmax"]["elements"] == qk["M"] * qk["N"] * qk["count"] == 3 * 32 * 5 * 5
    assert ops["L2.softmax"]["ops_per_element"] == 5
    assert ops["L2.softmax"]["bytes"] == 2 * 3 * 32 * 25
    emb = ops["embed"]
    assert emb["kind"] == "memory" and emb["bytes"] == T * 4096 and emb["w_bytes"] == 0
    for op in ops.values():
        if op["kind"] == "vector":
            assert op["flops"] == 0 and op["M"] == 0


# ------------------------------------------------------------------------------------------
# shapes


def test_linear_shapes_per_phase():
    m = load("llama-3-8b")
    pre = by_name(build_graph(m, "prefill", batch=2, seq_len=64))
    dec = by_name(build_graph(m, "decode", batch=5, context=100))
    for ops, rows in ((pre, 128), (dec, 5)):
        assert (ops["L0.q_proj"]["M"], ops["L0.q_proj"]["K"], ops["L0.q_proj"]["N"]) == (rows, 4096, 4096)
        assert (ops["L0.k_proj"]["K"], ops["L0.k_proj"]["N"]) == (4096, 1024)
        assert (ops["L0.o_proj"]["K"], ops["L0.o_proj"]["N"]) == (4096, 4096)
        assert (ops["L0.gate_proj"]["N"], ops["L0.down_proj"]["K"]) == (14336, 14336)
        assert ops["L0.down_proj"]["M"] == rows and ops["L0.down_proj"]["count"] == 1
        assert ops["L0.q_proj"]["flops"] == 2 * rows * 4096 * 4096
        assert ops["L0.q_proj"]["a_bytes"] == rows * 4096 and ops["L0.q_proj"]["o_bytes"] == rows * 4096
    assert (pre["lm_head"]["M"], pre["lm_head"]["N"]) == (2, 128256)     # last token of each sequence
    assert dec["lm_head"]["M"] == 5
    all_rows = by_name(build_graph(m, "prefill", batch=2, seq_len=64, lm_head="all"))
    assert all_rows["lm_head"]["M"] == 128 and all_rows["final_norm"]["elements"] == 128 * 4096


def test_gqa_attention_shapes_prefill_and_decode():
    m = load("llama-2-70b")        # 64 query heads share 8 KV heads: g = 8
    pre = by_name(build_graph(m, "prefill", batch=3, seq_len=20))
    qk, av = pre["L7.qk"], pre["L7.av"]
    assert (qk["M"], qk["K"], qk["N"], qk["count"]) == (8 * 20, 128, 20, 3 * 8)
    assert (av["M"], av["K"], av["N"], av["count"]) == (8 * 20, 20, 128, 3 * 8)
    assert qk["w_source"] == av["w_source"] == "kv"
    assert qk["flops"] == 2 * 160 * 128 * 20 * 24
    assert qk["w_bytes"] == 24 * 128 * 20 and qk["a_bytes"] == 24 * 160 * 128
    dec = by_name(build_graph(m, "decode", batch=4, context=999))
    qk, av = dec["L7.qk"], dec["L7.av"]
    assert (qk["M"], qk["K"], qk["N"], qk["count"]) == (8, 128, 1000, 32)
    assert (av["M"], av["K"], av["N"], av["count"]) == (8, 1000, 128, 32)
    # multi-head model: one query head per KV head
    mha = by_name(build_graph(load("llama-2-7b"), "decode", batch=2, context=7))
    assert (mha["L0.qk"]["M"], mha["L0.qk"]["N"], mha["L0.qk"]["count"]) == (1, 8, 64)
    qwen = by_name(build_graph(load("qwen2.5-3b"), "decode", batch=1, context=0))
    assert (qwen["L0.qk"]["M"], qwen["L0.qk"]["N"], qwen["L0.qk"]["count"]) == (8, 1, 2)


def test_decode_context_and_kv_writes():
    m = load("mistral-7b")
    for ctx in (0, 1, 4095):
        ops = by_name(build_graph(m, "decode", batch=6, context=ctx))
        assert ops["L31.qk"]["N"] == ctx + 1 and ops["L31.av"]["K"] == ctx + 1
        # the K/V cache read grows with context; each step appends one token per sequence
        assert ops["L31.qk"]["w_bytes"] == 6 * 8 * 128 * (ctx + 1)
    ops = graph_ops(build_graph(m, "decode", batch=6, context=10))
    written = sum(op["kv_write_bytes"] for op in ops)
    assert written == 6 * model_summary(m)["kv_bytes_per_token"]
    assert {op["op"] for op in ops if op["kv_write_bytes"]} == {"k_proj", "v_proj"}
    g = build_graph(m, "decode", batch=1, context=3)
    assert g.graph["context"] == 3 and g.graph["tokens"] == 1
    chunk = by_name(build_graph(m, "prefill", batch=1, seq_len=16, context=48))
    assert (chunk["L0.qk"]["M"], chunk["L0.qk"]["N"]) == (4 * 16, 64)


def test_mixed_chunk_splits_attention_only():
    m = load("llama-3-8b")
    g = build_graph(m, "mixed", batch=2, seq_len=32, context=0, decode_batch=5)
    ops = by_name(g)
    T = 2 * 32 + 5
    assert "L0.qk" not in ops and "L0.softmax" not in ops and "L0.av" not in ops
    assert ops["L0.q_proj"]["M"] == T and ops["L0.down_proj"]["M"] == T
    assert ops["lm_head"]["M"] == 7
    qp, qd = ops["L3.qk.prefill"], ops["L3.qk.decode"]
    assert (qp["op"], qp["part"], qd["op"], qd["part"]) == ("qk", "prefill", "qk", "decode")
    assert (qp["M"], qp["N"], qp["count"]) == (4 * 32, 32, 2 * 8)
    assert (qd["M"], qd["N"], qd["count"]) == (4, 1, 5 * 8)
    assert ops["L3.softmax.decode"]["elements"] == 5 * 32 * 1
    assert set(g.predecessors("L3.o_proj")) == {"L3.av.prefill", "L3.av.decode"}
    assert set(g.successors("L3.v_proj")) == {"L3.av.prefill", "L3.av.decode"}
    # the parts add up to the same attention work as separate prefill and decode steps
    pre = by_name(build_graph(m, "prefill", batch=2, seq_len=32))
    dec = by_name(build_graph(m, "decode", batch=5, context=0))
    for op in ("qk", "av"):
        assert ops[f"L3.{op}.prefill"]["flops"] == pre[f"L3.{op}"]["flops"]
        assert ops[f"L3.{op}.decode"]["flops"] == dec[f"L3.{op}"]["flops"]
    # decode sequences at a real context
    ctx = by_name(build_graph(m, "mixed", batch=1, seq_len=8, context=100, decode_batch=2))
    assert ctx["L0.qk.decode"]["N"] == 101 and ctx["L0.qk.prefill"]["N"] == 108
    only_pre = by_name(build_graph(m, "mixed", batch=1, seq_len=8))
    assert "L0.qk.prefill" in only_pre and "L0.qk.decode" not in only_pre
    only_dec = by_name(build_graph(m, "mixed", batch=0, decode_batch=3, context=9))
    assert "L0.qk.prefill" not in only_dec and only_dec["L0.qk.decode"]["N"] == 10
    assert only_dec["L0.q_proj"]["M"] == 3


# ------------------------------------------------------------------------------------------
# totals checked against independent formulas


def _linear_weights(m: ModelConfig) -> int:
    H, I, d = m.hidden_size, m.intermediate_size, hd(m)
    attn = H * m.num_heads * d * 2 + 2 * H * m.num_kv_heads * d
    ffn = (3 if m.ffn == "gated" else 2) * H * I
    return attn + ffn


@pytest.mark.parametrize("name", ["llama-2-7b", "llama-2-70b", "qwen2.5-3b", "opt-6.7b"])
def test_decode_step_streams_all_non_embedding_weights_once(name):
    m = load(name)
    ops = graph_ops(build_graph(m, "decode", batch=3, context=50))
    dram = sum(op["w_bytes"] for op in ops if op["w_source"] == "dram")
    H = m.hidden_size
    norm_params = H * (2 if m.norm == "layernorm" else 1)
    bias = (m.num_heads + 2 * m.num_kv_heads) * hd(m) if m.qkv_bias else 0
    expected = (m.num_layers * (_linear_weights(m) + 2 * norm_params * 2 + bias * 2)   # int8 + fp16
                + norm_params * 2 + m.vocab_size * H)                                   # final norm, lm_head
    assert dram == expected == model_summary(m)["weight_bytes"]
    gemm = sum(op["w_bytes"] for op in ops if op["kind"] == "gemm" and op["w_source"] == "dram")
    assert gemm == m.num_layers * (_linear_weights(m) + 2 * bias) + m.vocab_size * H
    # the embedding table is gathered, not streamed
    assert next(op for op in ops if op["op"] == "embed")["w_bytes"] == 0


@pytest.mark.parametrize("name, batch, seq", [("llama-2-7b", 2, 128), ("llama-2-70b", 1, 300),
                                              ("phi-3-mini", 4, 33)])
def test_prefill_flops_are_2_params_tokens_plus_attention(name, batch, seq):
    m = load(name)
    ops = graph_ops(build_graph(m, "prefill", batch=batch, seq_len=seq))
    flops = sum(op["flops"] for op in ops)
    T = batch * seq
    linear = 2 * m.num_layers * _linear_weights(m) * T + 2 * m.vocab_size * m.hidden_size * batch
    # full (unmasked) score matrix: QK^T and PV each 2*S*S*head_dim per head and sequence
    attention = m.num_layers * 2 * (2 * batch * m.num_heads * seq * seq * hd(m))
    assert flops == linear + attention
    s = model_summary(m)
    rough = 2 * s["non_embedding"] * T
    assert abs((flops - attention - 2 * m.vocab_size * m.hidden_size * batch) / rough - 1) < 1e-3


# ------------------------------------------------------------------------------------------
# precision


def test_layer_precision_overrides_reach_the_right_nodes():
    m = variant("llama-2-7b", layer_precision=[
        {"layers": "0-1", "ops": ["q_proj", "k_proj"], "wbits": 4, "abits": 8},
        {"layers": [3], "ops": None, "wbits": 2, "abits": 16},
        {"layers": [1], "ops": ["k_proj"], "wbits": 2, "abits": 8},   # later entry wins
        {"layers": "all", "ops": ["lm_head"], "wbits": 16, "abits": 16},
    ])
    ops = by_name(build_graph(m, "decode", batch=2, context=5))
    assert (ops["L0.q_proj"]["wbits"], ops["L0.k_proj"]["wbits"], ops["L0.v_proj"]["wbits"]) == (4, 4, 8)
    assert (ops["L1.q_proj"]["wbits"], ops["L1.k_proj"]["wbits"]) == (4, 2)
    assert ops["L2.q_proj"]["wbits"] == 8
    assert ops["L1.q_proj"]["w_bytes"] == 4096 * 4096 // 2
    for op in ("q_proj", "o_proj", "down_proj"):
        assert (ops[f"L3.{op}"]["wbits"], ops[f"L3.{op}"]["abits"]) == (2, 16)
    assert ops["L3.down_proj"]["a_bytes"] == 2 * 11008 * 2
    # attention reads the KV cache at activation precision: wbits = abits
    assert (ops["L3.qk"]["wbits"], ops["L3.qk"]["abits"]) == (16, 16)
    assert ops["L3.qk"]["w_bytes"] == 2 * 32 * 128 * 6 * 2
    assert ops["L3.k_proj"]["kv_write_bytes"] == 2 * 4096 * 2
    assert (ops["L2.qk"]["wbits"], ops["L2.qk"]["abits"]) == (8, 8)
    assert ops["L3.softmax"]["abits"] == 16 and ops["L2.softmax"]["abits"] == 8
    assert (ops["lm_head"]["wbits"], ops["lm_head"]["abits"]) == (16, 16)
    assert ops["embed"]["abits"] == 8
    assert m.precision_for(3, "up_proj") == (2, 16)
    assert m.precision_for(30, "up_proj") == (8, 8)
    assert model_summary(m)["kv_bytes_per_token"] == 2 * 4096 * (31 + 2)


def test_non_block_ops_follow_rules_that_name_them():
    m = variant("llama-2-7b", layer_precision=[
        {"layers": "all", "ops": None, "wbits": 4, "abits": 4},            # blocks only
        {"layers": "all", "ops": ["lm_head", "embed"], "wbits": 8, "abits": 16},
    ])
    ops = by_name(build_graph(m, "decode", batch=1, context=0))
    assert all((op["abits"] == 4) for op in ops.values() if op["layer"] >= 0)
    assert (ops["lm_head"]["wbits"], ops["lm_head"]["abits"]) == (8, 16)
    assert ops["embed"]["abits"] == 16 and ops["embed"]["bytes"] == 4096 * 2
    assert ops["final_norm"]["abits"] == 8                                  # model default
    assert m.precision_for(-1, "final_norm") == (8, 8)


# ------------------------------------------------------------------------------------------
# input errors and speed


@pytest.mark.parametrize("kwargs", [
    {"phase": "train", "seq_len": 8},
    {"phase": "prefill"},                                   # no seq_len
    {"phase": "decode"},                                    # no context
    {"phase": "decode", "context": -1},
    {"phase": "prefill", "seq_len": 0},
    {"phase": "prefill", "seq_len": 8, "batch": 0},
    {"phase": "prefill", "seq_len": 8, "lm_head": "first"},
    {"phase": "mixed", "batch": 0, "decode_batch": 0, "context": 0},
    {"phase": "mixed", "batch": 2, "decode_batch": 1},      # prefill part without seq_len
])
def test_bad_step_arguments_raise_config_error(kwargs):
    m = load("llama-2-7b")
    phase = kwargs.pop("phase")
    with pytest.raises(ConfigError) as err:
        build_graph(m, phase, **kwargs)
    assert "expected" in str(err.value)


def test_numpy_integers_are_accepted_as_plain_ints():
    import numpy as np
    m = load("llama-2-7b")
    g = build_graph(m, "decode", batch=np.int64(3), context=np.int32(7))
    ops = by_name(g)
    assert ops["L0.qk"]["N"] == 8 and type(ops["L0.qk"]["N"]) is int
    assert type(ops["L0.q_proj"]["w_bytes"]) is int and g.graph["batch"] == 3
    with pytest.raises(ConfigError):
        build_graph(m, "decode", batch=2.0, context=7)


def test_80_layer_graph_builds_fast():
    m = load("llama-3-70b")
    start = time.perf_counter()
    g = build_graph(m, "mixed", batch=4, seq_len=512, context=0, decode_batch=16)
    ops = graph_ops(g)
    elapsed = time.perf_counter() - start
    assert len(ops) == 1 + 80 * (15 + 3) + 2   # + second qk, softmax, av
    print(f"80-layer mixed graph: {len(ops)} nodes in {elapsed * 1e3:.1f} ms")
    assert elapsed < 3.0    # target well under 0.5 s; loose bound against slow CI machines


@pytest.mark.parametrize("phase, kw", [
    ("prefill", dict(batch=2, seq_len=33)),
    ("decode", dict(batch=3, context=100)),
    ("mixed", dict(batch=1, seq_len=16, context=0, decode_batch=4)),
])
@pytest.mark.parametrize("name", ["llama-3-8b", "opt-6.7b"])
def test_step_ops_equals_graph_ops(name, phase, kw):
    from sim.workload import step_ops
    m = load(name)
    assert step_ops(m, phase, **kw) == graph_ops(build_graph(m, phase, **kw))


def test_copied_blocks_have_the_same_wiring_as_built_ones():
    # layers 2-3 get their own precision, so blocks 0, 2 are built and the others copied
    m = load("llama-2-7b").model_copy(update={"layer_precision": [
        LayerPrecision(layers="2-3", wbits=4, abits=8)]})
    g = build_graph(m, "decode", batch=1, context=10)

    def wiring(layer):
        p = f"L{layer}."
        inner = {(a, b) for a, b in g.edges if a.startswith(p) and b.startswith(p)}
        return {(a[len(p):], b[len(p):]) for a, b in inner}, g.in_degree(f"{p}norm_attn")
    for layer in (1, 3, 31):
        assert wiring(layer) == wiring(0)
    assert g.nodes["L3.q_proj"]["wbits"] == 4 and g.nodes["L4.q_proj"]["wbits"] == 8
    assert list(g.predecessors("L5.norm_attn")) == ["L4.residual_ffn"]
    assert set(g.predecessors("L5.residual_ffn")) == {"L5.down_proj", "L5.residual_attn"}
