"""Reading, merging, overriding and validating YAML configs.

The walk from a reference to a validated config:

1. resolve the reference: a shipped name (``arch/<name>.yaml``), a path, a mapping, or an
   already validated object;
2. read the YAML (:func:`read_yaml`) and follow ``extends:`` chains, merging parent then child
   (mappings merge key by key; lists and scalars are replaced);
3. for an experiment, resolve its ``arch:`` and ``model:`` references the same way, so that the
   whole document is one nested mapping;
4. apply ``--set key.path=value`` overrides;
5. validate with the pydantic schema and turn any error into a :class:`ConfigError`.

Through all steps a *provenance* map records, for every key path, the file that wrote it (or
``--set``), so that an error names the file where the bad key was written, even when that is a
parent reached through ``extends:`` or a separate arch file named by an experiment.
"""

from __future__ import annotations

import copy
import os
import re
import stat
import types
import typing
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError, InvalidValue, did_you_mean, short_repr
from .schema import ArchConfig, ExperimentConfig, ModelConfig

__all__ = [
    "source_of",
    "repo_root",
    "data_dir",
    "list_shipped",
    "read_yaml",
    "parse_overrides",
    "apply_overrides",
    "load_validated",
    "load_arch",
    "load_model",
    "load_experiment",
    "DATA_KINDS",
    "SET_SOURCE",
]

M = TypeVar("M", bound=BaseModel)

DATA_KINDS = ("arch", "workloads", "experiments", "traces")
SET_SOURCE = "--set"  # provenance label of command-line overrides

# What a shipped name of each kind is called in messages.
_KIND_WORD = {"arch": "arch", "workloads": "model", "experiments": "experiment", "traces": "trace"}
# Which data folder names resolve for a schema (extends: <name>, load_validated("<name>", cls)).
_KIND_OF_SCHEMA: dict[type, str] = {
    ArchConfig: "arch",
    ModelConfig: "workloads",
    ExperimentConfig: "experiments",
}

Loc = tuple  # key path: str keys and int list indices
Prov = dict  # Loc -> source label (absolute file path, "--set" or "<...>")


# --------------------------------------------------------------------------------------------
# Where data lives
# --------------------------------------------------------------------------------------------


def repo_root() -> Path:
    """The folder holding ``sim/``, ``arch/``, ``workloads/``...; $STRATA_HOME overrides it."""
    env = os.environ.get("STRATA_HOME")
    if env:
        home = _resolve(Path(env).expanduser(), "$STRATA_HOME")
        if not home.is_dir():
            raise ConfigError("a folder holding Strata's data (arch/, workloads/, experiments/)",
                              key="$STRATA_HOME", got=short_repr(env),
                              hint="no such folder; unset it to use the installed data")
        if not any((home / k).is_dir() for k in DATA_KINDS):
            raise ConfigError("a folder holding Strata's data (arch/, workloads/, experiments/)",
                              key="$STRATA_HOME", got=short_repr(env),
                              hint="it has none of " + ", ".join(f"{k}/" for k in DATA_KINDS))
        return home
    return Path(__file__).resolve().parents[2]


def _resolve(p: Path, file: str | None = None, key: str | None = None) -> Path:
    """``p.resolve()``, with a symlink loop reported as a ConfigError instead of a traceback."""
    try:
        return p.resolve()
    except (RuntimeError, OSError) as exc:      # RuntimeError: "Symlink loop" (Python < 3.13)
        raise ConfigError("a path that is not a symbolic-link loop", file=file or str(p),
                          key=key, got=short_repr(str(exc))) from None


def data_dir(kind: str) -> Path:
    """``<repo>/<kind>`` for kind in arch, workloads, experiments, traces."""
    if kind not in DATA_KINDS:
        raise ConfigError(
            "a data kind: " + ", ".join(DATA_KINDS), key="kind", got=short_repr(kind),
            hint=did_you_mean(kind, DATA_KINDS),
        )
    return repo_root() / kind


def list_shipped(kind: str) -> list[str]:
    """Names (file stems) of the files shipped in ``data_dir(kind)``, sorted."""
    folder = data_dir(kind)
    if not folder.is_dir():
        return []
    suffixes = {".csv"} if kind == "traces" else {".yaml", ".yml"}
    return sorted({p.stem for p in folder.iterdir() if p.is_file() and p.suffix in suffixes})


def _display(label: str | None) -> str | None:
    """A provenance label as shown to users: file paths relative to the cwd when inside it."""
    if label is None or not os.path.isabs(label):
        return label
    try:
        rel = os.path.relpath(label)
    except ValueError:  # other drive (Windows)
        return label
    return label if rel.startswith("..") else rel


# --------------------------------------------------------------------------------------------
# YAML reading
# --------------------------------------------------------------------------------------------


class _YamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader (libyaml's parser when PyYAML has it: parsing dominates a cold load) that
    rejects duplicate keys and reads ``1e-3`` as a float (YAML 1.2)."""


def _construct_mapping(loader: _YamlLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key {key!r} (first written on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        what = exc.problem or exc.context
        return f"a syntax error at {where} ({what})" if what else f"a syntax error at {where}"
    return str(exc).replace("\n", " ")


def _kind_of_value(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string {short_repr(value)}"
    return f"{type(value).__name__} {short_repr(value)}"


class LRU(OrderedDict):
    """A dict bounded to ``maxsize`` entries, dropping the least recently used (a long design
    sweep must not grow memory without bound)."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def get(self, key, default=None):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


_PARSED = LRU(256)   # (path, mtime_ns, size) -> parsed mapping


def read_yaml(path: str | os.PathLike) -> dict:
    """Read one YAML file whose top level is a mapping; ConfigError on any problem.

    Parsed files are cached by (path, modification time, size) — a sweep loads the same
    arch many times and YAML parsing dominates a load — and a fresh copy is returned."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
        key = (str(_resolve(p)), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    cached = _PARSED.get(key) if key is not None else None
    if cached is not None:
        return copy.deepcopy(cached)
    data = _parse_yaml(p)
    if key is not None:
        _PARSED.put(key, copy.deepcopy(data))
    return data


# Bounds on one YAML document. A config is a few KB; 16 MiB leaves room for generated ones. An
# alias makes a value appear again without being written again, so a few lines can stand for
# billions of values (an "alias bomb"); every later step walks the expanded document, so it is
# the expanded size that is bounded.
MAX_YAML_BYTES = 16 * 2**20
MAX_YAML_VALUES = 1_000_000


def _file_kind(mode: int) -> str:
    for test, word in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "not a regular file"


def _expanded_size(root: yaml.Node, label: str | None) -> int:
    """Values in the document once every alias is expanded (iterative: no recursion limit);
    ConfigError past MAX_YAML_VALUES or on an alias that contains itself."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def children(node):
        if isinstance(node, yaml.SequenceNode):
            return node.value
        if isinstance(node, yaml.MappingNode):
            return [x for pair in node.value for x in pair]
        return []

    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            on_path.discard(nid)
            size[nid] = 1 + sum(size[id(c)] for c in children(node))
            if size[nid] > MAX_YAML_VALUES:
                raise ConfigError(f"a document of at most {MAX_YAML_VALUES:,} values with its "
                                  "aliases (*name) expanded", file=label,
                                  got=f"more (aliases nested from line {node.start_mark.line + 1})")
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise ConfigError("aliases that do not contain themselves", file=label,
                              got=f"a recursive alias at line {node.start_mark.line + 1}")
        on_path.add(nid)
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in size)
    return size[id(root)]


def _load_bounded(text: str, label: str | None) -> Any:
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, label)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _parse_yaml(p: Path) -> dict:
    label = _display(str(_resolve(p)))
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError("an existing YAML file", file=label, got="no such file") from None
    except OSError as exc:
        raise ConfigError("a readable YAML file", file=label,
                          got=exc.strerror or str(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError("a YAML file", file=label, got="a directory")
    if not stat.S_ISREG(st.st_mode):   # a FIFO or a device would block or never end
        raise ConfigError("a regular YAML file", file=label, got=_file_kind(st.st_mode))
    if st.st_size > MAX_YAML_BYTES:
        raise ConfigError(f"a YAML file of at most {MAX_YAML_BYTES // 2**20} MiB", file=label,
                          got=f"{st.st_size:,} bytes")
    try:
        with open(p, "rb") as f:       # at most one byte past the limit, however it grew
            raw = f.read(min(st.st_size, MAX_YAML_BYTES) + 1)
            if len(raw) > st.st_size:
                raw += f.read(MAX_YAML_BYTES + 1 - len(raw))
        if len(raw) > MAX_YAML_BYTES:
            raise ConfigError(f"a YAML file of at most {MAX_YAML_BYTES // 2**20} MiB",
                              file=label, got="a larger file")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("UTF-8 text", file=label, got=f"undecodable byte at offset {exc.start}")
    except OSError as exc:
        raise ConfigError("a readable file", file=label, got=exc.strerror or str(exc))
    try:
        data = _load_bounded(text, label)
    except yaml.YAMLError as exc:
        raise ConfigError("valid YAML", file=label, got=_yaml_problem(exc)) from None
    if data is None:
        raise ConfigError("a mapping of keys to values", file=label, got="an empty file")
    if not isinstance(data, dict):
        raise ConfigError(
            "a mapping of keys to values at the top level", file=label, got=_kind_of_value(data)
        )
    return data


# --------------------------------------------------------------------------------------------
# Provenance: which source wrote each key path
# --------------------------------------------------------------------------------------------


def _label_tree(data: Any, label: str, prefix: Loc = ()) -> Prov:
    prov: Prov = {}

    def walk(node: Any, loc: Loc) -> None:
        prov[loc] = label
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, loc + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, loc + (i,))

    walk(data, prefix)
    return prov


def _under(loc: Loc, prefix: Loc) -> bool:
    return loc[: len(prefix)] == prefix


def _drop(prov: Prov, prefix: Loc) -> None:
    for loc in [loc for loc in prov if _under(loc, prefix)]:
        del prov[loc]


def _graft(prov: Prov, prefix: Loc, sub: Prov) -> None:
    """Replace everything under ``prefix`` by ``sub`` (whose paths are relative to prefix)."""
    _drop(prov, prefix)
    for loc, label in sub.items():
        prov[prefix + loc] = label


def _subtree(prov: Prov, prefix: Loc) -> Prov:
    n = len(prefix)
    return {loc[n:]: label for loc, label in prov.items() if _under(loc, prefix)}


def _source_of(prov: Prov, loc: Loc) -> str | None:
    """The source of the deepest recorded ancestor of ``loc`` (itself included)."""
    loc = tuple(loc)
    for n in range(len(loc), -1, -1):
        if loc[:n] in prov:
            return prov[loc[:n]]
    return None


def _plain(x: Any) -> Any:
    """A dumped config as YAML would give it: tuples as lists, frozen dicts as dicts."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _dump(obj: BaseModel) -> dict:
    return _plain(obj.model_dump())


def _dir_of(label: str | None) -> Path:
    if label and os.path.isabs(label):
        return Path(label).parent
    return Path.cwd()


def _dotted(loc: Iterable) -> str:
    return ".".join(str(p) for p in loc)


# --------------------------------------------------------------------------------------------
# extends: and references to other files
# --------------------------------------------------------------------------------------------


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or ref.endswith((".yaml", ".yml"))


def _find_ref(
    ref: Any, kind: str | None, base_dir: Path, file: str | None, key: str | None
) -> Path:
    """The file a reference names: a path (relative to ``base_dir``) or a shipped name."""
    if isinstance(ref, os.PathLike):
        ref = os.fspath(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(
            "a shipped name or a path to a YAML file", file=_display(file), key=key,
            got=short_repr(ref),
        )
    if _looks_like_path(ref) or kind is None:
        p = Path(ref).expanduser()
        if not p.is_absolute():
            p = base_dir / p
        if kind is None and not p.suffix and not p.exists():
            p = p.with_suffix(".yaml")
        if not p.is_file():
            raise ConfigError(
                "a path to an existing YAML file", file=_display(file), key=key,
                got=short_repr(ref), hint=f"no file at {p}",
            )
        return _resolve(p, _display(file), key)
    folder = data_dir(kind)
    for suffix in (".yaml", ".yml"):
        p = folder / f"{ref}{suffix}"
        if p.is_file():
            return _resolve(p, _display(file), key)
    names = list_shipped(kind)
    word = _KIND_WORD.get(kind, kind)
    listing = ", ".join(names) if names else f"none in {folder}"
    raise ConfigError(
        f"a shipped {word} name ({listing}) or a path to a YAML file",
        file=_display(file), key=key, got=short_repr(ref), hint=did_you_mean(ref, names),
    )


def _merge(base: dict, bprov: Prov, over: dict, oprov: Prov) -> tuple[dict, Prov]:
    """Deep-merge ``over`` onto ``base``: mappings merge, everything else is replaced."""
    prov = dict(bprov)

    def merge(b: dict, o: dict, loc: Loc) -> dict:
        out = dict(b)
        for k, v in o.items():
            here = loc + (k,)
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merge(out[k], v, here)
                prov[here] = oprov.get(here, prov.get(here))
            else:
                out[k] = copy.deepcopy(v)
                _graft(prov, here, _subtree(oprov, here))
        return out

    merged = merge(base, over, ())
    if () in oprov:
        prov[()] = oprov[()]
    return merged, prov


def _expand(
    data: dict, prov: Prov, base_dir: Path, kind: str | None, chain: list[Path],
    key_prefix: Loc = (),
) -> tuple[dict, Prov]:
    """Resolve ``extends:`` at the top of ``data`` (``prov`` paths relative to ``data``)."""
    if "extends" not in data:
        return data, prov
    ref = data["extends"]
    child = {k: v for k, v in data.items() if k != "extends"}
    child_prov = {loc: lab for loc, lab in prov.items() if not (loc and loc[0] == "extends")}
    referrer = prov.get(("extends",))
    key = _dotted(key_prefix + ("extends",))
    target = _find_ref(ref, kind, base_dir, referrer, key)
    if target in chain:
        loop = chain[chain.index(target):] + [target]
        raise ConfigError(
            "an extends chain without a loop", file=_display(referrer), key=key,
            got=" -> ".join(p.name for p in loop),
            hint="files: " + " -> ".join(str(p) for p in loop),
        )
    parent, parent_prov = _load_tree(target, kind, chain + [target])
    return _merge(parent, parent_prov, child, child_prov)


def _load_tree(path: Path, kind: str | None, chain: list[Path]) -> tuple[dict, Prov]:
    """One file with its extends chain merged in, and the provenance of every key."""
    data = read_yaml(path)
    prov = _label_tree(data, str(path))
    return _expand(data, prov, path.parent, kind, chain)


def _config_refs(model_cls: type) -> Mapping[str, str]:
    return getattr(model_cls, "config_refs", None) or {}


def _resolve_refs(
    data: dict, prov: Prov, model_cls: type, only: Iterable[str] | None = None
) -> None:
    """Inline the documents that fields like an experiment's ``arch:`` / ``model:`` name."""
    for field, kind in _config_refs(model_cls).items():
        if (only is not None and field not in only) or field not in data:
            continue
        value = data[field]
        where = prov.get((field,))
        if isinstance(value, BaseModel):
            sub = _dump(value)
            label = getattr(value, "_origin", None) or f"<{type(value).__name__}>"
            sub_prov = _label_tree(sub, label)
        elif isinstance(value, (str, os.PathLike)):
            target = _find_ref(value, kind, _dir_of(where), where, field)
            sub, sub_prov = _load_tree(target, kind, [target])
        elif isinstance(value, dict):
            own = _subtree(prov, (field,))
            base_dir = _dir_of(prov.get((field, "extends"), where))
            sub, sub_prov = _expand(value, own, base_dir, kind, [], (field,))
        else:
            continue  # the schema reports the wrong type
        data[field] = sub
        _graft(prov, (field,), sub_prov)


# --------------------------------------------------------------------------------------------
# Walking the schema (for --set checks and error hints)
# --------------------------------------------------------------------------------------------

_NO_SCHEMA = object()  # below a scalar: no key can exist
_ANY = object()  # a free-form mapping/value: any key may exist


def _unwrap(ann: Any) -> list:
    """The alternatives of an annotation (Optional/Union/Annotated peeled, None dropped)."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [x for a in typing.get_args(ann) if a is not type(None) for x in _unwrap(a)]
    return [ann]


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _concrete(ann: Any, node: Any) -> Any:
    """A polymorphic model (ArchConfig, dispatching on ``type:``) resolved for the data at
    this point, so that key checks see the type's own sections."""
    model = _model_in(ann)
    if model is not None and hasattr(model, "config_class_for") and isinstance(node, Mapping):
        return model.config_class_for(node)
    return ann


def _child(ann: Any, part: Any) -> Any:
    """The annotation one step below ``ann`` along key/index ``part``."""
    if ann is _ANY:
        return _ANY
    if ann is _NO_SCHEMA:
        return _NO_SCHEMA
    for alt in _unwrap(ann):
        if alt is Any:
            return _ANY
        if _is_model(alt):
            if isinstance(part, str) and part in alt.model_fields:
                return alt.model_fields[part].annotation
            continue
        origin = typing.get_origin(alt)
        if origin in (list, tuple, Sequence) and isinstance(part, int):
            args = typing.get_args(alt)
            return args[0] if args else _ANY
        if origin in (dict, Mapping) or alt is dict:
            args = typing.get_args(alt)
            if len(args) != 2:
                return _ANY
            _, value_type = args
            return value_type
    return _NO_SCHEMA


def _at(model_cls: type, loc: Iterable, data: Any = None) -> Any:
    ann: Any = model_cls
    node = data
    for part in loc:
        ann = _child(_concrete(ann, node), part)
        try:
            node = node[part] if node is not None else None
        except (KeyError, IndexError, TypeError):
            node = None
    return _concrete(ann, node)


def _model_in(ann: Any) -> type | None:
    """The pydantic model an annotation stands for (first one of a union), if any."""
    if ann is _ANY or ann is _NO_SCHEMA:
        return None
    return next((alt for alt in _unwrap(ann) if _is_model(alt)), None)


def _model_at(model_cls: type, loc: Iterable, data: Any = None) -> type | None:
    return _model_in(_at(model_cls, loc, data))


def _allows_any_key(ann: Any) -> bool:
    if ann is _ANY:
        return True
    for alt in _unwrap(ann):
        if alt is Any or alt is dict or typing.get_origin(alt) in (dict, Mapping):
            return True
    return False


def _scalar_word(model_cls: type, loc: Iterable, data: Any = None) -> str:
    """'an integer' or 'a number' for the field at loc, for bound messages."""
    ann = _at(model_cls, loc, data)
    alts = _unwrap(ann) if ann not in (_ANY, _NO_SCHEMA) else []
    if any(a is int for a in alts):
        return "an integer"
    if any(a is float for a in alts):
        return "a number"
    return "a value"


# --------------------------------------------------------------------------------------------
# --set overrides
# --------------------------------------------------------------------------------------------


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(key.split("."))


def parse_overrides(items: Iterable[str] | None) -> list[tuple[str, Any]]:
    """``["a.b.c=value", ...]`` -> ``[("a.b.c", value), ...]``; values are parsed as YAML."""
    out: list[tuple[str, Any]] = []
    for item in items or []:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(
                "key.path=value", file=SET_SOURCE, got=short_repr(item),
                hint="write e.g. --set array.rows=32",
            )
        key, _, text = item.partition("=")
        key = key.strip()
        if not key or any(not part.strip() for part in key.split(".")) or " " in key:
            raise ConfigError(
                "a dotted key path before '=' (like array.rows)", file=SET_SOURCE,
                got=short_repr(item),
            )
        try:
            value = yaml.load(text, Loader=_YamlLoader) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(
                "a YAML value after '='", file=SET_SOURCE, key=key, got=_yaml_problem(exc)
            ) from None
        out.append((key, value))
    return out


def _normalize_overrides(overrides: Any) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(overrides, (str, bytes)):   # iterating would read one character at a time
        raise ConfigError("a list of 'key.path=value' overrides (or a mapping)", file=SET_SOURCE,
                          got=f"a single string {short_repr(overrides)}",
                          hint=f"wrap it in a list: [{overrides!r}]")
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        pairs = []
        strings = [o for o in overrides if isinstance(o, str)]
        parsed = iter(parse_overrides(strings))
        for o in overrides:
            if isinstance(o, str):
                pairs.append(next(parsed))
            elif isinstance(o, (tuple, list)) and len(o) == 2:
                key, value = o
                pairs.append((key, value))
            else:
                raise ConfigError("key.path=value", file=SET_SOURCE, got=short_repr(o))
    out = []
    for key, value in pairs:
        parts = _split_key(key) if isinstance(key, str) else tuple(str(p) for p in key)
        if not parts or any(not p for p in parts):
            raise ConfigError("a dotted key path", file=SET_SOURCE, got=short_repr(key))
        out.append((parts, value))
    return out


def _index_words(where: str, n: int) -> str:
    if n == 0:
        return f"a list index, but {where} is an empty list"
    return f"a list index of {where} in 0..{n - 1}"


def _set_one(data: dict, prov: Prov, model_cls: type, parts: tuple[str, ...], value: Any) -> None:
    node: Any = data
    ann: Any = model_cls
    loc: Loc = ()
    key = _dotted(parts)
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = _dotted(loc) or "the top level"
        if isinstance(node, list):
            if not part.isdigit():
                raise ConfigError(
                    _index_words(where, len(node)), file=SET_SOURCE, key=key,
                    got=short_repr(part),
                )
            step: Any = int(part)
            if step >= len(node):
                raise ConfigError(
                    _index_words(where, len(node)), file=SET_SOURCE, key=key, got=str(step)
                )
        elif isinstance(node, dict):
            step = part
            ann = _concrete(ann, node)
            model = _model_in(ann)
            fields = set(model.model_fields) if model is not None else set()
            if part not in node and part not in fields and not _allows_any_key(ann):
                known = sorted(set(map(str, node)) | fields)
                raise ConfigError(
                    f"an existing key of {where} ({', '.join(known)})",
                    file=SET_SOURCE, key=key, got=short_repr(part),
                    hint=did_you_mean(part, known),
                )
        else:
            raise ConfigError(
                f"a mapping or list at {where}", file=SET_SOURCE, key=key,
                got=short_repr(node),
            )
        here = loc + (step,)
        if last:
            node[step] = copy.deepcopy(value)
            _graft(prov, here, _label_tree(value, SET_SOURCE))
            return
        sub_ann = _child(ann, step)
        if isinstance(node, dict) and (step not in node or node[step] is None):
            # A mapping the file left out (e.g. outputs:): start from the schema's default so
            # that setting one key keeps the defaults of its siblings.
            node[step] = _default_mapping(ann, step)
            _graft(prov, here, _label_tree(node[step], SET_SOURCE))
        node, ann, loc = node[step], sub_ann, here


def _default_mapping(ann: Any, field: str) -> dict:
    model = _model_in(ann)
    if model is not None and field in model.model_fields:
        default = model.model_fields[field].get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            return _dump(default)
        if isinstance(default, dict):
            return copy.deepcopy(default)
    return {}


def apply_overrides(
    data: dict, overrides: Any, model_cls: type = BaseModel, prov: Prov | None = None
) -> dict:
    """Apply overrides (``["a.b=1"]``, ``[("a.b", 1)]`` or ``{"a.b": 1}``) to ``data`` in
    place; keys are checked against the data and ``model_cls``'s schema. Returns ``data``."""
    prov = prov if prov is not None else {}
    for parts, value in _normalize_overrides(overrides):
        _set_one(data, prov, model_cls, parts, value)
        if len(parts) == 1 and parts[0] in _config_refs(model_cls):
            _resolve_refs(data, prov, model_cls, only=[parts[0]])
    return data


# --------------------------------------------------------------------------------------------
# Validation errors -> ConfigError
# --------------------------------------------------------------------------------------------

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "none_required": "null",
}


def _describe(err: dict, model_cls: type,
              data: Any = None) -> tuple[Loc, str, str | None, str | None]:
    """(loc, expected, got, hint) of one pydantic error."""
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    got = short_repr(err.get("input"))
    if isinstance(inner, InvalidValue):
        return loc + inner.loc, inner.expected, inner.got, inner.hint
    if kind == "extra_forbidden":
        model = _model_at(model_cls, loc[:-1], data)
        names = list(model.model_fields) if model is not None else []
        where = f"'{_dotted(loc[:-1])}'" if loc[:-1] else "the top level"
        expected = f"a known key of {where}"
        if names:
            expected += f" ({', '.join(names)})"
        return loc, expected, short_repr(loc[-1]), did_you_mean(str(loc[-1]), names)
    if kind == "missing":
        return loc, "a value (this key is required)", None, None
    if len(loc) == 1 and loc[0] in _config_refs(model_cls) and kind == "model_type":
        word = _KIND_WORD.get(_config_refs(model_cls)[loc[0]], str(loc[0]))
        return loc, f"a shipped {word} name, a path or a mapping", got, None
    if kind in _TYPE_WORDS:
        return loc, _TYPE_WORDS[kind], got, None
    bounds = {
        "greater_than": (">", "gt"),
        "greater_than_equal": (">=", "ge"),
        "less_than": ("<", "lt"),
        "less_than_equal": ("<=", "le"),
    }
    if kind in bounds:
        sign, name = bounds[kind]
        bound = ctx.get(name)
        text = f"{bound:g}" if isinstance(bound, float) else str(bound)
        why = (" (sizes are bounded so that cycle and byte counts stay exact in 64-bit "
               "integers)") if kind == "less_than_equal" else ""
        return loc, f"{_scalar_word(model_cls, loc, data)} {sign} {text}{why}", got, None
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        value = err.get("input")
        hint = did_you_mean(value, choices) if isinstance(value, str) else None
        return loc, f"one of {ctx.get('expected')}", got, hint
    if kind == "string_too_short":
        n = ctx.get("min_length")
        return loc, "a non-empty string" if n == 1 else f"a string of at least {n} characters", \
            got, None
    if kind in ("too_short", "too_long"):
        n = ctx.get("min_length" if kind == "too_short" else "max_length")
        which = "at least" if kind == "too_short" else "at most"
        return loc, f"a list with {which} {n} item{'s' if n != 1 else ''}", got, None
    if kind == "value_error" and inner is not None:
        return loc, str(inner), got, None
    msg = err.get("msg", kind)
    return loc, msg[:1].lower() + msg[1:], got, None


def _node_at(data: Any, loc: Loc) -> Any:
    """The raw value at key path ``loc`` of ``data``, or None where there is none."""
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _required_by_type(model_cls: type, loc: Loc, prov: Prov,
                      data: Any) -> tuple[str | None, str] | None:
    """For a missing key that only the ``type:`` chosen at its parent requires (``recon`` of
    ``type: microscopiq``): (the source of that ``type`` key, what to expect), so that the
    error blames what made the key required (a ``--set arch.type=...``, the file that set the
    type) rather than the file that merely lacks it. None for any other missing key."""
    if not loc:
        return None
    parent, name = loc[:-1], loc[-1]
    node = _node_at(data, parent)
    if not isinstance(node, Mapping) or not isinstance(node.get("type"), str):
        return None
    sub = _model_at(model_cls, parent, data)
    if sub is None or not hasattr(sub, "config_class_for"):
        return None
    # the polymorphic base: the class that dispatches on ``type`` (its fields every type has)
    base = next(c for c in sub.__mro__ if "config_class_for" in vars(c))
    if name not in sub.model_fields or name in base.model_fields:
        return None
    type_key = _dotted(parent + ("type",))
    type_source = _source_of(prov, parent + ("type",))
    # the file that wrote the section's other keys (its name), which lacks this one
    lacking = _source_of(prov, parent + (("name",) if "name" in node else ()))
    expected = f"a value ({type_key} {node['type']!r} requires {name!r}"
    if lacking is not None and lacking != type_source:
        expected += f"; {_display(lacking)} gives none"
    return type_source, expected + ")"


def _convert(exc: ValidationError, model_cls: type, prov: Prov, data: Any = None) -> ConfigError:
    items = []
    # A missing key is often the consequence of a misspelt one: report the misspelling first.
    errors = exc.errors(include_url=False)
    # a tuple field whose items failed also reports "too short" (it counts valid items only)
    deeper = [tuple(e["loc"]) for e in errors]
    errors = [e for e in errors if not (e["type"] == "too_short" and any(
        len(d) > len(e["loc"]) and d[:len(e["loc"])] == tuple(e["loc"]) for d in deeper))]
    errors = sorted(errors, key=lambda e: e["type"] == "missing")
    for err in errors:
        loc, expected, got, hint = _describe(err, model_cls, data)
        source = _source_of(prov, loc)
        by_type = _required_by_type(model_cls, loc, prov, data) if err["type"] == "missing" \
            else None
        if by_type is not None:
            source, expected = by_type
        file = _display(source)
        items.append(
            ConfigError(expected, file=file, key=_dotted(loc) or None, got=got, hint=hint)
        )
    first = items[0]
    first.errors = items
    return first


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------


def load_validated(
    path_or_dict: Any,
    model_cls: type[M],
    overrides: Any = None,
    source: str | None = None,
    kind: str | None = None,
) -> M:
    """Load and validate one config.

    Args:
        path_or_dict: a path, a shipped name (when ``kind`` is known), a mapping, or an
            instance of ``model_cls`` (returned as is unless overrides are given).
        model_cls: the pydantic schema.
        overrides: ``["a.b=1", ...]``, ``[("a.b", 1), ...]`` or ``{"a.b": 1}``.
        source: label for a mapping's keys in messages (default ``<dict>``); if it is the path of
            a file, ``extends:`` in the mapping resolves relative to that file.
        kind: data folder that resolves bare names (``arch``, ``workloads``, ``experiments``);
            defaults by schema. Without one, ``extends: x`` means the sibling file ``x.yaml``.
    """
    if kind is None:
        kind = next((k for cls, k in _KIND_OF_SCHEMA.items() if issubclass(model_cls, cls)), None)
    ref = path_or_dict
    if isinstance(ref, model_cls):
        if not overrides:
            return ref
        root = getattr(ref, "_origin", None) or f"<{model_cls.__name__}>"
        data = _dump(ref)
        prov = _label_tree(data, root)
    elif isinstance(ref, BaseModel):
        raise ConfigError(
            f"a {model_cls.__name__}, a path or a mapping", got=type(ref).__name__
        )
    elif isinstance(ref, Mapping):
        root = source or "<dict>"
        if source and os.path.isfile(source):
            root = str(_resolve(Path(source)))
        data = _plain(copy.deepcopy(dict(ref)))
        prov = _label_tree(data, root)
        data, prov = _expand(data, prov, _dir_of(root), kind, [])
    elif isinstance(ref, (str, os.PathLike)):
        p = Path(os.fspath(ref)).expanduser()
        if kind is not None and isinstance(ref, str) and not _looks_like_path(ref) \
                and not p.is_file():
            target = _find_ref(ref, kind, Path.cwd(), None, None)
        else:
            target = _resolve(p)
        root = str(target)
        data, prov = _load_tree(target, kind, [target])
    else:
        raise ConfigError(
            f"a path, a name or a mapping for {model_cls.__name__}", got=short_repr(ref)
        )

    _resolve_refs(data, prov, model_cls)
    apply_overrides(data, overrides, model_cls, prov)
    try:
        obj = model_cls.model_validate(data)
    except ValidationError as exc:
        raise _convert(exc, model_cls, prov, data) from None
    _set_origins(obj, prov, root)
    return obj


def _set_origins(obj: BaseModel, prov: Prov, root: str) -> None:
    if hasattr(obj, "_origin"):
        obj._origin = _display(root)
    if hasattr(obj, "_sources"):
        obj._sources = dict(prov)
    for field in _config_refs(type(obj)):
        sub = getattr(obj, field, None)
        if sub is not None and hasattr(sub, "_origin"):
            sub._origin = _display(prov.get((field,), root))


def load_arch(ref: Any, overrides: Any = None) -> ArchConfig:
    """An arch by shipped name (``arch/<name>.yaml``), path, mapping or ArchConfig."""
    return load_validated(ref, ArchConfig, overrides, kind="arch")


def load_model(ref: Any, overrides: Any = None) -> ModelConfig:
    """A model by shipped name (``workloads/<name>.yaml``), path, mapping or ModelConfig."""
    return load_validated(ref, ModelConfig, overrides, kind="workloads")


def load_experiment(ref: Any, overrides: Any = None) -> ExperimentConfig:
    """An experiment by shipped name (``experiments/<name>.yaml``), path, mapping or object.

    Overrides may reach into the arch and model: ``arch.array.rows=32``, ``model.num_layers=2``,
    ``runs.0.seq_len=128``.
    """
    return load_validated(ref, ExperimentConfig, overrides, kind="experiments")


# --------------------------------------------------------------------------------------------
# Folders of named tables (technology nodes, outlier profiles)
# --------------------------------------------------------------------------------------------


class TableFolder:
    """Validated YAML tables kept in one data folder and named by file stem.

    ``load(ref)`` takes a name (``"7nm"`` -> ``<folder>/7nm.yaml``), a path, a mapping or an
    already-validated table; tables read from files are cached by (path, mtime, size), since a
    sweep asks for the same one many times. ``what`` and ``key`` word the errors."""

    def __init__(self, folder, model_cls: type, what: str, key: str, allow_mapping: bool = False):
        self.folder = folder              # a callable, so STRATA_HOME is read when used
        self.model_cls = model_cls
        self.what = what
        self.key = key
        self.allow_mapping = allow_mapping
        self._cache = LRU(64)
        self._where = LRU(256)   # (ref, cwd, $STRATA_HOME) -> resolved path (hot path: no resolve)

    def names(self) -> list[str]:
        folder = self.folder()
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.iterdir()
                      if p.is_file() and p.suffix in (".yaml", ".yml"))

    def resolve(self, ref) -> Path:
        text = os.fspath(ref)
        p = Path(text).expanduser()
        if p.suffix in (".yaml", ".yml") or os.sep in text or "/" in text or p.is_file():
            return _resolve(p, key=self.key)
        for suffix in (".yaml", ".yml"):
            candidate = self.folder() / f"{text}{suffix}"
            if candidate.is_file():
                return _resolve(candidate, key=self.key)
        names = self.names()
        raise ConfigError(f"{self.what} ({', '.join(names)}) or a path to one", key=self.key,
                          got=short_repr(text), hint=did_you_mean(text, names))

    def load(self, ref, overrides=None):
        if isinstance(ref, self.model_cls):
            return ref if not overrides else load_validated(ref, self.model_cls, overrides)
        if self.allow_mapping and isinstance(ref, Mapping):
            return load_validated(dict(ref), self.model_cls, overrides)
        if not isinstance(ref, (str, os.PathLike)):
            kinds = "a name, a path or a mapping" if self.allow_mapping else "a name or a path"
            raise ConfigError(f"{kinds} for {self.what}", key=self.key, got=short_repr(ref))
        where = (os.fspath(ref), os.getcwd(), os.environ.get("STRATA_HOME"))
        path = self._where.get(where)
        if path is None:
            path = self.resolve(ref)
            self._where.put(where, path)
        if overrides:
            return load_validated(path, self.model_cls, overrides)
        try:
            st = path.stat()
        except OSError:
            return load_validated(path, self.model_cls)   # reports the missing file
        key = (str(path), st.st_mtime_ns, st.st_size)
        table = self._cache.get(key)
        if table is None:
            table = load_validated(path, self.model_cls)
            self._cache.put(key, table)
        return table


def source_of(cfg: BaseModel, loc: Iterable) -> str | None:
    """The file (as shown to users) or ``--set`` that wrote key path ``loc`` of a loaded
    config, or None when it is not known."""
    prov = getattr(cfg, "_sources", None)
    if not prov:
        return None
    parts = tuple(int(p) if isinstance(p, str) and p.isdigit() else p for p in loc)
    return _display(_source_of(prov, parts))
