"""Strata: a cycle-level simulator of heterogeneous hardware for LLM inference.

Public API (stable; later versions extend it):

* :func:`simulate_gemm` — one GEMM on an accelerator: cycles, stalls, energy, utilization;
* :func:`simulate_model` — a prefill pass, decode steps or a mixed chunk of a model;
* :func:`simulate_step` — one ragged continuous-batching step (prefill chunks + decodes);
* :class:`StepTable` — a step-time table built once per (arch, model), interpolated;
* :func:`run` — a whole experiment YAML, returning a :class:`Result` of DataFrames;
* :func:`serve` — a serving experiment (a ``cluster:`` section), a :class:`ServeResult`
  (with ``variants:``, a :class:`ServeComparison` of one per variant).
"""
from .api import (GemmResult, ModelResult, Result, StepEstimate, StepResult, StepTable, run,
                  ServeComparison, ServeResult, load_serving, serve, simulate_gemm, simulate_model, simulate_step, step_table)
from .config import ConfigError, load_arch, load_experiment, load_model
from .io.flow_inputs import flow  # FLOW: per-layer N:M schedule (sim.config.nm_schedule)

__version__ = "0.1.0"

__all__ = ["ConfigError", "flow", "GemmResult", "ModelResult", "Result", "load_arch",
           "load_experiment", "load_model", "run", "serve", "ServeComparison", "ServeResult", "load_serving", "simulate_gemm", "simulate_model",
           "simulate_step", "step_table", "StepEstimate", "StepResult", "StepTable"]
