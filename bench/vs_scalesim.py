#!/usr/bin/env python3
"""Cross-check Strata's systolic-array cycle counts against SCALE-Sim v3.0.0.

SCALE-Sim (https://github.com/scalesim-project/scale-sim-v3) is run in its own virtual
environment, ``bench/.scalesim-venv`` (git-ignored; created on first use), through its Python API
in a subprocess, so that nothing of it is imported into Strata's interpreter. For every case the
bench writes a SCALE-Sim config, a one-line GEMM topology and a header-only layout file into a
temporary directory, runs the simulation with trace files off, and reads ``COMPUTE_REPORT.csv``.

Memory is made a non-factor on the SCALE-Sim side: ``InterfaceBandwidth: CALC`` (SCALE-Sim
measures the bandwidth it needs instead of limiting it) and SRAMs sized so that the *active half*
of each double-buffered SRAM holds the whole operand (ifmap M*K, filter K*N, ofmap M*N bytes), so
nothing is ever re-fetched. (Sizes far beyond that are not used: SCALE-Sim's CALC mode simulates
prefetching the whole buffer, so a 10 GB SRAM turns a 0.1 s run into a 50 s one.) The bench checks
that every report shows 0 stall cycles and uses the report's ``Total Cycles`` column (compute
cycles plus stalls, prefetch excluded), i.e. SCALE-Sim's compute cycles.

Dimension mapping (verified, see ``--verify-mapping``): SCALE-Sim's GEMM topology row is
``Layer,M,N,K,`` and its loader turns it into a convolution with ifmap M x K, a 1 x K filter and N
filters. So SCALE-Sim's M = output rows (tokens), N = output columns (= number of filters) and K =
the reduction dimension, i.e. exactly Strata's ``O[M,N] = A[M,K] @ W[K,N]``: a Strata GEMM
(M, K, N) is written as the topology row ``name,M,N,K,``. The witness is the non-square GEMM
M=16, K=64, N=32 on an 8x8 array, where SCALE-Sim reports OS 623 = 8*(64+8+8-2)-1 (Sr=M=16,
Sc=N=32, T=K=64), WS 1215 = 32*(2*8+8+16-2)-1 (Sr=K, Sc=N, T=M) and IS 863 = 16*(2*8+8+32-2)-1
(Sr=K, Sc=M, T=N); swapping K and N would give OS 735, WS 1023, IS 831.

Usage (from the repository root, with Strata's Python)::

    .venv/bin/python bench/vs_scalesim.py --cached     # Strata only, SCALE-Sim cycles from the CSV
    .venv/bin/python bench/vs_scalesim.py              # run SCALE-Sim too (~6 min) and rewrite the CSV
    .venv/bin/python bench/vs_scalesim.py --plan       # list the cases and predicted SCALE-Sim cost

The SCALE-Sim results are cached in ``bench/scalesim_reference.csv`` (columns name, M, K, N, rows,
cols, dataflow, scalesim_cycles, scalesim_wall_s); ``tests/test_scalesim_pinned.py`` checks Strata
against that file, so CI never needs SCALE-Sim.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VENV = REPO / "bench" / ".scalesim-venv"
REF_CSV = REPO / "bench" / "scalesim_reference.csv"
SCALESIM_REQUIREMENTS = ["scalesim==3.0.0", "numpy<2.4"]  # numpy 2.4 breaks SCALE-Sim 3.0.0
CSV_COLUMNS = ["name", "M", "K", "N", "rows", "cols", "dataflow", "scalesim_cycles",
               "scalesim_wall_s"]

# ------------------------------------------------------------------------------------------------
# The shapes. Each GEMM comes from a real LLM layer (O[M,N] = A[M,K] @ W[K,N]; M = tokens).
# SCALE-Sim simulates every cycle (roughly 0.1-0.6 ms of wall time per simulated cycle), so the
# big layers keep their true K (and usually N) but use few tokens, or take a slice of N
# ("N:256" = the first 256 output columns of the layer). Each GEMM runs on a few array sizes with
# OS and WS (and IS for some).
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gemm:
    name: str                 # model.op[.slice]
    M: int
    K: int
    N: int
    arrays: tuple[int, ...]   # square array sizes to run it on
    note: str                 # where the shape comes from
    dataflows: tuple[str, ...] = ("os", "ws")


GEMMS: list[Gemm] = [
    # --- Llama-2-7B: hidden 4096, 32 heads x 128, gated FFN 11008 ---
    Gemm("llama-2-7b.q_proj.N256", 32, 4096, 256, (64, 128),
         "q/k/v/o proj 4096x4096, 32 prompt tokens, first 256 output columns"),
    Gemm("llama-2-7b.o_proj.decode.N256", 1, 4096, 256, (128,),
         "o_proj 4096x4096 decode GEMV (M=1), first 256 output columns"),
    Gemm("llama-2-7b.up_proj.N344", 16, 4096, 344, (128,),
         "gate/up 4096x11008, 16 tokens, first 344 (=11008/32) columns", ("os", "ws", "is")),
    Gemm("llama-2-7b.down_proj.N64", 16, 11008, 64, (64,),
         "down 11008x4096, 16 tokens, first 64 columns"),
    Gemm("llama-2-7b.attn_qk.s100", 100, 128, 100, (8, 16, 32),
         "one head's Q K^T, 100-token prompt, head_dim 128", ("os", "ws", "is")),
    Gemm("llama-2-7b.attn_pv.s100", 100, 100, 128, (16, 32),
         "one head's P V, 100-token prompt, head_dim 128"),
    Gemm("llama-2-7b.attn_qk.decode.ctx2048", 1, 128, 2048, (16, 64, 128),
         "one head's q K^T in decode, context 2048"),
    Gemm("llama-2-7b.attn_pv.decode.ctx2048", 1, 2048, 128, (32, 64),
         "one head's p V in decode, context 2048"),
    Gemm("llama-2-7b.down_proj.decode8.N32", 8, 11008, 32, (128,),
         "down 11008x4096, decode batch 8, first 32 columns"),
    # --- Llama-3-8B: GQA, 8 KV heads -> k/v proj N = 1024; FFN 14336 ---
    Gemm("llama-3-8b.k_proj.M16.N512", 16, 4096, 512, (128,),
         "k/v proj 4096x1024 (8 KV heads x 128), 16 tokens, first 512 columns"),
    Gemm("llama-3-8b.down_proj.decode4.N48", 4, 14336, 48, (32, 64),
         "down 14336x4096, decode batch 4, first 48 columns"),
    # --- OPT-6.7B: plain FFN 4096 -> 16384 -> 4096 ---
    Gemm("opt-6.7b.fc1.N96", 24, 4096, 96, (32, 64),
         "fc1 4096x16384, 24 tokens, first 96 columns"),
    Gemm("opt-6.7b.fc2.N40", 24, 16384, 40, (64,),
         "fc2 16384x4096, 24 tokens, first 40 columns"),
    # --- Qwen2.5-3B: hidden 2048, 16 heads, 2 KV heads -> k/v N = 256; FFN 11008 ---
    Gemm("qwen2.5-3b.k_proj.M48", 48, 2048, 256, (64, 128),
         "k/v proj 2048x256 (2 KV heads x 128), 48 tokens", ("os", "ws", "is")),
    Gemm("qwen2.5-3b.o_proj.decode3.N200", 3, 2048, 200, (32, 64),
         "o_proj 2048x2048, decode batch 3, first 200 columns"),
    # --- Phi-3-mini: hidden 3072, 32 heads x 96, fused qkv 9216, FFN 8192 ---
    Gemm("phi-3-mini.qkv_proj.N288", 20, 3072, 288, (128,),
         "fused qkv 3072x9216, 20 tokens, first 288 columns"),
    Gemm("phi-3-mini.attn_qk.s77", 77, 96, 77, (8, 16, 64),
         "one head's Q K^T, 77-token prompt, head_dim 96", ("os", "ws", "is")),
    Gemm("phi-3-mini.attn_pv.s77", 77, 77, 96, (8, 32),
         "one head's P V, 77-token prompt, head_dim 96"),
    Gemm("phi-3-mini.down_proj.M12.N96", 12, 8192, 96, (128,),
         "down 8192x3072, 12 tokens, first 96 columns"),
    # --- Llama-2-13B: hidden 5120, 40 heads, FFN 13824 ---
    Gemm("llama-2-13b.q_proj.decode.N320", 1, 5120, 320, (128,),
         "q proj 5120x5120 decode GEMV, first 320 columns"),
    Gemm("llama-2-13b.gate_proj.M40.N108", 40, 5120, 108, (64,),
         "gate 5120x13824, 40 tokens, first 108 (=13824/128) columns"),
    # --- Llama-2-70B: hidden 8192, GQA 8 KV heads -> k/v N = 1024 ---
    Gemm("llama-2-70b.k_proj.decode2.N256", 2, 8192, 256, (128,),
         "k/v proj 8192x1024 decode batch 2, first 256 columns"),
    # --- Mistral-7B / LM heads (vocab 32000) ---
    Gemm("mistral-7b.lm_head.decode.N500", 1, 4096, 500, (128,),
         "lm_head 4096x32000 decode GEMV, first 500 columns"),
    Gemm("mistral-7b.attn_qk.decode5.ctx300", 5, 128, 300, (8, 16),
         "5 decode queries of one KV group (GQA 4:1 + 1) against 300 keys, head_dim 128"),
    # --- tiny / odd shapes that exercise partial folds on every side ---
    Gemm("llama-2-7b.attn_qk.s13", 13, 128, 13, (8, 16, 32),
         "one head's Q K^T, 13-token prompt"),
    Gemm("mapping-witness", 16, 64, 32, (8,),
         "non-square GEMM that distinguishes K from N (see module docstring)", ("os", "ws", "is")),
]


@dataclass(frozen=True)
class Case:
    name: str
    M: int
    K: int
    N: int
    rows: int
    cols: int
    dataflow: str

    @property
    def key(self) -> tuple:
        return (self.name, self.M, self.K, self.N, self.rows, self.cols, self.dataflow)

    @property
    def shape(self) -> str:
        return f"{self.M}x{self.K}x{self.N}"


def all_cases() -> list[Case]:
    return [Case(g.name, g.M, g.K, g.N, a, a, df)
            for g in GEMMS for a in g.arrays for df in g.dataflows]


# ------------------------------------------------------------------------------------------------
# Closed form of SCALE-Sim's compute cycles (read from SCALE-Sim 3.0.0's
# scalesim/compute/systolic_compute_{os,ws,is}.py, checked against bench/scalesim_reference.csv):
# folds do not overlap.
# ------------------------------------------------------------------------------------------------

def scalesim_closed_form(M: int, K: int, N: int, R: int, C: int, dataflow: str) -> int:
    Sr, Sc, T = {"os": (M, N, K), "ws": (K, N, M), "is": (K, M, N)}[dataflow]
    folds = math.ceil(Sr / R) * math.ceil(Sc / C)
    per_fold = T + R + C - 2 if dataflow == "os" else 2 * R + C + T - 2
    return folds * per_fold - 1


# Rough wall time of SCALE-Sim per simulated cycle on a 2-core VM (seconds), for --plan only.
_SS_SEC_PER_CYCLE = {8: 9e-5, 16: 1.4e-4, 32: 3e-4, 64: 3.6e-4, 128: 5e-4}


def predicted_scalesim_wall(c: Case) -> float:
    per = _SS_SEC_PER_CYCLE.get(c.rows, 4e-6 * (c.rows + c.cols))
    return 0.05 + per * scalesim_closed_form(c.M, c.K, c.N, c.rows, c.cols, c.dataflow)


# ------------------------------------------------------------------------------------------------
# SCALE-Sim side: venv + a driver script run by the venv's python.
# ------------------------------------------------------------------------------------------------

def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_scalesim_venv() -> Path:
    """Return the SCALE-Sim venv's python, creating the venv (pip install) when it is missing."""
    py = venv_python()
    check = [str(py), "-c", "import scalesim.scale_sim, numpy"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    print(f"[vs_scalesim] SCALE-Sim venv missing or broken: creating {VENV}\n"
          f"[vs_scalesim]   python3 -m venv {VENV} && pip install "
          + " ".join(repr(r) if "<" in r else r for r in SCALESIM_REQUIREMENTS)
          + "\n[vs_scalesim]   (one-time, ~500 MB, needs access to PyPI; takes a minute or two)",
          file=sys.stderr, flush=True)
    base = sys.executable
    r = subprocess.run([base, "-m", "venv", "--clear", str(VENV)])
    if r.returncode != 0:
        sys.exit(f"[vs_scalesim] could not create the venv with {base} -m venv {VENV}")
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", *SCALESIM_REQUIREMENTS])
    if r.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        sys.exit("[vs_scalesim] pip install of SCALE-Sim failed; install it by hand:\n"
                 f"    python3 -m venv {VENV} && {py} -m pip install scalesim==3.0.0 'numpy<2.4'\n"
                 "or run the bench with --cached to use bench/scalesim_reference.csv")
    return py


# The driver runs inside the SCALE-Sim venv. It reads a JSON list of cases, simulates them one by
# one (one interpreter, so the ~1 s import is paid once) and prints one JSON line per case.
DRIVER = r'''
import contextlib, csv, io, json, math, os, sys, time
from scalesim.scale_sim import scalesim

LAYOUT_HEADER = ("Layer name,IFMAP Height Intraline Factor,IFMAP Width Intraline Factor,"
    "Filter Height Intraline Factor,Filter Width Intraline Factor,Channel Intraline Factor,"
    "Num Filter Intraline Factor,IFMAP Height Intraline Order,IFMAP Width Intraline Order,"
    "Channel Intraline Order,IFMAP Height Interline Order,IFMAP Width Interline Order,"
    "Channel Interline Order,Num Filter Intraline Order,Channel Intraline Order,"
    "Filter Height Intraline Order,Filter Width Intraline Order,Num Filter Interline Order,"
    "Channel Interline Order,Filter Height Interline Order,Filter Width Interline Order,\n")

CONFIG = """[general]
run_name = strata_xcheck

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {ifmap_kb}
FilterSramSzkB: {filter_kb}
OfmapSramSzkB: {ofmap_kb}
IfmapOffset: 0
FilterOffset: 1000000000
OfmapOffset: 2000000000
Dataflow: {dataflow}
Bandwidth: 10
ReadRequestBuffer: 512
WriteRequestBuffer: 512

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""

def sram_kb(n_bytes):
    # double-buffered, active half = 50 %: the active half must hold the whole operand
    return max(64, 2 * math.ceil(n_bytes / 1024) + 2)

def run_case(c, workdir):
    d = os.path.join(workdir, "case%d" % c["idx"])
    os.makedirs(d)
    M, K, N = c["M"], c["K"], c["N"]
    cfg, topo, lay = (os.path.join(d, f) for f in ("cfg.cfg", "gemm.csv", "layout.csv"))
    with open(cfg, "w") as f:
        f.write(CONFIG.format(rows=c["rows"], cols=c["cols"], dataflow=c["dataflow"],
                              ifmap_kb=sram_kb(M * K), filter_kb=sram_kb(K * N),
                              ofmap_kb=sram_kb(M * N)))
    with open(topo, "w") as f:
        # SCALE-Sim's GEMM header order is M, N, K (K = reduction); the parser drops the last
        # field of every row, hence the trailing commas.
        f.write("Layer,M,N,K,\ngemm,%d,%d,%d,\n" % (M, N, K))
    with open(lay, "w") as f:
        f.write(LAYOUT_HEADER)
    out = os.path.join(d, "out")
    sink = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        s = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo,
                     layout=lay, input_type_gemm=True)
        s.run_scale(top_path=out)
    wall = time.perf_counter() - t0
    with open(os.path.join(out, s.config.get_run_name(), "COMPUTE_REPORT.csv")) as f:
        rows = [[x.strip() for x in r] for r in csv.reader(f)]
    hdr, vals = rows[0], rows[1]
    get = lambda col: vals[hdr.index(col)]
    return {"idx": c["idx"], "cycles": int(float(get("Total Cycles"))),
            "stalls": int(float(get("Stall Cycles"))),
            "cycles_incl_prefetch": int(float(get("Total Cycles (incl. prefetch)"))),
            "wall_s": wall}

def main():
    cases = json.load(open(sys.argv[1]))
    workdir = sys.argv[2]
    for c in cases:
        try:
            res = run_case(c, workdir)
        except Exception as e:  # report and go on with the next case
            res = {"idx": c["idx"], "error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(res), flush=True)

main()
'''


def run_scalesim(cases: list[Case], jobs: int = 1, progress=None) -> dict[int, dict]:
    """Run SCALE-Sim on every case; returns {case index: result dict}."""
    py = ensure_scalesim_venv()
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="strata-scalesim-") as tmp:
        tmp = Path(tmp)
        (tmp / "driver.py").write_text(DRIVER)
        # longest first, dealt round-robin over the workers
        order = sorted(range(len(cases)), key=lambda i: -predicted_scalesim_wall(cases[i]))
        shards = [order[j::jobs] for j in range(max(1, jobs))]
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        procs = []
        for j, shard in enumerate(shards):
            if not shard:
                continue
            spec = [dict(idx=i, M=cases[i].M, K=cases[i].K, N=cases[i].N, rows=cases[i].rows,
                         cols=cases[i].cols, dataflow=cases[i].dataflow) for i in shard]
            (tmp / f"cases{j}.json").write_text(json.dumps(spec))
            wd = tmp / f"work{j}"
            wd.mkdir()
            procs.append(subprocess.Popen(
                [str(py), str(tmp / "driver.py"), str(tmp / f"cases{j}.json"), str(wd)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        import selectors
        sel = selectors.DefaultSelector()
        for p in procs:
            sel.register(p.stdout, selectors.EVENT_READ, p)
        open_streams = len(procs)
        while open_streams:
            for key, _ in sel.select():
                line = key.fileobj.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                try:
                    res = json.loads(line)
                except json.JSONDecodeError:
                    continue
                results[res["idx"]] = res
                if progress:
                    progress(len(results), len(cases), cases[res["idx"]], res)
        for p in procs:
            err = p.stderr.read()
            if p.wait() != 0:
                sys.exit(f"[vs_scalesim] the SCALE-Sim driver failed (exit {p.returncode}):\n"
                         + err[-3000:])
    missing = [cases[i].key for i in range(len(cases)) if i not in results]
    if missing:
        sys.exit(f"[vs_scalesim] no SCALE-Sim result for {missing}")
    return results


class ScaleSimRun(NamedTuple):
    """What the bench keeps of one SCALE-Sim run."""

    cycles: int     # compute cycles (the report's Total Cycles, 0 stalls)
    wall_s: float   # SCALE-Sim's wall time


def read_reference(path: Path = REF_CSV) -> dict[tuple, ScaleSimRun]:
    if not path.exists():
        sys.exit(f"[vs_scalesim] {path} not found: run the bench without --cached first")
    ref = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["name"], int(row["M"]), int(row["K"]), int(row["N"]), int(row["rows"]),
                   int(row["cols"]), row["dataflow"])
            ref[key] = ScaleSimRun(int(row["scalesim_cycles"]), float(row["scalesim_wall_s"]))
    return ref


def write_reference(cases: list[Case], ss: dict[int, ScaleSimRun], path: Path) -> None:
    """Write the cache CSV: the fresh results, plus rows of the old file for cases of the current
    list that were not re-run (so a --filter run updates just its rows), in case-list order."""
    fresh = {c.key: ss[i] for i, c in enumerate(cases)}
    old = read_reference(path) if path.exists() else {}
    order = [c for c in all_cases() if c.key in fresh or c.key in old]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for c in order:
            run = fresh.get(c.key) or old[c.key]
            w.writerow([c.name, c.M, c.K, c.N, c.rows, c.cols, c.dataflow, run.cycles,
                        f"{run.wall_s:.3f}"])
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------
# Strata side.
# ------------------------------------------------------------------------------------------------

def pick_arch() -> str | None:
    """The shipped 'quickstart' arch if present, else any shipped arch, else None."""
    arch_dir = REPO / "arch"
    if (arch_dir / "quickstart.yaml").exists():
        return "quickstart"
    found = sorted(p.stem for p in arch_dir.glob("*.yaml")) if arch_dir.is_dir() else []
    return found[0] if found else None


class StrataSide:
    """Finds the best available Strata entry point: sim.simulate_gemm, else array_timing."""

    def __init__(self, force: str | None = None):
        self.arch = pick_arch()
        self.simulate_gemm = None
        self.array_timing = None
        self.why = []
        try:
            import sim
            fn = getattr(sim, "simulate_gemm", None)
            if fn is None:
                self.why.append("sim.simulate_gemm not found")
            elif self.arch is None:
                self.why.append("no arch/*.yaml to pass to sim.simulate_gemm")
            else:
                self.simulate_gemm = fn
                # SCALE-Sim's cases reach 128x128 arrays, whose one-fold tiles outgrow the
                # quickstart buffers (the accelerator refuses tiles that do not fit): give the
                # arch buffers big enough for every case; compute cycles do not depend on them
                big = {f"memory.sram.{b}_kb": 16384 for b in ("ifmap", "weight", "ofmap")}
                self.arch_name, self.arch = self.arch, sim.load_arch(self.arch, overrides=big)
        except Exception as e:  # a half-written package must not kill the bench
            self.why.append(f"import sim failed: {type(e).__name__}: {e}")
        try:
            from sim.hw.systolic import array_timing
            self.array_timing = array_timing
        except Exception as e:
            self.why.append(f"sim.hw.systolic.array_timing unavailable: {type(e).__name__}: {e}")
        if force == "array_timing":
            self.simulate_gemm = None
        if self.simulate_gemm is not None:
            self.source = (f'sim.simulate_gemm("{self.arch_name}" with 16 MB SRAM buffers, ..., '
                           f'array=(R, C))')
        elif self.array_timing is not None:
            self.source = "sim.hw.systolic.array_timing(..., macs_per_cycle=1)"
        else:
            self.source = "bench closed form (Strata API not available)"

    def run(self, c: Case) -> dict:
        """Cycles under both conventions plus the wall time of the scalesim-convention call.

        If sim.simulate_gemm raises (e.g. the package is mid-edit), say so once and fall back to
        array_timing for the rest of the run instead of dying."""
        if self.simulate_gemm is not None:
            try:
                return self._run_simulate_gemm(c)
            except Exception as e:
                self.why.append(f"sim.simulate_gemm failed on {c.name} {c.rows}x{c.cols} "
                                f"{c.dataflow}: {type(e).__name__}: {e}")
                print(f"[vs_scalesim] WARNING: {self.why[-1]}; falling back to array_timing",
                      file=sys.stderr)
                self.simulate_gemm = None
                self.source = ("sim.hw.systolic.array_timing(..., macs_per_cycle=1)"
                               if self.array_timing is not None else
                               "bench closed form (Strata API not available)")
        return self._run_fallback(c)

    def _run_simulate_gemm(self, c: Case) -> dict:
        kw = dict(dataflow=c.dataflow, wbits=8, abits=8, array=(c.rows, c.cols))
        t0 = time.perf_counter()
        r = self.simulate_gemm(self.arch, c.M, c.K, c.N, convention="scalesim", **kw)
        wall = time.perf_counter() - t0
        d = self.simulate_gemm(self.arch, c.M, c.K, c.N, **kw)
        return dict(ss=int(r.compute_cycles), default=int(d.compute_cycles),
                    default_total=int(d.cycles), wall=wall)

    def _run_fallback(self, c: Case) -> dict:
        if self.array_timing is not None:
            args = (c.M, c.K, c.N, c.rows, c.cols, c.dataflow)
            t0 = time.perf_counter()
            r = self.array_timing(*args, macs_per_cycle=1, convention="scalesim")
            wall = time.perf_counter() - t0
            d = self.array_timing(*args, macs_per_cycle=1)
            return dict(ss=int(r.total), default=int(d.total), default_total=None, wall=wall)
        t0 = time.perf_counter()
        v = scalesim_closed_form(c.M, c.K, c.N, c.rows, c.cols, c.dataflow)
        return dict(ss=v, default=None, default_total=None, wall=time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------

def _fmt(v, width, spec="d"):
    return ("-" if v is None else format(v, spec)).rjust(width)


# format widths of the printed table columns (the first left-aligned)
HEAD_WIDTHS = ("38", ">16", ">7", ">2", ">10", ">16", ">3", ">14", ">9", ">13")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cached", action="store_true",
                    help="do not run SCALE-Sim; take its cycles from bench/scalesim_reference.csv")
    ap.add_argument("--plan", action="store_true",
                    help="list the cases with predicted SCALE-Sim cycles/wall time and exit")
    ap.add_argument("--filter", default=None, metavar="TEXT",
                    help="only cases whose name contains TEXT")
    ap.add_argument("--jobs", type=int, default=1,
                    help="parallel SCALE-Sim processes (default 1; >1 inflates the wall times)")
    ap.add_argument("--reference", type=Path, default=REF_CSV,
                    help="the cache CSV (default bench/scalesim_reference.csv)")
    ap.add_argument("--no-write", action="store_true",
                    help="run SCALE-Sim but do not update the cache CSV (by default the rows "
                         "just run replace theirs; rows of other current cases are kept)")
    ap.add_argument("--strata", choices=("auto", "array_timing"), default="auto",
                    help="Strata entry point (default: sim.simulate_gemm when it exists)")
    ap.add_argument("--csv", type=Path, default=None, metavar="OUT",
                    help="also write the result table to this CSV file")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args(argv)

    cases = all_cases()
    if args.filter:
        cases = [c for c in cases if args.filter in c.name]
        if not cases:
            sys.exit(f"[vs_scalesim] no case name contains {args.filter!r}")

    if args.plan:
        tot_c = tot_w = 0.0
        for c in cases:
            cyc = scalesim_closed_form(c.M, c.K, c.N, c.rows, c.cols, c.dataflow)
            w = predicted_scalesim_wall(c)
            tot_c += cyc
            tot_w += w
            print(f"{c.name:38s} {c.shape:>16s} {c.rows:>3d}x{c.cols:<3d} {c.dataflow} "
                  f"{cyc:>9d} cyc  ~{w:6.1f} s")
        print(f"{len(cases)} cases, {len({c.name for c in cases})} GEMMs, "
              f"{tot_c:.0f} simulated cycles, ~{tot_w / 60:.1f} min of SCALE-Sim (1 job)")
        return 0

    # ---- SCALE-Sim cycles: cache or fresh run ----
    ss: dict[int, ScaleSimRun] = {}
    if args.cached:
        ref = read_reference(args.reference)
        absent = [c for c in cases if c.key not in ref]
        if absent:
            print(f"[vs_scalesim] {len(absent)} case(s) are not in {args.reference} and are "
                  f"skipped (run without --cached to refresh): "
                  + ", ".join(f"{c.name}@{c.rows}x{c.cols}/{c.dataflow}" for c in absent[:5])
                  + (" ..." if len(absent) > 5 else ""), file=sys.stderr)
            cases = [c for c in cases if c.key in ref]
        ss = {i: ref[c.key] for i, c in enumerate(cases)}
    else:
        def progress(done, total, c, res):
            msg = (f"{res['cycles']} cycles, {res['wall_s']:.1f} s" if "error" not in res
                   else res["error"])
            print(f"[scalesim {done:>3d}/{total}] {c.name} {c.rows}x{c.cols} {c.dataflow}: {msg}",
                  file=sys.stderr, flush=True)
        print(f"[vs_scalesim] running SCALE-Sim on {len(cases)} cases "
              f"(--plan estimates ~{sum(map(predicted_scalesim_wall, cases)) / 60:.1f} min "
              f"of simulation for 1 job)", file=sys.stderr, flush=True)
        raw = run_scalesim(cases, jobs=max(1, args.jobs), progress=progress)
        bad = []
        for i, c in enumerate(cases):
            r = raw[i]
            if "error" in r:
                bad.append(f"{c.key}: {r['error']}")
            elif r["stalls"] != 0:
                bad.append(f"{c.key}: {r['stalls']} stall cycles (memory was supposed to be "
                           "unlimited)")
            else:
                ss[i] = ScaleSimRun(r["cycles"], r["wall_s"])
        if bad:
            sys.exit("[vs_scalesim] SCALE-Sim problems:\n  " + "\n  ".join(bad))
        if not args.no_write:
            write_reference(cases, ss, args.reference)
            print(f"[vs_scalesim] wrote {args.reference}", file=sys.stderr)

    # ---- Strata side ----
    strata = StrataSide(force=None if args.strata == "auto" else args.strata)
    rows = []
    for i, c in enumerate(cases):
        st = strata.run(c)
        cf = scalesim_closed_form(c.M, c.K, c.N, c.rows, c.cols, c.dataflow)
        rows.append(dict(name=c.name, shape=c.shape, M=c.M, K=c.K, N=c.N, rows=c.rows,
                         cols=c.cols, dataflow=c.dataflow, scalesim_cycles=ss[i].cycles,
                         strata_scalesim_cycles=st["ss"], equal=st["ss"] == ss[i].cycles,
                         strata_default_cycles=st["default"],
                         strata_default_total_cycles=st["default_total"],
                         closed_form_cycles=cf, scalesim_wall_s=ss[i].wall_s,
                         strata_wall_s=st["wall"]))

    # ---- print ----
    print(f"Strata side: {strata.source}"
          + (f"   [fallback because: {'; '.join(strata.why)}]"
             if strata.why and strata.simulate_gemm is None else ""))
    head = ["GEMM", "MxKxN", "array", "df", "SCALE-Sim", "Strata[scalesim]", "eq",
            "Strata[strata]", "SS wall s", "Strata wall s"]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
    else:
        print(" ".join(f"{title:{width}s}" for title, width in zip(head, HEAD_WIDTHS)))
    for r in rows:
        arr = f"{r['rows']}x{r['cols']}"
        eq = "yes" if r["equal"] else "NO"
        if args.markdown:
            print(f"| {r['name']} | {r['shape']} | {arr} | {r['dataflow']} | "
                  f"{r['scalesim_cycles']} | {r['strata_scalesim_cycles']} | {eq} | "
                  f"{'-' if r['strata_default_cycles'] is None else r['strata_default_cycles']} | "
                  f"{r['scalesim_wall_s']:.2f} | {r['strata_wall_s']:.5f} |")
        else:
            print(f"{r['name']:38s} {r['shape']:>16s} {arr:>7s} {r['dataflow']:>2s} "
                  f"{r['scalesim_cycles']:>10d} {r['strata_scalesim_cycles']:>16d} {eq:>3s} "
                  f"{_fmt(r['strata_default_cycles'], 14)} {r['scalesim_wall_s']:>9.2f} "
                  f"{r['strata_wall_s']:>13.5f}")
    n_eq = sum(r["equal"] for r in rows)
    n_cf = sum(r["closed_form_cycles"] == r["scalesim_cycles"] for r in rows)
    ss_wall = sum(r["scalesim_wall_s"] for r in rows)
    st_wall = sum(r["strata_wall_s"] for r in rows)
    print(f"exact matches: {n_eq}/{len(rows)} (Strata convention='scalesim' vs SCALE-Sim; "
          f"{len({r['name'] for r in rows})} GEMMs, arrays "
          f"{sorted({r['rows'] for r in rows})}, dataflows {sorted({r['dataflow'] for r in rows})})"
          f"; closed form vs SCALE-Sim {n_cf}/{len(rows)}; "
          f"wall: SCALE-Sim {ss_wall:.1f} s{' (cached)' if args.cached else ''}, "
          f"Strata {st_wall:.3f} s; speed-up x{ss_wall / max(st_wall, 1e-9):,.0f}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    return 0 if n_eq == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
