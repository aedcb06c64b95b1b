"""Step-level schedulers of an LLM engine, registered by name (:data:`SCHEDULERS`).

A scheduler looks at its engine's ``waiting`` and ``running`` sequences and returns the next
:class:`Plan` (prefill chunks and decode sequences), having reserved their KV blocks; or None
when nothing can run now. Sequence state (see :mod:`sim.system.engine`): ``computed`` tokens
have cached KV out of ``known = prompt + generated``; a step processes ``known - computed``
tokens of a prefill (or a chunk of them) or the one last token of a decoding sequence.

* ``static``: a batch is admitted (FCFS, up to ``max_num_seqs`` and ``max_num_batched_tokens``,
  whole prompts) and prefilled together only when nothing runs; it then decodes to completion.
* ``continuous`` (vLLM v0): prefill-prioritizing; a prefill step admits waiting requests
  whole, in order, while the sequence limit, the token budget and free KV blocks allow;
  otherwise one decode step for all running, preempting the most recently admitted sequence
  (recompute) when a block is missing.
* ``chunked`` (Sarathi-Serve / vLLM v1): decode-first; every running decode gets its token,
  then the rest of the token budget is filled with chunks of running and then waiting prefills.
* ``mixed``: decodes and whole prefills in one step, prefills never chunked.

``disaggregated`` is not an engine scheduler: it is a cluster layout (prefill and decode pools,
:mod:`sim.system.coordinator`) whose engines run one of the above.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Plan:
    prefill: list = field(default_factory=list)   # [(seq, new_tokens)]
    decode: list = field(default_factory=list)    # [seq]

    def __bool__(self) -> bool:
        return bool(self.prefill or self.decode)


def is_decode(s) -> bool:
    return s.generated >= 1 and s.known - s.computed == 1


def _admit_whole(eng, plan: Plan, budget: int, slots: int) -> int:
    """Admit waiting sequences whole while they fit; returns the budget left. A sequence whose
    KV is already here (handed over by a prefill client) joins running without a prefill."""
    kv = eng.kv
    for s in eng.ordered_waiting():
        if slots <= 0:
            break
        if is_decode(s):                       # transferred KV: it only needs its next block
            if kv.extra(s.rid, s.computed) > kv.free_blocks:
                break
            kv.grow(s.rid, s.computed)
            eng.admit(s)
            slots -= 1
            continue
        n = s.known - s.computed
        if n > eng.max_num_batched_tokens:
            eng.reject(s, "prompt_exceeds_max_num_batched_tokens")
            continue
        if n > budget or kv.extra(s.rid, s.known) > kv.free_blocks:
            break
        kv.grow(s.rid, s.known)
        eng.admit(s)
        plan.prefill.append((s, n))
        budget -= n
        slots -= 1
    return budget


def _schedule_decodes(eng, plan: Plan, candidates=None) -> None:
    """Every running decode gets its next block, preempting from the back of ``running``
    (most recently admitted first) when the blocks run out (vLLM v0 recompute)."""
    kv = eng.kv
    if candidates is None:
        queue = [s for s in eng.running if s.generated and s.known - s.computed == 1]
    else:
        queue = list(candidates)
    # fast path: a decode needs a new block exactly when its cached tokens fill whole blocks
    bs = kv.block_size
    needy = [s for s in queue if s.computed % bs == 0]
    if len(needy) <= kv.free_blocks:
        held = kv.held
        for s in needy:
            held[s.rid] = held.get(s.rid, 0) + 1
        kv.used += len(needy)
        plan.decode.extend(queue)
        return
    pos = 0
    while pos < len(queue):
        s = queue[pos]
        pos += 1
        if s not in eng.running_set:
            continue
        while kv.extra(s.rid, s.computed + 1) > kv.free_blocks:
            victim = eng.running[-1]
            eng.preempt(victim)
            if victim is s:
                break
        else:
            kv.grow(s.rid, s.computed + 1)
            plan.decode.append(s)
    plan.decode = [s for s in plan.decode if s.rid in eng.running_rids]


def static(eng) -> Plan | None:
    plan = Plan()
    if not eng.running:
        _admit_whole(eng, plan, eng.max_num_batched_tokens, eng.max_num_seqs)
        if plan.prefill:
            return plan
    if not eng.running:
        return None
    pre = [s for s in eng.running if not is_decode(s)]   # recomputed after a preemption
    if pre:
        kv = eng.kv
        for s in pre:
            if kv.extra(s.rid, s.known) <= kv.free_blocks:
                kv.grow(s.rid, s.known)
                plan.prefill.append((s, s.known - s.computed))
        if plan.prefill:
            return plan
    _schedule_decodes(eng, plan)
    return plan or None


def continuous(eng) -> Plan | None:
    plan = Plan()
    _admit_whole(eng, plan, eng.max_num_batched_tokens, eng.max_num_seqs - len(eng.running))
    if plan.prefill:
        return plan
    _schedule_decodes(eng, plan)
    return plan or None


def _fill(eng, plan: Plan, budget: int, chunk: bool) -> None:
    """Fill ``budget`` tokens with prefill work: running partial prefills, then waiting ones
    in order; ``chunk`` allows taking part of a prefill."""
    kv = eng.kv
    bs = kv.block_size
    for s in [s for s in eng.running if not is_decode(s) and s.rid not in plan.rids]:
        if budget <= 0:
            return
        n = s.known - s.computed
        if not chunk and n > budget:
            return
        n = min(n, budget)
        room = (kv.held.get(s.rid, 0) + kv.free_blocks) * bs - s.computed
        n = min(n, room)
        if n <= 0:
            return
        kv.grow(s.rid, s.computed + n)
        plan.prefill.append((s, n))
        budget -= n
    for s in eng.ordered_waiting():
        if budget <= 0 or len(eng.running) >= eng.max_num_seqs:
            return
        n = s.known - s.computed
        if is_decode(s):
            if kv.extra(s.rid, s.computed + 1) > kv.free_blocks:
                return
            kv.grow(s.rid, s.computed + 1)
            eng.admit(s)
            plan.decode.append(s)
            budget -= 1
            continue
        if not chunk and n > eng.max_num_batched_tokens:
            eng.reject(s, "prompt_exceeds_max_num_batched_tokens")
            continue
        if not chunk and n > budget:
            return
        n = min(n, budget, (kv.held.get(s.rid, 0) + kv.free_blocks) * bs - s.computed)
        if n <= 0 or (not chunk and n < s.known - s.computed):
            return
        kv.grow(s.rid, s.computed + n)
        eng.admit(s)
        plan.prefill.append((s, n))
        budget -= n


def _decode_first(eng, chunk: bool) -> Plan | None:
    plan = Plan()
    _schedule_decodes(eng, plan)
    plan.rids = {s.rid for s in plan.decode}
    _fill(eng, plan, eng.max_num_batched_tokens - len(plan.decode), chunk)
    return plan or None


def chunked(eng) -> Plan | None:
    return _decode_first(eng, chunk=True)


def mixed(eng) -> Plan | None:
    return _decode_first(eng, chunk=False)


#: scheduler name -> function(engine) -> Plan | None
SCHEDULERS: dict[str, Callable] = {
    "static": static,
    "continuous": continuous,
    "chunked": chunked,
    "mixed": mixed,
}
