"""The ``sweep:`` block of an experiment YAML and the design points it stands for.

    sweep:
      grid:                          # cartesian product of every key's values
        arch.array.rows: [16, 32, 64]
        arch.array.cols: {start: 16, stop: 64, step: 16}       # linear range, stop included
        arch.memory.dram.bandwidth_gbps: {start: 64, stop: 1024, num: 5, scale: log}
      zip:                           # paired lists (equal lengths), one point per position
        arch.memory.sram.ifmap_kb: [256, 512]
        arch.memory.sram.weight_kb: [256, 512]
      random:                        # seeded samples, each key drawn independently
        samples: 8
        seed: 1
        space:
          arch.memory.l2.size_kb: {low: 512, high: 4096, scale: log, int: true}
          runs.0.context: {choice: [256, 512, 1024]}
      derive:                        # keys computed from others (in order)
        arch.array.cols: "4096 // arch.array.rows"          # equal PE count
      constraints:                   # points where one is false are dropped, reason kept
        - "arch.array.rows * arch.array.cols <= 16384"

The points are the product of the blocks present (grid x zip x random). Each point is a mapping
of key path -> value, applied to the base experiment as ``--set`` overrides would be. A ``*``
part stands for every index of a list, so ``cluster.clients.*.engine.scheduler: [continuous,
chunked]`` sets the scheduler of every client at once (the column keeps the ``*`` name).

A serving experiment (one with a ``cluster:`` section, :mod:`sim.system.experiment`) sweeps the
same way, over key paths into ``cluster`` (clients, engines, router), ``workload`` (arrival
process and rate, request count, lengths), ``pipeline`` and ``seed``; each point runs
:func:`sim.serve`. Its identity is the resolved config's hash plus a stamp of the files the run
reads by name (each client's arch and model, the trace, the pipeline), so an edited trace or
arch file is not answered from the store.
``variants:`` keeps working: every sweep point runs all of the experiment's variants (each
result row names its variant), exactly as ``strata run`` runs them.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..config import ConfigError
from ..config.errors import did_you_mean, short_repr
from ..config.loader import (_dump, _find_ref, _looks_like_path, _resolve, apply_overrides,
                             load_experiment, load_validated, read_yaml)
from ..config.schema import ExperimentConfig
from .expr import Expr, ExprError

WILDCARD = "*"

__all__ = ["Sweep", "Point", "load_sweep", "canonical"]

BLOCKS = ("grid", "zip", "random", "derive", "constraints")


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Point:
    """One design point: its position in the sweep, its overrides, and either the validated
    experiment (``exp``, identity ``hash`` = the resolved config's content hash, which includes
    the seed) or the reason it was dropped."""

    index: int
    overrides: dict
    hash: str
    exp: ExperimentConfig | None = None
    dropped: str | None = None


@dataclass
class Sweep:
    file: str
    base: ExperimentConfig
    grid: dict = field(default_factory=dict)         # key -> list of values
    zip: dict = field(default_factory=dict)          # key -> list (equal lengths)
    random: dict | None = None                       # {samples, seed, space: key -> spec}
    derive: dict = field(default_factory=dict)       # key -> Expr
    constraints: list = field(default_factory=list)  # Expr
    keys: tuple = ()                                  # every swept or derived key, in order
    schema: type = ExperimentConfig                   # or ServingExperiment (a cluster: section)

    @property
    def serving(self) -> bool:
        return self.schema is not ExperimentConfig

    @property
    def name(self) -> str:
        return self.base.name

    def size(self) -> int:
        """Number of points before constraints."""
        n = 1
        for vals in self.grid.values():
            n *= len(vals)
        if self.zip:
            n *= len(next(iter(self.zip.values())))
        if self.random:
            n *= self.random["samples"]
        return n

    def raw_points(self) -> Iterator[dict]:
        """Override mappings, lazily, in a fixed order (grid, then zip, then random)."""
        gk = list(self.grid)
        zk = list(self.zip)
        zrows = list(zip(*self.zip.values())) if zk else [()]
        rk: list = []
        rrows: list = [()]
        if self.random:
            rng = random.Random(self.random["seed"])
            rk = list(self.random["space"])
            rrows = [tuple(_draw(rng, self.random["space"][k]) for k in rk)
                     for _ in range(self.random["samples"])]
        for g in itertools.product(*self.grid.values()):
            for z in zrows:
                for r in rrows:
                    yield dict(zip(gk, g)) | dict(zip(zk, z)) | dict(zip(rk, r))

    def points(self) -> Iterator[Point]:
        for i, ov in enumerate(self.raw_points()):
            yield self.point(i, ov)

    def point(self, index: int, overrides: dict) -> Point:
        """The point of one override mapping (a grid position or a search trial): derived keys
        filled in, constraints checked, the experiment validated, or the reason it is dropped."""
        ov = dict(overrides)
        base_dump = self._base_dump

        def look(k):
            if k in ov:
                return ov[k]
            hit = [v for pat, v in ov.items() if _matches(pat, k)]
            if hit:                       # a '*' key setting this index (the last one wins)
                return hit[-1]
            return _value_at(base_dump, k)
        why = None
        try:
            for k, e in self.derive.items():
                v = e(look)
                ov[k] = int(v) if isinstance(v, float) and v.is_integer() else v
            for c in self.constraints:
                if not c(look):
                    why = f"constraint {c.text!r} is false"
                    break
        except (ArithmeticError, ValueError, TypeError, ExprError) as e:
            why = f"expression failed: {e}"
        if why is None:
            try:
                exp = self.load(ov)
            except ConfigError as e:
                why = f"invalid config: {e}"
            else:
                return Point(index, ov, self.identity(exp), exp=exp)
        h = hashlib.sha256(f"dropped:{self.base.hash()}:{canonical(ov)}".encode()).hexdigest()
        return Point(index, ov, h, dropped=why)

    def load(self, overrides: dict):
        """The validated experiment of one point's overrides (``*`` parts expanded)."""
        pairs = [(k2, v) for k, v in overrides.items()
                 for k2 in expand_key(self._base_dump, k)]
        if not self.serving:
            return load_experiment(self.base, overrides=pairs)
        return load_validated(self.base, self.schema, pairs, kind="experiments")

    def identity(self, exp) -> str:
        """A point's store key: the config hash, and for a serving point the stamp of the
        files its run reads by name (they are not inside its config)."""
        if not self.serving:
            return exp.hash()
        from .serving import input_stamp
        stamp = input_stamp(exp, self._stamps)
        return hashlib.sha256(f"serving:{exp.hash()}:{stamp}".encode()).hexdigest()

    @functools.cached_property
    def _stamps(self) -> dict:
        return {}

    @functools.cached_property
    def _base_dump(self) -> dict:
        return _dump(self.base)


def _matches(pattern: str, key: str) -> bool:
    """Whether ``key`` is one of the paths a ``*`` key stands for."""
    if WILDCARD not in pattern:
        return False
    a, b = pattern.split("."), key.split(".")
    return len(a) == len(b) and all(x == y or (x == WILDCARD and y.isdigit())
                                    for x, y in zip(a, b))


def expand_key(data: Any, key: str) -> list[str]:
    """The concrete key paths a key with ``*`` parts stands for in ``data`` (every index of
    the list at each ``*``); a key without one is returned as is. KeyError names the prefix
    where a ``*`` does not meet a list."""
    if WILDCARD not in key.split("."):
        return [key]
    out = [""]
    nodes = [data]
    for part in key.split("."):
        nxt_keys, nxt_nodes = [], []
        for prefix, node in zip(out, nodes):
            join = (prefix + ".") if prefix else ""
            if part == WILDCARD:
                if not isinstance(node, list) or not node:
                    raise KeyError(prefix or "the top level")
                for i, child in enumerate(node):
                    nxt_keys.append(f"{join}{i}")
                    nxt_nodes.append(child)
            else:
                nxt_keys.append(join + part)
                if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    nxt_nodes.append(node[int(part)])
                elif isinstance(node, dict):
                    nxt_nodes.append(node.get(part))
                else:
                    nxt_nodes.append(None)
        out, nodes = nxt_keys, nxt_nodes
    return out


def _value_at(data: Any, key: str) -> Any:
    node = data
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(key)
    return node


def _draw(rng: random.Random, spec: dict) -> Any:
    if "choice" in spec:
        return rng.choice(spec["choice"])
    lo, hi = spec["low"], spec["high"]
    if spec.get("scale", "linear") == "log":
        v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        v = rng.uniform(lo, hi)
    if spec.get("int"):
        return min(max(int(round(v)), math.ceil(lo)), math.floor(hi))
    return v


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _values(spec: Any, err) -> list:
    """A list of values from a list or a range mapping."""
    if isinstance(spec, list):
        if not spec:
            raise err("a non-empty list of values or a range", got="[]")
        return spec
    if not isinstance(spec, dict):
        raise err("a list of values or a range {start, stop, step|num}", got=short_repr(spec))
    unknown = set(spec) - {"start", "stop", "step", "num", "scale", "int"}
    if unknown:
        raise err("range keys start, stop, step, num, scale, int", got=repr(sorted(unknown)[0]))
    if "start" not in spec or "stop" not in spec:
        raise err("a range with start and stop", got=short_repr(spec))
    a, b = spec["start"], spec["stop"]
    if not _is_num(a) or not _is_num(b):
        raise err("numbers for start and stop", got=short_repr([a, b]))
    scale = spec.get("scale", "linear")
    if scale not in ("linear", "log"):
        raise err("scale linear or log", got=short_repr(scale))
    if ("step" in spec) == ("num" in spec):
        raise err("a range with exactly one of step or num", got=short_repr(spec))
    if "step" in spec:
        if scale != "linear":
            raise err("num (not step) for a log range", got=short_repr(spec))
        s = spec["step"]
        if not _is_num(s) or s <= 0:
            raise err("a step > 0", got=short_repr(s))
        as_int = spec.get("int", all(isinstance(x, int) for x in (a, b, s)))
        n = int(math.floor((b - a) / s + 1e-9)) + 1
        if n <= 0:
            raise err("a range with start <= stop (it is empty)", got=f"{a}..{b}")
        if n > 10**7:
            raise err("a range of at most 10,000,000 values", got=f"{n}")
        vals = [a + i * s for i in range(n)]
    else:
        n = spec["num"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise err("num >= 1 (it is empty)", got=short_repr(n))
        as_int = spec.get("int", isinstance(a, int) and isinstance(b, int))
        if scale == "log":
            if a <= 0 or b <= 0:
                raise err("start and stop > 0 for a log range", got=short_repr([a, b]))
            vals = [a * (b / a) ** (i / (n - 1)) if n > 1 else a for i in range(n)]
        else:
            vals = [a + (b - a) * i / (n - 1) if n > 1 else a for i in range(n)]
    if as_int:
        vals = list(dict.fromkeys(int(round(v)) for v in vals))
    return vals


def load_sweep(path: str, overrides: Any = None) -> Sweep:
    """Read an experiment YAML with a ``sweep:`` block; ConfigError naming file and key."""
    ref = Path(path).expanduser()
    if isinstance(path, str) and not _looks_like_path(path) and not ref.is_file():
        ref = _find_ref(path, "experiments", Path.cwd(), None, None)   # a shipped name
    p = str(_resolve(ref))
    data = read_yaml(p)
    block = data.pop("sweep", None)
    if block is None:
        raise ConfigError("a sweep: block (grid, zip, random, derive, constraints)", file=p,
                          key="sweep", got="none")
    schema = ExperimentConfig
    if "cluster" in data:                      # a serving experiment (sim.serve)
        from ..system.experiment import ServingExperiment
        schema = ServingExperiment
    base = load_validated(data, schema, overrides, source=p, kind="experiments")
    if not isinstance(block, dict) or not block:
        raise ConfigError("a mapping with " + ", ".join(BLOCKS), file=p, key="sweep",
                          got=short_repr(block))
    for k in block:
        if k not in BLOCKS:
            raise ConfigError("one of " + ", ".join(BLOCKS), file=p, key=f"sweep.{k}",
                              got=repr(k), hint=did_you_mean(k, BLOCKS))
    sw = Sweep(file=p, base=base, schema=schema)
    base_dump = _dump(base)

    def errf(key):
        return lambda expected, got=None, hint=None: ConfigError(
            expected, file=p, key=key, got=got, hint=hint)

    def check_path(key, value, where):
        if not isinstance(key, str) or not key:
            raise ConfigError("a dotted config key path", file=p, key=where, got=short_repr(key))
        if key.split(".")[0] in ("sweep", "variants", "name"):
            raise ConfigError("a key outside sweep, variants and name", file=p, key=where,
                              got=repr(key))
        try:
            concrete = expand_key(base_dump, key)
        except KeyError as e:
            raise ConfigError(f"a non-empty list at {e.args[0]} for '*' (every index of a "
                              "list)", file=p, key=where, got=repr(key)) from None
        try:
            apply_overrides(copy.deepcopy(base_dump), [(k, value) for k in concrete], schema)
        except ConfigError as e:
            raise ConfigError(e.expected, file=p, key=where, got=e.got, hint=e.hint) from None

    def mapping(name):
        m = block.get(name) or {}
        if not isinstance(m, dict):
            raise ConfigError("a mapping of key path -> values", file=p, key=f"sweep.{name}",
                              got=short_repr(m))
        return m

    for k, spec in mapping("grid").items():
        where = f"sweep.grid.{k}"
        sw.grid[k] = _values(spec, errf(where))
        check_path(k, sw.grid[k][0], where)
    z = mapping("zip")
    for k, spec in z.items():
        where = f"sweep.zip.{k}"
        sw.zip[k] = _values(spec, errf(where))
        check_path(k, sw.zip[k][0], where)
    if len({len(v) for v in sw.zip.values()}) > 1:
        lens = ", ".join(f"{k}: {len(v)}" for k, v in sw.zip.items())
        raise ConfigError("zip lists of equal length", file=p, key="sweep.zip", got=lens)
    if "random" in block:
        r = block["random"]
        if not isinstance(r, dict):
            raise ConfigError("a mapping {samples, seed, space}", file=p, key="sweep.random",
                              got=short_repr(r))
        n = r.get("samples")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError("a budget of samples >= 1", file=p, key="sweep.random.samples",
                              got=short_repr(n))
        seed = r.get("seed", base.seed)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError("an integer seed", file=p, key="sweep.random.seed",
                              got=short_repr(seed))
        space = r.get("space")
        if not isinstance(space, dict) or not space:
            raise ConfigError("a non-empty mapping of key path -> {low, high} or {choice}",
                              file=p, key="sweep.random.space", got=short_repr(space))
        for k, s in space.items():
            where = f"sweep.random.space.{k}"
            if isinstance(s, dict) and "choice" in s:
                if not isinstance(s["choice"], list) or not s["choice"]:
                    raise ConfigError("a non-empty choice list", file=p, key=where,
                                      got=short_repr(s["choice"]))
                first = s["choice"][0]
            elif isinstance(s, dict) and _is_num(s.get("low")) and _is_num(s.get("high")):
                if s["low"] > s["high"] or (s.get("scale") == "log" and s["low"] <= 0):
                    raise ConfigError("low <= high (and > 0 on a log scale); the range is "
                                      "empty", file=p, key=where, got=short_repr(s))
                if s.get("int") and math.ceil(s["low"]) > math.floor(s["high"]):
                    raise ConfigError("an integer inside [low, high]", file=p, key=where,
                                      got=short_repr(s))
                first = s["low"]
            else:
                raise ConfigError("{low, high[, scale: log][, int: true]} or {choice: [...]}",
                                  file=p, key=where, got=short_repr(s))
            check_path(k, first, where)
        sw.random = {"samples": n, "seed": seed, "space": dict(space)}
    swept = list(sw.grid) + list(sw.zip) + (list(sw.random["space"]) if sw.random else [])
    dup = [k for k in swept if swept.count(k) > 1]
    if dup:
        raise ConfigError("each key swept in one place", file=p, key="sweep", got=repr(dup[0]))
    known = set(swept)

    def parse(text, where, derived=None):
        try:
            e = Expr(text)
        except ExprError as x:
            raise ConfigError(str(x).removeprefix("expected "), file=p, key=where) from None
        for name in e.names:
            if name in known:
                continue
            try:
                _value_at(base_dump, name)
            except KeyError:
                raise ConfigError("an expression over existing config keys", file=p,
                                  key=where, got=repr(name),
                                  hint=did_you_mean(name, known)) from None
        return e

    for k, text in mapping("derive").items():
        where = f"sweep.derive.{k}"
        if k in known:
            raise ConfigError("a derived key that is not also swept", file=p, key=where,
                              got=repr(k))
        e = parse(text, where)
        check_path(k, _value_at_or(base_dump, k), where)
        sw.derive[k] = e
        known.add(k)
    cons = block.get("constraints") or []
    if isinstance(cons, str):
        cons = [cons]
    if not isinstance(cons, list):
        raise ConfigError("a list of expressions", file=p, key="sweep.constraints",
                          got=short_repr(cons))
    for i, text in enumerate(cons):
        where = f"sweep.constraints.{i}"
        e = parse(text, where)
        if not e.names:
            raise ConfigError("a constraint naming at least one config key", file=p,
                              key=where, got=repr(text))
        sw.constraints.append(e)
    if not swept:
        raise ConfigError("at least one swept key in grid, zip or random", file=p,
                          key="sweep", got="none")
    sw.keys = tuple(swept) + tuple(sw.derive)
    return sw


def _value_at_or(data, key):
    try:
        return _value_at(data, key)
    except KeyError:
        return 0
