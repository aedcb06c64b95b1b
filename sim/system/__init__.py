"""Layer 6: the serving system in seconds (coordinator, LLM engines, schedulers, routers,
hardware backends, KV blocks). Entry point: :func:`serve_frames`."""
from .backends import BACKENDS, AnalyticBackend, Backend, StepCost, StrataBackend, build_backend
from .coordinator import ServeFrames, serve_frames
from .pipeline import load_pipeline
from .routers import ROUTERS
from .schedulers import SCHEDULERS

__all__ = ["BACKENDS", "ROUTERS", "SCHEDULERS", "AnalyticBackend", "Backend", "ServeFrames",
           "StepCost", "StrataBackend", "build_backend", "load_pipeline", "serve_frames"]
