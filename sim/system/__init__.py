"""Layer 6: the serving system in seconds (HERMES-style): coordinator, LLM engines, schedulers,
routers, hardware backends, KV blocks (entry point :func:`serve_frames`), request traces,
arrival processes and metrics.

Names are exported in blocks, one per part of the layer, so that parts built side by side merge
without conflicts.
"""

# ---- request traces, arrival processes, metrics (sim.system.requests / arrivals / metrics) ----
from .arrivals import (ArrivalsConfig, LengthConfig, LengthsConfig, WorkloadConfig,
                       arrival_processes, build_requests, length_distributions, load_workload,
                       register_arrival_process, register_length_distribution, resolve_trace)
from .metrics import (HERMES_SLO, HERMES_SLO_RETRIEVAL, RUN_COLUMNS, SLO_TABLES, STEP_COLUMNS,
                      SloTable, batch_size, goodput, kv_usage, latency_stats, meets_slo,
                      percentile, queue_length, request_latencies, requests_in_system,
                      run_duration, slo_attainment, summarize, throughput, time_weighted_mean,
                      tokens_per_joule, value_at)
from .requests import (AZURE_COLUMNS, PLAIN_COLUMNS, REQUEST_COLUMNS, read_trace,
                       requests_frame, write_trace)

# ---- coordinator, engines, schedulers, routers, backends ----
from .backends import BACKENDS, AnalyticBackend, Backend, StepCost, StrataBackend, build_backend
from .coordinator import ServeFrames, serve_frames
from .pipeline import load_pipeline
from .routers import ROUTERS
from .schedulers import SCHEDULERS

__all__ = [
    # coordinator / engines / backends
    "BACKENDS", "ROUTERS", "SCHEDULERS", "AnalyticBackend", "Backend", "ServeFrames",
    "StepCost", "StrataBackend", "build_backend", "load_pipeline", "serve_frames",
    # requests / arrivals / metrics
    "AZURE_COLUMNS", "PLAIN_COLUMNS", "REQUEST_COLUMNS", "read_trace", "requests_frame",
    "write_trace",
    "ArrivalsConfig", "LengthConfig", "LengthsConfig", "WorkloadConfig", "arrival_processes",
    "build_requests", "length_distributions", "load_workload", "register_arrival_process",
    "register_length_distribution", "resolve_trace",
    "HERMES_SLO", "HERMES_SLO_RETRIEVAL", "RUN_COLUMNS", "SLO_TABLES", "STEP_COLUMNS",
    "SloTable", "batch_size", "goodput", "kv_usage", "latency_stats", "meets_slo",
    "percentile", "queue_length", "request_latencies", "requests_in_system", "run_duration",
    "slo_attainment", "summarize", "throughput", "time_weighted_mean", "tokens_per_joule",
    "value_at",
    # ---- end of requests / arrivals / metrics ----
]
