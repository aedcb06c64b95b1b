"""Make the shipped synthetic request trace, ``traces/synthetic_conv_1k.csv``.

The trace imitates the Azure LLM inference conversation trace (2023) without shipping it:

1. measure the Azure conv trace: its mean arrival rate, the coefficient of variation (CV) of its
   inter-arrival gaps, and the distributions of its prompt and output lengths;
2. fit a model to each: gamma-distributed gaps with the measured rate and CV; for each length,
   a mixture of log-normals fitted by expectation-maximisation to log(tokens), with the number
   of components picked by the Bayesian information criterion (BIC), component widths floored at
   ``SIGMA_FLOOR`` so that no component collapses onto one popular token count;
3. write the fitted model as a ``workload:`` section, ``traces/synthetic_conv_1k.yaml``, and
   build the trace from that file with ``sim.system.build_requests`` (seed 0, 1,000 requests).

The YAML is the recipe: ``--check`` rebuilds the CSV from it alone (no Azure file needed) and
compares the bytes. The figures printed compare the synthetic lengths (1,000 and 100,000 draws)
with the Azure trace's percentiles, and give the Kolmogorov-Smirnov distance.

    python bench/make_synthetic_trace.py [--azure ../shared/traces/AzureLLMInferenceTrace_conv.csv]
    python bench/make_synthetic_trace.py --check
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.system import build_requests, load_workload, read_trace, write_trace  # noqa: E402

NAME = "synthetic_conv_1k"
REQUESTS = 1000
SEED = 0
SIGMA_FLOOR = 0.05      # smallest log-space width of a component (5 % spread in tokens)
MAX_COMPONENTS = 8
DEFAULT_AZURE = ROOT.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
QUANTILES = (1, 10, 25, 50, 75, 90, 99)


def fit_mixture(x: np.ndarray, k: int, iters: int = 2000, tol: float = 1e-9):
    """EM for a k-component 1-D Gaussian mixture; returns (weights, means, sigmas, loglik)."""
    n = x.size
    means = np.quantile(x, (np.arange(k) + 0.5) / k)
    sigmas = np.full(k, max(x.std() / k, SIGMA_FLOOR))
    weights = np.full(k, 1.0 / k)
    prev = -math.inf
    for _ in range(iters):
        logp = (np.log(weights) - np.log(sigmas) - 0.5 * np.log(2 * np.pi)
                - 0.5 * ((x[:, None] - means) / sigmas) ** 2)
        top = logp.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))
        loglik = float(lse.sum())
        resp = np.exp(logp - lse[:, None])
        nk = resp.sum(axis=0) + 1e-300
        weights = nk / n
        means = (resp * x[:, None]).sum(axis=0) / nk
        sigmas = np.sqrt((resp * (x[:, None] - means) ** 2).sum(axis=0) / nk)
        sigmas = np.maximum(sigmas, SIGMA_FLOOR)
        if loglik - prev < tol * abs(loglik):
            break
        prev = loglik
    return weights, means, sigmas, loglik


def best_mixture(tokens: np.ndarray):
    x = np.log(tokens.astype(np.float64))
    best = None
    for k in range(1, MAX_COMPONENTS + 1):
        w, m, s, ll = fit_mixture(x, k)
        bic = -2 * ll + (3 * k - 1) * math.log(x.size)
        if best is None or bic < best[0]:
            best = (bic, k, w, m, s)
    _, k, w, m, s = best
    order = np.argsort(m)
    return k, w[order], np.exp(m[order]), s[order]


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def measure(azure: Path) -> dict:
    trace = read_trace(azure)
    t = trace["arrival_s"].to_numpy()
    gaps = np.diff(t)
    rate = (len(t) - 1) / (t[-1] - t[0])
    cv = gaps.std() / gaps.mean()
    section = {
        "arrivals": {"process": "gamma", "rate": _sig(rate), "cv": _sig(cv)},
        "lengths": {},
        "requests": REQUESTS,
        "seed": SEED,
    }
    print(f"Azure conv: {len(t)} requests over {t[-1] - t[0]:.1f} s, rate {rate:.4f} req/s, "
          f"gap CV {cv:.4f}")
    for side, column in (("prompt", "prompt_tokens"), ("output", "output_tokens")):
        tokens = trace[column].to_numpy()
        k, w, med, sig = best_mixture(tokens)
        section["lengths"][side] = {
            "dist": "lognormal_mixture",
            "weights": [_sig(v) for v in w], "medians": [_sig(v) for v in med],
            "sigmas": [_sig(v) for v in sig],
            "min": int(tokens.min()), "max": int(tokens.max()),
        }
        print(f"  {side}: {k} log-normal components (BIC), min {tokens.min()}, "
              f"max {tokens.max()}")
    return section


def write_recipe(section: dict, path: Path, azure_rows: int) -> None:
    header = (f"# Recipe of traces/{NAME}.csv, written by bench/make_synthetic_trace.py from\n"
              f"# the Azure LLM inference conversation trace (2023, {azure_rows} requests):\n"
              "# gamma arrivals with its mean rate and gap CV; prompt and output lengths from\n"
              "# log-normal mixtures fitted to it (EM on log tokens, components by BIC),\n"
              "# clipped to its range. Regenerate with the script, check with --check.\n")
    path.write_text(header + yaml.safe_dump({"workload": section}, sort_keys=False,
                                            default_flow_style=None, width=100))


def compare(azure: Path, recipe: Path) -> None:
    ref = read_trace(azure)
    cfg = load_workload(recipe)
    big = build_requests(cfg.model_copy(update={"requests": 100_000}))
    small = build_requests(cfg)
    print(f"{'':>8} {'':>10}" + "".join(f"{'P' + str(q):>8}" for q in QUANTILES) + f"{'mean':>9}"
          + f"{'KS':>7}")
    for column in ("prompt_tokens", "output_tokens"):
        a = ref[column].to_numpy()
        for label, frame in (("azure", ref), ("synth 1k", small), ("synth100k", big)):
            x = frame[column].to_numpy()
            ks = _ks(a, x)
            print(f"{column[:6]:>8} {label:>10}" + "".join(f"{np.percentile(x, q):8.0f}"
                                                        for q in QUANTILES)
                  + f"{x.mean():9.1f}{ks:7.3f}")
    g = np.diff(small["arrival_s"].to_numpy())
    print(f"synthetic 1k: rate {(len(g)) / small['arrival_s'].iloc[-1]:.3f} req/s, "
          f"gap CV {g.std() / g.mean():.3f}, span {small['arrival_s'].iloc[-1]:.1f} s")


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.union1d(a, b)
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--azure", type=Path, default=DEFAULT_AZURE)
    ap.add_argument("--check", action="store_true",
                    help="rebuild the CSV from the committed YAML and compare bytes")
    args = ap.parse_args(argv)
    recipe = ROOT / "traces" / f"{NAME}.yaml"
    csv_path = ROOT / "traces" / f"{NAME}.csv"
    if args.check:
        tmp = csv_path.with_suffix(".check.csv")
        write_trace(build_requests(load_workload(recipe)), tmp)
        same = tmp.read_bytes() == csv_path.read_bytes()
        tmp.unlink()
        print(f"{csv_path.name}: {'identical to' if same else 'DIFFERS from'} its recipe")
        return 0 if same else 1
    section = measure(args.azure)
    write_recipe(section, recipe, len(read_trace(args.azure)))
    write_trace(build_requests(load_workload(recipe)), csv_path)
    print(f"wrote {recipe.relative_to(ROOT)} and {csv_path.relative_to(ROOT)}")
    compare(args.azure, recipe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
