#!/usr/bin/env python3
"""Golden logits and greedy continuations from Hugging Face transformers.

For each checkpoint directory (written by `moeopt init-random`), loads the model with
transformers in float32 (eager attention) and, for each fixed prompt, records
  - the logits at the last prompt position (all vocab entries),
  - the 24-token greedy continuation, computed by full re-forward at every step (no KV cache,
    so nothing of transformers' caching can differ from a plain forward), and
  - the top-1 / top-2 logit margin at every greedy step, so near-ties can be spotted.
DeepSeek-V2/V3 checkpoints (MLA attention) go through the same path.
The output (one gzip'd JSON per checkpoint) is committed under tests/data/goldens and compared
by CI against moeopt's CPU engine. Needs torch + transformers (the GPU machine has both).

usage: make_golden.py --out DIR CKPT_DIR [CKPT_DIR ...]
"""
import argparse
import gzip
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

PROMPTS = [
    [5, 17, 23],
    [42],
    [1, 300, 7, 7, 7, 99, 256, 3, 18, 444, 12, 5, 61, 200, 9, 77, 123, 310, 2, 8],
    [11, 22, 33, 44, 55, 66, 77, 88, 99, 110, 121, 132, 143, 154, 165, 176, 187, 198, 209, 220,
     231, 242, 253, 264, 275, 286, 297, 308, 319, 330, 341, 352],
]
NEW_TOKENS = 24


def run(ckpt: str) -> dict:
    torch.manual_seed(0)
    # Eager experts too: the per-expert loop of the modeling file. (torch's grouped_mm path,
    # the default on some versions, refuses the odd widths of the tiny configs.)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32,
                                                 attn_implementation="eager",
                                                 experts_implementation="eager")
    model.eval()
    vocab = model.config.vocab_size
    out = {"checkpoint": os.path.basename(os.path.normpath(ckpt)),
           "transformers": transformers.__version__, "torch": torch.__version__,
           "new_tokens": NEW_TOKENS, "prompts": []}
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = [t % vocab for t in prompt]
            logits = model(torch.tensor([ids])).logits[0, -1].double()
            seq, greedy, margins = list(ids), [], []
            for _ in range(NEW_TOKENS):
                row = model(torch.tensor([seq])).logits[0, -1]
                top2 = torch.topk(row, 2).values
                tok = int(torch.argmax(row))  # first index wins ties, like moeopt
                greedy.append(tok)
                margins.append(float(top2[0] - top2[1]))
                seq.append(tok)
            out["prompts"].append({"ids": ids, "last_logits": [float(x) for x in logits],
                                   "greedy": greedy, "margins": margins})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("ckpts", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for ckpt in a.ckpts:
        g = run(ckpt)
        path = os.path.join(a.out, g["checkpoint"] + ".json.gz")
        with gzip.open(path, "wt") as f:
            json.dump(g, f)
        worst = min(min(p["margins"]) for p in g["prompts"])
        print(f"{g['checkpoint']}: {len(g['prompts'])} prompts, smallest greedy margin {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
