"""Parameter counts, weight bytes and KV-cache bytes of a model description.

How parameters are counted (the convention the tests compare with published sizes):

* decoder block: q/k/v/o projections (k and v sized by ``num_kv_heads * head_dim``), the FFN
  (gate+up+down when gated, up+down when plain), q/k/v biases when ``qkv_bias``, and the two
  norms (gamma; gamma+beta for LayerNorm);
* embedding: ``vocab_size * hidden_size`` (plus ``max_position * hidden_size`` learned position
  embeddings when the schema says the model has them, field ``position_embedding: learned``);
* lm_head: ``vocab_size * hidden_size`` unless the model ties it to the embedding
  (``tie_embeddings``), then 0;
* final norm: like one block norm.

Biases on o_proj and the FFN (OPT has them) are not counted: the schema only describes q/k/v
biases; for OPT-6.7B they are 0.8 M parameters (0.01 %).

Weight bytes (what one step streams from DRAM): every GEMM weight at the op's ``wbits`` plus
norm parameters and biases at :data:`~sim.workload.graph.PARAM_BITS` bits, the lm_head included
even when tied (the logits GEMM still reads the matrix). The embedding table is not streamed: a
step gathers only the rows of its tokens.
"""

from __future__ import annotations

from sim.config.schema import ModelConfig
from sim.workload.graph import PARAM_BITS, nbytes
from sim.workload.precision import lookup_fn


def _dims(model: ModelConfig) -> dict:
    hd = model.head_dim or model.hidden_size // model.num_heads
    H, I = model.hidden_size, model.intermediate_size
    return {
        "q_proj": (H, model.num_heads * hd),
        "k_proj": (H, model.num_kv_heads * hd),
        "v_proj": (H, model.num_kv_heads * hd),
        "o_proj": (model.num_heads * hd, H),
        **({"gate_proj": (H, I)} if model.ffn == "gated" else {}),
        "up_proj": (H, I),
        "down_proj": (I, H),
    }


def _mamba_summary(model: ModelConfig) -> dict:
    """:func:`model_summary` of a Mamba model: per block the in/x/dt/out projections, the
    depthwise conv1d weights (and bias), dt_proj's bias, A_log and D (``d_inner * d_state`` and
    ``d_inner``) and one RMSNorm; no KV cache (``kv_bytes_per_token`` 0) but a recurrent state
    of constant size per sequence (``state_bytes_per_sequence``, all blocks)."""
    H, L, V, ssm = model.hidden_size, model.num_layers, model.vocab_size, model.ssm
    D, n, k = ssm.d_inner(H), ssm.d_state, ssm.d_conv
    dims = ssm.gemm_shapes(H)
    linear = sum(a * b for a, b in dims.values())
    proj_bias = (2 * D + H) if ssm.proj_bias else 0                 # in_proj, out_proj
    small = k * D + (D if ssm.conv_bias else 0) + (D if ssm.dt_bias else 0) + D * n + D
    norm = H * (2 if model.norm == "layernorm" else 1)
    per_layer = linear + proj_bias + small + norm
    embedding = V * H
    lm_head = 0 if model.tie_embeddings else V * H
    total = embedding + L * per_layer + norm + lm_head
    prec = lookup_fn(model)
    weight_bytes = sum(nbytes(a * b, prec(layer, op)[0]) for layer in range(L)
                       for op, (a, b) in dims.items())
    weight_bytes += L * nbytes(proj_bias + small + norm, PARAM_BITS) + nbytes(norm, PARAM_BITS)
    weight_bytes += nbytes(V * H, prec(-1, "lm_head")[0])
    return {
        "name": model.name, "embedding": embedding, "per_layer": per_layer,
        "layers": L * per_layer, "final_norm": norm, "lm_head": lm_head, "total": total,
        "non_embedding": total - embedding - lm_head, "tie_embeddings": model.tie_embeddings,
        "weight_bytes": weight_bytes, "kv_bytes_per_token": 0,
        "state_bytes_per_sequence": L * nbytes(D * (k - 1) + D * n, ssm.state_bits),
        "linear_flops_per_token": 2 * L * linear,
    }


def model_summary(model: ModelConfig) -> dict:
    """Parameter counts and per-step byte figures of ``model``.

    Keys: ``name``; parameters ``embedding``, ``per_layer``, ``layers`` (all blocks),
    ``final_norm``, ``lm_head``, ``total``, ``non_embedding`` (total - embedding - lm_head);
    ``tie_embeddings``; bytes ``weight_bytes`` (one step's DRAM weight stream, see module doc),
    ``kv_bytes_per_token`` (K and V of one token over all layers, at the qk/av activation
    precision); ``linear_flops_per_token`` (2 x GEMM weights of the blocks). A Mamba model:
    see :func:`_mamba_summary` (adds ``state_bytes_per_sequence``).
    """
    if model.architecture == "mamba":
        return _mamba_summary(model)
    H, L, V = model.hidden_size, model.num_layers, model.vocab_size
    hd = model.head_dim or H // model.num_heads
    dims = _dims(model)
    linear = sum(k * n for k, n in dims.values())
    bias = (model.num_heads + 2 * model.num_kv_heads) * hd if model.qkv_bias else 0
    norm = H * (2 if model.norm == "layernorm" else 1)
    per_layer = linear + bias + 2 * norm

    tied = model.tie_embeddings
    embedding = V * H
    if model.position_embedding == "learned":
        embedding += model.max_position * H
    lm_head = 0 if tied else V * H
    total = embedding + L * per_layer + norm + lm_head

    prec = lookup_fn(model)
    weight_bytes = 0
    kv_bytes = 0
    for layer in range(L):
        for op, (k, n) in dims.items():
            wbits, _ = prec(layer, op)
            weight_bytes += nbytes(k * n, wbits)
        for op in ("qk", "av"):             # K and V are stored at the attention op's abits
            _, kv_bits = prec(layer, op)
            kv_bytes += nbytes(model.num_kv_heads * hd, kv_bits)
    if bias:                                # one bias per output feature of q, k and v
        weight_bytes += L * sum(nbytes(n, PARAM_BITS) for op, (_, n) in dims.items()
                                if op in ("q_proj", "k_proj", "v_proj"))
    weight_bytes += (2 * L + 1) * nbytes(norm, PARAM_BITS)
    lm_head_wbits, _ = prec(-1, "lm_head")
    weight_bytes += nbytes(V * H, lm_head_wbits)

    return {
        "name": model.name,
        "embedding": embedding,
        "per_layer": per_layer,
        "layers": L * per_layer,
        "final_norm": norm,
        "lm_head": lm_head,
        "total": total,
        "non_embedding": total - embedding - lm_head,
        "tie_embeddings": tied,
        "weight_bytes": weight_bytes,
        "kv_bytes_per_token": kv_bytes,
        "linear_flops_per_token": 2 * L * linear,
    }
