#!/usr/bin/env python3
"""Measure causal prefill attention alone (torch SDPA, flash backend) on the GPU at hand.

Writes ``attn_prefill.csv`` (one row per shape) to ``--out``: head_dim, heads, kv_heads, batch,
prompt, causal, time_us, tflops, n_kernels, kernels. Q, K and V are strided views of one fused
[tokens, (heads + 2 kv_heads) head_dim] tensor, laid out as in ``bench/gpu_traces.py`` steps
(GQA native, ``enable_gqa=True``), so a row is the attention kernel of one layer of a traced
prefill step. Times are medians of CUDA-event-timed CUDA-graph replays of ``reps`` calls each
(so the kernel-to-kernel gap inside a graph is included, as in the steps); the kernel names of
one call come from ``torch.profiler``. FLOPs counted: 4 d P^2 per (sequence, head) without the
causal mask, 2 d P (P + 1) with it.

    python3 bench/attn_prefill_trace.py --out OUT [--budget-s 240]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_traces import capture, time_graph  # noqa: E402  (the steps' timing, shared)

HDR = ["head_dim", "heads", "kv_heads", "batch", "prompt", "causal", "time_us", "tflops",
       "n_kernels", "kernels"]
#: (head_dim, heads, kv_heads): the traced models' attention and others around them
HEADS = [(64, 32, 8), (64, 16, 2), (64, 32, 32), (96, 32, 8), (96, 16, 2), (128, 32, 8),
         (128, 16, 2), (128, 32, 32), (256, 16, 4), (256, 8, 2)]
PROMPTS = [128, 256, 512, 1024, 2048, 4096, 8192]
BATCHES = [1, 4]


def kernel_names(fn) -> list[str]:
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return [e.name for e in prof.events()
                if str(getattr(e, "device_type", "")).endswith("CUDA")]
    except Exception as exc:  # noqa: BLE001 - names are a by-product
        return [f"profiler failed: {str(exc)[:60]}"]


def one_shape(d, h, kvh, b, p, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    T = b * p
    qkv = torch.randn(T, (h + 2 * kvh) * d, device="cuda", dtype=torch.bfloat16)
    q = qkv[:, :h * d].reshape(b, p, h, d).transpose(1, 2)
    k = qkv[:, h * d:(h + kvh) * d].reshape(b, p, kvh, d).transpose(1, 2)
    v = qkv[:, (h + kvh) * d:].reshape(b, p, kvh, d).transpose(1, 2)

    def call():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)

    names = kernel_names(call)
    flops = b * h * (2.0 * d * p * (p + 1) if causal else 4.0 * d * p * p)
    # a graph of several calls so one sample is a few ms and launch gaps are as in the steps
    probe = capture(call)
    t1 = time_graph(probe, samples=3, max_s=0.05)
    reps = max(1, min(50, int(2e-3 / max(t1, 1e-7))))

    def many():
        for _ in range(reps):
            call()

    g = capture(many)
    t = time_graph(g, min_sample_s=0.003, samples=5, max_s=0.4) / reps
    del g, probe, qkv
    return t, flops, names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=240.0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shapes = [(d, h, kvh, b, p, True) for (d, h, kvh) in HEADS for b in BATCHES
              for p in PROMPTS]
    shapes += [(d, h, kvh, 1, p, False) for (d, h, kvh) in ((64, 32, 8), (128, 32, 8))
               for p in PROMPTS]
    t0 = time.time()
    print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), flush=True)
    with open(out / "attn_prefill.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HDR)
        for d, h, kvh, b, p, causal in shapes:
            if time.time() - t0 > args.budget_s:
                print("budget reached", flush=True)
                break
            try:
                t, flops, names = one_shape(d, h, kvh, b, p, causal)
            except Exception as exc:  # noqa: BLE001 - one shape lost, not the file
                print(f"{(d, h, kvh, b, p, causal)} failed: {str(exc)[:200]}", flush=True)
                continue
            short = [n.split("<")[0].split("(")[0][:60] for n in names]
            w.writerow([d, h, kvh, b, p, int(causal), f"{t * 1e6:.4f}",
                        f"{flops / t / 1e12:.2f}", len(names), ";".join(short)])
            f.flush()
            print(d, h, kvh, b, p, int(causal), f"{t * 1e6:.1f} us",
                  f"{flops / t / 1e12:.0f} TF/s", len(names), short[:3], flush=True)
    print(f"done in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
