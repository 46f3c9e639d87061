#!/usr/bin/env python3
"""Plots decode tokens/s against batch size from `moeopt bench decode --json` and
bench/peers/hf_decode.py --json files (same schema): one solid line per (engine, input length),
and the memory-bound roofline (bound_tokens_per_s of the rows) as a dashed line per (card,
input length). x is log2(batch), y log10(tokens/s).

Usage: python3 bench/plot_decode.py moeopt.json hf.json [-o decode.png] [--title TEXT]
Without matplotlib it says so and exits 0 without a plot.
"""
import argparse
import json
import sys


def load_rows(path):
    with open(path) as f:
        j = json.load(f)
    rows = j.get("decode") or []
    if not rows:
        print(f"plot_decode: {path} has no decode rows", file=sys.stderr)
    return j, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("json", nargs="+", help="bench decode JSON files (moeopt, hf_decode.py)")
    ap.add_argument("-o", "--out", default="decode.png")
    ap.add_argument("--title", default="")
    args = ap.parse_args()

    series = {}  # (engine, input_len) -> [(batch, tok/s)]
    bounds = {}  # (card, input_len) -> {batch: bound tok/s}
    meta = []
    for path in args.json:
        j, rows = load_rows(path)
        engine = j.get("engine", path)
        card = j.get("card", "?")
        meta.append(f"{engine} {j.get('commit', '')} on {card}")
        for r in rows:
            series.setdefault((engine, r["input_len"]), []).append(
                (r["batch"], r["decode_tokens_per_s"]))
            bounds.setdefault((card, r["input_len"]), {})[r["batch"]] = r["bound_tokens_per_s"]
    if not series:
        sys.exit("plot_decode: no decode rows in the given files")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_decode: matplotlib is not installed; no plot written")
        return 0

    fig, ax = plt.subplots(figsize=(9, 6))
    inputs = sorted({k[1] for k in series})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = ["o", "s", "^", "D", "v", "P"]
    engines = sorted({k[0] for k in series})
    for (engine, inp), pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts],
                color=colors[inputs.index(inp) % len(colors)],
                marker=markers[engines.index(engine) % len(markers)],
                label=f"{engine}, input {inp}")
    for (card, inp), pts in sorted(bounds.items()):
        b = sorted(pts.items())
        ax.plot([p[0] for p in b], [p[1] for p in b], linestyle="--", linewidth=1,
                color=colors[inputs.index(inp) % len(colors)],
                label=f"HBM bound, input {inp} ({card})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch (sequences)")
    ax.set_ylabel("decode tokens/s")
    ax.set_title(args.title or "Decode throughput vs batch; dashed: memory-bound roofline")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "; ".join(meta), fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(args.out, dpi=120)
    print(f"plot_decode: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
