#!/usr/bin/env python3
"""Measure GPU traces (GEMMs, whole prefill/decode/mixed steps, board power) on an NVIDIA GPU.

Runs on the device machine only: it imports torch and triton, which the rest of Strata never
needs. Weights are random bf16 with the shapes of the models in workloads/*.yaml. Every CSV is
written row by row (flushed) into --out, and every section is bounded by a wall-clock budget, so
a run cut short still leaves usable data. See traces/h200/README.md for what each column means.

    bash bench/gpu_traces.sh $OUT            # every section, one process each (see that file)
    python3 bench/gpu_traces.py --out DIR --section steps --budget-s 200 [--quick]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
import yaml

DEFAULT_MODELS = ["llama-3-8b", "llama-3.2-1b", "llama-2-7b", "qwen2.5-3b"]
GEMM_M = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
HBM_BYTES = 141e9          # board memory used to flag step points whose KV cache could not fit
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


class Csv:
    """CSV file written and flushed one row at a time."""

    def __init__(self, path: Path, header: list[str]):
        new = not path.exists()
        self.f = open(path, "a", newline="")
        self.w = csv.writer(self.f)
        self.header = header
        if new:
            self.w.writerow(header)
            self.f.flush()

    def row(self, **kw):
        self.w.writerow([_fmt(kw.get(h, "")) for h in self.header])
        self.f.flush()


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def load_models(root: Path, names: list[str]) -> dict[str, dict]:
    out = {}
    for n in names:
        d = yaml.safe_load((root / "workloads" / f"{n}.yaml").read_text())
        out[n] = d
    return out


# ----------------------------------------------------------------------------- timing helpers

def time_graph(g: torch.cuda.CUDAGraph, *, min_sample_s=0.002, samples=7, max_s=1.0) -> float:
    """Median seconds per replay of a captured graph (CUDA events, several replays a sample)."""
    g.replay()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); g.replay(); e.record(); torch.cuda.synchronize()
    one = max(s.elapsed_time(e) / 1e3, 1e-6)
    per = max(1, min(200, int(min_sample_s / one)))
    samples = max(3, min(samples, int(max_s / (one * per)) or 3))
    ts = []
    for _ in range(samples):
        s.record()
        for _ in range(per):
            g.replay()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3 / per)
    return statistics.median(ts)


def capture(fn) -> torch.cuda.CUDAGraph:
    st = torch.cuda.Stream()
    st.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(st):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(st)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    torch.cuda.synchronize()
    return g


# ----------------------------------------------------------------------------- environment

def smi(query: str) -> str:
    try:
        return subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        return f"unavailable: {exc}"


def measure_ceilings() -> dict:
    res = {}
    n = 2 << 30  # 2 GiB each way, bf16
    a = torch.randn(n // 2, dtype=torch.bfloat16, device="cuda")
    b = torch.empty_like(a)
    g = capture(lambda: b.copy_(a))
    t = time_graph(g, samples=9)
    res["copy_bytes"] = 2 * n
    res["copy_time_s"] = t
    res["copy_GBps_read_plus_write"] = 2 * n / t / 1e9
    del a, b, g
    for m in (8192,):
        x = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
        w = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
        o = torch.empty(m, m, dtype=torch.bfloat16, device="cuda")
        g = capture(lambda: torch.mm(x, w.t(), out=o))
        t = time_graph(g, samples=9)
        res[f"mm{m}_tflops"] = 2 * m ** 3 / t / 1e12
        del x, w, o, g
    torch.cuda.empty_cache()
    return res


def environment(out: Path, ceilings: dict, extra: dict) -> dict:
    p = torch.cuda.get_device_properties(0)
    env = {
        "gpu_name": torch.cuda.get_device_name(0),
        "sm_count": p.multi_processor_count,
        "l2_bytes": getattr(p, "L2_cache_size", None),
        "total_memory_bytes": p.total_memory,
        "compute_capability": f"{p.major}.{p.minor}",
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "triton": triton.__version__,
        "python": sys.version.split()[0],
        "nvidia_smi": {
            "driver,name,vbios": smi("driver_version,name,vbios_version"),
            "clocks.max.sm,clocks.max.mem": smi("clocks.max.sm,clocks.max.mem"),
            "clocks.sm,clocks.mem (at start)": smi("clocks.sm,clocks.mem"),
            "power.limit,power.default_limit,power.max_limit": smi(
                "power.limit,power.default_limit,power.max_limit"),
            "temperature.gpu": smi("temperature.gpu"),
            "persistence_mode,compute_mode": smi("persistence_mode,compute_mode"),
        },
        "ceilings": ceilings,
    }
    env.update(extra)
    (out / "env.json").write_text(json.dumps(env, indent=2))
    return env


# ----------------------------------------------------------------------------- decode attention

@triton.jit
def _decode_attn_kernel(Q, K, V, OP, LSEP, START, LEN, sm_scale, chunk, nsplit,
                        stride_qt, stride_qh, stride_kt, stride_kh, H,
                        G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                        BLOCK_N: tl.constexpr):
    """One program: one sequence, one KV head (all G query heads of it), one chunk of that
    sequence's own context. Programs whose chunk starts past the sequence's length do no loads."""
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    s = tl.program_id(2)
    length = tl.load(LEN + b)
    start = tl.load(START + b)
    lo = s * chunk
    hi = tl.minimum(lo + chunk, length)
    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, D)
    gmask = offs_g < G
    heads = kvh * G + offs_g
    q = tl.load(Q + b * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                mask=gmask[:, None], other=0.0)
    m_i = tl.full([GP], float("-inf"), tl.float32)
    l_i = tl.zeros([GP], tl.float32)
    acc = tl.zeros([GP, D], tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        nmask = offs_n < hi
        row = (start + offs_n).to(tl.int64)
        k = tl.load(K + row[:, None] * stride_kt + kvh * stride_kh + offs_d[None, :],
                    mask=nmask[:, None], other=0.0)
        qk = tl.dot(q, tl.trans(k)) * sm_scale
        qk = tl.where(nmask[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + row[:, None] * stride_kt + kvh * stride_kh + offs_d[None, :],
                    mask=nmask[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    ok = l_i > 0
    l_safe = tl.where(ok, l_i, 1.0)
    lse = tl.where(ok, m_i + tl.log(l_safe), float("-inf"))
    o = acc / l_safe[:, None]
    base = (b * H + heads) * nsplit + s
    tl.store(OP + base[:, None] * D + offs_d[None, :], o, mask=gmask[:, None])
    tl.store(LSEP + base, lse, mask=gmask)


class DecodeAttention:
    """Split-context decode attention over a flat KV cache [tokens, kv_heads, head_dim] where
    sequence b owns rows start[b] .. start[b]+len[b]. The split size is set on the host from the
    per-sequence lengths (as an engine does per step): total programs ~ 4x the SM count, so work
    follows each sequence's own context and a single long sequence is spread over many programs."""

    BLOCK_N = 64

    def __init__(self, lens: list[int], n_heads: int, n_kv: int, head_dim: int, sms: int):
        self.B = len(lens)
        self.H, self.KVH, self.D = n_heads, n_kv, head_dim
        self.G = n_heads // n_kv
        self.GP = max(16, triton.next_power_of_2(self.G))
        total = sum(lens)
        chunk = max(2 * self.BLOCK_N, math.ceil(total * n_kv / (4 * sms)))
        chunk = math.ceil(chunk / self.BLOCK_N) * self.BLOCK_N
        self.chunk = chunk
        self.nsplit = max(1, math.ceil(max(lens) / chunk))
        starts = [0]
        for L in lens[:-1]:
            starts.append(starts[-1] + L)
        self.start = torch.tensor(starts, dtype=torch.int32, device="cuda")
        self.len = torch.tensor(lens, dtype=torch.int32, device="cuda")
        self.op = torch.empty(self.B, self.H, self.nsplit, self.D, dtype=torch.float32, device="cuda")
        self.lse = torch.empty(self.B, self.H, self.nsplit, dtype=torch.float32, device="cuda")
        self.scale = 1.0 / math.sqrt(head_dim)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, H, D] (strided ok, last dim contiguous), k/v [tokens, KVH, D] -> [B, H*D] bf16."""
        grid = (self.B, self.KVH, self.nsplit)
        _decode_attn_kernel[grid](q, k, v, self.op, self.lse, self.start, self.len, self.scale,
                                  self.chunk, self.nsplit, q.stride(0), q.stride(1),
                                  k.stride(0), k.stride(1), self.H,
                                  G=self.G, GP=self.GP, D=self.D, BLOCK_N=self.BLOCK_N,
                                  num_warps=4, num_stages=2)
        if self.nsplit == 1:
            return self.op[:, :, 0].to(torch.bfloat16).reshape(self.B, self.H * self.D)
        m = self.lse.amax(-1, keepdim=True)
        w = torch.exp(self.lse - m)
        o = (self.op * w.unsqueeze(-1)).sum(2) / w.sum(-1, keepdim=True)
        return o.to(torch.bfloat16).reshape(self.B, self.H * self.D)


def check_decode_attention(sms: int) -> dict:
    """Compare the Triton kernel with a float32 torch reference on random data."""
    torch.manual_seed(1)
    res = {}
    for (H, KVH, D, lens) in [(32, 8, 128, [1, 37, 300, 1025, 64]), (32, 32, 128, [5, 700]),
                              (16, 2, 128, [2000, 3]), (32, 8, 64, [129, 4096, 17])]:
        tot = sum(lens)
        q = torch.randn(len(lens), H, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(tot, KVH, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(tot, KVH, D, device="cuda", dtype=torch.bfloat16)
        att = DecodeAttention(lens, H, KVH, D, sms)
        out = att(q, k, v).float().view(len(lens), H, D)
        ref = torch.empty_like(out)
        s0 = 0
        for b, L in enumerate(lens):
            kk = k[s0:s0 + L].float().repeat_interleave(H // KVH, dim=1)  # [L, H, D]
            vv = v[s0:s0 + L].float().repeat_interleave(H // KVH, dim=1)
            sc = torch.einsum("hd,lhd->hl", q[b].float(), kk) / math.sqrt(D)
            ref[b] = torch.einsum("hl,lhd->hd", sc.softmax(-1), vv)
            s0 += L
        err = ((out - ref).norm() / ref.norm()).item()
        res[f"H{H}_KVH{KVH}_D{D}_lens{lens}"] = err
    return res


# ----------------------------------------------------------------------------- prefill attention

SDPA_MODE = "unset"


def pick_sdpa_mode() -> str:
    """Flash SDPA with native GQA if this torch supports it, else flash on repeated KV heads."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q = torch.randn(1, 8, 256, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 2, 256, 128, device="cuda", dtype=torch.bfloat16)
    for mode in ("flash_gqa", "flash_repeat", "default_gqa"):
        try:
            if mode == "flash_gqa":
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
            elif mode == "flash_repeat":
                kk = k.repeat_interleave(4, dim=1)
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    F.scaled_dot_product_attention(q, kk, kk, is_causal=True)
            else:
                F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
            torch.cuda.synchronize()
            return mode
        except Exception as exc:  # noqa: BLE001 - try the next mode
            log(f"sdpa mode {mode} failed: {str(exc)[:200]}")
    return "math"


def prefill_attention(q, k, v):
    """q [B, H, P, D], k/v [B, KVH, P, D]; causal, no past."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    if SDPA_MODE == "flash_gqa":
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    if SDPA_MODE == "flash_repeat":
        r = q.shape[1] // k.shape[1]
        if r > 1:
            k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


# ----------------------------------------------------------------------------- the model

class Model:
    """Random bf16 Llama-shaped decoder: all layers, own weights per layer."""

    def __init__(self, cfg: dict, kv_pool_bytes: float, sms: int):
        self.cfg = cfg
        self.name = cfg["name"]
        self.Hd = cfg["hidden_size"]
        self.L = cfg["num_layers"]
        self.nh = cfg["num_heads"]
        self.nkv = cfg["num_kv_heads"]
        self.hd = cfg.get("head_dim") or self.Hd // self.nh
        self.I = cfg["intermediate_size"]
        self.V = cfg["vocab_size"]
        self.sms = sms
        self.nqkv = (self.nh + 2 * self.nkv) * self.hd
        bf = dict(dtype=torch.bfloat16, device="cuda")

        def rnd(*s):
            return torch.randn(*s, **bf) * 0.02

        self.layers = []
        for _ in range(self.L):
            self.layers.append(dict(
                n1=torch.ones(self.Hd, **bf), n2=torch.ones(self.Hd, **bf),
                wqkv=rnd(self.nqkv, self.Hd),
                bqkv=rnd(self.nqkv) if cfg.get("qkv_bias") else None,
                wo=rnd(self.Hd, self.nh * self.hd),
                wgu=rnd(2 * self.I, self.Hd), wd=rnd(self.Hd, self.I)))
        self.nf = torch.ones(self.Hd, **bf)
        self.emb = rnd(self.V, self.Hd)
        self.lm = self.emb if cfg.get("tie_embeddings") else rnd(self.V, self.Hd)
        self.kv_tok_layer = 2 * self.nkv * self.hd * 2  # K+V bytes per token per layer
        self.pool_tokens = int(kv_pool_bytes // self.kv_tok_layer)
        self.kpool = torch.randn(self.pool_tokens, self.nkv, self.hd, **bf)
        self.vpool = torch.randn(self.pool_tokens, self.nkv, self.hd, **bf)
        self.weight_bytes = sum(t.numel() * 2 for lay in self.layers for t in lay.values()
                                if t is not None) + self.emb.numel() * 2 + (
            0 if cfg.get("tie_embeddings") else self.lm.numel() * 2)

    def kv_total_bytes(self, ctx_tokens: int) -> int:
        return ctx_tokens * self.kv_tok_layer * self.L

    def make_step(self, prefill: list[int], decode: list[int], allreduce=None, allgather=None):
        """Return a closure running one step: prefill prompts (no past, equal lengths) followed by
        decode sequences with the given contexts (context includes the new token).

        ``allreduce(t)`` (in place) and ``allgather(t) -> t`` make it one rank's step of a
        tensor-parallel model (bench/tp_traces.py, on a shard config): the o and down projection
        outputs are all-reduced before their residual add, the logits all-gathered."""
        assert len(set(prefill)) <= 1, "prefill prompts of one step share one length"
        Bp, P = len(prefill), (prefill[0] if prefill else 0)
        Bd = len(decode)
        Tp, T = Bp * P, Bp * P + Bd
        ctx_lens = list(prefill) + list(decode)
        tot_ctx = sum(ctx_lens)
        assert tot_ctx <= self.pool_tokens, "KV pool too small for one layer of this step"
        nh, nkv, hd, Hd = self.nh, self.nkv, self.hd, self.Hd
        att = DecodeAttention(decode, nh, nkv, hd, self.sms) if Bd else None
        # KV rows of this step inside one layer's window; new tokens are written first.
        starts = [0]
        for c in ctx_lens[:-1]:
            starts.append(starts[-1] + c)
        slots = []
        for i, c in enumerate(ctx_lens):
            if i < Bp:
                slots.extend(range(starts[i], starts[i] + c))
            else:
                slots.append(starts[i] + c - 1)
        slots = torch.tensor(slots, dtype=torch.int64, device="cuda")
        if att is not None:
            att.start = torch.tensor(starts[Bp:], dtype=torch.int32, device="cuda")
        span = max(1, self.pool_tokens - tot_ctx + 1)
        offs = [(l * tot_ctx) % span for l in range(self.L)]
        views = [(self.kpool[o:o + tot_ctx], self.vpool[o:o + tot_ctx]) for o in offs]
        ids = torch.randint(0, self.V, (T,), device="cuda")
        last = [i * P + P - 1 for i in range(Bp)] + list(range(Tp, T))
        last = torch.tensor(last, dtype=torch.int64, device="cuda")
        eps = 1e-5

        def step():
            x = self.emb.index_select(0, ids)
            for lay, (kc, vc) in zip(self.layers, views):
                h = F.rms_norm(x, (Hd,), lay["n1"], eps)
                qkv = F.linear(h, lay["wqkv"], lay["bqkv"])
                q = qkv[:, :nh * hd]
                k = qkv[:, nh * hd:(nh + nkv) * hd].reshape(T, nkv, hd)
                v = qkv[:, (nh + nkv) * hd:].reshape(T, nkv, hd)
                kc.index_copy_(0, slots, k)
                vc.index_copy_(0, slots, v)
                outs = []
                if Bp:
                    qp = q[:Tp].reshape(Bp, P, nh, hd).transpose(1, 2)
                    kp = k[:Tp].reshape(Bp, P, nkv, hd).transpose(1, 2)
                    vp = v[:Tp].reshape(Bp, P, nkv, hd).transpose(1, 2)
                    op = prefill_attention(qp, kp, vp)
                    outs.append(op.transpose(1, 2).reshape(Tp, nh * hd))
                if Bd:
                    outs.append(att(q[Tp:].reshape(Bd, nh, hd), kc, vc))
                o = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
                y = F.linear(o, lay["wo"])
                if allreduce is not None:
                    allreduce(y)
                x = x + y
                h = F.rms_norm(x, (Hd,), lay["n2"], eps)
                gu = F.linear(h, lay["wgu"])
                a = F.silu(gu[:, :self.I]) * gu[:, self.I:]
                y = F.linear(a, lay["wd"])
                if allreduce is not None:
                    allreduce(y)
                x = x + y
            hl = F.rms_norm(x.index_select(0, last), (Hd,), self.nf, eps)
            logits = F.linear(hl, self.lm)
            return logits if allgather is None else allgather(logits)

        return step

    def free(self):
        self.layers = None
        self.emb = self.lm = self.kpool = self.vpool = None


# ----------------------------------------------------------------------------- sections

GEMM_HDR = ["model", "op", "M", "K", "N", "dtype", "time_us", "tflops", "weight_GBps",
            "weight_copies", "note"]


def gemm_shapes(cfg: dict, with_lm_head: bool):
    Hd, nh, nkv = cfg["hidden_size"], cfg["num_heads"], cfg["num_kv_heads"]
    hd = cfg.get("head_dim") or Hd // nh
    I, V = cfg["intermediate_size"], cfg["vocab_size"]
    s = [("qkv", Hd, (nh + 2 * nkv) * hd), ("o", nh * hd, Hd), ("gate_up", Hd, 2 * I),
         ("down", I, Hd)]
    if with_lm_head:
        s.append(("lm_head", Hd, V))
    return s


def run_gemms(models: dict, out: Path, deadline: float, ms: list[int], l2: int):
    w = Csv(out / "gemm.csv", GEMM_HDR)
    biggest = max(K * N for cfg in models.values() for _, K, N in gemm_shapes(cfg, True))
    rot_bytes = 4 * l2                     # weights streamed: rotation set >= 4x the L2
    pool_elems = max(2 * biggest, rot_bytes // 2 + biggest)
    pool = torch.randn(pool_elems, dtype=torch.bfloat16, device="cuda") * 0.02
    log(f"gemm pool {pool_elems * 2 / 1e9:.2f} GB")
    # Interleave: all shapes at one M, then the next M, so a cut run covers every shape.
    for M in ms:
        for name, cfg in models.items():
            for op, K, N in gemm_shapes(cfg, True):
                if time.time() > deadline:
                    log("gemm budget spent")
                    return
                copies = max(2, min(32, math.ceil(rot_bytes / (K * N * 2))))
                copies = min(copies, pool_elems // (K * N))
                ws = [pool[i * K * N:(i + 1) * K * N].view(N, K) for i in range(copies)]
                x = torch.randn(M, K, dtype=torch.bfloat16, device="cuda")
                y = torch.empty(M, N, dtype=torch.bfloat16, device="cuda")

                def fn():
                    for wi in ws:
                        torch.mm(x, wi.t(), out=y)

                g = capture(fn)
                t = time_graph(g, max_s=0.3) / copies
                w.row(model=name, op=op, M=M, K=K, N=N, dtype="bf16", time_us=t * 1e6,
                      tflops=2 * M * K * N / t / 1e12, weight_GBps=K * N * 2 / t / 1e9,
                      weight_copies=copies,
                      note="x @ W.T (nn.Linear layout), cuBLAS via torch.mm, in a CUDA graph")
                del g, x, y
    del pool
    torch.cuda.empty_cache()


STEP_HDR = ["model", "kind", "batch", "prefill_seqs", "prompt_tokens", "decode_seqs",
            "context_sum", "context_max", "context_list", "tokens", "time_ms", "layers",
            "weight_bytes", "kv_bytes_read", "kv_fits_hbm", "check", "grid"]


def step_row(w: Csv, m: Model, kind: str, prefill: list[int], decode: list[int], t: float,
             check: str = "", grid: str = "base"):
    ctx = list(prefill) + list(decode)
    w.row(model=m.name, kind=kind, batch=len(ctx), prefill_seqs=len(prefill),
          prompt_tokens=sum(prefill), decode_seqs=len(decode), context_sum=sum(ctx),
          context_max=max(ctx), context_list=(" ".join(map(str, ctx)) if len(ctx) <= 8 else ""),
          tokens=sum(prefill) + len(decode), time_ms=t * 1e3, layers=m.L,
          weight_bytes=m.weight_bytes, kv_bytes_read=m.kv_total_bytes(sum(decode)),
          kv_fits_hbm=int(m.weight_bytes + m.kv_total_bytes(sum(ctx)) <= HBM_BYTES), check=check,
          grid=grid)


def measure_step(m: Model, prefill, decode, max_s=0.5) -> float:
    fn = m.make_step(prefill, decode)
    g = capture(fn)
    t = time_graph(g, min_sample_s=0.0, samples=9, max_s=max_s)
    del g, fn
    return t


def feasible(m: Model, prefill, decode) -> bool:
    return m.weight_bytes + m.kv_total_bytes(sum(prefill) + sum(decode)) <= HBM_BYTES


def run_check(m: Model, w: Csv, attn: Csv):
    """One long sequence among short ones must cost far less than all long ones."""
    B, short, long_ = 64, 256, 8192
    cases = {"all_short": [short] * B, "one_long": [short] * (B - 1) + [long_],
             "all_long": [long_] * B}
    res = {}
    for name, dec in cases.items():
        t = measure_step(m, [], dec)
        step_row(w, m, "decode", [], dec, t, check=name)
        # attention alone, over all layers (each layer's own KV window), in one graph
        att = DecodeAttention(dec, m.nh, m.nkv, m.hd, m.sms)
        tot = sum(dec)
        span = max(1, m.pool_tokens - tot + 1)
        views = [(m.kpool[(l * tot) % span:(l * tot) % span + tot],
                  m.vpool[(l * tot) % span:(l * tot) % span + tot]) for l in range(m.L)]
        q = torch.randn(B, m.nh, m.hd, dtype=torch.bfloat16, device="cuda")

        def fn():
            for kc, vc in views:
                att(q, kc, vc)

        g = capture(fn)
        ta = time_graph(g, samples=9) / m.L
        kvb = tot * m.kv_tok_layer
        attn.row(model=m.name, case=name, batch=B, context_sum=tot, context_max=max(dec),
                 time_us_per_layer=ta * 1e6, kv_bytes_per_layer=kvb, GBps=kvb / ta / 1e9,
                 chunk=att.chunk, nsplit=att.nsplit)
        res[name] = (t, ta)
        del g
    log(f"check {m.name}: " + ", ".join(f"{k} step {v[0]*1e3:.3f} ms attn {v[1]*1e6:.1f} us"
                                         for k, v in res.items()))
    return res


def extra_jobs(seed: int = 7):
    """Second grid: off-grid sizes, heterogeneous decode contexts and repeats of base points,
    meant as held-out data for a model fitted on the base grid."""
    import random
    rng = random.Random(seed)
    jobs = [("decode", [], [c] * b) for c in (256, 1024, 4096) for b in (1, 3, 12, 48, 96, 192)]
    for b in (8, 32, 128, 200):
        jobs.append(("decode", [], [rng.randint(64, 8192) for _ in range(b)]))
        jobs.append(("decode", [], [rng.choice((128, 512, 2048, 6000)) for _ in range(b)]))
    jobs += [("prefill", [p] * b, []) for p in (384, 1536, 3000, 6000) for b in (1, 3)]
    jobs += [("mixed", [p] * bp, [c] * bd) for bp, p, bd, c in
             ((2, 512, 64, 1024), (1, 1000, 16, 3000), (3, 256, 100, 700), (1, 4000, 48, 1500),
              (4, 128, 200, 300))]
    jobs += [("mixed", [768], [rng.randint(100, 6000) for _ in range(40)])]
    rep = [("decode", [], [2048] * 32), ("prefill", [1024] * 2, []), ("decode", [], [512] * 128)]
    return jobs, rep


def run_steps(m: Model, w: Csv, deadline: float, quick: bool, grid: str = "base"):
    if grid == "extra":
        jobs, rep = extra_jobs()
        for kind, p, d in jobs + rep:
            if time.time() > deadline:
                log(f"extra steps budget spent for {m.name}")
                return
            if not feasible(m, p, d) or sum(p) + sum(d) > m.pool_tokens:
                continue
            t = measure_step(m, p, d)
            step_row(w, m, kind, p, d, t, check=("repeat" if (kind, p, d) in rep else ""),
                     grid="extra")
        return
    if quick:
        pre = [(1, 128), (2, 256)]
        dec = [(1, 128), (8, 512)]
        mix = [((1, 128), (4, 256))]
    else:
        pre = [(b, p) for p in (128, 256, 512, 1024, 2048, 4096, 8192) for b in (1, 2, 4, 8)
               if b * p <= 16384]
        dec = [(b, c) for c in (128, 512, 2048, 8192)
               for b in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
        mix = [((1, p), (bd, c)) for p in (128, 512, 2048) for bd in (8, 32, 128)
               for c in (512, 2048)]
    # order: coarse points of every kind first, so a cut run still spans the grid
    jobs = [("prefill", [p] * b, []) for b, p in pre]
    jobs += [("decode", [], [c] * b) for b, c in dec]
    jobs += [("mixed", [p] * bp, [c] * bd) for (bp, p), (bd, c) in mix]
    jobs = jobs[0::2] + jobs[1::2]
    for kind, p, d in jobs:
        if time.time() > deadline:
            log(f"steps budget spent for {m.name}")
            return
        if not feasible(m, p, d):
            continue
        if sum(p) + sum(d) > m.pool_tokens:
            continue
        try:
            t = measure_step(m, p, d)
        except torch.OutOfMemoryError:
            log(f"OOM {m.name} {kind} {len(p)}x{p[:1]} + {len(d)}x{d[:1]}")
            torch.cuda.empty_cache()
            continue
        step_row(w, m, kind, p, d, t)
    torch.cuda.empty_cache()


class PowerSampler:
    def __init__(self, csvw: Csv, period_s=0.02):
        import pynvml
        self.nv = pynvml
        pynvml.nvmlInit()
        self.h = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.w = csvw
        self.period = period_s
        self.phase = "start"
        self.t0 = time.time()
        self.stop_ev = threading.Event()
        self.samples = []
        self.th = threading.Thread(target=self.loop, daemon=True)

    def energy_mj(self):
        try:
            return self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h)
        except Exception:  # noqa: BLE001
            return None

    def loop(self):
        nv, h = self.nv, self.h
        while not self.stop_ev.is_set():
            try:
                p = nv.nvmlDeviceGetPowerUsage(h) / 1e3
                try:
                    fv = nv.nvmlDeviceGetFieldValues(h, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
                    pinst = fv.value.uiVal / 1e3 if fv.nvmlReturn == 0 else ""
                except Exception:  # noqa: BLE001
                    pinst = ""
                u = nv.nvmlDeviceGetUtilizationRates(h)
                self.samples.append((self.phase, p))
                self.w.row(phase=self.phase, t_s=time.time() - self.t0, power_w=p,
                           power_instant_w=pinst,
                           sm_clock_mhz=nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
                           mem_clock_mhz=nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
                           temp_c=nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
                           gpu_util_pct=u.gpu, mem_util_pct=u.memory)
            except Exception as exc:  # noqa: BLE001
                log(f"power sample failed: {exc}")
                return
            time.sleep(self.period)

    def start(self):
        self.th.start()

    def stop(self):
        self.stop_ev.set()
        self.th.join(timeout=2)


def run_power(out: Path, m8b: Model | None, phase_s: float):
    pw = Csv(out / "power.csv", ["phase", "t_s", "power_w", "power_instant_w", "sm_clock_mhz",
                                 "mem_clock_mhz", "temp_c", "gpu_util_pct", "mem_util_pct"])
    ph = Csv(out / "power_phases.csv", ["phase", "duration_s", "avg_power_w_energy",
                                        "median_power_w", "replays", "time_per_replay_ms",
                                        "flop_per_s", "bytes_per_s", "note"])
    sp = PowerSampler(pw)
    sp.start()
    phases = [("idle", None, 0, 0, "nothing running")]
    keep = []
    n = 8192
    x = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    wt = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    o = torch.empty_like(x)
    phases.append(("gemm_8192", capture(lambda: torch.mm(x, wt.t(), out=o)), 2 * n ** 3,
                   3 * n * n * 2, "bf16 8192^3 matmul, compute bound"))
    a = torch.randn(1 << 30, dtype=torch.bfloat16, device="cuda")
    b = torch.empty_like(a)
    phases.append(("copy_2GiB", capture(lambda: b.copy_(a)), 0, 4 << 30,
                   "device-to-device copy, memory bound"))
    if m8b is not None:
        P = [2048] * 4
        fl = 2 * m8b.weight_bytes / 2 * sum(P)
        # keep the step closures alive: a graph replays into the tensors they own
        keep.append(m8b.make_step(P, []))
        phases.append(("prefill_4x2048", capture(keep[-1]), fl, m8b.weight_bytes,
                       f"{m8b.name} prefill step, 4 prompts of 2048 (flop ~ 2*params*tokens)"))
        D = [2048] * 64
        keep.append(m8b.make_step([], D))
        phases.append(("decode_64x2048", capture(keep[-1]), 2 * m8b.weight_bytes / 2 * 64,
                       m8b.weight_bytes + m8b.kv_total_bytes(sum(D)),
                       f"{m8b.name} decode step, 64 sequences of context 2048"))
    for name, g, flop, byt, note in phases:
        sp.phase = name
        e0, t0 = sp.energy_mj(), time.time()
        reps = 0
        if g is None:
            time.sleep(phase_s)
        else:
            while time.time() - t0 < phase_s:
                for _ in range(20):
                    g.replay()
                torch.cuda.synchronize()
                reps += 20
        dt = time.time() - t0
        e1 = sp.energy_mj()
        avg = (e1 - e0) / 1e3 / dt if e0 is not None and e1 is not None else ""
        ph.row(phase=name, duration_s=dt, avg_power_w_energy=avg, median_power_w=statistics.median([p for q, p in sp.samples if q == name] or [0.0]),
               replays=reps, time_per_replay_ms=(dt / reps * 1e3 if reps else ""),
               flop_per_s=(flop * reps / dt if reps else 0),
               bytes_per_s=(byt * reps / dt if reps else 0), note=note)
        log(f"power phase {name}: {avg if avg == '' else round(avg, 1)} W over {dt:.1f}s")
    sp.phase = "idle_end"
    time.sleep(min(2.0, phase_s))
    sp.stop()
    del phases, keep, x, wt, o, a, b
    torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- main

def main():
    global SDPA_MODE
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--budget-s", type=float, default=500)
    ap.add_argument("--kv-pool-gb", type=float, default=48)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--section", required=True,
                    choices=["env", "power", "check", "gemm", "steps", "final"],
                    help="one section a process, so that a crash in one loses only that one")
    ap.add_argument("--power-phase-s", type=float, default=7.0)
    ap.add_argument("--grid", choices=["base", "extra"], default="base",
                    help="steps grid: base (regular grid) or extra (held-out style points)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    end = T0 + args.budget_s
    names = args.models.split(",")
    models = load_models(Path(args.root), names)
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    sms = props.multi_processor_count
    l2 = getattr(props, "L2_cache_size", 50 << 20) or (50 << 20)
    log(torch.cuda.get_device_name(0), torch.__version__, torch.version.cuda, triton.__version__)

    kvpool = 4e9 if args.quick else args.kv_pool_gb * 1e9  # K+V bytes per model
    sec = args.section
    if sec == "env":
        ceil = measure_ceilings()
        log("ceilings", ceil)
        SDPA_MODE = pick_sdpa_mode()
        errs = check_decode_attention(sms)
        log("decode attention rel err", errs)
        extra = {"sdpa_mode": SDPA_MODE, "decode_attention_rel_err_vs_fp32": errs,
                 "command": " ".join(sys.argv), "models": names, "quick": args.quick,
                 "kv_pool_gb": args.kv_pool_gb, "gemm_M": GEMM_M}
        environment(out, ceil, extra)
        return
    SDPA_MODE = pick_sdpa_mode()
    if sec == "power":
        first = Model(models[names[0]], kvpool, sms)
        run_power(out, first, 1.0 if args.quick else args.power_phase_s)
    elif sec == "check":
        steps = Csv(out / "steps.csv", STEP_HDR)
        attn = Csv(out / "attn_check.csv", ["model", "case", "batch", "context_sum",
                                             "context_max", "time_us_per_layer",
                                             "kv_bytes_per_layer", "GBps", "chunk", "nsplit"])
        first = Model(models[names[0]], kvpool, sms)
        run_check(first, steps, attn)
    elif sec == "gemm":
        run_gemms(models, out, end, GEMM_M[:4] if args.quick else GEMM_M, l2)
    elif sec == "steps":
        steps = Csv(out / "steps.csv", STEP_HDR)
        for i, n in enumerate(names):
            now = time.time()
            dl = now + (end - now) / (len(names) - i)
            log(f"steps {n}: budget {dl - now:.0f}s")
            m = Model(models[n], kvpool, sms)
            run_steps(m, steps, dl, args.quick, args.grid)
            m.free()
            del m
            torch.cuda.empty_cache()
    elif sec == "final":
        env = json.loads((out / "env.json").read_text())
        env["clocks.sm,clocks.mem (at end)"] = smi("clocks.sm,clocks.mem")
        (out / "env.json").write_text(json.dumps(env, indent=2))
    log(f"section {sec} done")


if __name__ == "__main__":
    main()
