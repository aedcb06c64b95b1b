"""Per-operator precision: the model default plus ``layer_precision`` overrides.

Decoder-block ops (layer 0..num_layers-1) use :meth:`ModelConfig.precision_for`, where the last
matching rule wins. The ops outside the blocks (``embed``, ``final_norm``, ``lm_head``; layer -1
in the graph) have no layer index a rule could name, so a rule reaches them only when its
``ops`` list names them explicitly, whatever its ``layers``::

    layer_precision:
      - {layers: all, wbits: 4, abits: 8}                  # every block op; lm_head stays default
      - {layers: all, ops: [lm_head], wbits: 8, abits: 16}  # the logits GEMM

Attention ops (``qk``, ``av``) read the KV cache, which is stored at activation precision, so the
graph builder records ``wbits = abits`` for them.
"""

from __future__ import annotations

from typing import Callable

from sim.config.schema import ModelConfig

#: graph nodes outside the decoder blocks (layer -1)
NON_BLOCK_OPS = ("embed", "final_norm", "lm_head")

PrecisionLookup = Callable[[int, str], "tuple[int, int]"]


def precision_for(model: ModelConfig, layer: int, op: str) -> tuple[int, int]:
    """(wbits, abits) of ``op`` in decoder layer ``layer`` (-1 for embed/final_norm/lm_head)."""
    if layer >= 0:
        return model.precision_for(layer, op)
    wbits, abits = model.precision.wbits, model.precision.abits
    for rule in model.layer_precision:
        if rule.ops is not None and op in rule.ops:
            wbits, abits = rule.wbits, rule.abits
    return wbits, abits


def lookup_fn(model: ModelConfig) -> PrecisionLookup:
    """A memoized ``(layer, op) -> (wbits, abits)`` for one graph build (blocks repeat ops)."""
    cache: dict[tuple[int, str], tuple[int, int]] = {}

    def lookup(layer: int, op: str) -> tuple[int, int]:
        key = (layer, op)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = precision_for(model, layer, op)
        return hit
    return lookup
