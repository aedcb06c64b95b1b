"""Write a Result to disk: per-op CSV, per-component energy CSV, runs CSV, summary JSON."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def write_tables(result, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    # ``index`` is the op's position in its step's operator graph (topological order): name it so
    ops = result.ops.rename(columns={"index": "graph_order"})
    for name, df in (("ops.csv", ops), ("energy.csv", result.energy),
                     ("runs.csv", result.runs), ("area.csv", result.area)):
        p = out_dir / name
        df.to_csv(p, index=False, float_format="%.6g")
        paths.append(p)
    p = out_dir / "summary.json"
    p.write_text(json.dumps(_jsonable(result.summary()), indent=2, sort_keys=True) + "\n")
    paths.append(p)
    p = out_dir / "config.json"          # the fully resolved config, for reproduction
    p.write_text(result.experiment.canonical_json() + "\n")
    paths.append(p)
    return paths
