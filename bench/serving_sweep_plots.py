"""Figures of the shipped serving sweep (experiments/sweep_serving.yaml), the HERMES way:

* ``plots/sweep_serving_goodput.png``: goodput (requests per second meeting the HERMES SLO
  tier 90: TTFT <= 0.75 s, TPOT <= 37.5 ms) against the offered Poisson rate, one line per
  batching policy / prefill-decode split, with the y = x line of an ideal cluster;
* ``plots/sweep_serving_tokens_per_joule.png``: output tokens per joule against the rate.

Run the sweep, then this script on its results folder; it prints the numbers it plots:

    strata sweep experiments/sweep_serving.yaml --out results
    python bench/serving_sweep_plots.py results/sweep_serving [--plots plots]

``strata plot RESULTS --kind lines --x workload.arrivals.rate --y goodput_rps --color policy
--max y`` draws the same lines; this script adds the y = x line of an ideal cluster and axis
labels in words.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim.config.errors import ConfigError                   # noqa: E402
from sim.dse.plots import load_results                       # noqa: E402

RATE = "workload.arrivals.rate"


def plot_metric_lines(df, out: Path, *, x: str, y: str, line: str, title: str,
                      xlabel: str, ylabel: str, diagonal: bool = False) -> Path:
    """``y`` against ``x``, one line per value of ``line`` (points sorted by ``x``);
    ``diagonal`` draws y = x. Returns the PNG path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    missing = [c for c in (x, y, line) if c not in df.columns]
    if missing or df.empty:
        raise ConfigError("sweep_serving results with the columns " + ", ".join((x, y, line)),
                          key="RESULTS", got=f"missing {missing}" if missing else "no points")
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for value, g in df.groupby(line, sort=False):
        g = g.sort_values(x)
        ax.plot(g[x].to_numpy(dtype=float), g[y].to_numpy(dtype=float), marker="o", ms=4,
                lw=1.5, label=str(value))
    if diagonal:
        lo, hi = float(df[x].min()), float(df[x].max())
        ax.plot([lo, hi], [lo, hi], ls=":", color="grey", lw=1, label="ideal (all requests)")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="the sweep's output folder (results/sweep_serving)")
    ap.add_argument("--plots", type=Path, default=REPO / "plots", help="where the PNGs go")
    args = ap.parse_args(argv)
    df = load_results(args.results)
    df = df[df.status == "ok"]
    written = [
        plot_metric_lines(df, args.plots / "sweep_serving_goodput.png", x=RATE, y="goodput_rps",
                          line="policy", diagonal=True,
                          xlabel="offered request rate (Poisson, requests/s)",
                          ylabel="goodput (requests/s meeting SLO tier 90)",
                          title="Llama-3-8B on 8 H100: goodput against request rate"),
        plot_metric_lines(df, args.plots / "sweep_serving_tokens_per_joule.png", x=RATE,
                          y="tokens_per_j", line="policy",
                          xlabel="offered request rate (Poisson, requests/s)",
                          ylabel="output tokens per joule (steps + idle power)",
                          title="Llama-3-8B on 8 H100: throughput per joule against rate"),
    ]
    cols = ["policy", RATE, "throughput_rps", "goodput_rps", "slo_attainment", "tokens_per_j",
            "ttft_p99_s", "tpot_p99_s", "preemptions", "rejected"]
    import pandas as pd
    with pd.option_context("display.width", 200, "display.max_rows", 200,
                           "display.float_format", "{:.4g}".format):
        print(df[cols].sort_values(["policy", RATE]).to_string(index=False))
        best = df.loc[df.groupby("policy").goodput_rps.idxmax(), ["policy", RATE, "goodput_rps"]]
        print("\nhighest goodput per policy:\n" + best.to_string(index=False))
    for p in written:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
