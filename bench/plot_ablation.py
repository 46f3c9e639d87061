#!/usr/bin/env python3
"""Plots `moeopt bench ablation --json` (one file): for each row of the stage table, decode
tokens/s at each batch and prefill tokens/s as bars (log scale), the row's quality cost (KL
against the BF16 baseline, perplexity delta) written above its group; rows without a kernel
(2:4 today) get no bars and say so.

Usage: python3 bench/plot_ablation.py ablation.json [-o ablation.png] [--title TEXT]
Without matplotlib it says so and exits 0 without a plot.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("-o", "--out", default="ablation.png")
    ap.add_argument("--title")
    a = ap.parse_args()
    with open(a.json) as f:
        j = json.load(f)
    rows = j.get("rows") or []
    if not rows:
        sys.exit(f"plot_ablation: {a.json} has no rows")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_ablation: matplotlib is not installed; no plot", file=sys.stderr)
        return
    series = []  # (label, [value per row or None])
    batches = [d["batch"] for r in rows if "decode" in r for d in r["decode"]]
    for b in sorted(set(batches), key=batches.index):
        series.append((f"decode b{b}", [next((d["tokens_per_s"] for d in r.get("decode", []) if d["batch"] == b), None)
                                        for r in rows]))
    series.append((f"prefill {j.get('prefill_len', '')}", [r.get("prefill", {}).get("tokens_per_s") for r in rows]))
    fig, ax = plt.subplots(figsize=(2.2 * len(rows) + 2, 4.5))
    width = 0.8 / len(series)
    for s, (label, vals) in enumerate(series):
        xs = [i + (s - (len(series) - 1) / 2) * width for i, v in enumerate(vals) if v]
        ax.bar(xs, [v for v in vals if v], width, label=label)
    ax.set_yscale("log")
    ax.set_ylabel("tokens/s")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["row"] for r in rows])
    top = max(v for _, vals in series for v in vals if v)
    low = min(v for _, vals in series for v in vals if v)
    for i, r in enumerate(rows):
        q = r.get("quality")
        text = "reference" if q is None else f"KL {q['mean_kl_nats']:.3g}" + (
            f"\nppl {q['perplexity_delta_pct']:+.2f}%" if "perplexity_delta_pct" in q else "")
        if "decode" not in r:
            text += "\nno kernel: speed\nnot measured"
        ax.text(i, top * 1.6, text, ha="center", va="bottom", fontsize=8)
    ax.set_ylim(low * 0.5, top * 12)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(a.title or f"moeopt stage table: {j.get('model', '')} on {j.get('card', j.get('device', ''))}"
                 f" ({j.get('commit', '')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"plot_ablation: wrote {a.out}")


if __name__ == "__main__":
    main()
