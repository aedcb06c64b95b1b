"""Routers: which client a request goes to, registered by name (:data:`ROUTERS`).

A router is built once per client pool as ``ROUTERS[name](clients, rng, **options)`` and
called as ``router(request) -> client``. Load metrics are read from each engine's running
tallies (no scans): ``input`` (prompt tokens of its unfinished requests), ``output`` (their
requested output tokens), ``kv`` (KV blocks in use), ``tokens_left`` (prefill and decode tokens
still to process). Ties go to the lowest client index, so routing is deterministic.
"""
from __future__ import annotations

from typing import Callable

from sim.config import ConfigError

WHERE = "<router>"

LOAD = {
    "input": lambda c: c.load_prompt,
    "output": lambda c: c.load_output,
    "kv": lambda c: c.live_kv_used(),
    "tokens_left": lambda c: c.live_tokens_left(),
}


def _metric(by: str):
    if by not in LOAD:
        raise ConfigError(f"one of {sorted(LOAD)}", file=WHERE, key="router.by", got=repr(by))
    return LOAD[by]


def round_robin(clients, rng):
    state = {"i": 0}

    def route(req):
        c = clients[state["i"] % len(clients)]
        state["i"] += 1
        return c
    return route


def least_loaded(clients, rng, by: str = "tokens_left"):
    load = _metric(by)

    def route(req):
        return min(clients, key=lambda c: (load(c), c.index))
    return route


def heavy_light(clients, rng, threshold: int = 1024, heavy_fraction: float = 0.5):
    """Requests with ``prompt + output > threshold`` tokens go to the first
    ``ceil(heavy_fraction * n)`` clients, the rest to the others (round robin in each group;
    one group when there is a single client)."""
    if not 0 < heavy_fraction < 1:
        raise ConfigError("a fraction in (0, 1)", file=WHERE, key="router.heavy_fraction",
                          got=repr(heavy_fraction))
    n_heavy = min(len(clients) - 1, max(1, round(heavy_fraction * len(clients)))) or 1
    heavy, light = clients[:n_heavy], clients[n_heavy:] or clients[:n_heavy]
    rr_h, rr_l = round_robin(heavy, rng), round_robin(light, rng)

    def route(req):
        return rr_h(req) if req.prompt_tokens + req.output_tokens > threshold else rr_l(req)
    return route


def power_of_two(clients, rng, by: str = "tokens_left"):
    """Two distinct clients drawn from the seeded generator; the less loaded one wins."""
    load = _metric(by)

    def route(req):
        if len(clients) == 1:
            return clients[0]
        i, j = rng.choice(len(clients), size=2, replace=False)
        a, b = clients[int(i)], clients[int(j)]
        return min((a, b), key=lambda c: (load(c), c.index))
    return route


#: router name -> factory(clients, rng, **options) -> route(request) -> client
ROUTERS: dict[str, Callable] = {
    "round_robin": round_robin,
    "least_loaded": least_loaded,
    "heavy_light": heavy_light,
    "power_of_two": power_of_two,
}


def build_router(spec, clients, rng):
    spec = {"type": spec} if isinstance(spec, str) else dict(spec or {"type": "round_robin"})
    kind = spec.pop("type", "round_robin")
    if kind not in ROUTERS:
        raise ConfigError(f"one of {sorted(ROUTERS)}", file=WHERE, key="router.type", got=repr(kind))
    try:
        return ROUTERS[kind](clients, rng, **spec)
    except TypeError as e:
        raise ConfigError(f"options of router {kind!r}", file=WHERE, key="router",
                          got=str(e)) from None
