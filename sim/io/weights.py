"""Reading and writing weight checkpoints: ``.safetensors`` and ``.npz`` files (numpy only).

This is file-format code, so it lives in :mod:`sim.io` and not in :mod:`sim.numerics` (pure
numpy on arrays). :func:`sim.io.profiles.profile_from_weights` uses it to measure outlier
profiles from real weights.

* :class:`SafetensorsFile` -- a self-contained safetensors reader (F32, F16, BF16 and F64),
  tensor by tensor; :func:`read_safetensors` / :func:`write_safetensors` for whole files.
* :class:`WeightsFile` -- the tensors of one ``.npz`` or ``.safetensors`` file, read lazily;
  :func:`weight_files` expands a file, a folder (e.g. the shards of an HF checkpoint) or a
  list into files; :func:`sha256_file` is the digest a profile's provenance records.
* :func:`canonical_op` -- tensor-name canonicalization. A tensor belongs to ``(layer, op)``
  when its name ends with ``layers.<i>.<...>.<op>[.weight]``, so ``layers.3.q_proj`` (the
  short form for npz files), ``model.layers.3.self_attn.q_proj.weight`` (LLaMA/Mistral/Qwen)
  and ``model.decoder.layers.3.self_attn.out_proj.weight`` (OPT) all work. Aliases:
  ``out_proj`` -> ``o_proj``, ``fc1`` -> ``up_proj``, ``fc2`` -> ``down_proj``; fused
  ``qkv_proj`` and ``gate_up_proj`` (Phi-3) keep their fused name (:data:`FUSED_OPS`) and are
  split by the caller, which knows the model's shapes. ``lm_head[.weight]`` is ``(-1, "lm_head")``.

Every problem is a one-line :class:`~sim.config.errors.ConfigError` naming the file and the
tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from sim.config.errors import ConfigError, did_you_mean, short_repr

__all__ = [
    "FUSED_OPS",
    "SafetensorsFile",
    "WeightsFile",
    "canonical_op",
    "read_safetensors",
    "sha256_file",
    "weight_files",
    "write_safetensors",
]

# ============================================================================================
# Safetensors
# ============================================================================================

class _StDtype(NamedTuple):
    """How a safetensors dtype tag is stored: the numpy dtype read, bytes per element."""

    storage: str
    itemsize: int


_ST_DTYPES = {"F64": _StDtype("<f8", 8), "F32": _StDtype("<f4", 4), "F16": _StDtype("<f2", 2),
              "BF16": _StDtype("<u2", 2)}
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


class _Entry(NamedTuple):
    """One tensor of a safetensors header: dtype tag, shape, byte range in the data buffer."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


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
        self._entries: dict[str, _Entry] = {}
        for name, entry in header.items():
            self._entries[name] = self._check_entry(name, entry, data_len)

    def _bad(self, expected: str, key: str | None = None, got: str | None = None) -> ConfigError:
        return ConfigError(expected, file=self.label, key=key, got=got)

    def _check_entry(self, name: str, entry: Any, data_len: int) -> _Entry:
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise self._bad("{dtype, shape, data_offsets}", key=name, got=short_repr(entry))
        dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise self._bad("a float dtype (" + ", ".join(_ST_DTYPES) + ")", key=f"{name}.dtype",
                            got=short_repr(dtype))
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise self._bad("a list of non-negative integers", key=f"{name}.shape",
                            got=short_repr(shape))
        begin, end = offs if isinstance(offs, list) and len(offs) == 2 else (None, None)
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_len):
            raise self._bad(f"[begin, end] within the {data_len}-byte data buffer",
                            key=f"{name}.data_offsets", got=short_repr(offs))
        nbytes = int(np.prod(shape, dtype=np.int64)) * _ST_DTYPES[dtype].itemsize
        if end - begin != nbytes:
            raise self._bad(f"{nbytes} bytes for shape {shape} of {dtype}",
                            key=f"{name}.data_offsets", got=f"{end - begin} bytes")
        return _Entry(dtype, tuple(shape), begin, end)

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def dtype(self, name: str) -> str:
        return self._entries[name].dtype

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
            blob = np.ascontiguousarray(a, dtype=_ST_DTYPES[dtype].storage).tobytes()
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
# Tensor names
# ============================================================================================

_OP_ALIASES = {"out_proj": "o_proj", "fc1": "up_proj", "fc2": "down_proj"}
FUSED_OPS = ("qkv_proj", "gate_up_proj")  # split along N by the caller
_BLOCK_RE = re.compile(
    r"(?:^|\.)layers\.(\d+)\.(?:[A-Za-z0-9_]+\.)*?"
    r"(q_proj|k_proj|v_proj|o_proj|out_proj|gate_proj|up_proj|down_proj|fc1|fc2|qkv_proj|gate_up_proj)"
    r"(?:\.weight)?$"
)
# a Mamba block's projections (state-spaces/mamba: backbone.layers.N.mixer.in_proj.weight):
# matched first, since its out_proj is not OPT's attention out_proj (o_proj)
_MAMBA_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.mixer\.(in_proj|x_proj|dt_proj|out_proj)"
                       r"(?:\.weight)?$")
_HEAD_RE = re.compile(r"(?:^|\.)lm_head(?:\.weight)?$")


def canonical_op(name: str) -> tuple[int, str] | None:
    """``(layer, op)`` a tensor name stands for (layer -1 for lm_head), or None."""
    m = _MAMBA_RE.search(name)
    if m:
        return int(m.group(1)), m.group(2)
    m = _BLOCK_RE.search(name)
    if m:
        op = m.group(2)
        return int(m.group(1)), _OP_ALIASES.get(op, op)
    if _HEAD_RE.search(name):
        return -1, "lm_head"
    return None


class WeightsFile:
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


def weight_files(path: Any) -> list[Path]:
    """The weight files ``path`` stands for: a file, a folder of ``.npz``/``.safetensors`` files
    (sorted by name) or a list of files; each must exist."""
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


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
