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
from array import array
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.config import ConfigError
from sim.core import Engine, Link
from sim.core.invariants import require

from .backends import build_backend
from .engine import ENGINE_KEYS, NS, GapSamples, LLMEngine, Seq
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
    """A run's frames. ``token_gaps``: one row per distinct inter-token gap, ``gap_s``
    (ascending) and ``tokens`` (output tokens that came that long after their previous one),
    pooled over requests; :func:`sim.system.metrics.summarize` takes them as ``itl_s`` and
    ``itl_counts``. Run with a ``steps_path``, ``steps`` is None: the rows are in that CSV
    file and ``step_stats`` (a :class:`sim.system.metrics.StepStats`) holds what
    :func:`sim.system.metrics.summarize` reads from them."""

    requests: pd.DataFrame
    steps: pd.DataFrame | None
    token_gaps: pd.DataFrame
    clients: pd.DataFrame
    events: int
    sim_seconds: float
    steps_path: str | None = None
    step_stats: object = None


def _opts(spec, key, allowed):
    spec = dict(spec or {})
    bad = set(spec) - allowed
    if bad:
        raise ConfigError(f"keys among {sorted(allowed)}", file=WHERE, key=f"{key}.{sorted(bad)[0]}",
                          got="unknown key")
    return spec


class Coordinator:
    def __init__(self, requests: pd.DataFrame, cluster: dict, pipeline="prefill_decode", seed: int = 0,
                 keep_steps: bool = True, steps_path=None, client_names=None):
        self.keep_steps = bool(keep_steps) or steps_path is not None
        self.steps_path, self.client_names = steps_path, dict(client_names or {})
        self.gaps = GapSamples()
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
                          backend, role=role, where=WHERE, keep_steps=self.keep_steps,
                          gaps=self.gaps, **opts)
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
        rows = []
        for r in sorted(self.reqs, key=lambda r: r.order):
            s = r.seq
            first = s.first_ns if s is not None else None
            rows.append((r.rid, r.arrival_ns * NS, r.client, r.decode_client,
                         first * NS if first is not None else np.nan, r.finish_ns * NS,
                         r.prompt_tokens, r.output_tokens, s.generated if s is not None else 0,
                         r.status, r.reason, s.preemptions if s is not None else 0))
        requests = pd.DataFrame(rows, columns=["request_id", "arrival_s", "client", "decode_client",
                                               "first_token_s", "finish_s", "prompt_tokens",
                                               "output_tokens", "generated_tokens", "status",
                                               "reason", "preemptions"])
        token_gaps = self._token_gaps()
        clients = pd.DataFrame([(c.name, c.role, c.scheduler_name, c.kv.num_blocks,
                                 c.steps, c.busy_ns * NS, c.energy_j, c.preemptions)
                                for c in self.clients],
                               columns=["client", "role", "scheduler", "kv_blocks", "steps",
                                        "busy_s", "energy_j", "preemptions"])
        stats = None
        if self.steps_path is not None:
            from .metrics import StepStats, run_duration
            t0 = float(requests["arrival_s"].min()) if len(requests) else 0.0
            stats = StepStats((t0, run_duration(requests)))
            self.write_steps(self.steps_path, self.client_names, stats=stats)
            for c in self.clients:           # the rows are on disk: drop the engines' copy
                c.cols = {k: array(v.typecode) for k, v in c.cols.items()}
                c.runs = {k: array(v.typecode) for k, v in c.runs.items()}
                c.run_steps = {k: array(v.typecode) for k, v in c.run_steps.items()}
            steps = None
        else:
            steps = self._steps_frame()
        n_steps = sum(c.steps for c in self.clients)
        events = len(self.reqs) + n_steps + sum(l.transfers for l in self.links.values()) \
            if self.disagg else len(self.reqs) + n_steps
        return ServeFrames(requests, steps, token_gaps, clients, int(events), self.env.now * NS,
                           None if self.steps_path is None else str(self.steps_path), stats)

    def _token_gaps(self) -> pd.DataFrame:
        """The inter-token gaps of the run, one row per distinct gap: ``gap_s`` (ascending) and
        ``tokens`` (how many output tokens followed their previous one by that gap). Exact:
        gaps are whole nanoseconds; the engines keep them as weighted samples."""
        values, counts = self.gaps.result()
        return pd.DataFrame({"gap_s": values * NS, "tokens": counts})

    def _client_column(self, c, name: str, kind_values=None) -> np.ndarray:
        """One engine's steps column: its single steps, then its decode runs written out."""
        from .engine import STEP_DTYPES
        rows = np.frombuffer(c.cols[name], dtype=STEP_DTYPES[name])
        runs = {k: np.frombuffer(v, dtype=v.typecode) for k, v in c.runs.items()}
        per = {k: np.frombuffer(v, dtype=v.typecode) for k, v in c.run_steps.items()}
        n = runs["steps"]
        if not len(n):
            return rows
        first = np.cumsum(n) - n                       # each run's first step
        if name == "kind":
            run = np.ones(int(n.sum()), np.int8)
        elif name in ("start_ns", "end_ns"):
            dur = per["duration_ns"]
            done = np.cumsum(dur)                      # since the first run's start
            before = np.repeat(done[first] - dur[first], n)
            run = np.repeat(runs["start_ns"], n) + done - before
            if name == "start_ns":
                run -= dur
        elif name in ("sequences", "tokens"):
            run = np.repeat(runs["sequences"], n)
        elif name == "padded_sequences":
            run = np.repeat(runs["padded_sequences"], n)
        elif name == "context_tokens":
            k = np.arange(int(n.sum())) - np.repeat(first, n)
            run = np.repeat(runs["context_tokens"], n) + np.repeat(runs["sequences"], n) * k
        else:
            run = per[name]
        return np.concatenate([rows, run.astype(STEP_DTYPES[name], copy=False)])

    def _steps_frame(self) -> pd.DataFrame:
        """All engines' steps in (start, client) order, built column by column (a day of
        traffic is tens of millions of rows): ``client`` and ``kind`` categorical, counts
        int32, summed contexts int64. Each engine's rows are scattered straight to their
        sorted places and its storage released after its last use."""
        from .engine import KINDS, STEP_COLUMNS
        sizes = [len(c.cols["kind"]) + int(sum(c.runs["steps"])) for c in self.clients]
        n = sum(sizes)
        edges = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        index_type = np.int8 if len(self.clients) < 128 else np.int32
        client_index = np.repeat(np.arange(len(self.clients), dtype=index_type), sizes)
        starts = np.concatenate([self._client_column(c, "start_ns") for c in self.clients]
                                + [np.zeros(0, np.int64)])
        place_type = np.int32 if n < 2**31 else np.int64
        order = np.lexsort((client_index, starts)).astype(place_type)
        del starts
        place = np.empty(n, place_type)            # row i of the engines' storage -> frame row
        place[order] = np.arange(n, dtype=place_type)
        frame = {"client": pd.Categorical.from_codes(client_index[order],
                                                     [c.name for c in self.clients])}
        del client_index, order
        # what each column is the last to need, released after it
        last_use = {"end_ns": (("runs", "start_ns"), ("run_steps", "duration_ns")),
                    "context_tokens": (("runs", "sequences"), ("runs", "context_tokens")),
                    "padded_sequences": (("runs", "padded_sequences"),),
                    "kv_blocks_used": (("run_steps", "kv_blocks_used"),),
                    "energy_j": (("run_steps", "energy_j"),)}
        # the columns that free per-step storage first, so that the frame grows as it shrinks
        first = ("start_ns", "end_ns", "energy_j", "kv_blocks_used")
        codes = dict(STEP_COLUMNS)
        for name in first + tuple(c for c, _ in STEP_COLUMNS if c not in first):
            values = np.empty(n, np.dtype(codes[name]))
            for i, c in enumerate(self.clients):
                values[place[edges[i]:edges[i + 1]]] = self._client_column(c, name)
                c.cols[name] = array(c.cols[name].typecode)
                for store, key in last_use.get(name, ()):
                    table = getattr(c, store)
                    table[key] = array(table[key].typecode)
            if name == "kind":
                frame["kind"] = pd.Categorical.from_codes(values, list(KINDS))
            elif name in ("start_ns", "end_ns"):
                frame[name[:-3] + "_s"] = _seconds_in_place(values)
            else:
                frame[name] = values
            del values
        names = ["client"] + [c[:-3] + "_s" if c.endswith("_ns") else c for c, _ in STEP_COLUMNS]
        return pd.DataFrame({k: frame.pop(k) for k in names}, copy=False)


    # ------------------------------------------------------- steps streamed in chunks ----
    def _streams(self):
        """Per engine, its single steps and its decode-run steps as two streams sorted by start:
        (client index, first local row, start_ns, rows(a, b) -> {column: values})."""
        from .engine import STEP_DTYPES
        out = []
        for i, c in enumerate(self.clients):
            single = {k: np.frombuffer(c.cols[k], dtype=STEP_DTYPES[k]) for k in STEP_DTYPES}
            if len(single["start_ns"]) > 1 and (np.diff(single["start_ns"]) < 0).any():
                o = np.argsort(single["start_ns"], kind="stable")   # never seen; kept exact
                single = {k: v[o] for k, v in single.items()}
                local = o.astype(np.int64)
            else:
                local = None
            out.append((i, 0, local, _Sorted(single["start_ns"]),
                        lambda a, b, s=single: {k: v[a:b] for k, v in s.items()}))
            runs = {k: np.frombuffer(v, dtype=v.typecode) for k, v in c.runs.items()}
            if not len(runs["steps"]):
                continue
            per = {k: np.frombuffer(v, dtype=v.typecode) for k, v in c.run_steps.items()}
            first = np.cumsum(runs["steps"]) - runs["steps"]
            starts = _RunStarts(runs["start_ns"], first, runs["steps"], per["duration_ns"], c.name)

            def rows(a, b, runs=runs, per=per, starts=starts, first=first):
                k = np.arange(a, b)
                r = np.searchsorted(first, k, side="right") - 1
                seqs = runs["sequences"][r]
                dur = per["duration_ns"][a:b]
                start = starts.slice(a, b)
                return {"kind": np.ones(b - a, np.int8), "start_ns": start,
                        "end_ns": start + dur, "sequences": seqs,
                        "padded_sequences": runs["padded_sequences"][r], "tokens": seqs,
                        "context_tokens": runs["context_tokens"][r]
                        + seqs.astype(np.int64) * (k - first[r]),
                        "kv_blocks_used": per["kv_blocks_used"][a:b],
                        "energy_j": per["energy_j"][a:b]}
            out.append((i, len(single["start_ns"]), None, starts, rows))
        return out

    def step_chunks(self, rows: int = 1 << 20):
        """The steps frame's rows in its order ((start, client), then each engine's storage
        order), as dicts of numpy columns (``client``: the engine's index, ``*_ns`` in
        nanoseconds) of about ``rows`` rows each, read from the engines' compact storage without
        building the frame. Every row with one start time is in one chunk."""
        from .engine import STEP_COLUMNS
        streams = self._streams()
        pos = [0] * len(streams)
        per = max(1, rows // max(len(streams), 1))
        while True:
            live = [j for j, s in enumerate(streams) if pos[j] < len(s[3])]
            if not live:
                return
            t = min(streams[j][3].at(min(pos[j] + per, len(streams[j][3])) - 1) for j in live)
            parts = []
            for j in live:
                i, base, local, starts, get = streams[j]
                e = starts.upto(t)
                if e > pos[j]:
                    cols = get(pos[j], e)
                    cols["client"] = np.full(e - pos[j], i, np.int32)
                    cols["_local"] = base + (local[pos[j]:e] if local is not None
                                             else np.arange(pos[j], e))
                    parts.append(cols)
                    pos[j] = e
            chunk = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            order = np.lexsort((chunk.pop("_local"), chunk["client"], chunk["start_ns"]))
            yield {k: chunk[k][order].astype(code or np.int32, copy=False)
                   for k, code in (("client", None),) + STEP_COLUMNS}

    def write_steps(self, path, names=None, rows: int = 1 << 18, stats=None) -> int:
        """Stream the steps to ``path`` as CSV, byte for byte what ``steps.to_csv(path,
        index=False)`` writes for the steps frame (clients renamed by ``names``: engine name ->
        name), in chunks of about ``rows`` rows; ``stats`` (a :class:`sim.system.metrics.StepStats`)
        sees every chunk. Returns the rows written."""
        from .engine import KINDS, STEP_COLUMNS
        from .stepcsv import names_need_quoting, write_csv
        names = names or {}
        clients = [names.get(c.name, c.name) for c in self.clients]
        header = ["client"] + [c[:-3] + "_s" if c.endswith("_ns") else c for c, _ in STEP_COLUMNS]
        kinds = {"kind": "cat", "start_ns": "ns", "end_ns": "ns", "energy_j": "float"}

        def chunks():
            for ch in self.step_chunks(rows):
                if stats is not None:
                    stats.add(ch, clients)
                yield [("cat", ch["client"], clients)] + [
                    (kinds.get(k, "int"), ch[k], KINDS if k == "kind" else None)
                    for k, _ in STEP_COLUMNS]
        if names_need_quoting(clients):
            import pandas as pd       # names the csv module would quote: let pandas write them
            first, n = True, 0
            with open(path, "w", newline="") as f:
                for cols in chunks():
                    n += len(cols[0][1])
                    frame = {h: (pd.Categorical.from_codes(v, list(e)) if k == "cat" else
                                 v * NS if k == "ns" else v)
                             for h, (k, v, e) in zip(header, cols)}
                    pd.DataFrame(frame).to_csv(f, index=False, header=first)
                    first = False
                if first:
                    pd.DataFrame(columns=header).to_csv(f, index=False)
            return n
        return write_csv(path, header, chunks())


class _Sorted:
    """Start times of a stream kept as an array (an engine's single steps)."""

    def __init__(self, ns: np.ndarray):
        self.ns = ns

    def __len__(self):
        return len(self.ns)

    def at(self, k: int) -> int:
        return int(self.ns[k])

    def upto(self, t: int) -> int:
        """How many start at or before ``t``."""
        return int(np.searchsorted(self.ns, t, side="right"))


class _RunStarts:
    """Start times of an engine's decode-run steps, computed where asked from each run's start
    and its steps' durations (steps of a run are back to back; runs do not overlap), so that no
    array of one start per step is held."""

    def __init__(self, run_start, first, steps, dur, name):
        self.run_start, self.first, self.dur = run_start, first, dur
        self.n = int(steps.sum())
        ends = run_start + np.add.reduceat(dur, first) if (steps > 0).all() else None
        if ends is None or (run_start[1:] < ends[:-1]).any():
            raise AssertionError(f"{name}: decode runs empty or out of time order")

    def __len__(self):
        return self.n

    def _run(self, k):
        return np.searchsorted(self.first, k, side="right") - 1

    def at(self, k: int) -> int:
        r = int(self._run(k))
        return int(self.run_start[r]) + int(self.dur[self.first[r]:k].sum())

    def upto(self, t: int) -> int:
        j = int(np.searchsorted(self.run_start, t, side="right")) - 1
        if j < 0:
            return 0
        f = int(self.first[j])
        n = (int(self.first[j + 1]) if j + 1 < len(self.first) else self.n) - f
        s = int(self.run_start[j]) + np.concatenate(([0], np.cumsum(self.dur[f:f + n - 1])))
        return f + int(np.searchsorted(s, t, side="right"))

    def slice(self, a: int, b: int) -> np.ndarray:
        """Starts of steps a..b-1."""
        r = self._run(np.arange(a, b))
        d = self.dur[a:b]
        c = np.cumsum(d) - d                       # since step a
        head = np.maximum(self.first[r], a) - a     # each step's run's first step in the slice
        into = int(self.dur[self.first[r[0]]:a].sum()) if len(r) else 0   # run of a, before a
        return self.run_start[r] + c - c[head] + np.where(self.first[r] < a, into, 0)


def _seconds_in_place(ns: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """int64 nanoseconds -> float64 seconds in the same memory (chunk by chunk, so a column of
    tens of millions of rows needs no second full-size array)."""
    out = ns.view(np.float64)
    for i in range(0, len(ns), chunk):
        out[i:i + chunk] = ns[i:i + chunk] * NS
    return out


def serve_frames(requests: pd.DataFrame, cluster: dict, *, pipeline="prefill_decode",
                 seed: int = 0, keep_steps: bool = True, steps_path=None,
                 client_names=None) -> ServeFrames:
    """Run a serving simulation; returns the requests, steps, token-gap and client frames.

    ``requests``: a DataFrame with ``request_id, arrival_s, prompt_tokens, output_tokens``
    (optionally ``model``). ``cluster``: ``backend`` (a Backend or ``{type: ..., ...}``, or a
    list of them, one per client, for a pool of mixed hardware), ``clients`` (count),
    ``engine`` (scheduler, max_num_seqs, max_num_batched_tokens, block_size, memory_gb,
    activation_reserve_gb, kv_blocks, host_s, cuda_graph_sizes, ordering), ``router`` (name
    or ``{type, ...options}``), ``model``; for ``engine.scheduler: disaggregated`` also
    ``prefill``/``decode`` (``{clients, engine, backend}``), ``pairing``, ``kv_transfer``,
    ``link`` (``bandwidth_gbps``, ``latency_s``, ``shared``) and ``decode_router``.
    ``keep_steps=False`` keeps no per-step rows (the steps frame is empty; step counts, busy
    time and energy per client are still in the clients frame), for runs of tens of millions
    of steps. ``steps_path``: stream the steps to that CSV file in bounded chunks instead
    (byte for byte what ``steps.to_csv(path, index=False)`` writes; ``client_names`` renames
    the engines in it, e.g. ``{"client0": "h100-0"}``); ``steps`` is then None and
    ``step_stats`` summarizes them."""
    return Coordinator(requests, cluster, pipeline, seed, keep_steps, steps_path,
                       client_names).run()
