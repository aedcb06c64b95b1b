"""Tensor parallelism (Megatron-LM column/row splits) over ``tp`` chips of any accelerator type.

Each chip holds 1/tp of every linear layer: q/k/v and gate/up are split by output columns
(heads and FFN columns), o_proj and down_proj by input rows, lm_head by vocabulary. So one
chip runs the step of a *shard* model with ``num_heads / tp`` query heads, ``num_kv_heads /
tp`` KV heads (at least one: when tp exceeds the KV heads each KV head is replicated on tp /
num_kv_heads chips, as vLLM does), ``intermediate_size / tp`` and ``vocab_size / tp``; norms,
residuals and the embedding gather stay whole on every chip. The row-split layers leave
partial sums, summed by a ring all-reduce of the step's activations (tokens x hidden) after
attention and after the FFN of every block; the vocabulary-split logits are all-gathered.
The collectives are graph nodes of kind ``collective`` priced by the accelerator
(:meth:`sim.hw.interface.Accelerator.collective`) on the arch's ``chip_link``.
"""
from __future__ import annotations

from sim.config import ConfigError
from sim.config.schema import ModelConfig
from sim.workload.graph import nbytes

__all__ = ["shard_model", "add_collectives", "TP_SIZES"]

TP_SIZES = (1, 2, 4, 8)
_REDUCED_AFTER = {"o_proj": "allreduce_attn", "down_proj": "allreduce_ffn"}


def shard_model(model: ModelConfig, tp: int, where: str) -> ModelConfig:
    """The part of ``model`` one of ``tp`` chips holds (``model`` itself when tp is 1)."""
    if tp == 1:
        return model
    nh, nkv = model.num_heads, model.num_kv_heads
    if nh % tp or (nkv % tp and tp % nkv):
        raise ConfigError(f"a tp that divides num_heads ({nh}) and divides or is a multiple "
                          f"of num_kv_heads ({nkv}) of model {model.name!r}", file=where,
                          key="tp", got=str(tp))
    data = model.model_dump()
    data.update(name=f"{model.name}/tp{tp}", num_heads=nh // tp, num_kv_heads=max(nkv // tp, 1),
                head_dim=model.head_dim or model.hidden_size // nh,
                intermediate_size=-(-model.intermediate_size // tp),
                vocab_size=-(-model.vocab_size // tp))
    return ModelConfig.model_validate(data)


def _node(name: str, layer: int, kind: str, nbytes_: int, chips: int, abits) -> dict:
    return {"name": name, "index": 0, "layer": layer, "op": kind, "kind": "collective",
            "part": None, "M": 0, "K": 0, "N": 0, "count": 1, "wbits": None, "abits": abits,
            "w_source": None, "a_bytes": nbytes_, "w_bytes": 0, "o_bytes": 0,
            "kv_write_bytes": 0, "flops": 0, "elements": 0, "ops_per_element": 0,
            "bytes": nbytes_, "chips": chips}


def add_collectives(ops: list[dict], model: ModelConfig, tp: int) -> list[dict]:
    """``ops`` of one chip with the all-reduces after each o_proj and down_proj (the full
    tokens x hidden activation at the layer's activation precision) and the all-gather of
    the logits after lm_head; nodes renumbered in order. Unchanged when tp is 1."""
    if tp == 1:
        return ops
    out = []
    for op in ops:
        out.append(op)
        if op["op"] in _REDUCED_AFTER:
            out.append(_node(f"L{op['layer']}.{_REDUCED_AFTER[op['op']]}", op["layer"],
                             "allreduce", nbytes(op["M"] * model.hidden_size, op["abits"]),
                             tp, op["abits"]))
        elif op["op"] == "lm_head":
            out.append(_node("logits_allgather", -1, "allgather",
                             nbytes(op["M"] * op["N"] * tp, op["abits"]), tp, op["abits"]))
    for i, op in enumerate(out):
        op["index"] = i
    return out
