#!/usr/bin/env python3
"""Compares moeopt's CPU engine with transformers on a trained demo checkpoint.

For a few English prompts: the logits at the last prompt position (`moeopt generate
--logits --json` against transformers in float32, eager attention, on the same bf16
weights) and the greedy continuation (transformers by full re-forward at every step, as
tests/reference/make_golden.py does). A greedy step whose top-1/top-2 margin is below
--tie-margin may legitimately differ; the comparison stops there.

    python3 tools/train_demo/compare_logits.py --moeopt build/bin/moeopt --model OUT
"""
import argparse
import json
import subprocess
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

PROMPTS = ["Once upon a time", "It is a truth universally acknowledged", "Call me Ishmael.",
           "Elizabeth looked at her sister and", "The ship"]


def moeopt_generate(binary, model, prompt, n):
    p = subprocess.run([binary, "generate", "--model", model, "--prompt", prompt, "--max-tokens", str(n),
                        "--temperature", "0", "--logits", "--json"], capture_output=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"moeopt generate failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    lines = [l for l in p.stdout.decode().splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moeopt", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--tol", type=float, default=2e-3, help="max |logit difference| allowed")
    ap.add_argument("--tie-margin", type=float, default=1e-3)
    args = ap.parse_args()

    tok = Tokenizer.from_file(f"{args.model}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    failed = False
    for prompt in PROMPTS:
        ids = tok.encode(prompt, add_special_tokens=False).ids
        got = moeopt_generate(args.moeopt, args.model, prompt, args.new_tokens)
        with torch.no_grad():
            ref_logits = model(torch.tensor([ids])).logits[0, -1].double()
            seq, ref_greedy, margins = list(ids), [], []
            for _ in range(args.new_tokens):
                row = model(torch.tensor([seq])).logits[0, -1]
                top2 = torch.topk(row, 2).values
                t = int(torch.argmax(row))
                ref_greedy.append(t)
                margins.append(float(top2[0] - top2[1]))
                seq.append(t)
                if t == 0:  # <|endoftext|> ends moeopt's generation too
                    break
        diff = (torch.tensor(got["prompt_logits_last"], dtype=torch.float64) - ref_logits).abs().max().item()
        mine = got["token_ids"]
        same = 0
        for a, b in zip(mine, ref_greedy):
            if a != b:
                break
            same += 1
        ok_greedy = same == min(len(mine), len(ref_greedy)) or margins[same] < args.tie_margin
        ok = diff <= args.tol and ok_greedy
        failed |= not ok
        print(f"{'ok ' if ok else 'BAD'} {prompt!r}: max |logit diff| {diff:.2e}; greedy {same}/{len(ref_greedy)} "
              f"tokens agree")
        print(f"    moeopt:       {got['text']!r}")
        print(f"    transformers: {tok.decode(ref_greedy)!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
