#!/usr/bin/env python3
"""Where the time of an engine step goes: per-kernel GPU times from Nsight Compute.

Runs a moeopt command under `ncu` (one metric, gpu__time_duration.sum, so every kernel is
measured once; kernels inside CUDA graphs are profiled as nodes), splits the launches into
engine steps at the sampling kernel that ends each step (sample_greedy_kernel /
sample_walk_kernel), and prints, for the chosen steps, the time per kernel category and per
step. Serialised profiling removes launch overlap (programmatic dependent launch, CUDA graph
back-to-back launches), so the sum of kernel times is a lower bound of the step time that
`moeopt bench` measures; the difference is launch gaps and host work.

usage: kernel_breakdown.py [--steps first|last:N] [--json OUT] -- <moeopt command ...>
"""
import argparse
import csv
import io
import json
import re
import subprocess
import sys
from collections import OrderedDict

CATEGORIES = [
    ("fp8 dense linear (qkv, o)", r"fp8_linear"),
    ("fp8 activation quantiser", r"fp8_quantize_act"),
    ("moe gemm (grouped, experts)", r"moe_(grouped_gemm|wgmma_gemm|persistent)"),
    ("moe router / permute / combine", r"moe_"),
    ("attention", r"paged_attention"),
    ("dense gemv (M <= 8: qkv, o, router, lm head)", r"dense_gemv"),
    ("dense gemm (cuBLASLt: qkv, o, router, lm head)", r"(gemm|xmma|cutlass|sm90|nvjet|cublas)"),
    ("rmsnorm", r"dense_norm"),
    ("rope", r"dense_rope"),
    ("kv cache write", r"dense_kv_write"),
    ("embedding / row gather", r"dense_embedding"),
    ("sampling", r"sample_"),
    ("other", r"."),
]
STEP_END = re.compile(r"sample_(greedy|walk)_kernel|dense_argmax_kernel")


def category(name):
    for cat, rx in CATEGORIES:
        if re.search(rx, name):
            return cat
    return "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="last:3", help="'first' or 'last:N' engine steps to report")
    ap.add_argument("--json")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    ncu = ["ncu", "--metrics", "gpu__time_duration.sum", "--graph-profiling", "node", "--csv",
           "--page", "raw", "--clock-control", "none"] + cmd
    out = subprocess.run(ncu, capture_output=True, text=True)
    # ncu's CSV rows start with a quote; the first row after the header holds the units.
    lines = [l for l in out.stdout.splitlines() if l.startswith('"ID"') or l.startswith('"')]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines)))) if lines else []
    scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
    unit = 1e-3
    kernels = []
    for r in rows:
        t = (r.get("gpu__time_duration.sum") or "").replace(",", "")
        if t in scale:
            unit = scale[t]
            continue
        try:
            us = float(t) * unit
        except ValueError:
            continue
        kernels.append((r.get("Kernel Name", r.get("Function Name", "?")), us))
    if not kernels:
        print(f"ncu rc {out.returncode}; no kernel rows parsed; stdout/stderr tails:", file=sys.stderr)
        print("\n".join(out.stdout.splitlines()[-25:]), file=sys.stderr)
        print("\n".join(out.stderr.splitlines()[-25:]), file=sys.stderr)
        return 1
    steps, cur = [], []
    for name, us in kernels:
        cur.append((name, us))
        if STEP_END.search(name):
            steps.append(cur)
            cur = []
    if a.steps == "first":
        chosen = steps[:1]
    else:
        chosen = steps[-int(a.steps.split(":")[1]):]
    agg = OrderedDict((c, [0.0, 0]) for c, _ in CATEGORIES)
    for st in chosen:
        for name, us in st:
            c = category(name)
            agg[c][0] += us
            agg[c][1] += 1
    n = max(1, len(chosen))
    total = sum(v[0] for v in agg.values()) / n
    print(f"{len(kernels)} kernels profiled, {len(steps)} steps; reporting {len(chosen)} "
          f"({a.steps}); per step:")
    print(f"{'category':50s} {'us':>10s} {'%':>6s} {'launches':>9s}")
    res = []
    for c, (us, cnt) in agg.items():
        if cnt == 0:
            continue
        print(f"{c:50s} {us / n:10.1f} {100 * us / n / total:6.1f} {cnt / n:9.1f}")
        res.append({"category": c, "us_per_step": us / n, "launches_per_step": cnt / n})
    print(f"{'total (kernels only, serialised)':50s} {total:10.1f}")
    by_name = OrderedDict()
    for st in chosen:
        for name, us in st:
            v = by_name.setdefault(name[:90], [0.0, 0])
            v[0] += us
            v[1] += 1
    print(f"\n{'kernel (top 15 by time)':90s} {'us':>9s} {'launches':>9s}")
    for name, (us, cnt) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"{name:90s} {us / n:9.1f} {cnt / n:9.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command": cmd, "steps": a.steps, "categories": res,
                       "kernel_us_per_step": total}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
