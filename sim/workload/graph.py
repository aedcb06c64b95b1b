"""Operator graphs of a decoder-only transformer for one inference step.

``build_graph`` turns a :class:`~sim.config.schema.ModelConfig` into a networkx DAG whose nodes are
the operators the hardware layer times: GEMMs (the linear layers), attention GEMMs (Q·Kᵀ and P·V
against the KV cache), element-wise vector ops (norms, softmax, activation, residual adds) and the
embedding gather. Edges follow the data flow, including the residual edges from each block input.

Three kinds of step are described:

``prefill``
    ``batch`` sequences of ``seq_len`` new tokens each, on top of an earlier KV context of
    ``context`` tokens (0 unless the caller models chunked prefill).
``decode``
    ``batch`` sequences, one new token each, with ``context`` tokens already in the KV cache;
    attention therefore sees ``context + 1`` keys.
``mixed``
    one chunk (Sarathi/vLLM-style) holding ``batch`` prefill sequences of ``seq_len`` tokens
    (earlier context ``context``, usually 0) and ``decode_batch`` decode sequences at context
    ``context``. Linear layers run once over all tokens of the chunk; attention is split into a
    prefill part and a decode part (nodes ``L3.qk.prefill`` / ``L3.qk.decode`` ...) because the
    two have different shapes.
ragged steps (``ragged_step`` / ``ragged_shape`` / ``build_ragged_graph``)
    what a continuous-batching scheduler produces: prefill chunks of different lengths, each on
    its own past context, and decode sequences at different contexts. Linear layers run once
    over all tokens; attention is priced per sequence (equal shapes share a node with a count,
    named ``L3.qk.prefill.q64.kv192`` / ``L3.qk.decode.kv1025``), optionally exploiting causal
    masking by query blocks (see :func:`ragged_shape`).

A model with ``architecture: mamba`` is built by :class:`_MambaBuilder` instead: the same
step kinds, blocks of norm, in_proj, conv1d, x_proj, dt_proj, scan, out_proj and residual,
with the recurrent state as memory nodes (``state_load`` for the step's resumed sequences,
``state_store`` for all of them, ``StepShape.resumed``); no attention, no KV cache, and the
attention parts of a step shape are not read.

Shape conventions (O[M,N] = A[M,K] @ W[K,N], A = activations, W = the weight-like operand):

* Linear layers: M = tokens in the step, K = in features, N = out features, ``count`` = 1,
  ``w_source = "dram"``.
* Attention with grouped-query attention: the ``g = num_heads / num_kv_heads`` query heads that
  share one KV head are stacked along M, so one GEMM per (sequence, KV head)::

      qk: M = g*Lq, K = head_dim, N = Lkv, count = sequences*num_kv_heads
      av: M = g*Lq, K = Lkv,      N = head_dim, same count

  with ``w_source = "kv"`` (the K or V operand is read from the KV cache in DRAM).
  Prefill computes the **full** Lq x Lkv score matrix: causal masking is not exploited, so the
  upper triangle of the scores (about half of prefill attention work when context = 0) is
  counted as if it were needed. Fused kernels that skip masked tiles do less.
* The KV cache is stored at activation precision; attention ops record ``wbits = abits``. The
  keys and values written by the current step (``kv_write_bytes`` on k_proj/v_proj) are counted
  again when qk/av read them, as if they went through the cache.

Every node carries the same attribute keys (zeros/None where a key does not apply) so that
``graph_ops`` can feed a pandas DataFrame directly:

``name, index, layer, op, kind, part, M, K, N, count, wbits, abits, w_source, a_bytes, w_bytes,
o_bytes, kv_write_bytes, flops, elements, ops_per_element, bytes``

* ``kind`` is ``gemm`` | ``attention`` | ``vector`` | ``memory``; ``part`` is ``prefill`` or
  ``decode`` on the split attention nodes of a mixed step, None elsewhere.
* Byte counts are totals over ``count`` and rounded up to whole bytes.
  ``bytes`` is the total traffic of the op (a_bytes + w_bytes + o_bytes).
* Small parameters that are not GEMM weights (norm gamma/beta, linear biases) are stored at
  ``PARAM_BITS`` (16) bits; norm nodes have them as ``w_bytes`` with ``w_source = "dram"`` and a
  linear layer with a bias adds ``N * PARAM_BITS / 8`` to its ``w_bytes``.
* Vector ops: ``elements`` processed, ``ops_per_element`` (softmax 5, rmsnorm 4, layernorm 5,
  activation 4 plus 1 multiply when the FFN is gated, residual add 1), ``flops = 0``.
* ``embed`` is kind ``memory``: a gather of ``tokens * hidden_size * abits / 8`` bytes from DRAM
  (``bytes`` = ``o_bytes`` = that amount, ``w_bytes = 0``).
* ``final_norm`` and ``lm_head`` run on the rows that produce logits: the last token of each
  sequence when ``lm_head == "last"``, every token when ``"all"``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import networkx as nx

from sim.config.errors import ConfigError, short_repr
from sim.config.schema import MAMBA_OP_NAMES, SSM_GEMM_OPS, ModelConfig
from sim.workload.precision import lookup_fn

PHASES = ("prefill", "decode", "mixed")
LM_HEAD_MODES = ("last", "all")

#: Every op name a node can carry, in block order: a transformer's, then a Mamba block's
#: (see :class:`_MambaBuilder`).
OPS = (
    "embed",
    "norm_attn", "q_proj", "k_proj", "v_proj", "qk", "softmax", "av", "o_proj", "residual_attn",
    "norm_ffn", "gate_proj", "up_proj", "act", "down_proj", "residual_ffn",
    *MAMBA_OP_NAMES[1:-2],
    "final_norm", "lm_head",
)
GEMM_OPS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head",
            *SSM_GEMM_OPS)
ATTENTION_OPS = ("qk", "av")
VECTOR_OPS = ("norm_attn", "softmax", "residual_attn", "norm_ffn", "act", "residual_ffn", "final_norm",
              "norm", "conv1d", "scan", "residual")
#: Memory nodes of a Mamba block: the recurrent state read before and written after the mixer.
STATE_OPS = ("state_load", "state_store")
#: the ops of one decoder block (their precisions decide whether two blocks are identical)
BLOCK_OPS = ("norm_attn", "q_proj", "k_proj", "v_proj", "qk", "softmax", "av", "o_proj",
             "residual_attn", "norm_ffn", "gate_proj", "up_proj", "act", "down_proj",
             "residual_ffn")
MAMBA_BLOCK_OPS = MAMBA_OP_NAMES[1:-2]


def block_ops(model: ModelConfig) -> tuple[str, ...]:
    """The ops of one block of ``model``'s family, in block order."""
    return MAMBA_BLOCK_OPS if model.architecture == "mamba" else BLOCK_OPS

#: Storage width of norm parameters and linear biases (kept in fp16 next to quantized weights).
PARAM_BITS = 16

OPS_PER_ELEMENT = {"softmax": 5, "rmsnorm": 4, "layernorm": 5, "act": 4, "gate_mul": 1, "residual": 1}

NODE_KEYS = (
    "name", "index", "layer", "op", "kind", "part", "M", "K", "N", "count", "wbits", "abits",
    "w_source", "a_bytes", "w_bytes", "o_bytes", "kv_write_bytes", "flops", "elements",
    "ops_per_element", "bytes",
)


def nbytes(elements: int, bits: int) -> int:
    """Bytes to hold ``elements`` values of ``bits`` bits, rounded up to a whole byte."""
    return (elements * bits + 7) // 8


@dataclass(frozen=True)
class AttentionPart:
    """One attention shape inside a step: ``seqs`` sequences, ``lq`` queries, ``lkv`` keys each."""
    suffix: str          # "" for a single-shape step, ".prefill" / ".decode" in a mixed step
    part: str | None     # value of the node's ``part`` attribute
    seqs: int
    lq: int
    lkv: int


@dataclass(frozen=True)
class StepShape:
    """What a phase means in tokens: rows through the linear layers, the logits and attention."""
    tokens: int
    sequences: int
    lm_rows: int
    attention: tuple[AttentionPart, ...]
    #: sequences that continue earlier tokens (a prefill chunk on a past context, every decode
    #: sequence): a state-space model reads their recurrent state back (attention reads KV)
    resumed: int = 0


def step_shape(phase: str, *, batch: int = 1, seq_len: int | None = None,
               context: int | None = None, decode_batch: int = 0,
               lm_head: str = "last") -> StepShape:
    """Validate the step arguments and derive token/sequence counts and attention shapes."""
    if phase not in PHASES:
        raise _bad("phase", f"one of {', '.join(PHASES)}", phase)
    if lm_head not in LM_HEAD_MODES:
        raise _bad("lm_head", "'last' or 'all'", lm_head)
    # integers from numpy/pandas sweeps are accepted and turned into plain ints
    decode_batch = _check_int("decode_batch", decode_batch, minimum=0)
    if context is not None:
        context = _check_int("context", context, minimum=0)
    if seq_len is not None:
        seq_len = _check_int("seq_len", seq_len, minimum=1)

    if phase == "prefill":
        batch = _check_int("batch", batch, minimum=1)
        if seq_len is None:
            raise _bad("seq_len", "an integer > 0 for a prefill step", None)
        ctx = context or 0
        parts = (AttentionPart(suffix="", part=None, seqs=batch, lq=seq_len,
                               lkv=ctx + seq_len),)
        tokens, sequences = batch * seq_len, batch
        resumed = batch if ctx > 0 else 0
    elif phase == "decode":
        batch = _check_int("batch", batch, minimum=1)
        if context is None:
            raise _bad("context", "an integer >= 0 (KV context) for a decode step", None)
        parts = (AttentionPart(suffix="", part=None, seqs=batch, lq=1, lkv=context + 1),)
        tokens, sequences = batch, batch
        resumed = batch
    else:  # mixed
        batch = _check_int("batch", batch, minimum=0)
        if batch + decode_batch == 0:
            raise _bad("batch", "batch + decode_batch > 0 in a mixed step", batch)
        if batch > 0 and seq_len is None:
            raise _bad("seq_len", "an integer > 0 for the prefill part of a mixed step", None)
        ctx = context or 0
        plist = []
        if batch > 0:
            plist.append(AttentionPart(suffix=".prefill", part="prefill", seqs=batch,
                                       lq=seq_len, lkv=ctx + seq_len))
        if decode_batch > 0:
            plist.append(AttentionPart(suffix=".decode", part="decode", seqs=decode_batch,
                                       lq=1, lkv=ctx + 1))
        parts = tuple(plist)
        tokens = batch * (seq_len or 0) + decode_batch
        sequences = batch + decode_batch
        resumed = (batch if ctx > 0 else 0) + decode_batch
    lm_rows = sequences if lm_head == "last" else tokens
    return StepShape(tokens=tokens, sequences=sequences, lm_rows=lm_rows, attention=parts,
                     resumed=resumed)


def _bad(key: str, expected: str, got, where: str = "<build_graph>") -> ConfigError:
    """A ConfigError for a bad ``build_graph`` argument (no file: the values come from code)."""
    return ConfigError(expected, file=where, key=key,
                       got=None if got is None else short_repr(got))


def _check_int(key: str, value, *, minimum: int, where: str = "<build_graph>") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise _bad(key, f"an integer >= {minimum}", value, where)
    return int(value)


# --------------------------------------------------------------------------- ragged steps ----
#: Most sequences one ragged step may hold (a bound on graph size, far above any real batch).
MAX_STEP_SEQUENCES = 65536


@dataclass(frozen=True)
class RaggedStep:
    """A continuous-batching step, normalized: sorted (new, past) chunks and decode contexts.

    Two steps that hold the same sequences in another order normalize to the same value."""
    prefill: tuple[tuple[int, int], ...]
    decode: tuple[int, ...]

    @property
    def tokens(self) -> int:
        return sum(n for n, _ in self.prefill) + len(self.decode)

    @property
    def sequences(self) -> int:
        return len(self.prefill) + len(self.decode)


def _as_list(key: str, value, where: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise _bad(key, "a list", value, where)
    return list(value)


def ragged_step(prefill=(), decode=(), *, max_position: int | None = None,
                where: str = "<build_graph>") -> RaggedStep:
    """Validate and normalize a ragged step.

    ``prefill`` is a list of ``(new_tokens, past_tokens)`` pairs (new >= 1, past >= 0), one per
    prefill chunk; ``decode`` a list of KV contexts (>= 0), one per decode sequence. Sizes are
    integers (numpy integers are accepted; bools, floats and strings are not). With
    ``max_position``, a chunk's ``past + new`` and a decode's ``context + 1`` may not exceed it.
    Errors are one-line :class:`ConfigError` naming the argument (``prefill.2.past_tokens``)."""
    pre = _as_list("prefill", prefill, where)
    dec = _as_list("decode", decode, where)
    if not pre and not dec:
        raise _bad("prefill", "at least one prefill chunk or decode sequence in a step "
                   "(prefill and decode are both empty)", None, where)
    if len(pre) + len(dec) > MAX_STEP_SEQUENCES:
        raise _bad("decode" if dec else "prefill",
                   f"at most {MAX_STEP_SEQUENCES} sequences in one step",
                   f"{len(pre) + len(dec)} sequences", where)
    chunks = []
    for i, item in enumerate(pre):
        new, past = item if type(item) is tuple and len(item) == 2 else (None, None)
        if not (type(new) is int and type(past) is int and new >= 1 and past >= 0):
            # not the common case (a tuple of two plain ints in range, checked cheaply)
            if isinstance(item, (str, bytes, dict)) or not hasattr(item, "__len__") \
                    or len(item) != 2:
                raise _bad(f"prefill.{i}", "a pair (new_tokens, past_tokens)", item, where)
            new_tokens, past_tokens = item
            new = _check_int(f"prefill.{i}.new_tokens", new_tokens, minimum=1, where=where)
            past = _check_int(f"prefill.{i}.past_tokens", past_tokens, minimum=0, where=where)
        if max_position is not None and past + new > max_position:
            raise _bad(f"prefill.{i}", f"past_tokens + new_tokens <= the model's max_position "
                       f"({max_position})", (new, past), where)
        chunks.append((new, past))
    if dec and all(type(c) is int for c in dec) and min(dec) >= 0 and \
            (max_position is None or max(dec) + 1 <= max_position):
        return RaggedStep(prefill=tuple(sorted(chunks)),               # plain ints, in range
                          decode=tuple(sorted(dec)))
    contexts = []
    for i, c in enumerate(dec):
        if type(c) is not int or c < 0:
            c = _check_int(f"decode.{i}", c, minimum=0, where=where)
        if max_position is not None and c + 1 > max_position:
            raise _bad(f"decode.{i}", f"a context < the model's max_position ({max_position}): "
                       "attention sees context + 1 keys", c, where)
        contexts.append(c)
    chunks.sort()
    contexts.sort()
    return RaggedStep(prefill=tuple(chunks), decode=tuple(contexts))


def ragged_shape(step: RaggedStep, *, causal_block: int | None = None,
                 lm_head: str = "last") -> StepShape:
    """Token counts and attention shapes of a ragged step.

    Linear layers see every token of the step. Attention is priced per sequence: a prefill
    chunk of ``n`` new tokens on ``p`` past tokens and a decode sequence at context ``c`` each
    get their own (Lq, Lkv); sequences (or query blocks) of equal shape share one part with a
    count. ``causal_block=None`` prices a chunk as the full ``n x (p + n)`` score matrix (the
    ``prefill``/``mixed`` phases' convention). ``causal_block=B`` exploits causal masking the
    way a tiled kernel does: the chunk's queries are cut into blocks of ``B`` (the last one may
    be shorter); block ``j`` holds queries ``jB .. e-1`` with ``e = min((j+1)B, n)`` and attends
    the dense past plus keys ``0 .. e-1`` of the chunk, ``p + e`` keys. Masked scores inside a
    block's diagonal square are computed (as a kernel computes its diagonal tile), so the
    Q·Kᵀ MACs are ``sum_j |block j| * (p + e_j) * head_dim`` per head, which is the exact causal
    count ``sum_i (p + i + 1) * head_dim`` when ``B = 1``.
    """
    if lm_head not in LM_HEAD_MODES:
        raise _bad("lm_head", "'last' or 'all'", lm_head)
    if causal_block is not None:
        causal_block = _check_int("causal_block", causal_block, minimum=1)
    shapes: dict[tuple[str, int, int], int] = {}
    for new, past in step.prefill:
        if causal_block is None:
            blocks = ((new, past + new),)
        else:
            blocks = tuple((min(s + causal_block, new) - s, past + min(s + causal_block, new))
                           for s in range(0, new, causal_block))
        for lq, lkv in blocks:
            shapes[("prefill", lq, lkv)] = shapes.get(("prefill", lq, lkv), 0) + 1
    for c in step.decode:
        shapes[("decode", 1, c + 1)] = shapes.get(("decode", 1, c + 1), 0) + 1
    def order(item):                # prefill parts first, then by (lq, lkv)
        (kind, lq, lkv), _ = item
        return kind != "prefill", (lq, lkv)

    parts = []
    for (kind, lq, lkv), seqs in sorted(shapes.items(), key=order):
        suffix = f".prefill.q{lq}.kv{lkv}" if kind == "prefill" else f".decode.kv{lkv}"
        parts.append(AttentionPart(suffix=suffix, part=kind, seqs=seqs, lq=lq, lkv=lkv))
    tokens = step.tokens
    sequences = step.sequences
    return StepShape(tokens=tokens, sequences=sequences,
                     lm_rows=sequences if lm_head == "last" else tokens,
                     attention=tuple(parts),
                     resumed=sum(1 for _, past in step.prefill if past > 0) + len(step.decode))


class _GraphWriter:
    """Appends nodes in topological order; ``index`` records that order for graph_ops."""

    def __init__(self, graph: nx.DiGraph, keep_edges: bool = True):
        self.g = graph
        self.keep_edges = keep_edges   # step_ops needs only the ordered nodes
        self.nodes: list[tuple[str, dict]] = []
        self.edges: list[tuple[str, str]] = []

    def node(self, name: str, layer: int, op: str, kind: str, preds: tuple[str, ...] = (), **attrs) -> str:
        data = {
            "name": name, "index": len(self.nodes), "layer": layer, "op": op, "kind": kind,
            "part": None, "M": 0, "K": 0, "N": 0, "count": 0, "wbits": None, "abits": None,
            "w_source": None, "a_bytes": 0, "w_bytes": 0, "o_bytes": 0, "kv_write_bytes": 0,
            "flops": 0, "elements": 0, "ops_per_element": 0,
        }
        data.update(attrs)
        data["bytes"] = data["a_bytes"] + data["w_bytes"] + data["o_bytes"]
        self.nodes.append((name, data))
        if self.keep_edges:
            self.edges.extend((p, name) for p in preds)
        return name

    def finish(self) -> nx.DiGraph:
        self.g.add_nodes_from(self.nodes)
        self.g.add_edges_from(self.edges)
        return self.g


class _Builder:
    """Builds one step's graph for one model; holds the model dimensions and the precision lookup."""

    def __init__(self, model: ModelConfig, shape: StepShape):
        self.m = model
        self.shape = shape
        self.prec = lookup_fn(model)
        self.H = model.hidden_size
        if model.architecture == "transformer":
            self.nh = model.num_heads
            self.nkv = model.num_kv_heads
            self.hd = model.head_dim or model.hidden_size // model.num_heads
            self.I = model.intermediate_size
            self.gated = model.ffn == "gated"
        self.norm_ops = OPS_PER_ELEMENT[model.norm]
        self.norm_params = self.H * (2 if model.norm == "layernorm" else 1)
        self.w = _GraphWriter(nx.DiGraph())
        self.block_ops = BLOCK_OPS

    # -- node kinds ------------------------------------------------------------------------
    def linear(self, name: str, layer: int, op: str, rows: int, k: int, n: int, preds, *,
               bias: bool = False, kv_store_bits: int | None = None) -> str:
        wbits, abits = self.prec(layer, op)
        w_bytes = nbytes(k * n, wbits) + (nbytes(n, PARAM_BITS) if bias else 0)
        kv_write = nbytes(rows * n, kv_store_bits) if kv_store_bits is not None else 0
        return self.w.node(
            name, layer, op, "gemm", preds, M=rows, K=k, N=n, count=1, wbits=wbits, abits=abits,
            w_source="dram", a_bytes=nbytes(rows * k, abits), w_bytes=w_bytes,
            o_bytes=nbytes(rows * n, abits), kv_write_bytes=kv_write, flops=2 * rows * k * n,
        )

    def attention(self, name: str, layer: int, op: str, part: AttentionPart, preds) -> str:
        _, abits = self.prec(layer, op)
        g = self.nh // self.nkv
        count = part.seqs * self.nkv
        M = g * part.lq
        K, N = (self.hd, part.lkv) if op == "qk" else (part.lkv, self.hd)
        return self.w.node(
            name, layer, op, "attention", preds, part=part.part, M=M, K=K, N=N, count=count,
            wbits=abits, abits=abits, w_source="kv", a_bytes=nbytes(count * M * K, abits),
            w_bytes=nbytes(count * K * N, abits), o_bytes=nbytes(count * M * N, abits),
            flops=2 * M * K * N * count,
        )

    def vector(self, name: str, layer: int, op: str, elements: int, ops_per_element: int,
               n_inputs: int, preds, *, params: int = 0, part: str | None = None) -> str:
        _, abits = self.prec(layer, op)
        return self.w.node(
            name, layer, op, "vector", preds, part=part, abits=abits,
            w_source="dram" if params else None, a_bytes=n_inputs * nbytes(elements, abits),
            w_bytes=nbytes(params, PARAM_BITS), o_bytes=nbytes(elements, abits),
            elements=elements, ops_per_element=ops_per_element,
        )

    # -- structure -------------------------------------------------------------------------
    def build(self, finish: bool = True) -> nx.DiGraph | None:
        T = self.shape.tokens
        _, abits = self.prec(-1, "embed")
        gather = nbytes(T * self.H, abits)
        x = self.w.node("embed", -1, "embed", "memory", (), abits=abits, w_source="dram",
                        o_bytes=gather, elements=T * self.H)
        # decoder blocks with the same precisions are identical but for names: build each kind
        # once and copy it (a 32-layer decode step is built ~10x faster, the runner builds one
        # graph per decode step)
        templates: dict[tuple, tuple[int, int, str, str]] = {}
        for layer in range(self.m.num_layers):
            sig = tuple(self.prec(layer, op) for op in self.block_ops)
            if sig in templates:
                x = self._copy_block(*templates[sig], layer, x)
            else:
                first_node, first_edge = len(self.w.nodes), len(self.w.edges)
                x_in = x
                x = self.block(layer, x)
                templates[sig] = (first_node, first_edge, x_in, f"L{layer}.")
        rows = self.shape.lm_rows
        y = self.vector("final_norm", -1, "final_norm", rows * self.H, self.norm_ops, 1, (x,),
                        params=self.norm_params)
        self.linear("lm_head", -1, "lm_head", rows, self.H, self.m.vocab_size, (y,))
        return self.w.finish() if finish else None

    def _copy_block(self, first_node: int, first_edge: int, x_in: str, prefix: str,
                    layer: int, x: str) -> str:
        """Append a renamed copy of the block whose nodes start at ``first_node``."""
        w, new = self.w, f"L{layer}."
        n_nodes = w.nodes_per_block
        cut = len(prefix)

        def rename(name: str) -> str:
            return x if name == x_in else new + name[cut:]
        base = len(w.nodes)
        for i, (name, data) in enumerate(w.nodes[first_node:first_node + n_nodes]):
            d = data.copy()
            d["name"] = new_name = new + name[cut:]
            d["layer"], d["index"] = layer, base + i
            w.nodes.append((new_name, d))
        if w.keep_edges:
            w.edges.extend((rename(a), rename(b))
                           for a, b in w.edges[first_edge:first_edge + w.edges_per_block])
        last_name, _ = w.nodes[-1]
        return last_name

    def block(self, layer: int, x: str) -> str:
        first_node, first_edge = len(self.w.nodes), len(self.w.edges)
        T, H, hd = self.shape.tokens, self.H, self.hd
        p = f"L{layer}."
        bias = bool(self.m.qkv_bias)
        n = self.vector(p + "norm_attn", layer, "norm_attn", T * H, self.norm_ops, 1, (x,),
                        params=self.norm_params)
        q = self.linear(p + "q_proj", layer, "q_proj", T, H, self.nh * hd, (n,), bias=bias)
        _, k_store_bits = self.prec(layer, "qk")     # K is read back by qk, at its abits
        _, v_store_bits = self.prec(layer, "av")     # V by av
        k = self.linear(p + "k_proj", layer, "k_proj", T, H, self.nkv * hd, (n,), bias=bias,
                        kv_store_bits=k_store_bits)
        v = self.linear(p + "v_proj", layer, "v_proj", T, H, self.nkv * hd, (n,), bias=bias,
                        kv_store_bits=v_store_bits)
        outs = []
        for part in self.shape.attention:
            s = part.suffix
            qk = self.attention(p + "qk" + s, layer, "qk", part, (q, k))
            scores = part.seqs * self.nh * part.lq * part.lkv
            sm = self.vector(p + "softmax" + s, layer, "softmax", scores, OPS_PER_ELEMENT["softmax"],
                             1, (qk,), part=part.part)
            outs.append(self.attention(p + "av" + s, layer, "av", part, (sm, v)))
        o = self.linear(p + "o_proj", layer, "o_proj", T, self.nh * hd, H, tuple(outs))
        r = self.vector(p + "residual_attn", layer, "residual_attn", T * H, OPS_PER_ELEMENT["residual"],
                        2, (o, x))
        n2 = self.vector(p + "norm_ffn", layer, "norm_ffn", T * H, self.norm_ops, 1, (r,),
                         params=self.norm_params)
        act_ops = OPS_PER_ELEMENT["act"]
        if self.gated:
            gt = self.linear(p + "gate_proj", layer, "gate_proj", T, H, self.I, (n2,))
            up = self.linear(p + "up_proj", layer, "up_proj", T, H, self.I, (n2,))
            a = self.vector(p + "act", layer, "act", T * self.I, act_ops + OPS_PER_ELEMENT["gate_mul"],
                            2, (gt, up))
        else:
            up = self.linear(p + "up_proj", layer, "up_proj", T, H, self.I, (n2,))
            a = self.vector(p + "act", layer, "act", T * self.I, act_ops, 1, (up,))
        d = self.linear(p + "down_proj", layer, "down_proj", T, self.I, H, (a,))
        out = self.vector(p + "residual_ffn", layer, "residual_ffn", T * H,
                          OPS_PER_ELEMENT["residual"], 2, (d, r))
        self.w.nodes_per_block = len(self.w.nodes) - first_node
        self.w.edges_per_block = len(self.w.edges) - first_edge
        return out


class _MambaBuilder(_Builder):
    """One step of a Mamba model (Gu & Dao 2023; reference: state-spaces/mamba, ``Mamba`` in
    mamba_ssm/modules/mamba_simple.py). A block, for ``T`` tokens of ``S`` sequences, with
    ``D = d_inner = expand * hidden_size``, ``n = d_state``, ``k = d_conv``, ``r = dt_rank``::

        norm         RMSNorm of the block input                     (T*H elements, as norm_attn)
        in_proj      GEMM  [T, H] x [H, 2D]  -> x, z                 (bias only if proj_bias)
        state_load   DRAM -> chip: the recurrent state of the R resumed sequences
        conv1d       x_c = SiLU(conv_k(x) + b): causal depthwise conv, kernel k, per channel
        x_proj       GEMM  [T, D] x [D, r + 2n] -> dt_low, B, C
        dt_proj      GEMM  [T, r] x [r, D]   -> dt (its bias is stored with the weights)
        scan         dt = softplus(dt + b_dt); per state n: dA = exp(dt * A_n),
                     h_n = dA * h_n + (dt * x_c) * B_n, y = sum_n C_n * h_n + D_skip * x_c,
                     out = y * SiLU(z)
        state_store  chip -> DRAM: the state of all S sequences after the step
        out_proj     GEMM  [T, D] x [D, H]
        residual     block input + out_proj                         (T*H adds)

    Vector work per element (``ops_per_element``, an element is one (token, channel) of D):

    * conv1d: ``k`` multiplies + ``k - 1`` adds (+ 1 bias add with conv_bias) + SiLU
      (``OPS_PER_ELEMENT["act"]`` = 4, as the FFN's SiLU): 12 for k = 4 with a bias.
    * scan: dt bias add (1 with dt_bias) + softplus log(1 + exp(v)) (3) + dt * x (1); per
      state ``n``: dt * A_n, exp, (dt x) * B_n, dA * h, + (dBx), C_n * h (6); the sum over
      ``n`` (n - 1 adds); D_skip * x and its add (2); SiLU(z) (4) and the gating multiply
      (1): ``7n + 11`` = 123 for n = 16. ``A = -exp(A_log)`` is a constant of the weights,
      taken as precomputed once at load time (it does not depend on the input).

    State (stored at ``ssm.state_bits``): per sequence ``D * (k - 1)`` conv inputs (the causal
    window the next token's conv needs; the reference keeps a ``k``-wide shift register, one
    column of which is the current input) and ``D * n`` SSM state values. A decode sequence
    reads and writes it every step, so a step's state traffic depends on its sequences, never
    on their context. Prefill assumption: inside a chunk the scan keeps ``h`` on chip (the
    reference's hardware-aware scan loads its inputs once and never writes ``h`` out, chunked
    over the sequence), so a chunk reads the state once when it resumes a past context and
    writes its final state once. There is no attention, no KV cache and no causal masking:
    the step shape's attention parts are not read.

    GEMM shapes follow the module's convention (M = tokens, K = in, N = out); the depthwise
    conv weights (``k * D``), its bias, ``A`` (``D * n``) and ``D_skip`` (``D``) are small
    parameters at ``PARAM_BITS``, read by the vector op that uses them."""

    def __init__(self, model: ModelConfig, shape: StepShape):
        super().__init__(model, shape)
        ssm = model.ssm
        self.ssm = ssm
        self.D = ssm.d_inner(self.H)
        self.n_state = ssm.d_state
        self.k_conv = ssm.d_conv
        self.r = ssm.rank(self.H)
        self.block_ops = MAMBA_BLOCK_OPS

    def state_values(self) -> int:
        """Recurrent state of one sequence in one block (values)."""
        return self.D * (self.k_conv - 1) + self.D * self.n_state

    def conv_ops(self) -> int:
        return 2 * self.k_conv - 1 + int(self.ssm.conv_bias) + OPS_PER_ELEMENT["act"]

    def scan_ops(self) -> int:
        n = self.n_state
        return (int(self.ssm.dt_bias) + 3 + 1 + 6 * n + (n - 1) + 2
                + OPS_PER_ELEMENT["act"] + OPS_PER_ELEMENT["gate_mul"])

    def state(self, name: str, layer: int, op: str, sequences: int, preds) -> str:
        size = nbytes(sequences * self.state_values(), self.ssm.state_bits)
        # state_load moves DRAM -> chip (o_bytes, as the embedding gather); state_store moves
        # chip -> DRAM (a_bytes); sim.workload.execute writes the latter
        moved = {"o_bytes": size} if op == "state_load" else {"a_bytes": size}
        return self.w.node(name, layer, op, "memory", preds, w_source="dram",
                           elements=sequences * self.state_values(), **moved)

    def block(self, layer: int, x: str) -> str:
        first_node, first_edge = len(self.w.nodes), len(self.w.edges)
        T, H, D, n, r = self.shape.tokens, self.H, self.D, self.n_state, self.r
        p = f"L{layer}."
        bias = bool(self.ssm.proj_bias)
        nrm = self.vector(p + "norm", layer, "norm", T * H, self.norm_ops, 1, (x,),
                          params=self.norm_params)
        xz = self.linear(p + "in_proj", layer, "in_proj", T, H, 2 * D, (nrm,), bias=bias)
        loads = ()
        if self.shape.resumed:
            loads = (self.state(p + "state_load", layer, "state_load", self.shape.resumed, ()),)
        conv = self.vector(p + "conv1d", layer, "conv1d", T * D, self.conv_ops(), 1,
                           (xz, *loads),
                           params=self.k_conv * D + (D if self.ssm.conv_bias else 0))
        xp = self.linear(p + "x_proj", layer, "x_proj", T, D, r + 2 * n, (conv,))
        dt = self.linear(p + "dt_proj", layer, "dt_proj", T, r, D, (xp,), bias=self.ssm.dt_bias)
        _, abits = self.prec(layer, "scan")
        scan = self.w.node(
            p + "scan", layer, "scan", "vector", (conv, xp, dt, xz, *loads), abits=abits,
            w_source="dram", a_bytes=nbytes(T * (3 * D + 2 * n), abits),   # x_c, dt, z, B, C
            w_bytes=nbytes(D * n + D, PARAM_BITS), o_bytes=nbytes(T * D, abits),
            elements=T * D, ops_per_element=self.scan_ops())
        self.state(p + "state_store", layer, "state_store", self.shape.sequences, (scan, xz))
        o = self.linear(p + "out_proj", layer, "out_proj", T, D, H, (scan,), bias=bias)
        out = self.vector(p + "residual", layer, "residual", T * H, OPS_PER_ELEMENT["residual"],
                          2, (o, x))
        self.w.nodes_per_block = len(self.w.nodes) - first_node
        self.w.edges_per_block = len(self.w.edges) - first_edge
        return out


def _builder(model: ModelConfig, shape: StepShape) -> _Builder:
    return (_MambaBuilder if model.architecture == "mamba" else _Builder)(model, shape)


def step_ops(model: ModelConfig, phase: str, *, batch: int = 1, seq_len: int | None = None,
             context: int | None = None, decode_batch: int = 0, lm_head: str = "last") -> list[dict]:
    """The nodes ``graph_ops(build_graph(...))`` would return, without building the networkx
    graph: nodes are created in a topological order (``index``), so that order is the one
    ``graph_ops`` picks. The runner uses this on its hot path (one call per decode step)."""
    shape = step_shape(phase, batch=batch, seq_len=seq_len, context=context,
                       decode_batch=decode_batch, lm_head=lm_head)
    return shape_ops(model, shape)


def shape_ops(model: ModelConfig, shape: StepShape) -> list[dict]:
    """The ordered nodes of one step of any shape (``step_shape`` or ``ragged_shape``)."""
    b = _builder(model, shape)
    b.w.keep_edges = False
    b.build(finish=False)
    return [data for _, data in b.w.nodes]


def build_ragged_graph(model: ModelConfig, prefill=(), decode=(), *,
                       causal_block: int | None = None, lm_head: str = "last") -> nx.DiGraph:
    """Operator DAG of a ragged continuous-batching step (see :func:`ragged_shape`).

    The graph's ``graph`` dict records model, phase ``"step"``, the normalized prefill and
    decode lists, causal_block, lm_head, tokens and sequences."""
    step = ragged_step(prefill, decode, max_position=model.max_position)
    shape = ragged_shape(step, causal_block=causal_block, lm_head=lm_head)
    g = _builder(model, shape).build()
    g.graph.update(model=model.name, phase="step", prefill=step.prefill, decode=step.decode,
                   causal_block=causal_block, lm_head=lm_head, tokens=shape.tokens,
                   sequences=shape.sequences)
    return g


def build_graph(model: ModelConfig, phase: str, *, batch: int = 1, seq_len: int | None = None,
                context: int | None = None, decode_batch: int = 0,
                lm_head: str = "last") -> nx.DiGraph:
    """Operator DAG of one ``phase`` step of ``model`` (see the module docstring for shapes).

    Raises :class:`ConfigError` for an unknown phase/lm_head mode or missing/invalid sizes.
    The graph's ``graph`` dict records the step: model, phase, batch, seq_len, context,
    decode_batch, lm_head, tokens, sequences.
    """
    shape = step_shape(phase, batch=batch, seq_len=seq_len, context=context,
                       decode_batch=decode_batch, lm_head=lm_head)
    g = _builder(model, shape).build()
    g.graph.update(
        model=model.name, phase=phase, batch=int(batch),
        seq_len=None if seq_len is None else int(seq_len),
        context=0 if context is None else int(context),
        decode_batch=int(decode_batch), lm_head=lm_head, tokens=shape.tokens, sequences=shape.sequences,
    )
    return g


def graph_ops(g: nx.DiGraph) -> list[dict]:
    """Nodes of ``g`` as attribute dicts (copies), in a deterministic topological order.

    Ties between independent nodes (e.g. q/k/v_proj) are broken by construction order, so the
    same graph always yields the same list; a cycle raises ``networkx.NetworkXUnfeasible``.
    """
    nodes = g.nodes
    order = nx.lexicographical_topological_sort(g, key=lambda n: nodes[n].get("index", 0))
    return [dict(nodes[n]) for n in order]
