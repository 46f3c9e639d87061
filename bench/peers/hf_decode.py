#!/usr/bin/env python3
"""Hugging Face transformers peer of `moeopt bench decode` and `moeopt bench prefill`.

The same measurements, rooflines and JSON schema as tools/moeopt/cmd_bench_decode.cpp, so
bench/plot_decode.py can put both side by side:

  decode   for each (input length, batch): `batch` random prompts (fixed seed), greedy
           generate of exactly --output-len tokens (EOS suppressed), timed with a streamer:
           prefill = start -> first generated token, decode = first token -> end;
           decode tok/s = batch * (output_len - 1) / decode seconds. Memory-bound roofline per
           decode step: non-expert weights (LM head included, embedding table excluded)
           + per MoE layer E * (1 - (1 - k/E)^B) experts (expected distinct experts touched by
           B uniformly routed tokens) x expert bytes + KV read B * mean context * kv bytes/token.
  prefill  batch 1, one output token, one warm-up then --repeats timed runs, median. FLOPs
           = 2 * (matmul params per token, without embedding and LM head) * T + 2 * V * H (the
           LM head on the last position) + per layer 2 * 2 * T^2 / 2 * Hq * D (causal attention).

Model: a config from models/catalog (default Qwen3-30B-A3B; --layers cuts the depth), bf16 on
cuda, built on the meta device and materialised with torch.empty storage + uniform_ init (a
30B model in about a second), rotary buffers recomputed. No checkpoint is read.

Budget: --time-limit caps each case: generation stops at the limit and the row is marked
`truncated` (its rates are over the steps that ran). `max` in --batch-sizes is the largest
batch whose KV cache of input + output tokens fits the free GPU memory after the weights
minus 2 GiB (or --kv-cache-gib); a case that runs out of memory is listed under `skipped`.

Usage: python3 bench/peers/hf_decode.py [--layers 8] [--batch-sizes 1,8,32] [--json out.json]
"""
import argparse
import datetime
import glob
import gzip
import json
import math
import os
import statistics
import sys
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from moe_layer import git_commit, nominal_hbm  # noqa: E402  (card table and commit of bench/)

GIB = float(1 << 30)


# ---- config ----------------------------------------------------------------------------------

def catalog_config(name):
    """Path of a config.json: a file, a directory holding one, or a models/catalog name (case-
    insensitive, `org/` prefix ignored, a unique prefix accepted as moeopt does)."""
    if os.path.isfile(name):
        return name
    for f in ("config.json", "config.json.gz"):
        if os.path.isfile(os.path.join(name, f)):
            return os.path.join(name, f)
    base = name.split("/")[-1].lower()
    cat = os.path.join(ROOT, "models", "catalog")
    names = sorted(os.path.basename(d) for d in glob.glob(os.path.join(cat, "*"))
                   if os.path.isdir(d))
    exact = [n for n in names if n.lower() == base]
    found = exact or [n for n in names if n.lower().startswith(base)]
    if len(found) != 1:
        sys.exit(f"hf_decode: '{name}' names {len(found)} catalog models ({', '.join(names)})")
    for f in ("config.json", "config.json.gz"):
        p = os.path.join(cat, found[0], f)
        if os.path.isfile(p):
            return p
    sys.exit(f"hf_decode: {found[0]} has no config.json")


def load_config_dict(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


# ---- model -------------------------------------------------------------------------------------

def build_model(cfg_dict, layers, attn, experts_impl, seed):
    d = dict(cfg_dict)
    model_type = d.pop("model_type")
    if layers:
        d["num_hidden_layers"] = layers
        if "max_window_layers" in d:
            d["max_window_layers"] = min(d["max_window_layers"], layers)
    cfg = AutoConfig.for_model(model_type, **d)
    kwargs = {"attn_implementation": attn}
    if experts_impl:
        kwargs["experts_implementation"] = experts_impl
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, **kwargs)
    model = model.to(torch.bfloat16).to_empty(device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(seed)
    bound = 0.02 * math.sqrt(3.0)  # uniform with std 0.02
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.fill_(1.0)
            elif p.dim() == 1:
                p.zero_()  # biases
            else:
                p.uniform_(-bound, bound, generator=gen)
        # to_empty left buffers uninitialised: rebuild each module that owns some (the rotary
        # embedding's inv_freq) from the config and copy its buffers over.
        for mname, m in model.named_modules():
            own = dict(m.named_buffers(recurse=False))
            if not own:
                continue
            try:
                fresh = type(m)(config=model.config, device="cuda")
            except TypeError as e:
                sys.exit(f"hf_decode: cannot rebuild the buffers of {mname} "
                         f"({type(m).__name__}): {e}")
            for bname, b in fresh.named_buffers(recurse=False):
                own[bname].copy_(b)
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model, transformers.__version__


# ---- sizes for the rooflines (moeopt's sizing.h conventions) ------------------------------------

def model_sizes(model):
    c = model.config
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = routed = norms = 0
    moe_layers = set()
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        total += n
        if ".mlp.experts." in name:  # fused [E, ...] (transformers 5) or per-expert tensors
            routed += n
            moe_layers.add(name.split(".layers.")[1].split(".")[0])
        elif name.endswith("layernorm.weight") or name == "model.norm.weight":
            norms += n
    experts = getattr(c, "num_experts", 0) or getattr(c, "num_local_experts", 0) or 0
    top_k = getattr(c, "num_experts_per_tok", 0) or 0
    v, h = head.shape
    head_params = v * h
    lm_head = 0 if head is emb else head.numel()
    nl = len(moe_layers)
    per_expert = routed / (nl * experts) if nl and experts else 0.0
    active = total - routed + nl * top_k * per_expert
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return {
        "layers": c.num_hidden_layers, "moe_layers": nl, "experts": experts, "top_k": top_k,
        "q_heads": c.num_attention_heads, "head_dim": head_dim,
        "non_expert_weight_bytes": 2.0 * (total - routed - emb.numel() - lm_head + head_params),
        "expert_bytes": 2.0 * per_expert,
        "kv_bytes_per_token": 2.0 * 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim,
        "linear_params": active - emb.numel() - lm_head - norms,
        "head_params": head_params,
    }


def experts_touched(s, batch):
    # A token picks k of E experts: one expert is missed by a token with probability 1 - k/E,
    # by B independent tokens with (1 - k/E)^B; expected distinct touched = E (1 - (1-k/E)^B).
    if not s["experts"]:
        return 0.0
    e, k = float(s["experts"]), float(s["top_k"])
    return e * (1.0 - (1.0 - k / e) ** batch)


def decode_step_bytes(s, batch, mean_ctx):
    return (s["non_expert_weight_bytes"]
            + s["moe_layers"] * experts_touched(s, batch) * s["expert_bytes"]
            + batch * mean_ctx * s["kv_bytes_per_token"])


def prefill_flops(s, t):
    return (2.0 * s["linear_params"] * t + 2.0 * s["head_params"]
            + s["layers"] * 2.0 * 2.0 * t * t / 2.0 * s["q_heads"] * s["head_dim"])


# ---- timing -------------------------------------------------------------------------------------

class TimingStreamer(BaseStreamer):
    """generate() calls put() with the prompt, then once per step with that step's tokens
    (already copied to the host, so the GPU work of the step is done); end() at the end."""

    def __init__(self):
        super().__init__()
        self.first = None
        self.steps = 0
        self.calls = 0
        self.end_t = None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            torch.cuda.synchronize()
            self.first = time.perf_counter()
        elif self.calls > 2:
            self.steps += 1

    def end(self):
        torch.cuda.synchronize()
        self.end_t = time.perf_counter()


class TimeLimit(StoppingCriteria):
    """Stops every row once `limit` seconds have passed since `start` (0: never); `hit` says
    whether it did."""

    def __init__(self, start, limit):
        self.start, self.limit, self.hit = start, limit, False

    def __call__(self, input_ids, scores, **kwargs):
        stop = self.limit > 0 and time.perf_counter() - self.start > self.limit
        self.hit = self.hit or stop
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def random_prompts(gen, vocab, batch, length):
    return torch.randint(0, min(vocab, 100000), (batch, length), generator=gen,
                         device="cpu").cuda()


def run_generate(model, ids, new_tokens, cache, streamer=None, stopping=None):
    kw = {}
    if cache == "static":
        kw["cache_implementation"] = "static"
    with torch.inference_mode():
        return model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, streamer=streamer,
            stopping_criteria=StoppingCriteriaList(stopping or []), **kw)


def decode_case(model, s, gen, batch, inp, out, args, hbm_Bps):
    ids = random_prompts(gen, model.config.vocab_size, batch, inp)
    streamer = TimingStreamer()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    limit = TimeLimit(t0, args.time_limit)
    run_generate(model, ids, out, args.cache, streamer, [limit])
    if streamer.first is None or streamer.steps < 1:
        return None  # the time limit ran out during the prefill
    prefill_s = streamer.first - t0
    decode_s = streamer.end_t - streamer.first
    tps = batch * streamer.steps / decode_s
    mean_ctx = inp + (streamer.steps + 1) / 2.0  # contexts inp+1 .. inp+steps: inp + out/2
    nbytes = decode_step_bytes(s, batch, mean_ctx)
    bound = batch / (nbytes / hbm_Bps)
    return {"batch": batch, "input_len": inp, "output_len": out,
            "decode_tokens_per_s": tps, "ms_per_step": 1e3 * decode_s / streamer.steps,
            "decode_steps": streamer.steps, "decode_seconds": decode_s,
            "bound_tokens_per_s": bound, "pct_of_bound": 100.0 * tps / bound,
            "bytes_per_step": nbytes, "experts_touched_per_layer": experts_touched(s, batch),
            "prefill_tokens_per_s": batch * inp / prefill_s, "prefill_seconds": prefill_s,
            "truncated": limit.hit}


def prefill_case(model, s, gen, t, args, peak_flops):
    times = []
    deadline = time.perf_counter() + args.time_limit if args.time_limit > 0 else None
    for i in range(args.repeats + 1):  # run 0 is the warm-up
        ids = random_prompts(gen, model.config.vocab_size, 1, t)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run_generate(model, ids, 1, args.cache)
        torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - t0)
        if deadline and time.perf_counter() > deadline and times:
            break
    med = statistics.median(times)
    flops = prefill_flops(s, t)
    return {"prompt_len": t, "batch": 1, "prefill_tokens_per_s": t / med, "median_seconds": med,
            "seconds": times, "flops": flops, "tflops_per_s": flops / med / 1e12,
            "pct_of_peak": 100.0 * flops / med / peak_flops}


def parse_list(text, flag, allow_max):
    out = []
    for item in text.split(","):
        if not item:
            continue
        if item == "max" and allow_max:
            v = -1
        else:
            try:
                v = int(item)
            except ValueError:
                v = 0
            if v < 1:
                sys.exit(f"hf_decode: {flag}: '{item}' is not a positive integer"
                         f"{' or max' if allow_max else ''}")
        if v not in out:
            out.append(v)
    if not out:
        sys.exit(f"hf_decode: {flag} is empty")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="Qwen3-30B-A3B", help="catalog name or config path")
    ap.add_argument("--layers", type=int, default=0, help="cut the depth (default: the config's)")
    ap.add_argument("--batch-sizes", default="1,8,32,64,128,256,max")
    ap.add_argument("--input-lens", default="1024,4096")
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--prompt-lens", default="512,1024,2048,4096,8192")
    ap.add_argument("--repeats", type=int, default=5, help="prefill: timed runs after a warm-up")
    ap.add_argument("--time-limit", type=float, default=120.0,
                    help="seconds per case (0: none); decode rows past it are truncated")
    ap.add_argument("--kv-cache-gib", type=float, default=0.0,
                    help="KV budget for max (default: free GPU memory after weights - 2 GiB)")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--skip-prefill", action="store_true")
    ap.add_argument("--cache", choices=["dynamic", "static"], default="dynamic",
                    help="transformers KV cache implementation (default dynamic)")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (default sdpa)")
    ap.add_argument("--experts-impl", default="",
                    help="experts_implementation: eager, grouped_mm, batched_mm "
                         "(default: transformers' choice)")
    ap.add_argument("--hbm-gbps", type=float, default=0.0, help="override the nominal HBM GB/s")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="BF16 dense peak (default 989: H100 and H200 SXM nominal)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.output_len < 2:
        sys.exit("hf_decode: --output-len must be at least 2 (one decode step)")
    batches = parse_list(args.batch_sizes, "--batch-sizes", True)
    inputs = parse_list(args.input_lens, "--input-lens", False)
    prompt_lens = parse_list(args.prompt_lens, "--prompt-lens", False)
    if not torch.cuda.is_available():
        sys.exit("hf_decode: needs a CUDA GPU")

    card = torch.cuda.get_device_name()
    hbm_Bps = args.hbm_gbps * 1e9 if args.hbm_gbps > 0 else nominal_hbm(card)
    if not hbm_Bps > 0:
        sys.exit(f"hf_decode: no nominal HBM bandwidth for '{card}': pass --hbm-gbps")
    peak_flops = args.peak_tflops * 1e12
    cfg_path = catalog_config(args.model)
    t_build = time.perf_counter()
    model, tf_version = build_model(load_config_dict(cfg_path), args.layers, args.attn,
                                    args.experts_impl, args.seed)
    torch.cuda.synchronize()
    s = model_sizes(model)
    print(f"built {os.path.basename(os.path.dirname(cfg_path))} ({s['layers']} layers) on {card} "
          f"in {time.perf_counter() - t_build:.1f} s; torch {torch.__version__}, "
          f"transformers {tf_version}", file=sys.stderr)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)

    result = {
        "engine": "hf-transformers", "model": args.model, "layers": s["layers"],
        "device": "cuda", "card": card, "hbm_GBps": hbm_Bps / 1e9,
        "peak_tflops": peak_flops / 1e12,
        "peaks_source": "nominal (card table)" if args.hbm_gbps <= 0 else "flags",
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "versions": {"torch": torch.__version__, "transformers": tf_version},
        "settings": {"cache": args.cache, "attn": args.attn,
                     "experts_impl": args.experts_impl or "default",
                     "time_limit_s": args.time_limit},
        "output_len": args.output_len, "skipped": [],
    }

    if not args.skip_decode:
        free, _ = torch.cuda.mem_get_info()
        budget = args.kv_cache_gib * GIB if args.kv_cache_gib > 0 else free - 2 * GIB
        result["kv_budget_gib"] = budget / GIB
        result["kv_budget_source"] = ("--kv-cache-gib" if args.kv_cache_gib > 0 else
                                      "free GPU memory after the weights - 2 GiB")
        # Warm-up (kernels, allocator) outside the cases.
        run_generate(model, random_prompts(gen, model.config.vocab_size, 1, 16), 2, args.cache)
        rows = []
        for inp in inputs:
            fit = int(budget // ((inp + args.output_len) * s["kv_bytes_per_token"]))
            done = set()
            for b in batches:
                batch = fit if b < 0 else b
                if batch < 1 or batch in done:
                    continue
                done.add(batch)
                try:
                    r = decode_case(model, s, gen, batch, inp, args.output_len, args, hbm_Bps)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    result["skipped"].append({"batch": "max" if b < 0 else b, "input_len": inp,
                                              "fit": fit, "reason": "out of memory"})
                    print(f"batch {batch} x input {inp}: out of memory, skipped", file=sys.stderr)
                    continue
                if r is None:
                    result["skipped"].append({"batch": "max" if b < 0 else b, "input_len": inp,
                                              "fit": fit, "reason": "time limit in prefill"})
                    print(f"batch {batch} x input {inp}: time limit reached in the prefill, "
                          f"skipped", file=sys.stderr)
                    continue
                rows.append(r)
                print(f"batch {batch} x input {inp}: {r['decode_tokens_per_s']:.1f} tok/s"
                      f"{' (truncated)' if r['truncated'] else ''}", file=sys.stderr)
        result["decode"] = rows
        print(f"hf transformers decode: {card}, HBM {hbm_Bps / 1e9:.0f} GB/s nominal, "
              f"output {args.output_len} tokens")
        print(f"{'batch':>6} {'input':>6} {'decode tok/s':>12} {'ms/step':>9} {'bound tok/s':>12} "
              f"{'% bound':>8} {'prefill tok/s':>13}")
        for r in rows:
            print(f"{r['batch']:6d} {r['input_len']:6d} {r['decode_tokens_per_s']:12.1f} "
                  f"{r['ms_per_step']:9.3f} {r['bound_tokens_per_s']:12.1f} "
                  f"{r['pct_of_bound']:8.1f} {r['prefill_tokens_per_s']:13.1f}"
                  f"{'  truncated' if r['truncated'] else ''}")

    if not args.skip_prefill:
        rows = []
        for t in prompt_lens:
            try:
                rows.append(prefill_case(model, s, gen, t, args, peak_flops))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                result["skipped"].append({"prompt_len": t, "reason": "out of memory"})
                continue
        result["prefill"] = rows
        result["repeats"] = args.repeats
        print(f"hf transformers prefill: batch 1, output 1, median of up to {args.repeats}; "
              f"peak {peak_flops / 1e12:.0f} TFLOP/s")
        print(f"{'prompt':>7} {'prefill tok/s':>13} {'ms':>10} {'TFLOP':>10} {'TFLOP/s':>8} "
              f"{'% peak':>8}")
        for r in rows:
            print(f"{r['prompt_len']:7d} {r['prefill_tokens_per_s']:13.1f} "
                  f"{1e3 * r['median_seconds']:10.3f} {r['flops'] / 1e12:10.3f} "
                  f"{r['tflops_per_s']:8.2f} {r['pct_of_peak']:8.2f}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
