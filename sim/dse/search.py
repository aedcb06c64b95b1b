"""Guided multi-objective search over a sweep's design space, with optuna (NSGA-II or TPE).

The space is the experiment's ``sweep:`` block, read by :func:`load_sweep`:

- a grid key's values become a categorical choice, or an integer distribution with a step when
  they are evenly spaced integers (a ``{start, stop, step}`` range); log and float ranges stay
  the categorical set of the values the range lists, so search and grid see the same designs;
- a ``zip:`` block is one categorical choice of a position (its lists stay paired);
- a ``random.space`` key is an int or float distribution over ``[low, high]`` (``scale: log``
  -> a log distribution) or a categorical ``choice``.

Each trial's parameters are turned into overrides and then into a point by ``Sweep.point``
(derived keys, constraints and validation exactly as in a grid sweep), evaluated by the same
``run_point`` and written to the same SQLite store, keyed by the config hash. A trial that
lands on a point the store holds reuses its rows; a dropped or failed point is a failed trial
(optuna learns nothing from it), with its reason in the store.

Why an in-memory optuna study rebuilt from the store, not optuna's RDB storage: the store is
already the durable record, written one transaction per point; a second database (SQLAlchemy and
alembic schemas) could disagree with it after a SIGKILL between the two writes. The store's small
``trials`` table keeps each trial's parameters and the sampler's notes (NSGA-II's generation and
parents; its study-level notes go to ``meta``), and a resume replays them into a fresh study
with ``create_trial``/``add_trial``; the objective values are recomputed from the stored rows,
so a resume may even change objectives.

Determinism: trial ``n`` is drawn by a sampler seeded with ``(seed, n)``, so it is a function of
the seed and the trials before it alone: the same seed gives the same trial sequence, and an
interrupted search, resumed, proposes what the uninterrupted one would have.
"""
from __future__ import annotations

import hashlib
import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError
from ..config.errors import did_you_mean, short_repr
from .spec import Sweep, load_sweep
from .store import Store
from .sweep import record_outcome, run_point, task_of

__all__ = ["run_search", "parse_objective", "SearchSummary", "SAMPLERS",
           "DEFAULT_OBJECTIVES"]

SAMPLERS = ("nsga2", "tpe")
DEFAULT_OBJECTIVES = (("latency_s", "min"), ("energy_j", "min"), ("area_mm2", "min"))
ZIP_PARAM = "sweep.zip"


def parse_objective(text: str, key: str = "--objective") -> tuple[str, str]:
    """``metric[:min|max]`` -> (metric, direction)."""
    name, _, d = str(text).partition(":")
    d = d or "min"
    if not name or d not in ("min", "max"):
        raise ConfigError("an objective metric[:min|max], e.g. latency_s:min", key=key,
                          got=repr(text))
    return name, d


def _primitive(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


@dataclass
class Space:
    """Optuna distributions for a sweep, and the way back from trial params to overrides."""

    distributions: dict = field(default_factory=dict)    # param name -> distribution
    decode: dict = field(default_factory=dict)           # param name -> value -> overrides

    @classmethod
    def of(cls, sweep: Sweep) -> "Space":
        from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                          IntDistribution)

        sp = cls()

        def categorical(name, values, to_ov):
            if all(_primitive(v) for v in values) and len(set(map(repr, values))) == len(values):
                sp.distributions[name] = CategoricalDistribution(list(values))
                sp.decode[name] = to_ov
            else:                                 # lists, mappings: choose a position
                sp.distributions[name] = CategoricalDistribution(list(range(len(values))))
                sp.decode[name] = lambda i, f=to_ov, vs=values: f(vs[i])

        for k, vals in sweep.grid.items():
            steps = {b - a for a, b in zip(vals, vals[1:])}
            if (len(vals) > 1 and all(isinstance(v, int) and not isinstance(v, bool)
                                      for v in vals) and len(steps) == 1 and min(steps) > 0):
                sp.distributions[k] = IntDistribution(vals[0], vals[-1], step=steps.pop())
                sp.decode[k] = lambda v, k=k: {k: int(v)}
            else:
                categorical(k, vals, lambda v, k=k: {k: v})
        if sweep.zip:
            keys = list(sweep.zip)
            n = len(sweep.zip[keys[0]])
            sp.distributions[ZIP_PARAM] = CategoricalDistribution(list(range(n)))
            sp.decode[ZIP_PARAM] = lambda i: {k: sweep.zip[k][i] for k in keys}
        for k, s in (sweep.random["space"] if sweep.random else {}).items():
            if "choice" in s:
                categorical(k, s["choice"], lambda v, k=k: {k: v})
                continue
            log = s.get("scale", "linear") == "log"
            if s.get("int"):
                sp.distributions[k] = IntDistribution(math.ceil(s["low"]), math.floor(s["high"]),
                                                      log=log)
                sp.decode[k] = lambda v, k=k: {k: int(v)}
            else:
                sp.distributions[k] = FloatDistribution(float(s["low"]), float(s["high"]),
                                                        log=log)
                sp.decode[k] = lambda v, k=k: {k: float(v)}
        return sp

    def overrides(self, params: dict) -> dict:
        ov: dict = {}
        for name in self.distributions:
            ov.update(self.decode[name](params[name]))
        return ov


def _sampler(name: str, seed: int, number: int, population: int):
    import optuna

    # one generator per trial, seeded by (seed, trial number): see the module docstring
    s = int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=s)
    return optuna.samplers.TPESampler(seed=s, n_startup_trials=min(10, max(2, population)),
                                      multivariate=True)


def objective_values(rows: list[dict], objectives) -> list[float] | None:
    """A point's objective values: each metric's mean over the point's rows (variants x runs;
    every point has the same rows, so the mean orders points as the total does). None when a
    metric is missing or not finite in some row."""
    vals = []
    for name, _ in objectives:
        xs = [r.get(name) for r in rows]
        if not xs or any(not isinstance(x, (int, float)) or isinstance(x, bool)
                         or not math.isfinite(x) for x in xs):
            return None
        vals.append(float(sum(xs)) / len(xs))
    return vals


def _check_metrics(rows: list[dict], objectives, where: str) -> None:
    cols = [c for c in rows[0] if c not in ("variant", "run")] if rows else []
    for name, _ in objectives:
        if rows and name not in rows[0]:
            raise ConfigError("an objective naming a metric column (" + ", ".join(cols[:8]) +
                              ", ...)", file=where, key="--objective", got=repr(name),
                              hint=did_you_mean(name, cols))


@dataclass
class SearchSummary:
    name: str
    store: Path
    sampler: str
    trials: int = 0          # trials in the study after this call
    new: int = 0             # trials this call asked for
    ran: int = 0             # points this call simulated
    reused: int = 0          # trials that hit a point already in the store
    failed: int = 0
    dropped: int = 0
    front: int = 0
    wall_s: float = 0.0

    def line(self) -> str:
        return (f"{self.name}: {self.sampler} search, {self.trials} trials ({self.new} new: "
                f"ran {self.ran}, reused {self.reused} stored, {self.dropped} dropped, "
                f"{self.failed} failed); Pareto front {self.front} points; {self.wall_s:.1f} s")


def run_search(experiment: Sweep | str, store_path: str | Path, *,
               budget_points: int | None = None, budget_seconds: float | None = None,
               sampler: str = "nsga2", objectives=DEFAULT_OBJECTIVES, seed: int | None = None,
               resume: bool = False, population: int = 8, fn: Callable = run_point,
               overrides: Any = None, progress: bool = False):
    """Search ``experiment``'s sweep space until the study holds ``budget_points`` trials
    (stored trials count: a resume with the same budget finishes an interrupted search, a
    larger one extends it) or ``budget_seconds`` have passed in this call. Returns the Pareto
    front: a DataFrame with one row per non-dominated point (swept keys, objective values,
    hash, first trial); ``front.attrs["summary"]`` is the :class:`SearchSummary`."""
    try:
        import optuna
    except ImportError:          # a dependency; this only guards installs made before it was
        raise ConfigError("optuna installed (pip install 'optuna>=3.4')", key="strata search",
                          got="no optuna module") from None
    import pandas as pd
    from optuna.trial import TrialState, create_trial

    t0 = time.perf_counter()
    sweep = experiment if isinstance(experiment, Sweep) else load_sweep(experiment, overrides)
    where = sweep.file
    if budget_points is None and budget_seconds is None:
        raise ConfigError("a budget in points (--budget N) or seconds (--time S)",
                          file=where, key="--budget", got="none")
    if budget_points is not None and (isinstance(budget_points, bool) or
                                      not isinstance(budget_points, int) or budget_points < 1):
        raise ConfigError("a budget of points >= 1", file=where, key="--budget",
                          got=short_repr(budget_points))
    if budget_seconds is not None and not (isinstance(budget_seconds, (int, float))
                                           and math.isfinite(budget_seconds)
                                           and budget_seconds > 0):
        raise ConfigError("a time budget > 0 seconds", file=where, key="--time",
                          got=short_repr(budget_seconds))
    if sampler not in SAMPLERS:
        raise ConfigError("a sampler: " + ", ".join(SAMPLERS), file=where, key="--sampler",
                          got=repr(sampler), hint=did_you_mean(sampler, SAMPLERS))
    objectives = [parse_objective(o) if isinstance(o, str) else tuple(o) for o in objectives]
    if not objectives:
        raise ConfigError("at least one objective", file=where, key="--objective", got="none")
    for o in objectives:
        parse_objective(":".join(o))
    names = [n for n, _ in objectives]
    if len(set(names)) != len(names):
        raise ConfigError("each objective once", file=where, key="--objective",
                          got=repr(names))
    if not isinstance(population, int) or population < 2:
        raise ConfigError("a population of at least 2", file=where, key="population",
                          got=short_repr(population))
    seed = sweep.base.seed if seed is None else seed
    space = Space.of(sweep)
    store_path = Path(store_path)
    if store_path.exists() and not resume:
        raise ConfigError("a new results store, or --resume to continue this search",
                          file=str(store_path), key="--out", got="an existing store")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize" if d == "min" else "maximize"
                                            for _, d in objectives],
                                sampler=_sampler(sampler, seed, 0, population))
    summary = SearchSummary(sweep.name, store_path, sampler)
    store = Store(store_path)
    try:
        store.set_meta(name=sweep.name, file=sweep.file, keys=list(sweep.keys),
                       base_hash=sweep.base.hash(), search={"sampler": sampler, "seed": seed,
                                                            "objectives": objectives})
        checked = False

        def state_of(h):
            nonlocal checked
            st, rows, _ = store.rows(h)
            if st != "ok":
                return None
            if not checked:
                _check_metrics(rows, objectives, where)
                checked = True
            return objective_values(rows, objectives)

        for number, h, params, attrs in store.trials():        # rebuild the stored study
            if set(params) != set(space.distributions):
                raise ConfigError("a store made by a search over the same space",
                                  file=str(store_path), key="trials",
                                  got=f"trial {number} sets {sorted(params)}")
            vals = state_of(h)
            study.add_trial(create_trial(
                params=params, distributions=space.distributions, system_attrs=attrs,
                values=vals, state=TrialState.COMPLETE if vals else TrialState.FAIL))
        # the sampler's study-level notes (NSGA-II's parent population per generation): put
        # back, so a resumed study selects parents from what the uninterrupted one chose
        notes = store.meta().get("study_system_attrs", {})
        for k, v in notes.items():
            study._storage.set_study_system_attr(study._study_id, k, v)
        run_id = uuid.uuid4().hex
        bar = None
        if progress and budget_points is not None:
            from tqdm import tqdm
            bar = tqdm(total=budget_points, initial=len(study.trials), desc=sweep.name,
                       unit="trial", file=sys.stderr)
        while True:
            number = len(study.trials)
            if budget_points is not None and number >= budget_points:
                break
            if budget_seconds is not None and time.perf_counter() - t0 >= budget_seconds:
                break
            study.sampler = _sampler(sampler, seed, number, population)
            trial = study.ask(space.distributions)
            pt = sweep.point(number, space.overrides(trial.params))
            summary.new += 1
            st, _ = store.status(pt.hash)
            if pt.dropped is not None:
                if st is None:
                    store.record(pt.hash, pt.index, pt.overrides, "dropped", error=pt.dropped,
                                 executed=False)
                summary.dropped += 1
            elif st == "ok":
                summary.reused += 1
            elif st != "failed":                  # new, or left running by a killed search
                task = task_of(pt)
                store.record(pt.hash, pt.index, pt.overrides, "running", executed=False,
                             run_id=run_id)
                summary.ran += 1
                record_outcome(store, task, fn(task))
            vals = state_of(pt.hash)
            if vals is None and pt.dropped is None:
                summary.failed += 1               # failed, or an objective is not a number
            if vals is not None:
                study.tell(trial, vals)
            else:
                study.tell(trial, state=TrialState.FAIL)
            store.record_trial(number, pt.hash, trial.params,
                               dict(study.trials[number].system_attrs))
            now = study._storage.get_study_system_attrs(study._study_id)
            if now != notes:
                notes = dict(now)
                store.set_meta(study_system_attrs=notes)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        summary.trials = len(study.trials)
        front = _front_frame(study, store, sweep, space, objectives, pd)
    finally:
        store.close()
    summary.front = len(front)
    summary.wall_s = time.perf_counter() - t0
    front.attrs["summary"] = summary
    return front


def _front_frame(study, store, sweep, space, objectives, pd):
    """optuna's Pareto trials, one row per distinct point (several trials may hit one)."""
    from optuna.trial import TrialState

    hashes = {n: h for n, h, _, _ in store.trials()}
    names = [n for n, _ in objectives]
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = study.best_trials if done else []
    rows, seen = [], set()
    for t in sorted(best, key=lambda t: t.number):
        h = hashes[t.number]
        if h in seen:
            continue
        seen.add(h)
        ov = sweep.point(t.number, space.overrides(t.params)).overrides
        rows.append({"trial": t.number, "hash": h, **{k: ov.get(k) for k in sweep.keys},
                     **dict(zip(names, t.values))})
    return pd.DataFrame(rows, columns=["trial", "hash", *sweep.keys, *names])
