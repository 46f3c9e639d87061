#!/usr/bin/env python3
"""moeopt's FP8 W8A8 path against HF transformers in float32 on the *dequantised* weights.

Writes a tiny FP8 checkpoint in hub layout (`moeopt init-random --fp8`, scales in bf16 as
Qwen's FP8 releases store them), dequantises it here (w = fp8 * weight_scale_inv per
128x128 block, written by this script, independent of moeopt's loader) into a float32
checkpoint without quantization_config, runs transformers (eager attention) on it, and
compares the last-position logits of several prompts with `moeopt generate --logits` on the
FP8 checkpoint (which quantises activations per token in groups of 128, ops/fp8.h).
Prints cos similarity and top-1 agreement per prompt and a summary; exits 1 when the gap is
larger than activation quantisation explains (cos < 0.999 or top-1 < 0.9).

Needs torch + transformers + safetensors (the GPU machine has them; CI's venv has no torch):
  python3 tests/reference/compare_fp8_transformers.py --moeopt build/bin/moeopt --out /tmp/fp8cmp [--device cuda]
"""
import argparse
import json
import math
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file


def dequantise(src, dst):
    os.makedirs(dst, exist_ok=True)
    cfg = json.load(open(os.path.join(src, "config.json")))
    block = cfg["quantization_config"]["weight_block_size"]
    cfg.pop("quantization_config")
    cfg["torch_dtype"] = "float32"
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)
    tensors = {}
    for f in sorted(os.listdir(src)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(src, f)))
    out, n_fp8 = {}, 0
    for name, t in tensors.items():
        if name.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            s = tensors[name + "_scale_inv"].float()
            n, k = t.shape
            full = s.repeat_interleave(block[0], 0)[:n].repeat_interleave(block[1], 1)[:, :k]
            out[name] = (t.float() * full).contiguous()
            n_fp8 += 1
        else:
            out[name] = t.float().contiguous()
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(src, f)):
            with open(os.path.join(src, f), "rb") as a, open(os.path.join(dst, f), "wb") as b:
                b.write(a.read())
    return n_fp8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeopt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default="models/tiny-qwen3-moe/config.json")
    ap.add_argument("--layers", default="2")
    ap.add_argument("--scale-dtype", default="bf16")
    ap.add_argument("--device", default="cpu", help="where moeopt runs the FP8 checkpoint: cpu or cuda")
    a = ap.parse_args()
    fp8_dir, deq_dir = os.path.join(a.out, "fp8"), os.path.join(a.out, "dequantised_f32")
    subprocess.run([a.moeopt, "init-random", "--config", a.config, "--layers", a.layers, "--fp8",
                    "--fp8-scale-dtype", a.scale_dtype, "--seed", "5", "--out", fp8_dir],
                   check=True, stderr=subprocess.DEVNULL)
    n_fp8 = dequantise(fp8_dir, deq_dir)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(deq_dir, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    prompts = [[(i * 131 + 7 * p + 3) % 1000 + 10 for i in range(8 + 5 * p)] for p in range(8)]
    cos_all, top1 = [], 0
    for ids in prompts:
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0, -1].double()
        r = subprocess.run([a.moeopt, "generate", "--model", fp8_dir, "--prompt-ids",
                            ",".join(map(str, ids)), "--max-tokens", "1", "--temperature", "0",
                            "--logits", "--json", "--device", a.device], check=True, capture_output=True, text=True)
        got = torch.tensor(json.loads(r.stdout)["prompt_logits_last"], dtype=torch.float64)
        cos = float(torch.dot(got, ref) / (got.norm() * ref.norm()))
        same = int(got.argmax()) == int(ref.argmax())
        cos_all.append(cos)
        top1 += same
        print(f"prompt of {len(ids):3d} tokens: cos {cos:.6f}, top-1 {'same' if same else 'DIFFERENT'}, "
              f"max |diff| {float((got - ref).abs().max()):.4f}")
    agree = top1 / len(prompts)
    print(f"moeopt FP8 W8A8 on the {a.device} ({n_fp8} fp8 weights, {a.scale_dtype} scales) vs transformers f32 on the "
          f"dequantised weights: cos min {min(cos_all):.6f} mean {sum(cos_all) / len(cos_all):.6f}, "
          f"top-1 agreement {agree:.3f} over {len(prompts)} prompts (random weights)")
    return 0 if min(cos_all) >= 0.999 and agree >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
