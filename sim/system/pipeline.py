"""Request pipelines: the stage chain every request of a serving run walks through.

A pipeline is a YAML file under ``workloads/pipelines/`` (or a mapping) with ``stages``, each
``{name, kind}``: ``fixed`` stages take ``latency_s`` seconds (no contention: a tokenizer,
a safety check), ``prefill`` and ``decode`` run on the LLM clients (``prefill`` directly
followed by ``decode``, once).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import yaml

from sim.config import ConfigError

KINDS = ("fixed", "prefill", "decode")
PIPELINES = Path(__file__).resolve().parents[2] / "workloads" / "pipelines"


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str
    latency_s: float = 0.0


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: tuple[Stage, ...]

    @property
    def llm_index(self) -> int:
        return next(i for i, s in enumerate(self.stages) if s.kind == "prefill")


def load_pipeline(ref="prefill_decode") -> Pipeline:
    if isinstance(ref, Pipeline):
        return ref
    where = "<pipeline>"
    if isinstance(ref, (str, Path)):
        path = Path(ref)
        if not path.suffix:
            path = PIPELINES / f"{ref}.yaml"
        where = str(path)
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError:
            raise ConfigError(f"a pipeline file (names: {sorted(p.stem for p in PIPELINES.glob('*.yaml'))})",
                              file=where, key=None, got=str(ref)) from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError("valid UTF-8 YAML", file=where, got=str(e).splitlines()[0]) from None
    else:
        doc = ref
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list) or not doc["stages"]:
        raise ConfigError("a mapping with a non-empty 'stages' list", file=where, key="stages",
                          got=repr(doc)[:60])
    stages = []
    for i, st in enumerate(doc["stages"]):
        key = f"stages.{i}"
        if not isinstance(st, dict) or st.get("kind") not in KINDS:
            raise ConfigError(f"a stage with kind one of {KINDS}", file=where, key=f"{key}.kind",
                              got=repr(st)[:60])
        unknown = set(st) - {"name", "kind", "latency_s"}
        if unknown:
            raise ConfigError("keys name, kind, latency_s", file=where, key=f"{key}.{sorted(unknown)[0]}",
                              got="unknown key")
        lat = st.get("latency_s", 0.0)
        if st["kind"] != "fixed" and "latency_s" in st:
            raise ConfigError("latency_s only on fixed stages", file=where, key=f"{key}.latency_s",
                              got=repr(lat))
        if isinstance(lat, bool) or not isinstance(lat, numbers.Real) or not lat >= 0:
            raise ConfigError("a number of seconds >= 0", file=where, key=f"{key}.latency_s", got=repr(lat))
        stages.append(Stage(str(st.get("name", st["kind"])), st["kind"], float(lat)))
    kinds = [s.kind for s in stages]
    if kinds.count("prefill") != 1 or kinds.count("decode") != 1 or \
            kinds.index("decode") != kinds.index("prefill") + 1:
        raise ConfigError("one prefill stage directly followed by one decode stage", file=where,
                          key="stages", got=" -> ".join(kinds))
    return Pipeline(str(doc.get("name", where)), tuple(stages))
