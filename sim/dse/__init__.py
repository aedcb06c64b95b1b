"""Design-space exploration: sweep specs, executors and the resumable results store."""
from .expr import Expr, ExprError
from .spec import Point, Sweep, load_sweep
from .store import Store
from .sweep import SweepSummary, run_point, run_sweep

__all__ = ["Expr", "ExprError", "Point", "Sweep", "load_sweep", "Store", "SweepSummary",
           "run_point", "run_sweep"]
