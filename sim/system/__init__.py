"""Layer 6: the serving system in seconds (HERMES-style).

Names are exported in blocks, one per part of the layer, so that parts built side by side merge
without conflicts.
"""

# ---- request traces, arrival processes, metrics (sim.system.requests / arrivals / metrics) ----
from .requests import (AZURE_COLUMNS, PLAIN_COLUMNS, REQUEST_COLUMNS, read_trace,
                       requests_frame, write_trace)

__all__ = [
    # requests / arrivals / metrics
    "AZURE_COLUMNS", "PLAIN_COLUMNS", "REQUEST_COLUMNS", "read_trace", "requests_frame",
    "write_trace",
]
