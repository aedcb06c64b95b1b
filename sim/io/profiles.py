"""Outlier profiles from and to files: measured from real weight checkpoints, and written as YAML.

:mod:`sim.numerics.outlier_stats` measures arrays and generates synthetic ones (pure numpy);
this module adds the files around it:

* :func:`profile_from_weights` -- every linear op of a model, read from a ``.npz`` or
  ``.safetensors`` file (or a folder / list of them, :mod:`sim.io.weights`). HF stores
  ``nn.Linear`` weights as ``[out, in]``; they are transposed to ``[K=in, N=out]`` before
  measuring (``layout="out_in"``, the default; pass ``layout="in_out"`` for arrays already in
  Strata's orientation). Tensor names: :func:`sim.io.weights.canonical_op`; fused
  ``qkv_proj`` and ``gate_up_proj`` are split along the output dimension using the model's
  shapes. ``lm_head[.weight]`` is measured when present. A checkpoint holding two towers (a
  VLM) takes ``prefix=`` to pick one (``prefix="llm."``). Biases and norms are ignored.
* :func:`render_profile` / :func:`write_profile` -- the YAML text of a profile with a
  provenance and summary header (the bytes depend on the profile alone).
* :func:`profile_info` -- what a result's summary says about the profile it ran with.
* :func:`regenerate_shipped` -- writes the shipped profiles of ``workloads/outliers`` again
  from their recipes (``workloads/outliers/recipes``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from sim.config.errors import ConfigError, short_repr
from sim.config.loader import load_model, repo_root
from sim.config.outliers import (
    ALL_BLOCK_OPS,
    DEFAULT_RECIPE,
    OpOutlierStats,
    OutlierProfile,
    outliers_dir,
    profile_to_yaml,
    shipped_recipes,
)
from sim.config.schema import ModelConfig
from sim.numerics.outlier_stats import (
    DEFAULT_WIDTHS,
    assemble_profile,
    check_grouping,
    measure_matrix,
    op_shapes,
    shipped_profile,
)

from .weights import WeightsFile, canonical_op, sha256_file, weight_files

__all__ = ["profile_from_weights", "profile_info", "regenerate_shipped", "render_profile",
           "write_profile"]


def _model(model_config: Any) -> ModelConfig:
    return model_config if isinstance(model_config, ModelConfig) else load_model(model_config)


# ============================================================================================
# Profiles from real weights
# ============================================================================================

def _orient(arr: np.ndarray, layout: str, label: str, name: str) -> np.ndarray:
    if arr.ndim != 2:
        raise ConfigError("a 2-D weight matrix", file=label, key=name,
                          got=f"shape {tuple(arr.shape)}")
    return arr.T if layout == "out_in" else arr


def _split_fused(op: str, w: np.ndarray, shapes: dict[str, tuple[int, int]], label: str,
                 name: str) -> dict[str, np.ndarray]:
    parts = ("q_proj", "k_proj", "v_proj") if op == "qkv_proj" else ("gate_proj", "up_proj")
    widths = []                          # output features (N) of each part
    for p in parts:
        if p in shapes:
            _, n = shapes[p]
            widths.append(n)
    if len(widths) != len(parts) or w.shape[1] != sum(widths):
        raise ConfigError(f"a fused {op} of {sum(widths)} output features "
                          f"({' + '.join(map(str, widths))}) for this model", file=label, key=name,
                          got=f"[K, N] = {list(w.shape)}")
    cuts = np.cumsum([0] + widths)
    return {p: w[:, cuts[i]:cuts[i + 1]] for i, p in enumerate(parts)}


def profile_from_weights(path: Any, model_config: Any, *, name: str | None = None,
                         k_sigma: float = 3.0, micro: int = 8, macro: int = 128,
                         rowtile_widths: Sequence[int] = DEFAULT_WIDTHS,
                         layout: str = "out_in", prefix: str = "",
                         include_lm_head: bool = True, sample_rows: int | None = None,
                         chunk_rows: int = 512, description: str = "") -> OutlierProfile:
    """The outlier profile of a model's real weights.

    Args:
        path: a ``.npz`` or ``.safetensors`` file, a folder of them (all are read, e.g. the
            shards of an HF checkpoint), or a list of files. Names: see the module docstring.
        model_config: the model (``ModelConfig`` or shipped name) whose shapes the weights
            must have; every block op of every layer must be present.
        layout: ``"out_in"`` (default: HF/PyTorch ``nn.Linear`` ``[out, in]``, transposed to
            Strata's ``[K=in, N=out]``) or ``"in_out"`` (already ``[K, N]``).
        prefix: only tensors whose name starts with it (one tower of a VLM checkpoint).
        include_lm_head: measure ``lm_head`` when the file has it.
        sample_rows: measure only this many input rows per op, evenly spaced (None: all).
    """
    model = _model(model_config)
    if layout not in ("out_in", "in_out"):
        raise ConfigError("'out_in' (HF [out, in], transposed) or 'in_out' (already [K, N])",
                          key="layout", got=short_repr(layout))
    widths = tuple(int(x) for x in rowtile_widths)
    check_grouping(micro, macro, widths, k_sigma)
    shapes = op_shapes(model, include_lm_head=True)
    files = weight_files(path)
    sources = [WeightsFile(f) for f in files]

    # (layer, op) -> (source, tensor name); fused tensors keep their fused op name.
    found: dict[tuple[int, str], tuple[WeightsFile, str]] = {}
    for src in sources:
        for tname in src.names:
            if prefix and not tname.startswith(prefix):
                continue
            key = canonical_op(tname)
            if key is None:
                continue
            if key in found:
                _, other = found[key]
                raise ConfigError(
                    "one tensor per (layer, op); pass prefix= to pick one tower",
                    file=src.label, key=tname, got=f"also {other!r}",
                )
            found[key] = (src, tname)

    def measure(w: np.ndarray, label: str, tname: str, op: str) -> OpOutlierStats:
        want = shapes[op]
        if tuple(w.shape) != want:
            hint = None
            if tuple(w.shape[::-1]) == want:
                hint = "the transpose matches: check layout= ('out_in' for HF [out, in])"
            raise ConfigError(f"[K, N] = {list(want)} for {op} of {model.name} "
                              f"(layout {layout!r})", file=label, key=tname,
                              got=f"{list(w.shape)}", hint=hint)
        rows = w
        if sample_rows is not None and sample_rows < w.shape[0]:
            idx = np.unique(np.linspace(0, w.shape[0] - 1, int(sample_rows)).round().astype(int))
            rows = w[idx]
        return measure_matrix(rows, k_sigma=k_sigma, micro=micro, macro=macro,
                              rowtile_widths=widths, shape=want, chunk_rows=chunk_rows)

    layers: dict[int, dict[str, OpOutlierStats]] = {}
    missing: list[str] = []
    for layer in range(model.num_layers):
        layers[layer] = {}
        for op in ALL_BLOCK_OPS:
            if op not in shapes:
                continue
            fused = "qkv_proj" if op in ("q_proj", "k_proj", "v_proj") else (
                "gate_up_proj" if op in ("gate_proj", "up_proj") else None)
            if (layer, op) in found:
                src, tname = found[(layer, op)]
                w = _orient(src.get(tname), layout, src.label, tname)
                layers[layer][op] = measure(w, src.label, tname, op)
            elif fused is not None and (layer, fused) in found:
                if op in layers[layer]:
                    continue
                src, tname = found[(layer, fused)]
                w = _orient(src.get(tname), layout, src.label, tname)
                for part, sub in _split_fused(fused, w, shapes, src.label, tname).items():
                    layers[layer][part] = measure(sub, src.label, tname, part)
            else:
                missing.append(f"layers.{layer}.{op}")
    if missing:
        raise ConfigError(
            f"every linear op of the {model.num_layers} layers of {model.name} in the weights",
            file=", ".join(s.label for s in sources), key=missing[0],
            got=f"{len(missing)} missing (first: {', '.join(missing[:4])})",
        )
    lm_head = None
    if include_lm_head and (-1, "lm_head") in found:
        src, tname = found[(-1, "lm_head")]
        lm_head = measure(_orient(src.get(tname), layout, src.label, tname), src.label, tname,
                          "lm_head")

    file_digests = [{"name": f.name, "sha256": sha256_file(f)} for f in files]
    source = "weights: " + ", ".join(f"{w['name']} (sha256 {w['sha256'][:16]}...)"
                                     for w in file_digests)
    sampling = "all input rows of every op" if sample_rows is None else (
        f"{sample_rows} input rows per op, evenly spaced, all output columns")
    orientation = ("W[K=in, N=out]; the file's [out, in] (HF nn.Linear) arrays were transposed"
                   if layout == "out_in" else "W[K=in, N=out]; the file's arrays were already [in, out]")
    return assemble_profile(model, name, description, k_sigma, micro, macro, widths, {
            "source": source,
            "generator": "sim.io.profiles.profile_from_weights",
            "files": file_digests,
            "orientation": orientation,
            "sampling": sampling,
            "notes": f"prefix={prefix!r}" if prefix else "",
        }, {i: dict(ops) for i, ops in layers.items()}, lm_head)


# ============================================================================================
# Writing profiles
# ============================================================================================


def _header(profile: OutlierProfile) -> str:
    s = profile.summary()
    prov = profile.provenance
    lines = [
        f"Outlier profile {profile.name} (model shapes: workloads/{profile.model}.yaml).",
        "Format and definitions: sim/config/outliers.py. Orientation: W[K=in, N=out]; "
        f"uB = {profile.micro} and",
        f"MaB = {profile.macro} consecutive output channels of one input row; "
        f"outlier = |w - mean| > {profile.k_sigma:g} sd of its MaB.",
        f"Source: {prov.source}",
    ]
    if profile.description:
        lines.append(f"Description: {profile.description}")
    if prov.notes:
        lines.append(f"Notes: {prov.notes}")
    if prov.generator:
        lines.append(f"Generator: {prov.generator}" + (f", seed {prov.seed}" if prov.seed is not None else ""))
    if prov.regenerate:
        lines.append(f"Regenerate: {prov.regenerate}")
    lines.append("Model averages (weighted by weight count) / maxima over ops:")
    lines.append(
        f"  frac_ub_with_outliers {s['frac_ub_with_outliers']:.4f}, "
        f"frac_weights_outliers {s['frac_weights_outliers']:.4f} (max {s['max_frac_weights_outliers']:.4f}),"
    )
    lines.append(
        f"  adjacency {s['adjacency']:.4f} of outliers = {s['frac_weights_adjacent']:.5f} of weights "
        f"(max {s['max_frac_weights_adjacent']:.5f}),"
    )
    tiles = ", ".join(f"width {w}: {s[f'frac_rowtile_with_outliers_{w}']:.4f}"
                      for w in profile.rowtile_widths)
    lines.append(f"  frac_rowtile_with_outliers {tiles}")
    for bb, ebw_o in ((2, 6.0), (4, 8.0)):
        x = s["frac_ub_with_outliers"]
        lines.append(f"  EBW at bb={bb} (paper Eq. 4, EBW_O = {ebw_o:g}): {x * ebw_o + (1 - x) * bb:.3f} bits")
    lines.append("Each op: shape [K, N], fractions as defined in sim/config/outliers.py; "
                 "outliers_per_ub maps a count to the fraction of outlier uBs holding it.")
    return "\n".join(lines)


def render_profile(profile: OutlierProfile) -> str:
    """The text :func:`write_profile` writes: a provenance/summary comment header, then the
    profile as YAML. A function of the profile alone (no dates, no paths)."""
    return profile_to_yaml(profile, header=_header(profile))


def write_profile(profile: OutlierProfile, path: str | os.PathLike) -> Path:
    """Write ``profile`` as YAML with a provenance/summary header; returns the path.

    The bytes depend only on the profile, so a regenerated profile compares equal as a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_profile(profile), encoding="utf-8")
    return p


def regenerate_shipped(names: str | Iterable[str] | None = None,
                       folder: str | os.PathLike | None = None) -> list[Path]:
    """Write the shipped profiles (all, or ``names``) to ``folder`` (default
    ``workloads/outliers``); returns the paths written."""
    if names is None:
        names = shipped_recipes()
    elif isinstance(names, str):
        names = [names]
    out = Path(folder) if folder is not None else outliers_dir()
    return [write_profile(shipped_profile(n), out / f"{n}.yaml") for n in names]



# ============================================================================================
# What a result says about its profile
# ============================================================================================


def profile_info(profile: OutlierProfile | None, generated_for_run: bool) -> dict | None:
    """The ``outlier_profile`` entry of a result's summary: the profile's name, whether it was
    generated for this run (the model names none: ``recipe`` says from what), whether it is
    synthetic (its provenance has generator params) with the generator and seed, the file it
    was read from otherwise, and its model-average fraction of micro-blocks with outliers."""
    if profile is None:
        return None
    prov = profile.provenance
    info = {"name": profile.name, "generated_for_this_run": bool(generated_for_run),
            "synthetic": prov.params is not None, "generator": prov.generator,
            "seed": prov.seed, "frac_ub_with_outliers": profile.mean("frac_ub_with_outliers")}
    if generated_for_run:
        info["recipe"] = f"workloads/outliers/recipes/{DEFAULT_RECIPE}.yaml"
    else:
        info["file"] = _shown_path(profile.origin)
    return info


def _shown_path(origin: str | None) -> str | None:
    """A file inside the repo relative to it (the same on every machine), others as given."""
    if origin is None:
        return None
    try:
        return Path(origin).resolve().relative_to(repo_root()).as_posix()
    except ValueError:
        return origin
