"""Measuring and generating per-layer outlier profiles (MicroScopiQ's outlier statistics).

Three ways to a :class:`~sim.config.outliers.OutlierProfile`:

* :func:`measure_matrix` — the statistics of one weight matrix ``W[K, N]`` (Strata orientation:
  K = input features, N = output features), grouped as the issue-3 conventions say: for each
  input row k, macro-blocks of ``macro`` (128) and micro-blocks of ``micro`` (8) consecutive
  output channels; an outlier is a weight with ``|w - mean| > k_sigma * sd`` of its macro-block
  (population sd). Definitions of every statistic are in :mod:`sim.config.outliers`.
* :func:`profile_from_weights` — every linear op of a model, read from a ``.npz`` or
  ``.safetensors`` file (or a folder / list of them). HF stores ``nn.Linear`` weights as
  ``[out, in]``; they are transposed to ``[K=in, N=out]`` before measuring (``layout="out_in"``,
  the default; pass ``layout="in_out"`` for arrays already in Strata's orientation). The
  safetensors reader is self-contained (numpy only): F32, F16 and BF16 (and F64).
* :func:`synthetic_profile` — a seeded generator of heavy-tailed weights, calibrated to the
  published statistics (see ``SHIPPED_PROFILES`` and ``docs`` below), measured like real ones.

Array names (npz or safetensors). A tensor belongs to ``(layer, op)`` when its name ends with
``layers.<i>.<...>.<op>[.weight]``, so ``layers.3.q_proj`` (the short form for npz files),
``model.layers.3.self_attn.q_proj.weight`` (LLaMA/Mistral/Qwen) and
``model.decoder.layers.3.self_attn.out_proj.weight`` (OPT) all work. Aliases: ``out_proj`` ->
``o_proj``, ``fc1`` -> ``up_proj``, ``fc2`` -> ``down_proj``; fused ``qkv_proj`` and
``gate_up_proj`` (Phi-3) are split along the output dimension using the model's shapes.
``lm_head[.weight]`` is measured when present. A checkpoint holding two towers (a VLM) takes
``prefix=`` to pick one (``prefix="llm."``). Biases and norms are ignored.

Synthetic weights (one op). Measuring at full size would be slow (32 layers x 7 ops of up to
4096 x 11008), and the statistics are intensive (fractions), so each op is generated and
measured on a ``sample_rows x sample_cols`` slice (default 128 x 1024: 8 macro-blocks per
row, 16384 micro-blocks and 1024 row tiles of 128 per op); ``shape`` in the profile still holds the full ``[K, N]``. A
weight is a Gaussian body value (sd 1) unless a spike run covers it:

* a run starts at ``(k, n)`` with probability ``base_rate * op_rate[op] * f_layer * f_row[k] *
  f_col[n]`` (capped at 0.5), where ``f_layer`` is ``edge_boost`` on the first ``edge_first`` and
  last ``edge_last`` layers times a lognormal jitter per (layer, op) of sd ``layer_sigma``, and
  ``f_row`` / ``f_col`` are lognormal factors (mean 1) per input / output channel of sd
  ``row_sigma`` / ``col_sigma`` — LLM outliers cluster in input channels, which concentrates
  them on fewer PE rows (lower ``frac_rowtile_with_outliers`` for the same uB fraction);
* the run covers ``1 + G`` consecutive output channels, ``G`` geometric with continuation
  probability ``run_continue``, at most ``max_run`` long: this sets the adjacency;
* each covered weight is ``+-(spike_min + Exp(spike_scale))``.

Whether a spike counts as an outlier is decided by measuring, as for real weights (a macro-block
with many spikes has a larger sd, which hides some of them), so calibration is done by
measurement: :func:`calibrate_base_rate` bisects ``base_rate`` until the model-average
``frac_ub_with_outliers`` meets ``target_frac_ub``.

Randomness: every op draws from ``numpy.random.default_rng([seed, layer + 1, op index])`` and the
per-(layer, op) jitter from ``default_rng([seed, 0, 0])``, so a profile is a function of
(model shapes, params, seed, grouping) alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from sim.config.errors import ConfigError, did_you_mean, short_repr
from sim.config.loader import load_model
from sim.config.outliers import (
    BLOCK_OPS,
    PROFILE_OPS,
    OpOutlierStats,
    OutlierProfile,
    SyntheticParams,
    outliers_dir,
    profile_to_yaml,
)
from sim.config.schema import ModelConfig

__all__ = [
    "outlier_mask",
    "OutlierCounts",
    "count_outliers",
    "measure_matrix",
    "op_shapes",
    "SafetensorsFile",
    "read_safetensors",
    "write_safetensors",
    "profile_from_weights",
    "synthetic_matrix",
    "synthetic_profile",
    "calibrate_base_rate",
    "write_profile",
    "render_profile",
    "canonical_op",
    "ShippedProfile",
    "SHIPPED_PROFILES",
    "shipped_profile",
    "regenerate_shipped",
]

SIG_DIGITS = 6  # significant digits kept for stored fractions
DEFAULT_WIDTHS = (64, 128)


# ============================================================================================
# Measuring one matrix
# ============================================================================================


def _starts(n: int, size: int) -> np.ndarray:
    return np.arange(0, n, size)


def outlier_mask(w: np.ndarray, k_sigma: float = 3.0, macro: int = 128) -> np.ndarray:
    """Boolean mask of the k-sigma outliers of ``w[K, N]``: per row, per macro-block of
    ``macro`` consecutive columns (a shorter last block when N is not a multiple),
    ``|w - mean| > k_sigma * sd`` with the block's population sd (ddof = 0), and ``w != 0``
    (a zero cannot carry the hidden bit) -- the candidate rule of :mod:`sim.numerics.mx`.
    A constant block has none."""
    x = np.asarray(w, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"outlier_mask needs a 2-D matrix, got shape {x.shape}")
    rows, n = x.shape
    if n == 0 or rows == 0:
        return np.zeros(x.shape, dtype=bool)
    if n % macro == 0:
        blocks = x.reshape(rows, n // macro, macro)
        dev = blocks - blocks.mean(axis=-1, keepdims=True)
        sd = np.sqrt(np.mean(dev * dev, axis=-1, keepdims=True))
        return ((np.abs(dev) > k_sigma * sd) & (blocks != 0)).reshape(rows, n)
    starts = _starts(n, macro)
    sizes = np.diff(np.append(starts, n))
    mean = np.add.reduceat(x, starts, axis=1) / sizes
    dev = x - np.repeat(mean, sizes, axis=1)
    sd = np.sqrt(np.add.reduceat(dev * dev, starts, axis=1) / sizes)
    return (np.abs(dev) > k_sigma * np.repeat(sd, sizes, axis=1)) & (x != 0)


def _segment_sum(a: np.ndarray, size: int) -> np.ndarray:
    """Sums over consecutive column segments of ``size`` (a shorter last one)."""
    rows, n = a.shape
    if n % size == 0:
        return a.reshape(rows, n // size, size).sum(axis=-1)
    return np.add.reduceat(a.astype(np.int32), _starts(n, size), axis=1)


@dataclass
class OutlierCounts:
    """Integer counts behind the statistics; counts of row chunks add up exactly."""

    micro: int
    widths: tuple[int, ...]
    weights: int = 0
    outliers: int = 0
    ubs: int = 0
    ubs_with: int = 0
    per_ub: np.ndarray = None  # type: ignore[assignment]  # [cap + 1]: uBs by capped count
    over_cap: int = 0
    candidates: int = 0  # k-sigma candidates before the micro/2 cap
    adjacent: int = 0  # candidates with a candidate neighbour in their uB
    tiles: dict[int, list[int]] = field(default_factory=dict)  # width -> [with, total]

    def __post_init__(self) -> None:
        if self.per_ub is None:
            self.per_ub = np.zeros(self.micro // 2 + 1, dtype=np.int64)
        for w in self.widths:
            self.tiles.setdefault(w, [0, 0])

    def add(self, other: "OutlierCounts") -> None:
        self.weights += other.weights
        self.outliers += other.outliers
        self.ubs += other.ubs
        self.ubs_with += other.ubs_with
        self.per_ub += other.per_ub
        self.over_cap += other.over_cap
        self.candidates += other.candidates
        self.adjacent += other.adjacent
        for w in self.widths:
            self.tiles[w][0] += other.tiles[w][0]
            self.tiles[w][1] += other.tiles[w][1]


def _check_grouping(micro: int, macro: int, widths: Sequence[int], k_sigma: float) -> None:
    if not (isinstance(micro, int) and micro >= 2):
        raise ConfigError("an integer >= 2", key="micro", got=short_repr(micro))
    if not (isinstance(macro, int) and macro > 0 and macro % micro == 0):
        raise ConfigError(f"a positive multiple of micro ({micro})", key="macro", got=short_repr(macro))
    for w in widths:
        if not (isinstance(w, int) and w > 0 and w % micro == 0):
            raise ConfigError(f"row-tile widths that are positive multiples of micro ({micro})",
                              key="rowtile_widths", got=short_repr(list(widths)))
    if not (isinstance(k_sigma, (int, float)) and math.isfinite(k_sigma) and k_sigma > 0):
        raise ConfigError("a number > 0", key="k_sigma", got=short_repr(k_sigma))


def count_outliers(w: np.ndarray, *, k_sigma: float = 3.0, micro: int = 8, macro: int = 128,
                   rowtile_widths: Sequence[int] = DEFAULT_WIDTHS) -> OutlierCounts:
    """Counts of outliers, micro-blocks, adjacency and row tiles of ``w[K, N]``."""
    widths = tuple(int(x) for x in rowtile_widths)
    _check_grouping(micro, macro, widths, k_sigma)
    mask = outlier_mask(w, k_sigma, macro)
    rows, n = mask.shape
    c = OutlierCounts(micro=micro, widths=widths)
    if mask.size == 0:
        return c
    cap = micro // 2
    per_ub = _segment_sum(mask.view(np.int8), micro)  # k-sigma candidates per uB
    kept = np.minimum(per_ub, cap)
    c.weights = int(mask.size)
    c.outliers = int(kept.sum())
    c.ubs = int(per_ub.size)
    c.ubs_with = int(np.count_nonzero(per_ub))
    c.per_ub = np.bincount(kept.ravel(), minlength=cap + 1).astype(np.int64)
    c.over_cap = int(np.count_nonzero(per_ub > cap))
    # Adjacent: a candidate whose left or right neighbour in the same uB is also one.
    if n > 1:
        cols = np.arange(n - 1)
        same_ub = (cols // micro) == ((cols + 1) // micro)
        pair = mask[:, :-1] & mask[:, 1:] & same_ub
        has_nb = np.zeros_like(mask)
        has_nb[:, :-1] |= pair
        has_nb[:, 1:] |= pair
        c.adjacent = int(np.count_nonzero(has_nb))
    c.candidates = int(np.count_nonzero(mask))
    ub_with = (per_ub > 0).view(np.int8)
    for wd in widths:
        tiles = _segment_sum(ub_with, wd // micro)
        c.tiles[wd] = [int(np.count_nonzero(tiles)), int(tiles.size)]
    return c


def _round(x: float) -> float:
    return float(f"{x:.{SIG_DIGITS}g}")


def _stats_from_counts(c: OutlierCounts, shape: Sequence[int]) -> OpOutlierStats:
    def frac(a: int, b: int) -> float:
        return _round(a / b) if b else 0.0

    cap = c.micro // 2
    if c.ubs_with:
        dist = {i: frac(int(c.per_ub[i]), c.ubs_with) for i in range(1, cap + 1)}
    else:
        dist = {i: 0.0 for i in range(1, cap + 1)}
    return OpOutlierStats(
        shape=[int(shape[0]), int(shape[1])],
        frac_ub_with_outliers=frac(c.ubs_with, c.ubs),
        outliers_per_ub=dist,
        frac_ub_over_cap=frac(c.over_cap, c.ubs),
        frac_weights_outliers=frac(c.outliers, c.weights),
        adjacency=frac(c.adjacent, c.candidates),
        frac_rowtile_with_outliers={wd: frac(*c.tiles[wd]) for wd in c.widths},
    )


def _row_chunks(w: np.ndarray, chunk_rows: int) -> Iterator[np.ndarray]:
    for r0 in range(0, w.shape[0], chunk_rows):
        yield w[r0:r0 + chunk_rows]


def measure_matrix(w: np.ndarray, *, k_sigma: float = 3.0, micro: int = 8, macro: int = 128,
                   rowtile_widths: Sequence[int] = DEFAULT_WIDTHS,
                   shape: Sequence[int] | None = None, chunk_rows: int = 512) -> OpOutlierStats:
    """Outlier statistics of ``w[K, N]`` (Strata orientation; transpose HF ``[out, in]``).

    Rows are processed ``chunk_rows`` at a time (the statistics are sums over rows, so this
    is exact). ``shape`` records the full weight's shape when ``w`` is a slice of it.
    """
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ConfigError("a non-empty 2-D weight matrix [K, N]", key="weights",
                          got=f"an array of shape {tuple(w.shape)}")
    total = OutlierCounts(micro=micro, widths=tuple(int(x) for x in rowtile_widths))
    for part in _row_chunks(w, max(1, int(chunk_rows))):
        total.add(count_outliers(part, k_sigma=k_sigma, micro=micro, macro=macro,
                                 rowtile_widths=rowtile_widths))
    return _stats_from_counts(total, shape if shape is not None else w.shape)


# ============================================================================================
# Model shapes
# ============================================================================================


def op_shapes(model: ModelConfig, include_lm_head: bool = False) -> dict[str, tuple[int, int]]:
    """``[K, N]`` of each linear op of one block (and the lm_head), Strata orientation."""
    hd = model.head_dim or model.hidden_size // model.num_heads
    h, inter = model.hidden_size, model.intermediate_size
    shapes = {
        "q_proj": (h, model.num_heads * hd),
        "k_proj": (h, model.num_kv_heads * hd),
        "v_proj": (h, model.num_kv_heads * hd),
        "o_proj": (model.num_heads * hd, h),
    }
    if model.ffn == "gated":
        shapes["gate_proj"] = (h, inter)
    shapes["up_proj"] = (h, inter)
    shapes["down_proj"] = (inter, h)
    if include_lm_head:
        shapes["lm_head"] = (h, model.vocab_size)
    return shapes


def _model(model_config: Any) -> ModelConfig:
    return model_config if isinstance(model_config, ModelConfig) else load_model(model_config)


# ============================================================================================
# Safetensors (numpy only)
# ============================================================================================

# dtype tag -> (numpy storage dtype, bytes per element)
_ST_DTYPES = {"F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2)}
_MAX_HEADER = 100 * 1024 * 1024


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16
    out = rounded.astype(np.uint16)
    out[np.isnan(x)] = 0x7FC0
    return out


class SafetensorsFile:
    """A ``.safetensors`` file: 8-byte little-endian header length, a JSON header mapping each
    tensor name to ``{dtype, shape, data_offsets: [begin, end]}`` (offsets relative to the
    byte buffer after the header; an optional ``__metadata__`` entry), then the raw data.

    Tensors are read one at a time, converted to float32 (float64 stays float64)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.label = str(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise self._bad("a safetensors file (8-byte header length first)",
                                    got=f"{len(head)} bytes")
                n = int.from_bytes(head, "little")
                if n > min(_MAX_HEADER, size - 8):
                    raise self._bad("a header length within the file",
                                    got=f"{n} bytes in a {size}-byte file")
                raw = fh.read(n)
        except OSError as exc:
            raise ConfigError("a readable safetensors file", file=self.label,
                              got=exc.strerror or str(exc)) from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._bad("a JSON header", got=str(exc)[:80]) from None
        if not isinstance(header, dict):
            raise self._bad("a JSON object as header", got=type(header).__name__)
        self.metadata = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        data_len = size - self._data_start
        self._entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, entry in header.items():
            self._entries[name] = self._check_entry(name, entry, data_len)

    def _bad(self, expected: str, key: str | None = None, got: str | None = None) -> ConfigError:
        return ConfigError(expected, file=self.label, key=key, got=got)

    def _check_entry(self, name: str, entry: Any, data_len: int) -> tuple:
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise self._bad("{dtype, shape, data_offsets}", key=name, got=short_repr(entry))
        dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise self._bad("a float dtype (" + ", ".join(_ST_DTYPES) + ")", key=f"{name}.dtype",
                            got=short_repr(dtype))
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise self._bad("a list of non-negative integers", key=f"{name}.shape",
                            got=short_repr(shape))
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1] <= data_len):
            raise self._bad(f"[begin, end] within the {data_len}-byte data buffer",
                            key=f"{name}.data_offsets", got=short_repr(offs))
        nbytes = int(np.prod(shape, dtype=np.int64)) * _ST_DTYPES[dtype][1]
        if offs[1] - offs[0] != nbytes:
            raise self._bad(f"{nbytes} bytes for shape {shape} of {dtype}",
                            key=f"{name}.data_offsets", got=f"{offs[1] - offs[0]} bytes")
        return dtype, tuple(shape), offs[0], offs[1]

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> str:
        return self._entries[name][0]

    def get(self, name: str) -> np.ndarray:
        if name not in self._entries:
            raise ConfigError("a tensor stored in the file", file=self.label, key=name,
                              got="no such tensor", hint=did_you_mean(name, self._entries))
        dtype, shape, begin, end = self._entries[name]
        storage, itemsize = _ST_DTYPES[dtype]
        count = (end - begin) // itemsize
        with open(self.path, "rb") as fh:
            fh.seek(self._data_start + begin)
            arr = np.frombuffer(fh.read(end - begin), dtype=storage, count=count)
        if dtype == "BF16":
            arr = _bf16_to_f32(arr)
        elif dtype == "F16":
            arr = arr.astype(np.float32)
        else:
            arr = arr.astype(np.dtype(storage).newbyteorder("="), copy=True)
        return arr.reshape(shape)


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, as float32 (float64 for F64) numpy arrays."""
    f = SafetensorsFile(path)
    return {name: f.get(name) for name in f.keys()}


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      dtype: str = "F32", metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` as a safetensors file of one float ``dtype`` (F32, F16, BF16, F64).
    BF16 rounds to nearest even. Returns the path."""
    if dtype not in _ST_DTYPES:
        raise ConfigError("a float dtype (" + ", ".join(_ST_DTYPES) + ")", key="dtype",
                          got=short_repr(dtype))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, value in tensors.items():
        a = np.asarray(value)
        if dtype == "BF16":
            blob = _f32_to_bf16(a).astype("<u2").tobytes()
        else:
            blob = np.ascontiguousarray(a, dtype=_ST_DTYPES[dtype][0]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # align the data buffer to 8 bytes
    p = Path(path)
    with open(p, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for blob in blobs:
            fh.write(blob)
    return p


# ============================================================================================
# Profiles from real weights
# ============================================================================================

_OP_ALIASES = {"out_proj": "o_proj", "fc1": "up_proj", "fc2": "down_proj"}
_FUSED = ("qkv_proj", "gate_up_proj")
_BLOCK_RE = re.compile(
    r"(?:^|\.)layers\.(\d+)\.(?:[A-Za-z0-9_]+\.)*?"
    r"(q_proj|k_proj|v_proj|o_proj|out_proj|gate_proj|up_proj|down_proj|fc1|fc2|qkv_proj|gate_up_proj)"
    r"(?:\.weight)?$"
)
_HEAD_RE = re.compile(r"(?:^|\.)lm_head(?:\.weight)?$")


def canonical_op(name: str) -> tuple[int, str] | None:
    """``(layer, op)`` a tensor name stands for (layer -1 for lm_head), or None."""
    m = _BLOCK_RE.search(name)
    if m:
        op = m.group(2)
        return int(m.group(1)), _OP_ALIASES.get(op, op)
    if _HEAD_RE.search(name):
        return -1, "lm_head"
    return None


class _Source:
    """Tensors of one weights file (npz or safetensors), read lazily."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)
        if path.suffix == ".npz":
            try:
                self._npz = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ConfigError("a readable .npz file", file=self.label, got=str(exc)[:80]) from None
            self.names = list(self._npz.files)
            self._st = None
        elif path.suffix == ".safetensors":
            self._st = SafetensorsFile(path)
            self._npz = None
            self.names = self._st.keys()
        else:
            raise ConfigError("a .npz or .safetensors weights file", file=self.label,
                              got=short_repr(path.suffix or path.name))

    def get(self, name: str) -> np.ndarray:
        if self._st is not None:
            return self._st.get(name)
        arr = self._npz[name]
        if not np.issubdtype(arr.dtype, np.floating):
            raise ConfigError("a floating-point array", file=self.label, key=name,
                              got=str(arr.dtype))
        return arr


def _weight_files(path: Any) -> list[Path]:
    if isinstance(path, (list, tuple)):
        files = [Path(p) for p in path]
    else:
        p = Path(os.fspath(path)).expanduser()
        if p.is_dir():
            files = sorted(x for x in p.iterdir() if x.suffix in (".npz", ".safetensors"))
            if not files:
                raise ConfigError("a folder holding .npz or .safetensors files", file=str(p),
                                  got="none found")
        else:
            files = [p]
    for f in files:
        if not f.is_file():
            raise ConfigError("an existing weights file", file=str(f), got="no such file")
    return files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _orient(arr: np.ndarray, layout: str, label: str, name: str) -> np.ndarray:
    if arr.ndim != 2:
        raise ConfigError("a 2-D weight matrix", file=label, key=name,
                          got=f"shape {tuple(arr.shape)}")
    return arr.T if layout == "out_in" else arr


def _split_fused(op: str, w: np.ndarray, shapes: dict[str, tuple[int, int]], label: str,
                 name: str) -> dict[str, np.ndarray]:
    parts = ("q_proj", "k_proj", "v_proj") if op == "qkv_proj" else ("gate_proj", "up_proj")
    widths = [shapes[p][1] for p in parts if p in shapes]
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
    _check_grouping(micro, macro, widths, k_sigma)
    shapes = op_shapes(model, include_lm_head=True)
    files = _weight_files(path)
    sources = [_Source(f) for f in files]

    # (layer, op) -> (source, tensor name); fused tensors keep their fused op name.
    found: dict[tuple[int, str], tuple[_Source, str]] = {}
    for src in sources:
        for tname in src.names:
            if prefix and not tname.startswith(prefix):
                continue
            key = canonical_op(tname)
            if key is None:
                continue
            if key in found:
                other = found[key][1]
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
        for op in BLOCK_OPS:
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

    weight_files = [{"name": f.name, "sha256": _sha256(f)} for f in files]
    source = "weights: " + ", ".join(f"{w['name']} (sha256 {w['sha256'][:16]}...)"
                                     for w in weight_files)
    sampling = "all input rows of every op" if sample_rows is None else (
        f"{sample_rows} input rows per op, evenly spaced, all output columns")
    orientation = ("W[K=in, N=out]; the file's [out, in] (HF nn.Linear) arrays were transposed"
                   if layout == "out_in" else "W[K=in, N=out]; the file's arrays were already [in, out]")
    return _profile(model, name, description, k_sigma, micro, macro, widths, {
            "source": source,
            "generator": "sim.numerics.outlier_stats.profile_from_weights",
            "files": weight_files,
            "orientation": orientation,
            "sampling": sampling,
            "notes": f"prefix={prefix!r}" if prefix else "",
        }, {i: dict(ops) for i, ops in layers.items()}, lm_head)


def _profile(model, name, description, k_sigma, micro, macro, widths, provenance, layers,
             lm_head) -> OutlierProfile:
    """The validated profile, whichever way its statistics were obtained."""
    return OutlierProfile.model_validate({
        "name": name or model.name,
        "model": model.name,
        "description": description,
        "k_sigma": float(k_sigma),
        "micro": micro,
        "macro": macro,
        "rowtile_widths": list(widths),
        "num_layers": model.num_layers,
        "provenance": provenance,
        "layers": layers,
        "lm_head": lm_head,
    })


# ============================================================================================
# Synthetic weights
# ============================================================================================


def _lognormal_factor(rng: np.random.Generator, sigma: float, size: Any) -> np.ndarray:
    """exp(sigma * z - sigma^2 / 2): lognormal factors with mean 1."""
    if sigma == 0:
        return np.ones(size)
    return np.exp(sigma * rng.standard_normal(size) - 0.5 * sigma * sigma)


def synthetic_matrix(rows: int, cols: int, rate: float, params: SyntheticParams,
                     rng: np.random.Generator) -> np.ndarray:
    """A ``rows x cols`` float32 slice of synthetic weights (see the module docstring).

    Only two draws are dense (the Gaussian body and the run starts); run lengths, signs and
    magnitudes are drawn for the sparse spike positions only, in row-major order."""
    body = rng.standard_normal((rows, cols), dtype=np.float32)
    f_row = _lognormal_factor(rng, params.row_sigma, rows).astype(np.float32)
    f_col = _lognormal_factor(rng, params.col_sigma, cols).astype(np.float32)
    p = np.minimum(np.float32(rate) * f_row[:, None] * f_col[None, :], np.float32(0.5))
    start_r, start_c = np.nonzero(rng.random((rows, cols), dtype=np.float32) < p)
    covered = np.zeros((rows, cols), dtype=bool)
    covered[start_r, start_c] = True
    if params.run_continue > 0 and params.max_run > 1 and start_r.size:
        # Run length 1 + G, G geometric (P(G >= j) = run_continue ** j), at most max_run.
        u = rng.random(start_r.size)
        extra = np.floor(np.log(np.maximum(u, 1e-300)) / math.log(params.run_continue))
        for j in range(1, params.max_run):
            sel = extra >= j
            r, c = start_r[sel], start_c[sel] + j
            inside = c < cols
            covered[r[inside], c[inside]] = True
    idx = np.flatnonzero(covered)
    magnitude = params.spike_min + (rng.exponential(params.spike_scale, idx.size)
                                    if params.spike_scale > 0 else np.zeros(idx.size))
    sign = np.where(rng.random(idx.size) < 0.5, -1.0, 1.0)
    body.ravel()[idx] = (sign * magnitude).astype(np.float32)
    return body


def _params(family_params: Any) -> SyntheticParams:
    if isinstance(family_params, SyntheticParams):
        return family_params
    if isinstance(family_params, str):
        if family_params in SHIPPED_PROFILES:
            return SHIPPED_PROFILES[family_params].params
        raise ConfigError("a shipped profile name (" + ", ".join(SHIPPED_PROFILES) + ") or "
                          "SyntheticParams", key="family_params", got=short_repr(family_params),
                          hint=did_you_mean(family_params, SHIPPED_PROFILES))
    if isinstance(family_params, Mapping):
        from sim.config.loader import load_validated

        return load_validated(dict(family_params), SyntheticParams, source="<family_params>")
    raise ConfigError("SyntheticParams, a mapping or a shipped profile name",
                      key="family_params", got=short_repr(family_params))


def _op_rates(model: ModelConfig, params: SyntheticParams, seed: int,
              ops: Sequence[str]) -> dict[tuple[int, str], float]:
    """Spike-start rate of every (layer, op) before the row/column factors."""
    jitter = _lognormal_factor(np.random.default_rng([seed, 0, 0]), params.layer_sigma,
                               (model.num_layers + 1, len(PROFILE_OPS)))
    rates = {}
    last = model.num_layers
    for layer in list(range(model.num_layers)) + [-1]:
        edge = layer >= 0 and (layer < params.edge_first or layer >= last - params.edge_last)
        row = jitter[layer if layer >= 0 else last]
        for op in ops:
            if layer == -1 and op != "lm_head" or layer >= 0 and op == "lm_head":
                continue
            factor = params.op_factor(op) * (params.edge_boost if edge else 1.0)
            rates[(layer, op)] = params.base_rate * factor * float(row[PROFILE_OPS.index(op)])
    return rates


def synthetic_profile(model_config: Any, family_params: Any, seed: int, *,
                      k_sigma: float = 3.0, micro: int = 8, macro: int = 128,
                      rowtile_widths: Sequence[int] = DEFAULT_WIDTHS,
                      include_lm_head: bool = False, name: str | None = None,
                      description: str = "", notes: str = "") -> OutlierProfile:
    """A profile measured on seeded synthetic weights shaped like ``model_config``.

    ``family_params``: :class:`SyntheticParams`, a mapping of them, or a shipped profile name
    (its params). Deterministic: same inputs, same profile (and same YAML bytes).
    """
    model = _model(model_config)
    params = _params(family_params)
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise ConfigError("a non-negative integer", key="seed", got=short_repr(seed))
    widths = tuple(int(x) for x in rowtile_widths)
    _check_grouping(micro, macro, widths, k_sigma)
    shapes = op_shapes(model, include_lm_head=include_lm_head)
    rates = _op_rates(model, params, seed, list(shapes))

    def one(layer: int, op: str) -> OpOutlierStats:
        k_full, n_full = shapes[op]
        rows, cols = min(params.sample_rows, k_full), min(params.sample_cols, n_full)
        rng = np.random.default_rng([seed, layer + 1, PROFILE_OPS.index(op)])
        w = synthetic_matrix(rows, cols, rates[(layer, op)], params, rng)
        return measure_matrix(w, k_sigma=k_sigma, micro=micro, macro=macro,
                              rowtile_widths=widths, shape=(k_full, n_full))

    layers = {i: {op: one(i, op) for op in shapes if op != "lm_head"}
              for i in range(model.num_layers)}
    lm_head = one(-1, "lm_head") if include_lm_head else None
    regenerate = (
        "python -c \"from sim.numerics.outlier_stats import regenerate_shipped; "
        f"regenerate_shipped('{name or model.name}')\""
        if (name or model.name) in SHIPPED_PROFILES else ""
    )
    return _profile(model, name, description, k_sigma, micro, macro, widths, {
            "source": ("synthetic, calibrated to published outlier statistics "
                       "(params.calibrated_to says which)"),
            "generator": "sim.numerics.outlier_stats.synthetic_profile",
            "seed": seed,
            "params": params,
            "orientation": "W[K=in, N=out]; uB/MaB run along N for a fixed input row k",
            "sampling": (f"each op generated and measured on a {params.sample_rows} x "
                         f"{params.sample_cols} slice (rows x cols, clipped to the op's [K, N]); "
                         "shape holds the full [K, N]"),
            "regenerate": regenerate,
            "notes": notes,
        }, layers, lm_head)


def calibrate_base_rate(model_config: Any, family_params: Any, seed: int, *,
                        target: float | None = None, k_sigma: float = 3.0, micro: int = 8,
                        macro: int = 128, tol: float = 5e-4, max_iter: int = 40,
                        digits: int = 4) -> SyntheticParams:
    """``family_params`` with ``base_rate`` set so that the model average (weighted by
    weights) of ``frac_ub_with_outliers`` of :func:`synthetic_profile` is ``target``
    (default ``target_frac_ub``) within ``tol``. Bisection on log(base_rate), measuring whole
    synthetic profiles with common random numbers (same seed), so the map is monotone up to
    the sd-inflation of crowded macro-blocks. The rate is rounded to ``digits`` significant
    digits, so that it reads well in the profile's provenance."""
    model = _model(model_config)
    params = _params(family_params)
    goal = params.target_frac_ub if target is None else float(target)

    def measured(rate: float) -> tuple[float, SyntheticParams]:
        trial = params.model_copy(update={"base_rate": float(f"{rate:.{digits}g}"),
                                          "target_frac_ub": goal})
        prof = synthetic_profile(model, trial, seed, k_sigma=k_sigma, micro=micro, macro=macro)
        return prof.mean("frac_ub_with_outliers"), trial

    lo, hi = math.log(1e-5), math.log(0.1)
    best = None
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        value, trial = measured(math.exp(mid))
        if best is None or abs(value - goal) < abs(best[0] - goal):
            best = (value, trial)
        if abs(value - goal) <= tol:
            break
        if value < goal:
            lo = mid
        else:
            hi = mid
    assert best is not None
    return best[1]


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


# ============================================================================================
# Shipped profiles
# ============================================================================================


@dataclass(frozen=True)
class ShippedProfile:
    model: str  # workloads/<model>.yaml (shapes)
    seed: int
    params: SyntheticParams
    description: str
    notes: str = ""


_CAL = ("MicroScopiQ (ISCA'25): frac_ub_with_outliers averaging 9% over the shipped models "
        "(EBW 2.36 at bb=2, Sec. 4.4), outliers <= ~5% of a layer's weights (Fig. 2a), adjacent "
        "outliers > 0.5% of weights for modern LLMs, < 0.04% for OPT/BERT, VLMs heavier; "
        "per-model split is Strata's assumption")

# Op factors shared by the LLaMA-class families: down_proj carries the heaviest outliers (it
# reads the FFN's activation outliers), v_proj the lightest.
_LLAMA_OPS = {"q_proj": 1.0, "k_proj": 1.0, "v_proj": 0.8, "o_proj": 1.0, "gate_proj": 0.9,
              "up_proj": 0.9, "down_proj": 1.6}


def _llama_like(target: float, base_rate: float, **over: Any) -> SyntheticParams:
    fields = dict(calibrated_to=_CAL, target_frac_ub=target, base_rate=base_rate,
                  run_continue=0.45, max_run=4, spike_min=3.5, spike_scale=2.0,
                  row_sigma=0.5, col_sigma=0.3, layer_sigma=0.3, edge_first=2, edge_last=1,
                  edge_boost=2.0, op_rate=dict(_LLAMA_OPS), sample_rows=128, sample_cols=1024)
    fields.update(over)
    return SyntheticParams(**fields)


SHIPPED_PROFILES: dict[str, ShippedProfile] = {
    "llama-2-7b": ShippedProfile(
        model="llama-2-7b", seed=20250701,
        params=_llama_like(0.09, 0.01197),
        description="LLaMA-2-7B, synthetic outlier profile (modern LLM: clustered, adjacent outliers).",
    ),
    "llama-2-13b": ShippedProfile(
        model="llama-2-13b", seed=20250702,
        params=_llama_like(0.085, 0.01114),
        description="LLaMA-2-13B, synthetic outlier profile (modern LLM: clustered, adjacent outliers).",
    ),
    "llama-3-8b": ShippedProfile(
        model="llama-3-8b", seed=20250703,
        params=_llama_like(0.105, 0.0154),
        description="LLaMA-3-8B, synthetic outlier profile (modern LLM, a little heavier than LLaMA-2).",
    ),
    "opt-6.7b": ShippedProfile(
        model="opt-6.7b", seed=20250704,
        params=SyntheticParams(
            calibrated_to=_CAL, target_frac_ub=0.04, base_rate=0.002839, run_continue=0.0,
            max_run=1, spike_min=3.5, spike_scale=1.5, row_sigma=0.5, col_sigma=0.2,
            layer_sigma=0.3, edge_first=1, edge_last=1, edge_boost=1.5,
            op_rate={"q_proj": 1.0, "k_proj": 1.0, "v_proj": 0.9, "o_proj": 1.0, "up_proj": 1.0,
                     "down_proj": 1.3},
            sample_rows=128, sample_cols=1024),
        description="OPT-6.7B, synthetic outlier profile (OPT/BERT class: few, isolated outliers).",
    ),
    "vila-7b": ShippedProfile(
        model="llama-2-7b", seed=20250705,
        params=_llama_like(0.13, 0.02548, layer_sigma=0.25, edge_boost=1.6),
        description="VILA-7B language tower, synthetic outlier profile (VLM: heavier than LLMs).",
        notes=("The VILA-7B language tower is LLaMA-2-7B-shaped, so this profile follows "
               "workloads/llama-2-7b.yaml (model: llama-2-7b); a VILA model file is the lead's to add."),
    ),
}


def shipped_profile(name: str) -> OutlierProfile:
    """Regenerate the shipped profile ``name`` (in memory) from its recorded recipe."""
    if name not in SHIPPED_PROFILES:
        raise ConfigError("a shipped profile name (" + ", ".join(SHIPPED_PROFILES) + ")",
                          key="name", got=short_repr(name), hint=did_you_mean(name, SHIPPED_PROFILES))
    spec = SHIPPED_PROFILES[name]
    return synthetic_profile(spec.model, spec.params, spec.seed, name=name,
                             description=spec.description, notes=spec.notes)


def regenerate_shipped(names: str | Iterable[str] | None = None,
                       folder: str | os.PathLike | None = None) -> list[Path]:
    """Write the shipped profiles (all, or ``names``) to ``folder`` (default
    ``workloads/outliers``); returns the paths written."""
    if names is None:
        names = list(SHIPPED_PROFILES)
    elif isinstance(names, str):
        names = [names]
    out = Path(folder) if folder is not None else outliers_dir()
    return [write_profile(shipped_profile(n), out / f"{n}.yaml") for n in names]

