"""Design-space exploration: sweep specs, executors, the resumable results store and guided
multi-objective search (optuna)."""
from .expr import Expr, ExprError
from .spec import Point, Sweep, load_sweep
from .store import Store
from .sweep import SweepSummary, run_point, run_sweep
from .search import SearchSummary, run_search

__all__ = ["Expr", "ExprError", "Point", "Sweep", "load_sweep", "Store", "SweepSummary",
           "run_point", "run_sweep", "SearchSummary", "run_search"]
