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
    """float64 -> repr bytes; NaN -> empty (pandas' na_rep). A column with many repeats (a
    step table's energies) formats each distinct value once (-0.0 would merge with 0.0 there,
    so a column holding it does not)."""
    if len(v) > 4096 and not np.signbit(v[v == 0]).any():
        u, inv = np.unique(v, return_inverse=True)
        if len(u) * 2 < len(v):
            return _floats(u)[inv]
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


def _two_product_error(a: np.ndarray, b: float) -> np.ndarray:
    """``a * b - fl(a * b)`` exactly (Dekker's split; no overflow for these magnitudes)."""
    def split(v):
        c = 134217729.0 * v
        hi = c - (c - v)
        return hi, v - hi
    ah, al = split(a)
    bh, bl = split(np.float64(b))
    p = a * b
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _shortest_offsets(ns: np.ndarray, x: np.ndarray):
    """For ``x = ns * 1e-9`` that is not the double nearest ``D = ns / 1e9``: repr's digits
    are the shortest decimal in x's rounding interval (the nearest to x among the shortest),
    ``D + m * 10**-q`` for some q in 10..13 (x is within an ulp of D, and decimals of at most
    9 places are 1e-9 apart, far more than an ulp below 9e5 s). Returns (q, m, decided):
    ``x - D`` is found with error-free float operations (to about 2^-52 of an ulp), and a row
    whose answer lies within a generous error bound of a boundary (or whose rounding interval
    is lopsided, at a power of two) is left undecided, for repr."""
    n = len(ns)
    q = np.zeros(n, np.int64)
    m = np.zeros(n, np.int64)
    todo = np.frexp(x)[0] != 0.5
    r = ns / 1e9                                  # fl(D)
    p = r * 1e9
    e = _two_product_error(r, 1e9)
    d = (x - r) - ((ns - p) - e) / 1e9            # x - D: (x - fl(D)) - (D - fl(D))
    h = np.spacing(x) / 2
    for k in range(10, 14):
        s = 10.0 ** k
        lo, hi, mid = (d - h) * s, (d + h) * s, d * s
        err = 1e-9 + 1e-12 * np.abs(mid)
        amb = (np.abs(lo - np.rint(lo)) < err) | (np.abs(hi - np.rint(hi)) < err) \
            | (np.abs(mid - np.floor(mid) - 0.5) < err)
        has = np.ceil(lo) <= np.floor(hi)
        todo &= ~(amb & (q == 0))                 # undecidable here: leave it to repr
        take = todo & (q == 0) & has
        pick = np.clip(np.rint(mid), np.ceil(lo), np.floor(hi))
        q[take], m[take] = k, pick[take].astype(np.int64)
    return q, m, todo & (q > 0)


def _seconds(ns: np.ndarray) -> np.ndarray:
    """int64 nanoseconds -> the repr bytes of ``ns * 1e-9``. Where that product equals the
    correctly rounded ``ns / 1e9`` (so the 9-decimal string of ns round-trips to it), it is
    at least 1e-4 (repr's positional range) and below 9e5 s (half an ulp is then far below
    1e-9, so no other string of at most 9 decimals round-trips), repr's digits are that
    string with trailing zeros dropped (one kept after the point); most other products are
    a few digits longer (:func:`_shortest_offsets`); the rest go through repr."""
    x = ns * 1e-9
    fits = (ns >= 100_000) & (ns < 9 * 10**14)
    exact = fits & (x == ns / 1e9)
    inexact = np.flatnonzero(fits & ~exact)
    q, m, off = _shortest_offsets(ns[inexact], x[inexact])
    good = exact.copy()
    good[inexact[off]] = True
    # the decimal with 13 places: ns * 1e4 (+ m * 10**(13 - q) for the offset ones)
    n13 = np.where(good, ns, 0) * 10**4
    n13[inexact[off]] += m[off] * 10 ** (13 - q[off])
    whole, frac = np.divmod(n13, 10**13)
    fdig = np.empty((len(ns), 13), np.uint8)
    hi, lo = np.divmod(frac, 10**7)               # 6 + 7 digits, in 32-bit arithmetic
    for part, cols in ((lo.astype(np.uint32), range(12, 5, -1)),
                       (hi.astype(np.uint32), range(5, -1, -1))):
        for j in cols:
            q = part // 10
            fdig[:, j] = part - q * 10
            part = q
    # drop trailing zeros, keeping the first decimal
    last = np.where(frac == 0, 0, 12 - np.argmax(fdig[:, ::-1] != 0, axis=1))
    keep = np.arange(13) <= last[:, None]
    fdig = np.where(keep, fdig + 48, 0).astype(np.uint8)
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
    kind ``cat`` (codes, names), ``int``, ``float`` or ``ns`` (int64 ns written as seconds).
    At least two columns (the csv module quotes a row that is one empty field)."""
    assert len(cols) >= 2
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



def read_steps(path, clients) -> "pd.DataFrame":
    """A steps CSV read back as the steps frame it was written from: ``client`` categorical
    over ``clients`` (in their order), ``kind`` over the engine's kinds, counts int32, summed
    contexts int64 (pandas 3 parses floats round-trip: every float is the one written)."""
    import pandas as pd

    from .engine import KINDS, STEP_COLUMNS
    dtypes = {c: np.dtype(t) for c, t in STEP_COLUMNS if not c.endswith("_ns") and c != "kind"}
    f = pd.read_csv(path, dtype={"client": str, "kind": str, **dtypes},
                    keep_default_na=False, na_values=[""])
    f["client"] = pd.Categorical(f["client"], categories=list(clients))
    f["kind"] = pd.Categorical(f["kind"], categories=list(KINDS))
    return f
