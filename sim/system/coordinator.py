"""The serving coordinator: requests through stage chains on LLM clients, on one simpy clock.

Time is integer nanoseconds on a :class:`sim.core.Engine` (its integer-cycle rules make the
run exact and repeatable); frames report seconds. Events: a request's arrival, each fixed
stage's completion (a timeout callback), the engine step loops (one timeout per step), and
the KV transfers of disaggregated serving (:class:`sim.core.Link` processes: a link shared by
several client pairs is one FIFO resource, so transfers contend on it).

Cluster layouts (``cluster`` mapping, see :func:`serve_frames`):

* co-located: ``clients`` engines running ``engine.scheduler``, requests routed by ``router``;
* ``engine.scheduler: disaggregated``: a ``prefill`` pool and a ``decode`` pool. The router
  picks a prefill client; when a request's prefill ends (its first token out), its KV
  (``layers * 2 * kv_heads * head_dim * tokens * bytes``) moves over a link to a decode
  client chosen by ``decode_router`` (``pairing: global``) or fixed (``pairing: local``:
  prefill client i feeds decode client i mod n), whole after the prefill step or layer by
  layer as each layer of the step finishes (``kv_transfer: layer``). The prefill client keeps
  the blocks until the transfer ends.

Conservation: at the end every request is completed (generated == requested tokens) or
rejected with a reason; :class:`sim.core.invariants.InvariantError` otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.config import ConfigError
from sim.core import Engine, Link
from sim.core.invariants import require

from .backends import build_backend
from .engine import ENGINE_KEYS, NS, LLMEngine, Seq
from .pipeline import load_pipeline
from .routers import build_router

WHERE = "<cluster>"
REQUEST_COLUMNS = ("request_id", "arrival_s", "prompt_tokens", "output_tokens")


class Req:
    __slots__ = ("rid", "arrival_ns", "prompt_tokens", "output_tokens", "model", "stage",
                 "status", "reason", "client", "decode_client", "finish_ns", "seq", "order")

    def __init__(self, rid, arrival_ns, prompt, output, model, order):
        self.rid, self.arrival_ns = rid, arrival_ns
        self.prompt_tokens, self.output_tokens, self.model = prompt, output, model
        self.stage = 0
        self.status, self.reason = "pending", ""
        self.client = self.decode_client = None
        self.finish_ns = None
        self.seq = None
        self.order = order


@dataclass
class ServeFrames:
    requests: pd.DataFrame
    steps: pd.DataFrame
    token_gaps: pd.DataFrame
    clients: pd.DataFrame
    events: int
    sim_seconds: float


def _opts(spec, key, allowed):
    spec = dict(spec or {})
    bad = set(spec) - allowed
    if bad:
        raise ConfigError(f"keys among {sorted(allowed)}", file=WHERE, key=f"{key}.{sorted(bad)[0]}",
                          got="unknown key")
    return spec


class Coordinator:
    def __init__(self, requests: pd.DataFrame, cluster: dict, pipeline="prefill_decode", seed: int = 0):
        self.eng = Engine()
        self.env = self.eng.env
        self.rng = np.random.default_rng(seed)
        self.pipeline = load_pipeline(pipeline)
        self.reqs = self._requests(requests)
        cluster = _opts(cluster, "cluster", {"backend", "clients", "engine", "router", "model",
                                             "prefill", "decode", "pairing", "kv_transfer",
                                             "link", "decode_router"})
        self.model = cluster.get("model")
        engine = _opts(cluster.get("engine"), "engine", ENGINE_KEYS)
        self.disagg = engine.get("scheduler") == "disaggregated"
        self.clients: list[LLMEngine] = []
        if not self.disagg:
            n = cluster.get("clients", 1)
            self.entry = self._pool("client", n, cluster.get("backend"), engine, "both")
            self.router = build_router(cluster.get("router"), self.entry, self.rng)
        else:
            self._build_disagg(cluster, engine)

    # ------------------------------------------------------------------------ building ----
    def _requests(self, df):
        if not isinstance(df, pd.DataFrame):
            raise ConfigError("a DataFrame of requests", file="<requests>", got=type(df).__name__)
        missing = [c for c in REQUEST_COLUMNS if c not in df.columns]
        if missing:
            raise ConfigError(f"columns {list(REQUEST_COLUMNS)}", file="<requests>",
                              key=missing[0], got="missing")
        for c in ("prompt_tokens", "output_tokens"):
            v = df[c].to_numpy()
            if len(v) and (not np.issubdtype(v.dtype, np.integer) or v.min() < 1):
                raise ConfigError("integers >= 1", file="<requests>", key=c, got=str(v.dtype))
        arr = df["arrival_s"].to_numpy(dtype=float)
        if len(arr) and (not np.isfinite(arr).all() or arr.min() < 0):
            raise ConfigError("finite arrival times >= 0", file="<requests>", key="arrival_s",
                              got="a negative or non-finite value")
        if df["request_id"].duplicated().any():
            raise ConfigError("unique request ids", file="<requests>", key="request_id", got="duplicates")
        models = df["model"].tolist() if "model" in df.columns else [None] * len(df)
        ns = np.ceil(arr / NS - 1e-6).astype(np.int64)   # arrival, rounded up to a whole ns
        order = np.lexsort((df["request_id"].to_numpy(), ns))
        ids, pr, out = df["request_id"].tolist(), df["prompt_tokens"].tolist(), df["output_tokens"].tolist()
        return [Req(ids[i], int(ns[i]), int(pr[i]), int(out[i]), models[i], k)
                for k, i in enumerate(order)]

    def _pool(self, prefix, n, backend_spec, engine, role):
        clients = []
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError("an integer >= 1", file=WHERE, key=f"{prefix}.clients" if prefix != "client"
                              else "clients", got=repr(n))
        if backend_spec is None:
            raise ConfigError("a backend (mapping with 'type', or a Backend)", file=WHERE,
                              key="backend", got="nothing")
        if isinstance(backend_spec, (list, tuple)):     # one backend per client (mixed hardware)
            if len(backend_spec) != n:
                raise ConfigError(f"one backend per client ({n})", file=WHERE, key="backend",
                                  got=f"a list of {len(backend_spec)}")
            built: dict = {}             # clients of equal specs share one backend (its memo)
            for b in backend_spec:
                if repr(b) not in built:
                    built[repr(b)] = build_backend(b, WHERE)
            backends = [built[repr(b)] for b in backend_spec]
        else:
            backends = [build_backend(backend_spec, WHERE)] * n
        opts = dict(engine)
        if role != "both":
            opts["scheduler"] = opts.pop("pool_scheduler", "continuous")
        for i, backend in enumerate(backends):
            c = LLMEngine(self, f"{prefix}{len(self.clients)}" if prefix == "client" else f"{prefix}{i}",
                          backend, role=role, where=WHERE, **opts)
            c.index = i
            clients.append(c)
            self.clients.append(c)
        return clients

    def _build_disagg(self, cluster, engine):
        base = {k: v for k, v in engine.items() if k != "scheduler"}
        pools = {}
        for role in ("prefill", "decode"):
            spec = _opts(cluster.get(role), role, {"clients", "engine", "backend"})
            eng = {**base, **_opts(spec.get("engine"), f"{role}.engine", ENGINE_KEYS)}
            eng["pool_scheduler"] = eng.pop("scheduler", "continuous")
            pools[role] = self._pool(role, spec.get("clients", 1), spec.get("backend", cluster.get("backend")),
                                     eng, role)
        self.entry, self.decoders = pools["prefill"], pools["decode"]
        self.router = build_router(cluster.get("router"), self.entry, self.rng)
        self.pairing = cluster.get("pairing", "global")
        if self.pairing not in ("global", "local"):
            raise ConfigError("'global' or 'local'", file=WHERE, key="pairing", got=repr(self.pairing))
        self.decode_router = build_router(cluster.get("decode_router", {"type": "least_loaded"}),
                                          self.decoders, self.rng)
        self.kv_mode = cluster.get("kv_transfer", "whole")
        if self.kv_mode not in ("whole", "layer"):
            raise ConfigError("'whole' or 'layer'", file=WHERE, key="kv_transfer", got=repr(self.kv_mode))
        link = _opts(cluster.get("link"), "link", {"bandwidth_gbps", "latency_s", "shared"})
        bw = link.get("bandwidth_gbps", 50.0)
        lat = link.get("latency_s", 0.0)
        if isinstance(bw, bool) or not isinstance(bw, (int, float)) or not bw > 0:
            raise ConfigError("a bandwidth in GB/s > 0", file=WHERE, key="link.bandwidth_gbps", got=repr(bw))
        if isinstance(lat, bool) or not isinstance(lat, (int, float)) or not lat >= 0:
            raise ConfigError("a latency in s >= 0", file=WHERE, key="link.latency_s", got=repr(lat))
        self.link_args = (float(bw), int(round(lat / NS)))   # GB/s == bytes per ns
        self.shared_link = bool(link.get("shared", False))
        self.links: dict = {}
        self.layer_xfer: dict = {}

    def link(self, src, dst) -> Link:
        key = "shared" if self.shared_link else (src.name, dst.name)
        if key not in self.links:
            name = "kv_link" if self.shared_link else f"{src.name}->{dst.name}"
            self.links[key] = Link(self.eng, name, *self.link_args)
        return self.links[key]

    # ------------------------------------------------------------------------ the flow ----
    def run(self) -> ServeFrames:
        self.env.process(self._arrivals())
        self.eng.run()
        self._check()
        return self._frames()

    def _arrivals(self):
        env = self.env
        for r in self.reqs:
            if r.arrival_ns > env.now:
                yield env.timeout(r.arrival_ns - env.now)
            self._advance(r)

    def _advance(self, r: Req) -> None:
        """Start the request's current stage (or finish it after the last)."""
        stages = self.pipeline.stages
        if r.stage >= len(stages):
            r.status, r.finish_ns = "completed", self.env.now
            return
        st = stages[r.stage]
        if st.kind == "fixed":
            r.stage += 1
            ns = int(math.ceil(st.latency_s / NS - 1e-6))
            if ns <= 0:
                self._advance(r)
            else:
                self.env.timeout(ns).callbacks.append(lambda _e, r=r: self._advance(r))
            return
        self._to_llm(r)

    def _to_llm(self, r: Req) -> None:
        if self.model is not None and r.model is not None and r.model != self.model:
            return self._reject(r, "no_client_for_model")
        c = self.router(r)
        r.client = c.name
        window = c.backend.max_position
        if window is not None and r.prompt_tokens + r.output_tokens - 1 > window:
            return self._reject(r, "exceeds_model_context")     # its last token's KV cannot fit
        if not c.can_ever_fit(r.prompt_tokens, r.output_tokens) or (
                self.disagg and not self.decoders[0].can_ever_fit(r.prompt_tokens, r.output_tokens)):
            return self._reject(r, "exceeds_kv_capacity")
        r.seq = Seq(r.rid, r, r.prompt_tokens, r.output_tokens, r.arrival_ns, r.order)
        c.submit(r.seq)

    def _reject(self, r: Req, reason: str) -> None:
        r.status, r.reason, r.finish_ns = "rejected", reason, self.env.now

    def reject(self, r: Req, reason: str, client) -> None:      # called by an engine
        self._reject(r, reason)

    def llm_done(self, s: Seq, client) -> None:                 # last token out
        r = s.req
        r.stage = self.pipeline.llm_index + 2
        self._advance(r)

    # ------------------------------------------------------------------ disaggregation ----
    def _decoder_for(self, src) -> LLMEngine:
        if self.pairing == "local":
            return self.decoders[src.index % len(self.decoders)]
        return self.decode_router(None)

    def _kv_bytes(self, src, tokens: int) -> float:
        b = src.backend
        return tokens * b.kv_bytes_per_token * getattr(b, "chips", 1)

    def prefill_started(self, src, seqs, start_ns: int, dur_ns: int) -> None:
        if self.kv_mode != "layer":
            return
        for s in seqs:
            dst = self._decoder_for(src)
            self.layer_xfer[s.rid] = (dst, self.env.process(self._layers(src, dst, s, start_ns, dur_ns)))

    def _layers(self, src, dst, s, start_ns, dur_ns):
        L = src.backend.layers
        per = self._kv_bytes(src, s.known) / L
        link = self.link(src, dst)
        for i in range(L):
            ready = start_ns + -(-(i + 1) * dur_ns // L)
            if ready > self.env.now:
                yield self.env.timeout(ready - self.env.now)
            yield from link.transfer(per, "kv")

    def prefilled(self, s: Seq, src) -> None:                   # first token out on a prefill client
        self.env.process(self._handoff(s, src))

    def _handoff(self, s: Seq, src):
        if self.kv_mode == "layer":
            dst, proc = self.layer_xfer.pop(s.rid)
            yield proc
        else:
            dst = self._decoder_for(src)
            yield from self.link(src, dst).transfer(self._kv_bytes(src, s.computed), "kv")
        src.release(s)
        s.req.decode_client = dst.name
        dst.submit(s)

    # -------------------------------------------------------------------------- output ----
    def _check(self) -> None:
        for r in self.reqs:
            require(r.status in ("completed", "rejected"), "Coordinator", "conservation",
                    "every request ends completed or rejected", request_id=r.rid, status=r.status)
            if r.status == "rejected":
                require(bool(r.reason), "Coordinator", "conservation", "a rejection has a reason",
                        request_id=r.rid)
            else:
                require(r.seq.generated == r.output_tokens, "Coordinator", "conservation",
                        "tokens generated = tokens requested", request_id=r.rid,
                        generated=r.seq.generated, requested=r.output_tokens)
        for c in self.clients:
            require(not c.waiting and not c.running and c.kv.used == 0, "Coordinator", c.name,
                    "an engine ends empty", waiting=len(c.waiting), running=len(c.running),
                    kv_used=c.kv.used)

    def _frames(self) -> ServeFrames:
        rows, gap_rid, gap_n, gaps = [], [], [], []
        for r in sorted(self.reqs, key=lambda r: r.order):
            s = r.seq
            tok = s.token_ns if s is not None else []
            rows.append((r.rid, r.arrival_ns * NS, r.client, r.decode_client,
                         tok[0] * NS if tok else np.nan, r.finish_ns * NS, r.prompt_tokens,
                         r.output_tokens, len(tok), r.status, r.reason,
                         s.preemptions if s is not None else 0))
            if len(tok) > 1:
                gaps.append(np.diff(np.asarray(tok, dtype=np.int64)))
                gap_rid.append(r.rid)
                gap_n.append(len(tok) - 1)
        counts = np.asarray(gap_n, dtype=np.int64)
        token_gaps = pd.DataFrame({
            "request_id": np.repeat(np.asarray(gap_rid), counts),
            "token": (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + 1
                      if len(counts) else np.array([], np.int64)),
            "gap_s": np.concatenate(gaps) * NS if gaps else np.array([], float)})
        requests = pd.DataFrame(rows, columns=["request_id", "arrival_s", "client", "decode_client",
                                               "first_token_s", "finish_s", "prompt_tokens",
                                               "output_tokens", "generated_tokens", "status",
                                               "reason", "preemptions"])
        steps = self._steps_frame()
        clients = pd.DataFrame([(c.name, c.role, c.scheduler_name, c.kv.num_blocks,
                                 len(c.cols["kind"]),
                                 (sum(c.cols["end_ns"]) - sum(c.cols["start_ns"])) * NS,
                                 c.energy_j, c.preemptions)
                                for c in self.clients],
                               columns=["client", "role", "scheduler", "kv_blocks", "steps",
                                        "busy_s", "energy_j", "preemptions"])
        events = len(self.reqs) + len(steps) + sum(l.transfers for l in self.links.values()) \
            if self.disagg else len(self.reqs) + len(steps)
        return ServeFrames(requests, steps, token_gaps, clients, int(events), self.env.now * NS)


    def _steps_frame(self) -> pd.DataFrame:
        from .engine import KINDS
        parts = []
        for i, c in enumerate(self.clients):
            cols = {k: np.frombuffer(v, dtype=v.typecode) if len(v) else np.array([], v.typecode)
                    for k, v in c.cols.items()}
            cols["client_index"] = np.full(len(cols["kind"]), i)
            parts.append(cols)
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        order = np.lexsort((cat["client_index"], cat["start_ns"]))
        names = np.array([c.name for c in self.clients], dtype=object)
        return pd.DataFrame({
            "client": names[cat["client_index"][order]],
            "kind": np.array(KINDS, dtype=object)[cat["kind"][order]],
            "start_s": cat["start_ns"][order] * NS, "end_s": cat["end_ns"][order] * NS,
            **{k: cat[k][order] for k in ("sequences", "padded_sequences", "tokens",
                                          "context_tokens", "kv_blocks_used", "energy_j")}})


def serve_frames(requests: pd.DataFrame, cluster: dict, *, pipeline="prefill_decode",
                 seed: int = 0) -> ServeFrames:
    """Run a serving simulation; returns the requests, steps, token-gap and client frames.

    ``requests``: a DataFrame with ``request_id, arrival_s, prompt_tokens, output_tokens``
    (optionally ``model``). ``cluster``: ``backend`` (a Backend or ``{type: ..., ...}``, or a
    list of them, one per client, for a pool of mixed hardware), ``clients`` (count),
    ``engine`` (scheduler, max_num_seqs, max_num_batched_tokens, block_size, memory_gb,
    activation_reserve_gb, kv_blocks, host_s, cuda_graph_sizes, ordering), ``router`` (name
    or ``{type, ...options}``), ``model``; for ``engine.scheduler: disaggregated`` also
    ``prefill``/``decode`` (``{clients, engine, backend}``), ``pairing``, ``kv_transfer``,
    ``link`` (``bandwidth_gbps``, ``latency_s``, ``shared``) and ``decode_router``."""
    return Coordinator(requests, cluster, pipeline, seed).run()
