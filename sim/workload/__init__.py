"""Layer 5, workload: model descriptions -> operator graphs for prefill, decode and mixed steps.

``build_graph(model, phase, ...)`` returns a networkx DAG of GEMM / attention / vector / memory
ops; ``graph_ops(g)`` lists them in a deterministic topological order; ``model_summary(model)``
gives parameter counts, weight bytes and KV bytes per token; ``ModelConfig.precision_for``
resolves the per-layer precision overrides.
"""

from sim.workload.graph import (
    ATTENTION_OPS,
    GEMM_OPS,
    NODE_KEYS,
    OPS,
    PHASES,
    VECTOR_OPS,
    RaggedStep,
    build_graph,
    build_ragged_graph,
    graph_ops,
    ragged_shape,
    ragged_step,
    shape_ops,
    step_ops,
    step_shape,
)
from sim.workload.precision import lookup_fn
from sim.workload.summary import model_summary

__all__ = [
    "ATTENTION_OPS", "GEMM_OPS", "NODE_KEYS", "OPS", "PHASES", "VECTOR_OPS",
    "RaggedStep", "build_graph", "build_ragged_graph", "graph_ops", "ragged_shape", "ragged_step",
    "shape_ops", "lookup_fn", "model_summary", "step_ops", "step_shape",
]
