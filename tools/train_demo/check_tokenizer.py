#!/usr/bin/env python3
"""Checks that moeopt's tokenizer reproduces the demo tokenizer exactly.

Encodes with Hugging Face `tokenizers` (the reference) and with `moeopt tokenize`, and
decodes the reference ids with both (`moeopt detokenize`, plain and streaming):
  - every held-out paragraph and every held-out sentence (text the tokenizer never saw),
  - every training paragraph, and every book whole (as train.py encodes them),
  - a few hostile strings: other scripts, emoji, digits, whitespace runs, the special
    token inside text, unpaired punctuation.
Prints the mismatch count of each check and the first differences; exits 1 on any.

    python3 tools/train_demo/check_tokenizer.py --moeopt build/bin/moeopt \
        --corpus tools/train_demo/corpus [--tokenizer models/tiny-qwen3-moe-novels]
"""
import argparse
import json
import os
import re
import subprocess
import sys

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SEPARATOR = "<|endoftext|>"

HOSTILE = [
    "", " ", "  ", "\n", "\n\n\n", "\t\tindented", "trailing   ", "   leading", "a\r\nb", "x \n y",
    "It's 1811; they'll say I'd 've gone.", "DON'T SHOUT'S", "1234567890 3.14159 1,000,000",
    "caf\u00e9 cafe\u0301 na\u00efve \u00c5ngstr\u00f6m", "\u00a3200 a year", "\u201cquoted\u201d \u2014 dash",
    "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440",
    "\u0645\u0631\u062d\u0628\u0627", "emoji \U0001F600\U0001F44D\U0001F3FD family \U0001F468\u200d\U0001F469",
    "before<|endoftext|>after", "<|endoftext|>", "<|endoftext|><|endoftext|>", "<|endoftext",
    "Once upon a time", "It is a truth universally acknowledged", "Call me Ishmael.",
    "!!!???...---___***", "((()))[[]]{{}}", "a" * 300, "the " * 100,
]


def run(binary, args, lines):
    data = "".join(l + "\n" for l in lines).encode("utf-8")
    p = subprocess.run([binary] + args, input=data, capture_output=True, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"moeopt {' '.join(args)} failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    out = p.stdout.decode("utf-8").split("\n")
    if out and out[-1] == "":
        out.pop()
    if len(out) != len(lines):
        raise SystemExit(f"moeopt {' '.join(args)}: {len(out)} output lines for {len(lines)} inputs")
    return [json.loads(l) for l in out]


def paragraphs(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [p for book in text.split("\n" + SEPARATOR + "\n") for p in book.strip("\n").split("\n\n") if p]


def books(path):
    with open(path, encoding="utf-8") as f:
        return [b.strip("\n") for b in f.read().split("\n" + SEPARATOR + "\n")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moeopt", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "models", "tiny-qwen3-moe-novels"))
    args = ap.parse_args()

    ref = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    held = paragraphs(os.path.join(args.corpus, "heldout.txt"))
    sentences = [s for p in held for s in re.split(r"(?<=[.!?])\s+", p) if s]
    train = paragraphs(os.path.join(args.corpus, "train.txt"))
    sets = [("held-out paragraphs", held), ("held-out sentences", sentences),
            ("training paragraphs", train), ("hostile strings", HOSTILE),
            ("whole books", books(os.path.join(args.corpus, "train.txt")) + books(os.path.join(args.corpus, "heldout.txt")))]

    failed = False
    rows = []
    for name, lines in sets:
        for add_special in (False, True):
            expected = [e.ids for e in ref.encode_batch(lines, add_special_tokens=add_special)]
            flags = ["tokenize", "--tokenizer", args.tokenizer] + (["--add-special-tokens"] if add_special else [])
            got = run(args.moeopt, flags, [json.dumps(l, ensure_ascii=False) for l in lines])
            checks = [(f"encode(add_special_tokens={add_special})", expected, got)]
            if add_special:
                id_lines = [json.dumps(x) for x in expected]
                for skip in (False, True):
                    want = ref.decode_batch(expected, skip_special_tokens=skip)
                    dflags = ["detokenize", "--tokenizer", args.tokenizer] + (["--skip-special-tokens"] if skip else [])
                    checks.append((f"decode(skip_special_tokens={skip})", want, run(args.moeopt, dflags, id_lines)))
                    pieces = run(args.moeopt, dflags + ["--stream"], id_lines)
                    checks.append((f"stream(skip_special_tokens={skip})", want, ["".join(p) for p in pieces]))
            for what, want, have in checks:
                bad = [i for i in range(len(want)) if want[i] != have[i]]
                rows.append((name, what, len(want), len(bad), sum(len(x) for x in expected)))
                for i in bad[:3]:
                    failed = True
                    print(f"  {name} {what} mismatch #{i}: input={json.dumps(lines[i])[:200]}")
                    print(f"      expected={json.dumps(want[i])[:200]}")
                    print(f"      got     ={json.dumps(have[i])[:200]}")
                failed |= bool(bad)
    print(f"tokenizer {args.tokenizer} (vocab {ref.get_vocab_size()}):")
    for name, what, n, bad, ntok in rows:
        print(f"  {name:<20} {what:<34} {n:>6} lines {ntok:>8} tokens  {bad:>4} mismatches")
    print("EXACT" if not failed else "MISMATCHES")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
