"""Per-operator precision: the model default plus ``layer_precision`` overrides.

The rules live in :meth:`ModelConfig.precision_for` (the last matching rule wins); this module
memoizes them per graph build. The ops outside the blocks (``embed``, ``final_norm``, ``lm_head``; layer -1
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

PrecisionLookup = Callable[[int, str], "tuple[int, int]"]


def lookup_fn(model: ModelConfig) -> PrecisionLookup:
    """A memoized ``(layer, op) -> (wbits, abits)`` for one graph build (blocks repeat ops)."""
    cache: dict[tuple[int, str], tuple[int, int]] = {}

    def lookup(layer: int, op: str) -> tuple[int, int]:
        key = (layer, op)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = model.precision_for(layer, op)
        return hit
    return lookup
