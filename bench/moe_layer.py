#!/usr/bin/env python3
"""MoE layer benchmark: moeopt's CUDA MoE expert path against the PyTorch torch._grouped_mm peer
(bench/peers/torch_moe.py), in one process, on literally the same device tensors.

Our kernels are called through libmoeopt_moe_capi.so (bench/capi/moe_capi.cpp) with ctypes,
passing torch tensors' device pointers and torch's current stream. Both sides are timed as CUDA
graph replays (several layer calls per graph, median of repeats, CUDA events).

What is timed: the expert path given routing (expert_ids, expert_weights): permute, GEMM1 with
SiLU*up, GEMM2 with the routing weight, combine. The peer does the same work (sort, offsets,
grouped mm, silu*mul, grouped mm, weighted index_add). Routing is timed on its own: the
product's step after the router GEMM (ops::moe_route on fp32 logits: softmax, top-k,
renormalisation; ours only).

Bounds printed next to every row:
  HBM bound  = unique experts touched x bytes per expert / bandwidth, with the card's nominal
               bandwidth (H100 SXM 3.35 TB/s, H200 4.8 TB/s) and with the device-to-device copy
               bandwidth measured in this run;
  tensor bound = 6*M*k*H*I FLOPs / BF16 dense peak (989 TFLOP/s nominal; and a torch.mm
               8192^3 measured in this run).
Usage: python3 bench/moe_layer.py --lib build/bench/libmoeopt_moe_capi.so [--json out.json]
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import statistics
import subprocess
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
from torch_moe import torch_grouped_mm_moe  # noqa: E402

DEFAULT_MS = [1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]


class MoeLib:
    def __init__(self, path):
        lib = ctypes.CDLL(path)
        i64, vp = ctypes.c_int64, ctypes.c_void_p
        lib.moeopt_moe_last_error.restype = ctypes.c_char_p
        lib.moeopt_moe_tile_name.restype = ctypes.c_char_p
        lib.moeopt_moe_tile_name.argtypes = [ctypes.c_int]
        lib.moeopt_moe_auto_tile.argtypes = [i64] * 3
        lib.moeopt_moe_workspace_bytes.argtypes = [i64] * 5 + [ctypes.POINTER(ctypes.c_uint64)]
        lib.moeopt_moe_experts.argtypes = [i64] * 5 + [vp] * 8 + [ctypes.c_uint64, vp, ctypes.c_int,
                                                                           ctypes.c_int]
        lib.moeopt_moe_route.argtypes = [i64] * 3 + [vp, ctypes.c_int, vp, vp, vp]
        self.lib = lib
        self.num_tiles = lib.moeopt_moe_num_tiles()

    def check(self, rc):
        if rc != 0:
            raise RuntimeError(self.lib.moeopt_moe_last_error().decode())

    def tile_name(self, t):
        return self.lib.moeopt_moe_tile_name(t).decode()

    def workspace_bytes(self, m, h, i, e, k):
        out = ctypes.c_uint64(0)
        self.check(self.lib.moeopt_moe_workspace_bytes(m, h, i, e, k, ctypes.byref(out)))
        return out.value

    def experts(self, x, ids, wts, w13, w2, out, ws, tile=-1, residual=None, pdl=True,
                single_block_permute=True):
        m, h = x.shape
        e, _, _ = w13.shape
        i = w2.shape[2]
        k = ids.shape[1]
        stream = torch.cuda.current_stream().cuda_stream
        self.check(self.lib.moeopt_moe_experts(
            m, h, i, e, k, x.data_ptr(), ids.data_ptr(), wts.data_ptr(), w13.data_ptr(),
            w2.data_ptr(), residual.data_ptr() if residual is not None else None, out.data_ptr(),
            ws.data_ptr(), ws.numel(), stream, tile,
            (0 if pdl else 1) | (0 if single_block_permute else 2)))

    def route(self, logits, k, ids, wts, renorm=True):
        m, e = logits.shape
        stream = torch.cuda.current_stream().cuda_stream
        self.check(self.lib.moeopt_moe_route(m, e, k, logits.data_ptr(), int(renorm),
                                             ids.data_ptr(), wts.data_ptr(), stream))


def time_us(fn, inner, reps, use_graph=True):
    """Median microseconds per fn() call, timed as graph replays of `inner` calls."""
    fn()
    torch.cuda.synchronize()
    graph = None
    if use_graph:
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(inner):
                    fn()
            graph.replay()
            torch.cuda.synchronize()
        except Exception as ex:  # report and fall back to stream timing
            print(f"  (graph capture failed: {ex}; timing without graphs)", flush=True)
            graph = None
            torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        if graph is not None:
            graph.replay()
        else:
            for _ in range(inner):
                fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / inner)
    return statistics.median(times), graph is not None


def make_routing(m, e, k, kind, gen):
    dev = "cuda"
    if kind == "uniform":
        ids = torch.rand(m, e, device=dev, generator=gen).topk(k, dim=1).indices
    else:  # zipf over a random permutation of the experts, s = 1.0
        ranks = torch.randperm(e, device=dev, generator=gen)
        p = 1.0 / (ranks.float() + 1.0)
        ids = torch.multinomial(p.expand(m, e).contiguous(), k, replacement=False, generator=gen)
    wts = torch.softmax(torch.randn(m, k, device=dev, generator=gen), dim=1).float()
    return ids.to(torch.int32).contiguous(), wts.contiguous()


def measure_copy_bw():
    n = 1 << 29  # 512 MiB
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    a.fill_(1)
    us, _ = time_us(lambda: b.copy_(a), inner=5, reps=5, use_graph=False)
    return 2.0 * n / (us * 1e-6)


def measure_mm_tflops():
    n = 8192
    gen = torch.Generator(device="cuda").manual_seed(1)
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=gen)
    us, _ = time_us(lambda: torch.mm(a, b), inner=3, reps=5, use_graph=False)
    return 2.0 * n ** 3 / (us * 1e-6) / 1e12


def nominal_hbm(name):
    n = name.upper()
    if "H200" in n:
        return 4.8e12
    if "H100" in n and "PCIE" in n:
        return 2.0e12
    if "H100" in n:
        return 3.35e12
    return float("nan")


def git_commit():
    if os.environ.get("MOEOPT_COMMIT"):
        return os.environ["MOEOPT_COMMIT"]
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lib", required=True, help="path to libmoeopt_moe_capi.so")
    ap.add_argument("--ms", default=",".join(map(str, DEFAULT_MS)))
    ap.add_argument("--routing", default="uniform,zipf")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--inter", type=int, default=768)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--topk", type=int, default=8)
    ap.add_argument("--sweep", action="store_true", help="also time every GEMM tile config")
    ap.add_argument("--sweep-pairs", action="store_true",
                    help="also time every (GEMM 1 tile, GEMM 2 tile) pair with equal token rows")
    ap.add_argument("--json", default="")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    lib = MoeLib(args.lib)
    ms = [int(v) for v in args.ms.split(",")]
    H, I, E, K = args.hidden, args.inter, args.experts, args.topk
    card = torch.cuda.get_device_name()
    props = torch.cuda.get_device_properties(0)
    bw_nominal = nominal_hbm(card)
    tensor_nominal = 989e12
    bw_copy = measure_copy_bw()
    mm_tflops = measure_mm_tflops()
    print(f"card: {card} ({props.multi_processor_count} SMs), torch {torch.__version__}, "
          f"commit {git_commit()}")
    print(f"HBM nominal {bw_nominal / 1e12:.2f} TB/s, copy measured {bw_copy / 1e12:.2f} TB/s; "
          f"BF16 dense nominal {tensor_nominal / 1e12:.0f} TFLOP/s, torch.mm 8192^3 measured "
          f"{mm_tflops:.0f} TFLOP/s")
    print(f"shape: H {H}, I {I}, E {E}, k {K}", flush=True)

    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    w13 = (torch.randn(E, 2 * I, H, device="cuda", generator=gen) / math.sqrt(H)).to(torch.bfloat16)
    w2 = (torch.randn(E, H, I, device="cuda", generator=gen) / math.sqrt(I)).to(torch.bfloat16)
    wr = (torch.randn(E, H, device="cuda", generator=gen) / math.sqrt(H)).to(torch.bfloat16)
    bytes_per_expert = 3 * H * I * 2
    ws = torch.empty(lib.workspace_bytes(max(ms), H, I, E, K), dtype=torch.uint8, device="cuda")

    rows = []
    hdr = (f"{'M':>5} {'routing':>7} {'exp':>4} {'tile':>11} {'ours_us':>9} {'peer_us':>9} "
           f"{'speedup':>7} {'GB/s':>6} {'%HBMnom':>7} {'%HBMcopy':>8} {'TFLOP/s':>7} "
           f"{'%tensor':>7} {'bound_us':>8} {'err':>8} {'route_us':>8} {'noPDL_us':>8} "
           f"{'perm2_us':>8}")
    print(hdr, flush=True)
    for kind in args.routing.split(","):
        for m in ms:
            x = torch.randn(m, H, device="cuda", generator=gen).to(torch.bfloat16)
            ids, wts = make_routing(m, E, K, kind, gen)
            out = torch.empty(m, H, device="cuda", dtype=torch.bfloat16)
            touched = int((torch.bincount(ids.reshape(-1).long(), minlength=E) > 0).sum())
            weight_bytes = touched * bytes_per_expert
            flops = 6.0 * m * K * H * I
            inner = 20 if m <= 512 else 5

            ref = torch_grouped_mm_moe(x, ids, wts, w13, w2)
            lib.experts(x, ids, wts, w13, w2, out, ws)
            torch.cuda.synchronize()
            err = float((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30))

            auto_tile = lib.lib.moeopt_moe_auto_tile(m, K, E)
            ours_us, g1 = time_us(lambda: lib.experts(x, ids, wts, w13, w2, out, ws), inner, 7)
            nopdl_us, _ = time_us(lambda: lib.experts(x, ids, wts, w13, w2, out, ws, pdl=False),
                                  inner, 5)
            # A/B of the single-block permutation (used where M*k <= 512).
            perm2_us = None
            if m * K <= 512:
                perm2_us, _ = time_us(lambda: lib.experts(x, ids, wts, w13, w2, out, ws,
                                                          single_block_permute=False), inner, 5)
            peer_us, g2 = time_us(lambda: torch_grouped_mm_moe(x, ids, wts, w13, w2), inner, 7)
            r_ids = torch.empty(m, K, dtype=torch.int32, device="cuda")
            r_wts = torch.empty(m, K, dtype=torch.float32, device="cuda")
            r_logits = (x.float() @ wr.float().t()).contiguous()
            route_us, _ = time_us(lambda: lib.route(r_logits, K, r_ids, r_wts), inner, 5)
            # Routing sanity: our top-k sets against torch.topk on the same logits (ties aside).
            ref_ids = r_logits.topk(K, dim=1).indices
            router_mismatch = int((r_ids.long().sort(dim=1).values != ref_ids.sort(dim=1).values)
                                  .any(dim=1).sum())

            sweep = {}
            if args.sweep:
                for t in range(lib.num_tiles):
                    us, _ = time_us(lambda: lib.experts(x, ids, wts, w13, w2, out, ws, tile=t),
                                    inner, 5)
                    sweep[lib.tile_name(t)] = us
            pairs = {}
            if args.sweep_pairs:
                for t1 in range(lib.num_tiles):
                    for t2 in range(lib.num_tiles):
                        code = t1 | ((t2 + 1) << 4)
                        try:
                            lib.experts(x, ids, wts, w13, w2, out, ws, tile=code)
                        except RuntimeError:
                            continue  # different token rows: not a valid pair
                        us, _ = time_us(lambda: lib.experts(x, ids, wts, w13, w2, out, ws,
                                                            tile=code), inner, 5)
                        pairs[f"{lib.tile_name(t1)}+{lib.tile_name(t2)}"] = us
            hbm_nom_us = weight_bytes / bw_nominal * 1e6
            hbm_copy_us = weight_bytes / bw_copy * 1e6
            tensor_us = flops / tensor_nominal * 1e6
            row = dict(M=m, routing=kind, experts_touched=touched, tile=lib.tile_name(auto_tile),
                       ours_us=ours_us, peer_us=peer_us, speedup=peer_us / ours_us,
                       ours_graph=g1, peer_graph=g2, weight_bytes=weight_bytes,
                       ours_GBps=weight_bytes / ours_us / 1e3,
                       pct_hbm_nominal=100.0 * hbm_nom_us / ours_us,
                       pct_hbm_copy=100.0 * hbm_copy_us / ours_us,
                       ours_tflops=flops / ours_us / 1e6, pct_tensor=100.0 * tensor_us / ours_us,
                       hbm_bound_nominal_us=hbm_nom_us, hbm_bound_copy_us=hbm_copy_us,
                       tensor_bound_us=tensor_us, peer_pct_hbm_nominal=100.0 * hbm_nom_us / peer_us,
                       err_vs_peer=err, route_us=route_us, ours_no_pdl_us=nopdl_us,
                       router_set_mismatches=router_mismatch, ours_two_kernel_permute_us=perm2_us,
                       sweep_us=sweep, pair_sweep_us=pairs)
            rows.append(row)
            bound = max(hbm_nom_us, tensor_us)
            print(f"{m:>5} {kind:>7} {touched:>4} {row['tile']:>11} {ours_us:>9.1f} {peer_us:>9.1f} "
                  f"{row['speedup']:>7.2f} {row['ours_GBps']:>6.0f} {row['pct_hbm_nominal']:>7.1f} "
                  f"{row['pct_hbm_copy']:>8.1f} {row['ours_tflops']:>7.1f} {row['pct_tensor']:>7.1f} "
                  f"{bound:>8.1f} {err:>8.1e} {route_us:>8.1f} {nopdl_us:>8.1f} "
                  f"{perm2_us if perm2_us is not None else float('nan'):>8.1f}", flush=True)
            if sweep:
                best = min(sweep, key=sweep.get)
                print("        sweep: " + "  ".join(f"{n}={u:.1f}" for n, u in sweep.items())
                      + f"  best={best}", flush=True)
            if pairs:
                best = sorted(pairs, key=pairs.get)[:4]
                print("        pairs (best 4 of %d): " % len(pairs)
                      + "  ".join(f"{n}={pairs[n]:.1f}" for n in best), flush=True)
            if router_mismatch:
                print(f"        note: router top-k sets differ from torch.topk for "
                      f"{router_mismatch}/{m} tokens (fp32 summation order near ties)")
            if not (err < 2e-2):
                print(f"        ERROR: ours vs peer normalised error {err:.3e}", flush=True)

    result = dict(card=card, sms=props.multi_processor_count, torch=torch.__version__,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  commit=git_commit(), shape=dict(H=H, I=I, E=E, k=K),
                  hbm_nominal_Bps=bw_nominal, copy_Bps=bw_copy, tensor_nominal_flops=tensor_nominal,
                  mm_measured_tflops=mm_tflops, rows=rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    bad = [r for r in rows if not (r["err_vs_peer"] < 2e-2)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
