#!/usr/bin/env python3
"""Fit the GPU model's physical parameters on measured H200 traces; report held-out errors.

Reads the CSVs of ``bench/gpu_traces.py`` (branch gputrace): ``gemm.csv`` (model, op, M, K, N,
dtype, time_us, ...), ``steps.csv`` (model, kind, batch, prefill_seqs, prompt_tokens,
decode_seqs, context_sum, context_max, context_list, tokens, time_ms, ...; a decode context
there counts the new token, so Strata's context is one less) and ``power_phases.csv`` (phase,
avg_power_w_energy, flop_per_s, bytes_per_s). Fits, with ``scipy.optimize.least_squares`` on
log time ratios, the few parameters of :data:`PARAMS` on the steps and GEMMs of the training
models, then reports the mean absolute percentage error per phase (prefill, decode, mixed) on
the held-out models' steps. The power figures come from the idle, GEMM and copy phases
(idle_w, then compute_w and memory_w from the two loaded phases) and are checked on the
prefill and decode phases. ``--write`` stores the result in ``traces/h200/calibration.yaml``.

    python bench/fit_gpu.py [--traces traces/h200] [--train llama-3-8b,qwen2.5-3b] [--write]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sim.config import load_arch, load_model  # noqa: E402
from sim.hw.registry import build_accelerator  # noqa: E402
from sim.workload.graph import ragged_shape, ragged_step, shape_ops  # noqa: E402

ARCH = "h200-sxm"
#: fitted parameters (calibration.<name>) and their bounds
PARAMS = {"compute_fraction": (0.3, 1.0), "attention_fraction": (0.1, 1.0),
          "hbm_fraction": (0.4, 1.0), "kernel_overhead_us": (0.0, 20.0),
          "launch_overhead_us": (0.0, 200.0), "tile_intensity_knee": (8.0, 200.0)}
PHASES = ("prefill", "decode", "mixed")
DEFAULT_TRAIN = ("llama-3-8b", "qwen2.5-3b")


# ------------------------------------------------------------------------------- reading ----
def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def step_sequences(row: dict) -> tuple[list[tuple[int, int]], list[int]]:
    """(prefill chunks, Strata decode contexts) of one steps.csv row. Prompts of one step share
    one length; decode contexts are equal except in the one-long-among-short check."""
    bp, bd = int(row["prefill_seqs"]), int(row["decode_seqs"])
    prompt = int(row["prompt_tokens"])
    p = prompt // bp if bp else 0
    prefill = [(p, 0)] * bp
    if row.get("context_list"):
        ctx = [int(x) for x in row["context_list"].split()]
        decode = ctx[bp:]
    elif bd:
        dsum = int(row["context_sum"]) - prompt
        cmax = int(row["context_max"])
        if cmax * bd == dsum:
            decode = [cmax] * bd
        else:                       # (bd - 1) short ones and the longest
            decode = [(dsum - cmax) // (bd - 1)] * (bd - 1) + [cmax]
    else:
        decode = []
    return prefill, [c - 1 for c in decode]


def load_steps(traces: Path) -> list[dict]:
    out = []
    for row in read_csv(traces / "steps.csv"):
        prefill, decode = step_sequences(row)
        out.append({"model": row["model"], "kind": row["kind"], "prefill": prefill,
                    "decode": decode, "seconds": float(row["time_ms"]) * 1e-3,
                    "check": row.get("check", "")})
    return out


def load_attention(traces: Path) -> list[dict]:
    """Causal prefill attention alone (``attn_prefill.csv`` of bench/attn_prefill_trace.py)."""
    if not (traces / "attn_prefill.csv").exists():
        return []
    return [{"head_dim": int(r["head_dim"]), "heads": int(r["heads"]),
             "kv_heads": int(r["kv_heads"]), "batch": int(r["batch"]),
             "prompt": int(r["prompt"]), "seconds": float(r["time_us"]) * 1e-6}
            for r in read_csv(traces / "attn_prefill.csv") if r["causal"] == "1"]


def attention_heads(model) -> tuple[int, int, int]:
    return model.head_dim, model.num_heads, model.num_kv_heads


def load_gemms(traces: Path) -> list[dict]:
    if not (traces / "gemm.csv").exists():
        return []
    return [{"model": r["model"], "M": int(r["M"]), "K": int(r["K"]), "N": int(r["N"]),
             "seconds": float(r["time_us"]) * 1e-6}
            for r in read_csv(traces / "gemm.csv") if r.get("dtype", "bf16") == "bf16"]


# ----------------------------------------------------------------------------- the model ----
class Predictor:
    """Step and GEMM times of the gpu model for given calibration values (bf16 models)."""

    def __init__(self, arch=ARCH):
        self.arch = arch
        self.models: dict = {}
        self.ops: dict = {}

    def model(self, name: str):
        if name not in self.models:
            # bf16 as measured; the traces run some prompts past a model's context window
            # (llama-2-7b at 8192), which changes no shape, so the window is widened
            self.models[name] = load_model(name, overrides={"precision.wbits": 16,
                                                            "precision.abits": 16,
                                                            "max_position": 1 << 20})
        return self.models[name]

    def step_ops(self, step: dict, block: int) -> tuple[list[dict], np.ndarray]:
        """The nodes of one step to price and the weight of each: the decoder layers of these
        models are identical (one precision), so layer 0 stands for all of them (the same
        integer cycles as pricing every layer, far faster in a fit)."""
        key = (step["model"], tuple(step["prefill"]), tuple(step["decode"]))
        if key not in self.ops:
            model = self.model(step["model"])
            shape = ragged_shape(ragged_step(step["prefill"], step["decode"],
                                             max_position=model.max_position),
                                 causal_block=block)
            ops = [o for o in shape_ops(model, shape) if o["layer"] <= 0]
            self.ops[key] = (ops, np.array([model.num_layers if o["layer"] == 0 else 1
                                            for o in ops], dtype=float))
        return self.ops[key]

    def accelerator(self, values: dict):
        arch = load_arch(self.arch, overrides={f"calibration.{k}": float(v)
                                               for k, v in values.items()})
        return build_accelerator(arch)

    def steps(self, accel, steps: list[dict]) -> np.ndarray:
        hz = accel.arch.clock_ghz * 1e9
        block = accel.causal_query_block()
        out = []
        for s in steps:
            ops, weights = self.step_ops(s, block)
            out.append(float(np.dot(weights, [r.cycles for r in accel.price_nodes(ops)])) / hz)
        return np.array(out)

    def attention(self, accel, rows: list[dict]) -> np.ndarray:
        """One layer's causal prefill attention kernel (with its kernel overhead) per row."""
        hz = accel.arch.clock_ghz * 1e9
        block = accel.causal_query_block()
        out = []
        for r in rows:
            d, h, kvh, p = r["head_dim"], r["heads"], r["kv_heads"], r["prompt"]
            g = h // kvh
            shapes = tuple((r["batch"] * kvh, g * (min(s + block, p) - s), d, min(s + block, p))
                           for s in range(0, p, block))
            out.append(accel._attention_kernel("prefill", shapes, 16, False, (kvh, g)).cycles
                       / hz)
        return np.array(out)

    def gemms(self, accel, gemms: list[dict]) -> np.ndarray:
        hz = accel.arch.clock_ghz * 1e9
        return np.array([accel.gemm(g["M"], g["K"], g["N"], wbits=16, abits=16).cycles / hz
                         for g in gemms])


def mape(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(np.mean(np.abs(pred / meas - 1.0)) * 100) if len(meas) else float("nan")


def fit(steps: list[dict], gemms: list[dict], predictor: Predictor | None = None,
        start: dict | None = None, max_nfev: int = 60, attention: list[dict] = ()) -> dict:
    """Least squares on log(predicted / measured) of the given steps, GEMMs and attention
    kernels."""
    from scipy.optimize import least_squares
    predictor = predictor or Predictor()
    names = list(PARAMS)
    lo = np.array([PARAMS[n][0] for n in names])
    hi = np.array([PARAMS[n][1] for n in names])
    base = predictor.accelerator({}).cal
    x0 = np.array([(start or {}).get(n, getattr(base, n)) for n in names], dtype=float)
    x0 = np.clip(x0, lo + 1e-6, hi - 1e-6)
    meas_s = np.array([s["seconds"] for s in steps])
    meas_g = np.array([g["seconds"] for g in gemms])
    meas_a = np.array([a["seconds"] for a in attention])

    def residuals(x):
        accel = predictor.accelerator(dict(zip(names, x)))
        r = [np.log(predictor.steps(accel, steps) / meas_s)]
        if gemms:
            r.append(np.log(predictor.gemms(accel, gemms) / meas_g))
        if len(attention):
            r.append(np.log(predictor.attention(accel, attention) / meas_a))
        return np.concatenate(r)

    res = least_squares(residuals, x0, bounds=(lo, hi), diff_step=1e-3, max_nfev=max_nfev)
    return dict(zip(names, (float(v) for v in res.x)))


def fit_power(traces: Path, accel) -> dict:
    """idle_w from the idle phase, compute_w and memory_w from the GEMM and copy phases."""
    rows = {r["phase"]: r for r in read_csv(traces / "power_phases.csv")}
    idle = float(rows["idle"]["avg_power_w_energy"] or rows["idle"]["median_power_w"])
    peak = accel.peak_flops(16, 16)
    bw = accel.spec.hbm_bandwidth_gbps * 1e9
    A, y = [], []
    for name in ("gemm_8192", "copy_2GiB"):
        r = rows[name]
        A.append([float(r["flop_per_s"]) / peak, float(r["bytes_per_s"]) / bw])
        y.append(float(r["avg_power_w_energy"] or r["median_power_w"]) - idle)
    from scipy.optimize import nnls
    (cw, mw), _ = nnls(np.array(A), np.array(y))
    out = {"idle_w": idle, "compute_w": float(cw), "memory_w": float(mw)}
    checks = {}
    for name in ("prefill_4x2048", "decode_64x2048"):
        if name in rows and rows[name]["avg_power_w_energy"]:
            r = rows[name]
            u_c = float(r["flop_per_s"]) / peak
            u_m = float(r["bytes_per_s"]) / bw
            pred = min(accel.spec.tdp_w, idle + cw * u_c + mw * u_m)
            checks[name] = (pred, float(r["avg_power_w_energy"]))
    out["checks"] = checks
    return out


def split(steps, gemms, train_models):
    tr = [s for s in steps if s["model"] in train_models and not s["check"]]
    te = [s for s in steps if s["model"] not in train_models]
    gtr = [g for g in gemms if g["model"] in train_models]
    return tr, te, gtr


def split_attention(rows, train_heads):
    """Attention rows of the training models' (head_dim, heads, kv_heads), and the others."""
    key = lambda r: (r["head_dim"], r["heads"], r["kv_heads"])   # noqa: E731
    return ([r for r in rows if key(r) in train_heads],
            [r for r in rows if key(r) not in train_heads])


def long_prompt_error(predictor, accel, steps, min_tokens=6000) -> dict:
    """Signed mean error (%) of prefill steps with prompts of at least ``min_tokens``, per
    model."""
    out = {}
    for s in steps:
        if s["kind"] == "prefill" and s["prefill"][0][0] >= min_tokens:
            out.setdefault(s["model"], []).append(s)
    return {m: float(np.mean(predictor.steps(accel, ss) / np.array([x["seconds"] for x in ss])
                             - 1) * 100) for m, ss in out.items()}


def report(predictor, accel, steps) -> dict:
    pred = predictor.steps(accel, steps)
    meas = np.array([s["seconds"] for s in steps])
    return {ph: (mape(pred[[s["kind"] == ph for s in steps]],
                      meas[[s["kind"] == ph for s in steps]]),
                 sum(s["kind"] == ph for s in steps)) for ph in PHASES}


def write_calibration(path: Path, values: dict, power: dict, errors: dict, train) -> None:
    """Replace the fitted values in ``path`` in place (its comments stay)."""
    import re
    text = path.read_text(encoding="utf-8")
    fitted = {**{k: round(v, 4) for k, v in values.items()},
              **{k: round(v, 2) for k, v in power.items() if k != "checks"}}
    for k, v in fitted.items():
        text, n = re.subn(rf"^(\s+{k}:\s*)[^\s#]+", rf"\g<1>{v}", text, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"{path}: no key {k!r} to replace")
    source = (f"bench/fit_gpu.py on traces/h200, fitted on {', '.join(train)}; held-out "
              "MAPE " + ", ".join(f"{ph} {e:.1f}% ({n} steps)" for ph, (e, n) in errors.items()))
    text = re.sub(r'^(\s+source:\s*).*$', lambda m: m.group(1) + '"' + source + '"', text,
                  count=1, flags=re.M)
    path.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=str(ROOT / "traces" / "h200"))
    ap.add_argument("--train", default=",".join(DEFAULT_TRAIN))
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--max-nfev", type=int, default=60)
    args = ap.parse_args(argv)
    traces = Path(args.traces)
    train = tuple(args.train.split(","))
    steps, gemms = load_steps(traces), load_gemms(traces)
    tr, te, gtr = split(steps, gemms, train)
    predictor = Predictor()
    atr, ate = split_attention(load_attention(traces),
                               {attention_heads(predictor.model(m)) for m in train})
    before = report(predictor, predictor.accelerator({}), te)
    values = fit(tr, gtr, predictor, max_nfev=args.max_nfev, attention=atr)
    accel = predictor.accelerator(values)
    errors = report(predictor, accel, te)
    train_err = report(predictor, accel, tr)
    print(f"fitted on {len(tr)} steps + {len(gtr)} GEMMs of {', '.join(train)}; "
          f"held out {len(te)} steps of the other models")
    for k, v in values.items():
        print(f"  {k} = {v:.4g}")
    for ph in PHASES:
        print(f"  {ph:8s} held-out MAPE {errors[ph][0]:6.2f}% ({errors[ph][1]} steps); "
              f"train {train_err[ph][0]:6.2f}%; before this fit {before[ph][0]:6.2f}%")
    g = [x for x in gemms if x["model"] not in train]
    if g:
        print(f"  gemm     held-out MAPE {mape(predictor.gemms(accel, g), np.array([x['seconds'] for x in g])):6.2f}% ({len(g)} GEMMs)")
    if ate:
        for d in sorted({a["head_dim"] for a in ate}):
            rows = [a for a in ate if a["head_dim"] == d]
            err = predictor.attention(accel, rows) / np.array([a["seconds"] for a in rows]) - 1
            long = np.array([a["prompt"] >= 4096 for a in rows])
            print(f"  attention d={d:<3d} held-out MAPE {np.mean(np.abs(err)) * 100:6.2f}% "
                  f"({len(rows)} kernels); prompts >= 4096: mean {np.mean(err[long]) * 100:+.1f}%")
    if atr:
        err = predictor.attention(accel, atr) / np.array([a["seconds"] for a in atr]) - 1
        print(f"  attention (fit shapes) MAPE {np.mean(np.abs(err)) * 100:6.2f}% "
              f"({len(atr)} kernels)")
    longs = long_prompt_error(predictor, accel, steps)
    print("  prefill >= 6000 tokens, signed mean error: "
          + ", ".join(f"{m} {e:+.1f}%" for m, e in longs.items()))
    power = None
    if (traces / "power_phases.csv").exists():
        power = fit_power(traces, accel)
        print(f"  power: idle {power['idle_w']:.1f} W, compute {power['compute_w']:.1f} W, "
              f"memory {power['memory_w']:.1f} W; checks (pred, meas): {power['checks']}")
    if args.write:
        path = ROOT / "traces" / "h200" / "calibration.yaml"
        write_calibration(path, values, power or accel.cal.power.model_dump(), errors, train)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
