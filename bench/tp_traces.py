#!/usr/bin/env python3
"""Measure tensor-parallel traces on the GPUs of one host: NCCL collectives and TP model steps.

Runs on the device machine only (torch, NCCL). One process a GPU, started by this script
(``--nproc N``, torch.multiprocessing spawn) or by ``torchrun --nproc-per-node N``. NVLink
multicast (NVLS) is forced off in NCCL, PyTorch and NVSHMEM before anything initialises, as
the device notes require. Sections (one process group each, so a crash loses one section):

* ``env``: GPU count and names, ``nvidia-smi topo -m``, NVLink status, NCCL/torch versions.
* ``collectives``: all-reduce (in place) and all-gather (``all_gather_into_tensor``; the size is
  the gathered output's) of bf16 buffers from 4 KB to 1 GB, each eager and captured in a CUDA
  graph of several back-to-back calls, CUDA-event timed on every rank after warm-up; a row holds
  the median over samples, max and mean over ranks, and a correctness check of the result.
* ``steps``: prefill, decode and mixed steps of a random-weight Llama-shaped model split
  Megatron-style over the ranks (QKV and gate/up by output columns, o and down by input rows,
  lm_head by vocabulary: one all-reduce after attention and one after the FFN of every layer,
  one all-gather of the logits), the whole step in one CUDA graph. The single-GPU step code is
  ``bench/gpu_traces.py``'s ``Model.make_step`` run on the shard config.

Every decision that changes how many collectives a rank issues (deadlines, repeat counts) is
taken on rank 0's or the slowest rank's figures and shared, so ranks never fall out of step.
``--dry-run-shapes --models llama-3-70b:8`` with fewer ranks builds 8-way shards on the ranks
there are (the dry run: world size 1, collectives degenerate, a 70B TP8 shard's shapes and
memory are real). Rows of such runs have ``tp`` != ``world``; they are not traces.

    bash bench/tp_traces.sh OUT NPROC              # every section for NPROC GPUs
    python3 bench/tp_traces.py --out DIR --nproc 4 --section collectives --budget-s 90
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

# before torch, NCCL or NVSHMEM read them: multicast off (device README, KINDS.md)
os.environ["NCCL_NVLS_ENABLE"] = "0"
os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] = "1"
os.environ["NVSHMEM_DISABLE_NVLS"] = "1"

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_traces as gt  # noqa: E402  (the single-GPU step code and helpers)

KB = 1024
SIZES = [4 * KB << k for k in range(19)]                # 4 KiB .. 1 GiB, powers of two
SIZES_MID = [3 * s // 2 for s in SIZES[:-1]]            # 6 KiB .. 768 MiB, between them
COLL_HDR = ["op", "mode", "world", "nccl_proto", "bytes", "elements", "dtype", "time_us",
            "time_us_mean", "time_us_min_rank", "algbw_GBps", "busbw_GBps", "calls_per_sample",
            "samples", "correct"]
STEP_HDR = gt.STEP_HDR + ["tp", "world", "allreduce_bytes", "allgather_bytes"]
#: (model, tp) of the steps section per world size (Llama-3-8B at TP2, Llama-3-70B at TP4/8)
STEP_MODELS = {2: [("llama-3-8b", 2)],
               4: [("llama-3-70b", 4)], 8: [("llama-3-70b", 8)]}
T0 = time.time()


def log(*a):
    if RANK == 0:
        print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


RANK = 0


# ----------------------------------------------------------------------------- process group

def init(rank: int, world: int):
    global RANK
    RANK = rank
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=180),
                            device_id=torch.device("cuda", rank))
    t = torch.ones(1, device="cuda")
    dist.all_reduce(t)          # communicator up before any capture
    torch.cuda.synchronize()
    assert int(t.item()) == world


def agree(value: float, op=dist.ReduceOp.MAX) -> float:
    """One number all ranks agree on (max by default), shared through NCCL."""
    t = torch.tensor([float(value)], device="cuda", dtype=torch.float64)
    dist.all_reduce(t, op=op)
    return float(t.item())


def go_on(deadline: float) -> bool:
    """Rank 0's clock decides for everyone whether there is time for the next point."""
    return agree(1.0 if time.time() < deadline else 0.0, dist.ReduceOp.MIN) > 0


def time_calls(run, calls: int, *, min_sample_s=0.003, samples=7, max_s=1.0):
    """Median seconds per call of ``run()`` (which makes ``calls`` calls), timed with CUDA events
    on this rank; the repeat counts are the slowest rank's so every rank issues the same calls.
    Returns (median, repeats a sample, samples)."""
    run()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); run(); e.record(); torch.cuda.synchronize()
    one = agree(max(s.elapsed_time(e) / 1e3, 1e-6))
    per = max(1, min(200, int(min_sample_s / one)))
    n = max(3, min(samples, int(max_s / (one * per)) or 3))
    ts = []
    dist.barrier()
    for _ in range(n):
        s.record()
        for _ in range(per):
            run()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3 / per / calls)
    return statistics.median(ts), per, n


def rank_stats(t: float) -> tuple[float, float, float]:
    """(max, mean, min) over ranks of a per-rank time."""
    world = dist.get_world_size()
    return agree(t), agree(t, dist.ReduceOp.SUM) / world, agree(t, dist.ReduceOp.MIN)


def capture(fn, warm=2) -> torch.cuda.CUDAGraph:
    """A CUDA graph of ``fn`` (warmed on a side stream first, as gpu_traces.capture)."""
    st = torch.cuda.Stream()
    st.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(st):
        for _ in range(warm):
            fn()
    torch.cuda.current_stream().wait_stream(st)
    torch.cuda.synchronize()
    dist.barrier()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    torch.cuda.synchronize()
    return g


# ----------------------------------------------------------------------------- environment

def run_cmd(args: list[str]) -> str:
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        return f"unavailable: {exc}"


def section_env(out: Path, world: int, args) -> None:
    if RANK != 0:
        return
    nccl = torch.cuda.nccl.version()
    env = {
        "host": socket.gethostname(),
        "gpu_count_visible": torch.cuda.device_count(),
        "world_size": world,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "total_memory_bytes": torch.cuda.get_device_properties(0).total_memory,
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl),
        "python": sys.version.split()[0],
        "nccl_env": {k: v for k, v in os.environ.items()
                     if k.startswith(("NCCL_", "TORCH_NCCL", "TORCH_SYMM", "NVSHMEM_"))},
        "nvidia_smi_topo_m": run_cmd(["nvidia-smi", "topo", "-m"]),
        "nvidia_smi_nvlink_status": run_cmd(["nvidia-smi", "nvlink", "--status"]),
        "nvidia_smi": {
            "driver,name,vbios": gt.smi("driver_version,name,vbios_version"),
            "clocks.max.sm,clocks.max.mem": gt.smi("clocks.max.sm,clocks.max.mem"),
            "power.limit": gt.smi("power.limit"),
        },
        "command": " ".join(sys.argv),
    }
    (out / "env.json").write_text(json.dumps(env, indent=2))
    log("env:", {k: env[k] for k in ("gpu_count_visible", "nccl", "torch")})
    log(env["nvidia_smi_topo_m"])


# ----------------------------------------------------------------------------- collectives

def section_collectives(out: Path, world: int, args, deadline: float) -> None:
    w = gt.Csv(out / "collectives.csv", COLL_HDR) if RANK == 0 else None
    sizes = SIZES if args.quick else sorted(SIZES + SIZES_MID)
    if args.max_bytes:
        sizes = [s for s in sizes if s <= args.max_bytes]
    # coarse first (every other size), then the rest, so a cut run still spans 4 KB .. 1 GB
    order = sizes[0::2] + sizes[1::2]
    proto = os.environ.get("NCCL_PROTO", "")
    big = torch.empty(max(order) // 2, dtype=torch.bfloat16, device="cuda")
    for size in order:
        for op in ("allreduce", "allgather"):
            for mode in ("graph", "eager"):
                if not go_on(deadline):
                    log("collectives budget spent")
                    return
                n = size // 2
                if op == "allgather":
                    n -= n % world      # whole blocks per rank (a no-op for powers of two)
                    out_t = big[:n]
                    inp = torch.zeros(n // world, dtype=torch.bfloat16, device="cuda")

                    def one():
                        dist.all_gather_into_tensor(out_t, inp)
                else:
                    buf = big[:n]
                    buf.zero_()         # sums of zeros stay zero over every repeat

                    def one():
                        dist.all_reduce(buf)
                nbytes = 2 * n
                calls = 1
                run = one
                if mode == "graph":
                    # several calls a graph, fewer for big messages (the slowest rank decides)
                    calls = int(agree(max(1, min(20, int(64e6 // max(nbytes, 1))))))
                    try:
                        g = capture(lambda: [one() for _ in range(calls)])
                    except Exception as exc:  # noqa: BLE001 - recorded as a row without time
                        log(f"graph capture of {op} failed: {str(exc)[:300]}")
                        if w:
                            w.row(op=op, mode=mode, world=world, nccl_proto=proto, bytes=nbytes,
                                  correct="capture failed")
                        torch.cuda.synchronize()
                        continue
                    run = g.replay
                t, per, ns = time_calls(run, calls, max_s=0.5)
                tmax, tmean, tmin = rank_stats(t)
                ok = check_collective(op, n, world)
                algbw = nbytes / tmax / 1e9
                factor = {"allreduce": 2 * (world - 1) / world,
                          "allgather": (world - 1) / world}[op]
                if w:
                    w.row(op=op, mode=mode, world=world, nccl_proto=proto, bytes=nbytes,
                          elements=n, dtype="bf16", time_us=tmax * 1e6, time_us_mean=tmean * 1e6,
                          time_us_min_rank=tmin * 1e6, algbw_GBps=algbw,
                          busbw_GBps=algbw * factor, calls_per_sample=calls * per, samples=ns,
                          correct=int(ok))
                if mode == "graph":
                    del g
    log("collectives done")


def check_collective(op: str, n: int, world: int) -> bool:
    """A fresh call on rank-dependent data gives the exact result (small integers in bf16)."""
    r = dist.get_rank()
    if op == "allreduce":
        x = torch.full((n,), float(r + 1), dtype=torch.bfloat16, device="cuda")
        dist.all_reduce(x)
        good = bool((x == world * (world + 1) / 2).all().item())
    else:
        x = torch.full((n // world,), float(r + 1), dtype=torch.bfloat16, device="cuda")
        y = torch.empty(n, dtype=torch.bfloat16, device="cuda")
        dist.all_gather_into_tensor(y, x)
        ref = torch.arange(1, world + 1, device="cuda", dtype=torch.bfloat16)[:, None]
        good = bool((y.view(world, n // world) == ref).all().item())
    return bool(agree(0.0 if good else 1.0) == 0.0)


# ----------------------------------------------------------------------------- TP steps

def shard_config(cfg: dict, tp: int) -> dict:
    """One of ``tp`` ranks' share of a model (sim/workload/parallel.py's shard_model rules:
    heads, KV heads (replicated when tp exceeds them), FFN columns and vocabulary split)."""
    nh, nkv = cfg["num_heads"], cfg["num_kv_heads"]
    if nh % tp or (nkv % tp and tp % nkv):
        raise SystemExit(f"tp {tp} does not split {cfg['name']} ({nh} heads, {nkv} KV heads)")
    s = dict(cfg)
    s.update(name=f"{cfg['name']}/tp{tp}", num_heads=nh // tp, num_kv_heads=max(nkv // tp, 1),
             head_dim=cfg.get("head_dim") or cfg["hidden_size"] // nh,
             intermediate_size=-(-cfg["intermediate_size"] // tp),
             vocab_size=-(-cfg["vocab_size"] // tp))
    return s


def step_grid(quick: bool):
    if quick:
        pre = [(1, 128), (1, 2048)]
        dec = [(1, 512), (64, 2048)]
        mix = [((1, 512), (32, 2048))]
    else:
        pre = [(b, p) for p in (128, 512, 2048, 8192) for b in (1, 4) if b * p <= 16384]
        pre += [(2, 1024), (1, 4096)]
        dec = [(b, c) for c in (512, 2048, 8192) for b in (1, 8, 32, 128, 256)]
        dec += [(16, 1024), (64, 4096)]
        mix = [((1, p), (bd, c)) for p in (512, 2048) for bd in (8, 64) for c in (512, 2048)]
    jobs = [("prefill", [p] * b, []) for b, p in pre]
    jobs += [("decode", [], [c] * b) for b, c in dec]
    jobs += [("mixed", [p] * bp, [c] * bd) for (bp, p), (bd, c) in mix]
    return jobs[0::2] + jobs[1::2]


def section_steps(out: Path, world: int, args, deadline: float) -> None:
    w = gt.Csv(out / "steps.csv", STEP_HDR) if RANK == 0 else None
    gt.SDPA_MODE = gt.pick_sdpa_mode()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    root = Path(args.root)
    plan = STEP_MODELS.get(world, []) if not args.models else [
        (m.split(":")[0], int(m.split(":")[1])) for m in args.models.split(",")]
    for i, (name, tp) in enumerate(plan):
        if tp != world and not args.dry_run_shapes:
            raise SystemExit(f"{name} at tp {tp} needs {tp} ranks, not {world}")
        now = time.time()
        dl = now + (deadline - now) / (len(plan) - i)
        cfg = gt.load_models(root, [name])[name]
        shard = shard_config(cfg, tp)
        torch.manual_seed(RANK)
        m = gt.Model(shard, args.kv_pool_gb * 1e9, sms)
        log(f"steps {name} tp{tp} (world {world}): shard weights {m.weight_bytes / 1e9:.2f} GB, "
            f"KV pool {m.pool_tokens} tokens, memory {torch.cuda.memory_allocated() / 1e9:.1f} GB,"
            f" budget {dl - now:.0f}s")
        ar = lambda t: dist.all_reduce(t)  # noqa: E731

        def ag(t):
            o = torch.empty(t.shape[0] * world, *t.shape[1:], dtype=t.dtype, device=t.device)
            dist.all_gather_into_tensor(o, t)
            return o

        for kind, p, d in step_grid(args.quick):
            if not go_on(dl):
                log(f"steps budget spent for {name}")
                break
            if not gt.feasible(m, p, d) or sum(p) + sum(d) > m.pool_tokens:
                continue
            fn = m.make_step(p, d, allreduce=ar, allgather=ag)
            g = capture(fn)
            t, _, _ = time_calls(g.replay, 1, min_sample_s=0.0, samples=9, max_s=0.5)
            tmax, _, _ = rank_stats(t)
            del g, fn
            T = sum(p) + len(d)
            if w:
                ctx = list(p) + list(d)
                rows = len(p) + len(d)
                w.row(model=name, kind=kind, batch=len(ctx), prefill_seqs=len(p),
                      prompt_tokens=sum(p), decode_seqs=len(d), context_sum=sum(ctx),
                      context_max=max(ctx),
                      context_list=(" ".join(map(str, ctx)) if len(ctx) <= 8 else ""),
                      tokens=T, time_ms=tmax * 1e3, layers=m.L, weight_bytes=m.weight_bytes,
                      kv_bytes_read=m.kv_total_bytes(sum(d)),
                      kv_fits_hbm=int(m.weight_bytes + m.kv_total_bytes(sum(ctx)) <= gt.HBM_BYTES),
                      check="", grid="tp", tp=tp, world=world,
                      allreduce_bytes=T * m.Hd * 2, allgather_bytes=rows * m.V * world * 2)
            log(f"  {kind} {len(p)}x{p[:1]} + {len(d)}x{d[:1]}: {tmax * 1e3:.3f} ms")
        log(f"peak memory {torch.cuda.max_memory_allocated() / 1e9:.1f} GB of "
            f"{torch.cuda.get_device_properties(0).total_memory / 1e9:.0f}")
        m.free()
        del m
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- main

def worker(rank: int, world: int, args) -> None:
    init(rank, world)
    out = Path(args.out)
    deadline = T0 + args.budget_s
    try:
        if args.section == "env":
            section_env(out, world, args)
        elif args.section == "collectives":
            section_collectives(out, world, args, deadline)
        elif args.section == "steps":
            section_steps(out, world, args, deadline)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--section", required=True, choices=["env", "collectives", "steps"])
    ap.add_argument("--nproc", type=int, default=0,
                    help="spawn this many ranks (default: all GPUs; ignored under torchrun)")
    ap.add_argument("--budget-s", type=float, default=120)
    ap.add_argument("--quick", action="store_true", help="a few points of each kind")
    ap.add_argument("--max-bytes", type=int, default=0, help="largest collective (default 1 GiB)")
    ap.add_argument("--models", default="", help="model:tp,... (default: by world size)")
    ap.add_argument("--dry-run-shapes", action="store_true",
                    help="allow model:tp with tp != world size (shapes and memory of a shard)")
    ap.add_argument("--kv-pool-gb", type=float, default=24)
    ap.add_argument("--nccl-proto", default="", help="force NCCL_PROTO (LL, LL128, Simple)")
    args = ap.parse_args()
    if args.nccl_proto:
        os.environ["NCCL_PROTO"] = args.nccl_proto
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if "LOCAL_RANK" in os.environ:                       # torchrun
        worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args)
        return
    world = args.nproc or torch.cuda.device_count()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    import torch.multiprocessing as mp
    mp.spawn(worker, args=(world, args), nprocs=world, join=True)   # also for one rank


if __name__ == "__main__":
    main()
