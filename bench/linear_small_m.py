#!/usr/bin/env python3
"""Decode-size linear layers: moeopt's CUDA linear op (the small-M GEMV up to 16 rows,
cuBLASLt above; through libmoeopt_moe_capi.so) against torch.nn.functional.linear (cuBLAS) in
one process, on the same device tensors, at the dense shapes of a Qwen3-30B-A3B decode step.

Every weight is read once per call, as in a decode step where each layer has its own: the
timed graph cycles through enough copies of the weight (>= 256 MB in all) that none of them is
still in the 50 MB L2 when it is read again. Bound: the bytes a call must move (weight, x, y)
at the device-to-device copy bandwidth measured in this run (a copy reads and writes; a pure
read stream, as here, can pass it: the LM head measures ~94% of nominal) and at the card's
nominal one. Both sides print GB/s and % of those; a figure above 100 % of the nominal bandwidth
would be a bug in the bench, and the script stops on it.

Usage: python3 bench/linear_small_m.py --lib build/bench/libmoeopt_moe_capi.so [--ms 1,2,4,8,16,32]
       [--json out.json]
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from moe_layer import git_commit, measure_copy_bw, nominal_hbm, time_us  # noqa: E402

# name, N, K, y dtype, bias: the Qwen3-30B-A3B dense projections of one decode step.
SHAPES = [("qkv", 5120, 2048, torch.bfloat16, False), ("o", 2048, 4096, torch.bfloat16, False),
          ("router", 128, 2048, torch.float32, False), ("lm_head", 151936, 2048, torch.float32, False),
          ("qkv_bias", 5120, 2048, torch.bfloat16, True)]
COLD_BYTES = 256 << 20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--ms", default="1,2,4,8,16,32")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json")
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    i64, vp = ctypes.c_int64, ctypes.c_void_p
    lib.moeopt_moe_last_error.restype = ctypes.c_char_p
    lib.moeopt_linear.argtypes = [i64] * 3 + [vp] * 4 + [ctypes.c_int, vp]
    dev = torch.cuda.get_device_properties(0)
    copy_bw = measure_copy_bw()
    nominal = nominal_hbm(dev.name)
    print(f"card: {dev.name} ({dev.multi_processor_count} SMs); copy measured {copy_bw / 1e12:.2f} TB/s, "
          f"nominal {nominal / 1e12:.2f} TB/s")
    print(f"{'shape':>9} {'M':>3} {'N':>7} {'K':>5} {'copies':>6} {'ours_us':>8} {'ours_GB/s':>9} "
          f"{'%nom':>6} {'torch_us':>8} {'torch_GB/s':>10} {'%nom':>6} {'speedup':>7} {'max_rel':>8}")
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name, n, k, ydt, has_bias in SHAPES:
        wbytes = n * k * 2
        copies = max(1, math.ceil(COLD_BYTES / wbytes))
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=gen) * 0.02
              for _ in range(copies)]
        bias = torch.randn(n, device="cuda", dtype=torch.bfloat16, generator=gen) if has_bias else None
        for m in [int(s) for s in a.ms.split(",")]:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=gen)
            y = torch.empty(m, n, device="cuda", dtype=ydt)
            stream = lambda: torch.cuda.current_stream().cuda_stream  # noqa: E731
            state = {"i": 0}

            def ours():
                w = ws[state["i"] % copies]
                state["i"] += 1
                rc = lib.moeopt_linear(m, n, k, x.data_ptr(), w.data_ptr(),
                                       bias.data_ptr() if bias is not None else None, y.data_ptr(),
                                       int(ydt == torch.float32), stream())
                if rc != 0:
                    raise RuntimeError(lib.moeopt_moe_last_error().decode())

            def peer():
                w = ws[state["i"] % copies]
                state["i"] += 1
                torch.nn.functional.linear(x, w, bias)  # bf16 out (the y bytes are negligible)

            ours()
            torch.cuda.synchronize()
            want = torch.nn.functional.linear(x.float(), ws[0].float(), bias.float() if bias is not None else None)
            state["i"] = 0
            ours()
            torch.cuda.synchronize()
            max_rel = ((y.float() - want).abs().max() / want.abs().max()).item()
            inner = copies * max(1, math.ceil(8 / copies))
            us_ours, _ = time_us(ours, inner=inner, reps=a.reps)
            us_peer, _ = time_us(peer, inner=inner, reps=a.reps)
            ybytes = m * n * (4 if ydt == torch.float32 else 2)
            moved = wbytes + m * k * 2 + ybytes + (n * 2 if has_bias else 0)
            gbs_ours, gbs_peer = moved / (us_ours * 1e-6) / 1e9, moved / (us_peer * 1e-6) / 1e9
            for who, g in (("ours", gbs_ours), ("torch", gbs_peer)):
                if g * 1e9 > nominal:
                    sys.exit(f"linear_small_m: {who} {name} M {m} read {g:.0f} GB/s, above the card's "
                             f"{nominal / 1e9:.0f}: the weights were not cold (bench bug)")
            row = dict(shape=name, m=m, n=n, k=k, copies=copies, bytes=moved, ours_us=us_ours,
                       torch_us=us_peer, ours_GBps=gbs_ours, torch_GBps=gbs_peer,
                       ours_pct_copy=100 * gbs_ours * 1e9 / copy_bw, torch_pct_copy=100 * gbs_peer * 1e9 / copy_bw,
                       ours_pct_nominal=100 * gbs_ours * 1e9 / nominal, speedup=us_peer / us_ours,
                       max_rel_err_vs_f32=max_rel)
            rows.append(row)
            print(f"{name:>9} {m:>3} {n:>7} {k:>5} {copies:>6} {us_ours:>8.2f} {gbs_ours:>9.0f} "
                  f"{row['ours_pct_nominal']:>6.1f} {us_peer:>8.2f} {gbs_peer:>10.0f} {100 * gbs_peer * 1e9 / nominal:>6.1f} "
                  f"{row['speedup']:>7.2f} {max_rel:>8.1e}", flush=True)
        del ws
        torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(card=dev.name, date=datetime.datetime.utcnow().isoformat() + "Z",
                           commit=git_commit(), copy_GBps=copy_bw / 1e9, nominal_GBps=nominal / 1e9,
                           torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
