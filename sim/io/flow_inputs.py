"""FLOW end to end: per-block statistics from real weights or an outlier profile, the integer
program (:mod:`sim.numerics.flow`), and the per-layer N:M schedule
(:mod:`sim.config.nm_schedule`), optionally written as YAML.

Real weights: ``.npz`` / ``.safetensors`` files (a file, a folder of shards or a list), tensor
names as :func:`sim.io.weights.canonical_op` reads them (``model.layers.3.self_attn.q_proj.weight``
and the like), plus a calibration **activation-norm** file (``.npz`` or ``.safetensors``) whose
tensors are named the same way and hold, for each linear op, the vector ``||X_k||_2`` over the
calibration tokens of its K input channels. Ops that share an input (q/k/v, gate/up) may share
one vector: the norm of any of them (or of the fused tensor) is used when an op's own is
missing. The lm_head is not scheduled.

Otherwise the statistics come from an outlier profile: the one given, else the model's
``outlier_profile``, else the seeded run-time synthetic profile
(:func:`sim.numerics.outlier_stats.run_profile`), so every shipped model works.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sim.config.errors import ConfigError, short_repr
from sim.config.loader import load_model
from sim.config.nm_schedule import NMSchedule, schedule_to_yaml
from sim.config.outliers import load_outlier_profile
from sim.config.schema import ModelConfig
from sim.numerics.flow import (ALPHA, BETA, HYPER_M, BlockStats, block_stats_from_arrays,
                               block_stats_from_profile, solve_flow)
from sim.numerics.outlier_stats import run_profile

from .weights import WeightsFile, canonical_op, weight_files

__all__ = ["flow", "block_stats_from_weights", "write_schedule"]

_SHARED_INPUT = {
    "q_proj": ("q_proj", "k_proj", "v_proj", "qkv_proj"),
    "k_proj": ("k_proj", "q_proj", "v_proj", "qkv_proj"),
    "v_proj": ("v_proj", "q_proj", "k_proj", "qkv_proj"),
    "qkv_proj": ("qkv_proj", "q_proj", "k_proj", "v_proj"),
    "gate_proj": ("gate_proj", "up_proj", "gate_up_proj"),
    "up_proj": ("up_proj", "gate_proj", "gate_up_proj"),
    "gate_up_proj": ("gate_up_proj", "gate_proj", "up_proj"),
}


def _model(model: Any) -> ModelConfig:
    return model if isinstance(model, ModelConfig) else load_model(model)


def block_stats_from_weights(path: Any, model: Any, act_norms: Any, *, layout: str = "out_in",
                             prefix: str = "", hyper_m: float = HYPER_M) -> BlockStats:
    """Per-block outlier ratio and locality of a checkpoint's Wanda scores (module docstring)."""
    m = _model(model)
    if layout not in ("out_in", "in_out"):
        raise ConfigError("'out_in' (HF [out, in]) or 'in_out' (already [K, N])", key="layout",
                          got=short_repr(layout))
    if act_norms is None:
        raise ConfigError("a calibration activation-norm file (.npz) with the weights",
                          key="act_norms", got="none")
    norm_src = WeightsFile(Path(os.fspath(act_norms)).expanduser())
    norms: dict[tuple[int, str], str] = {}
    for name in norm_src.names:
        key = canonical_op(name)
        if key is not None and key[0] >= 0:
            norms[key] = name
    found: dict[int, list[tuple[str, WeightsFile, str]]] = {}
    for f in weight_files(path):
        src = WeightsFile(f)
        for tname in src.names:
            if prefix and not tname.startswith(prefix):
                continue
            key = canonical_op(tname)
            if key is None or key[0] < 0:
                continue
            found.setdefault(key[0], []).append((key[1], src, tname))
    L = m.num_layers
    extra = sorted(i for i in found if i >= L)
    if extra:
        raise ConfigError(f"decoder blocks 0..{L - 1} (model {m.name!r})", file=str(path),
                          key=f"layers.{extra[0]}", got=f"a tensor of block {extra[0]}")
    missing = [i for i in range(L) if i not in found]
    if missing:
        raise ConfigError(f"linear weights for every decoder block 0..{L - 1} of {m.name!r}",
                          file=str(path), key=f"layers.{missing[0]}", got="no tensor")
    blocks = []
    for i in range(L):
        mats = []
        for op, src, tname in sorted(found[i], key=lambda t: t[2]):
            w = np.asarray(src.get(tname))
            if w.ndim != 2:
                raise ConfigError("a 2-D weight matrix", file=src.label, key=tname,
                                  got=f"shape {tuple(w.shape)}")
            w = w if layout == "out_in" else w.T          # -> [out, in]
            name = next((norms[(i, o)] for o in _SHARED_INPUT.get(op, (op,))
                         if (i, o) in norms), None)
            if name is None:
                raise ConfigError(f"an activation-norm vector for layer {i} {op}",
                                  file=norm_src.label, key=tname, got="none in the file")
            a = np.asarray(norm_src.get(name), dtype=np.float64)
            if a.shape != (w.shape[1],):
                raise ConfigError(f"a vector of the {w.shape[1]} input channels of {tname}",
                                  file=norm_src.label, key=name, got=f"shape {tuple(a.shape)}")
            if not np.isfinite(a).all() or (a < 0).any():
                raise ConfigError("finite activation norms >= 0", file=norm_src.label, key=name,
                                  got="a negative or non-finite value")
            mats.append((np.abs(w.astype(np.float32)) * a[None, :].astype(np.float32)))
        blocks.append(mats)
    names = ", ".join(p.name for p in weight_files(path))
    return block_stats_from_arrays(blocks, hyper_m=hyper_m,
                                   source=f"weights: {names}; activation norms: "
                                          f"{Path(norm_src.label).name}")


def flow(model: Any, sparsity: float = 0.6, *, candidates: Iterable | None = None,
         extra: Iterable = (), edges_dense: bool = True, seed: int = 0, weights: Any = None,
         act_norms: Any = None, layout: str = "out_in", prefix: str = "",
         hyper_m: float = HYPER_M, profile: Any = None, alpha: float = ALPHA,
         beta: float = BETA, out: str | os.PathLike | None = None) -> NMSchedule:
    """FLOW's per-layer N:M schedule for ``model`` at average ``sparsity`` (in [0, 1)).

    Args:
        candidates: the pattern list (default 1:4, 2:4, 2:8, 4:8, 1:2, dense); ``extra``
            patterns are added to it.
        edges_dense: force the first and last decoder blocks dense (released FLOW does).
        weights / act_norms: real weights and their calibration activation norms; without
            them, per-block statistics come from ``profile`` (a name, path or OutlierProfile),
            else the model's ``outlier_profile``, else the run-time synthetic profile of
            ``seed``.
        out: also write the schedule YAML there.

    When no mix of the candidates reaches ``sparsity`` exactly, the nearest feasible mix is
    returned: ``achieved_sparsity`` and ``gap`` say how far it is."""
    m = _model(model)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("a seed, an integer >= 0", key="seed", got=short_repr(seed))
    used_seed: int | None = None
    if weights is not None:
        stats = block_stats_from_weights(weights, m, act_norms, layout=layout, prefix=prefix,
                                         hyper_m=hyper_m)
    else:
        if act_norms is not None:
            raise ConfigError("weights to go with the activation norms", key="weights",
                              got="none")
        if profile is not None:
            prof = load_outlier_profile(profile)
        elif m.outlier_profile is not None:
            prof = load_outlier_profile(m.outlier_profile)
        else:
            prof = run_profile(m, seed)
            used_seed = seed
        if prof.num_layers != m.num_layers:
            raise ConfigError(f"an outlier profile of the {m.num_layers} layers of {m.name!r}",
                              file=prof.origin, key="num_layers", got=str(prof.num_layers))
        if used_seed is None:
            used_seed = prof.provenance.seed
        stats = block_stats_from_profile(prof)
    sol = solve_flow(stats, sparsity, candidates=candidates, extra=extra,
                     edges_dense=edges_dense, alpha=alpha, beta=beta)
    sched = NMSchedule.model_validate({
        "model": m.name,
        "num_layers": m.num_layers,
        "target_sparsity": sol.target,
        "achieved_sparsity": sol.achieved,
        "gap": sol.gap,
        "candidates": [str(p) for p in sol.candidates],
        "edges_dense": bool(edges_dense),
        "source": stats.source,
        "seed": used_seed,
        "solver": {"alpha": float(alpha), "beta": float(beta), "scale": float(
            max([8] + [p.m for p in sol.candidates if not p.dense]))},
        "layers": [{"layer": i, "pattern": str(p), "outlier_ratio": float(sol.o_norm[i]),
                    "locality": float(sol.d_norm[i])} for i, p in enumerate(sol.patterns)],
    })
    if out is not None:
        write_schedule(sched, out)
    return sched


def write_schedule(sched: NMSchedule, path: str | os.PathLike) -> Path:
    """Write the schedule YAML (deterministic bytes) and return the path."""
    p = Path(os.fspath(path)).expanduser()
    header = (f"Per-layer N:M schedule written by FLOW (strata flow {sched.model} --sparsity "
              f"{sched.target_sparsity:g}).\nSchema: NMSchedule in sim/config/nm_schedule.py.")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(schedule_to_yaml(sched, header))
    except OSError as exc:
        raise ConfigError("a schedule file that can be written", file=str(p), key="out",
                          got=exc.strerror or str(exc)) from None
    return p
