#!/usr/bin/env python3
"""One real-width Qwen3-30B-A3B layer on the GPU: moeopt against PyTorch (transformers).

Writes (with `moeopt init-random`) a Qwen3-30B-A3B checkpoint cut to --layers decoder layers
(real widths: H 2048, 32 q / 4 kv heads of 128, 128 experts of 768, top-8, vocab 151936),
runs the same prompts through
  - transformers 5 (Qwen3MoeForCausalLM, bf16 on cuda, eager attention), and
  - `moeopt generate --device cuda --logits --json` (bf16 activations, f32 residual),
and compares the logits at the last prompt position (max |d|, relative L2, top-1 and the
overlap of the top-10 sets). Both are bf16 computations in different orders, so the bar is
relative: rel L2 <= 2e-2 and top-1 equal, printed per prompt. Runs on the GPU machine.

usage: compare_real_width.py --moeopt BIN --work DIR [--layers 1] [--json OUT]
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM

PROMPTS = [
    [151644, 872, 198, 9707, 11, 1246, 525, 498, 30, 151645],
    [40, 1079, 264, 3460, 4128, 1614, 13, 576, 6722, 374],
    list(range(1000, 1300, 3)),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeopt", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()
    ckpt = os.path.join(a.work, f"qwen3-30b-a3b-L{a.layers}")
    if not os.path.exists(os.path.join(ckpt, "config.json")):
        subprocess.run([a.moeopt, "init-random", "--config", "qwen3-30b-a3b", "--layers",
                        str(a.layers), "--out", ckpt], check=True)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16,
                                                 attn_implementation="eager").cuda().eval()
    results, ok = [], True
    for ids in PROMPTS:
        with torch.no_grad():
            ref = model(torch.tensor([ids], device="cuda")).logits[0, -1].float().cpu()
        out = subprocess.run([a.moeopt, "generate", "--device", "cuda", "--model", ckpt,
                              "--prompt-ids", ",".join(map(str, ids)), "--max-tokens", "1",
                              "--temperature", "0", "--logits", "--json"],
                             check=True, capture_output=True, text=True).stdout
        got = torch.tensor(json.loads(out)["prompt_logits_last"])
        rel = float((got - ref).norm() / ref.norm())
        top_ref = set(torch.topk(ref, 10).indices.tolist())
        top_got = set(torch.topk(got, 10).indices.tolist())
        r = {"prompt_len": len(ids), "max_abs": float((got - ref).abs().max()), "rel_l2": rel,
             "top1_equal": int(ref.argmax()) == int(got.argmax()),
             "top10_overlap": len(top_ref & top_got)}
        ok &= rel <= 2e-2 and r["top1_equal"]
        results.append(r)
        print(json.dumps(r))
    summary = {"layers": a.layers, "torch": torch.__version__,
               "device": torch.cuda.get_device_name(), "prompts": results, "pass": ok}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
