"""Writing a serving run's steps as CSV in bounded chunks, byte for byte what
``DataFrame.to_csv(index=False)`` writes for the steps frame.

pandas writes a float column as numpy's shortest round-trip repr (the same digits as Python's
``repr``), an integer column as its decimal digits, a category as its name and NaN as an empty
field. Here every field of a chunk becomes a row of bytes in one ``uint8`` matrix (fields padded
with NUL bytes, which no field contains), and the CSV is that matrix with the NULs dropped.
Seconds that are whole nanoseconds (``ns * 1e-9``) are written from the integer when that is
provably repr's answer (see :func:`_seconds`); everything else goes through ``repr``."""
from __future__ import annotations

import numpy as np

#: characters that make the csv module quote a field (pandas' QUOTE_MINIMAL)
_QUOTED = (",", '"', "\r", "\n")


def names_need_quoting(names) -> bool:
    return any(not n or any(q in n for q in _QUOTED) for n in map(str, names))


def _ints(v: np.ndarray) -> np.ndarray:
    """Non-negative integers -> (n, W) decimal digits, right-aligned, NUL-padded."""
    v = v.astype(np.int64, copy=False)
    top = int(v.max()) if len(v) else 0
    width = max(len(str(top)), 1)
    out = np.zeros((len(v), width), np.uint8)
    p = 1
    for j in range(width - 1, -1, -1):
        d = (v // p) % 10
        keep = (v >= p) if j < width - 1 else np.ones(len(v), bool)
        out[:, j] = np.where(keep, 48 + d, 0)
        p *= 10
    return out


def _strings(strs: list[str]) -> np.ndarray:
    """ASCII strings -> (n, W) bytes, left-aligned, NUL-padded."""
    a = np.array(strs, dtype="S")
    w = max(a.dtype.itemsize, 1)
    return a.astype(f"S{w}").view(np.uint8).reshape(len(strs), w)


def _floats(v: np.ndarray) -> np.ndarray:
    """float64 -> repr bytes; NaN -> empty (pandas' na_rep)."""
    strs = list(map(repr, v.tolist()))
    if np.isnan(v).any():
        strs = ["" if s == "nan" else s for s in strs]
    return _strings(strs) if strs else np.zeros((0, 1), np.uint8)


def _join(*mats: np.ndarray) -> np.ndarray:
    w = sum(m.shape[1] for m in mats)
    out = np.empty((len(mats[0]), w), np.uint8)
    i = 0
    for m in mats:
        out[:, i:i + m.shape[1]] = m
        i += m.shape[1]
    return out


def _seconds(ns: np.ndarray) -> np.ndarray:
    """int64 nanoseconds -> the repr bytes of ``ns * 1e-9``. Where that product equals the
    correctly rounded ``ns / 1e9`` (so the 9-decimal string of ns round-trips to it), it is
    at least 1e-4 (repr's positional range) and below 1e6 s (half an ulp is then far below
    1e-9, so no other string of at most 9 decimals round-trips), repr's digits are that
    string with trailing zeros dropped (one kept after the point); the rest go through repr."""
    x = ns * 1e-9
    good = (x == ns / 1e9) & (ns >= 100_000) & (ns < 10**15)
    whole, frac = np.divmod(np.where(good, ns, 0), 10**9)
    fdig = np.zeros((len(ns), 9), np.uint8)
    p = 10**8
    for j in range(9):
        d = (frac // p) % 10
        keep = (frac % (p * 10) != 0) if j else np.ones(len(ns), bool)
        fdig[:, j] = np.where(keep, 48 + d, 0)
        p //= 10
    dot = np.full((len(ns), 1), ord("."), np.uint8)
    out = _join(_ints(whole), dot, fdig)
    bad = np.flatnonzero(~good)
    if len(bad):
        other = _floats(x[bad])
        if other.shape[1] > out.shape[1]:
            out = _join(np.zeros((len(ns), other.shape[1] - out.shape[1]), np.uint8), out)
        out[bad] = 0
        out[bad, :other.shape[1]] = other
    return out


def format_chunk(cols: list[tuple[str, np.ndarray, object]]) -> bytes:
    """CSV rows (no header) for one chunk: ``cols`` is ``(kind, values, extra)`` per column,
    kind ``cat`` (codes, names), ``int``, ``float`` or ``ns`` (int64 ns written as seconds)."""
    mats = []
    n = len(cols[0][1])
    for i, (kind, v, extra) in enumerate(cols):
        if kind == "cat":
            table = _strings([str(s) for s in extra])
            m = table[v]
        elif kind == "int":
            m = _ints(v) if (not len(v) or v.min() >= 0) else _strings([str(x) for x in v.tolist()])
        elif kind == "ns":
            m = _seconds(v)
        else:
            m = _floats(v)
        mats.append(m)
        mats.append(np.full((n, 1), ord("," if i < len(cols) - 1 else "\n"), np.uint8))
    flat = _join(*mats).ravel()
    return flat[flat != 0].tobytes()


def write_csv(path, header: list[str], chunks) -> int:
    """Write ``header`` and the rows of ``chunks`` (lists for :func:`format_chunk`, split
    further so that each formatted block stays small); returns the rows written."""
    rows = 0
    block = 1 << 18
    with open(path, "wb") as f:
        f.write((",".join(header) + "\n").encode())
        for cols in chunks:
            n = len(cols[0][1])
            for a in range(0, n, block):
                f.write(format_chunk([(k, v[a:a + block], e) for k, v, e in cols]))
            rows += n
    return rows

