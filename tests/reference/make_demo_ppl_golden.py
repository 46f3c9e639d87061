#!/usr/bin/env python3
"""Golden held-out perplexity of the trained demo model, from Hugging Face transformers.

Writes two committed files:
  tests/data/demo_heldout_excerpt.txt    the first whole paragraphs of the demo corpus'
                                         held-out split (tools/train_demo/corpus/heldout.txt,
                                         git-ignored; see tools/train_demo/prepare_corpus.py),
                                         about 12,000 characters, a byte-exact prefix of it
                                         that ends with the newline closing a paragraph;
  tests/data/demo_perplexity_golden.json the token ids of that whole file (HF `tokenizers`,
                                         add_special_tokens=False) and the negative
                                         log-likelihood of every non-overlapping window.

Scoring: ids are cut into windows ids[s : s+256] for s = 0, 256, 512, ... (the last one
shorter; dropped only if it has fewer than 2 tokens). Each window is a fresh sequence
(positions from 0, no BOS prepended, no context from earlier windows); every token after
the first is scored given the tokens before it in that window. nll_sum is the sum of
-log_softmax(logits)[next id], computed in float64 from the float32 logits of
Qwen3MoeForCausalLM loaded from models/tiny-qwen3-moe-novels in float32 on the CPU (eager
attention, eager experts loop, eval mode, no_grad, one thread). mean_nll = total nll /
scored_tokens (the sum of len-1 over windows); perplexity = exp(mean_nll). Floats are
written at full precision (Python repr).

Deterministic and re-runnable; needs torch, transformers and tokenizers:

    /work/venv-demo/bin/python tests/reference/make_demo_ppl_golden.py [--heldout PATH]

--check recomputes everything and exits 1 if either committed file would change.
"""
import argparse
import hashlib
import json
import math
import os
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MODEL_REL = "models/tiny-qwen3-moe-novels"
TEXT_REL = "tests/data/demo_heldout_excerpt.txt"
GOLDEN_REL = "tests/data/demo_perplexity_golden.json"
DEFAULT_HELDOUT = os.path.join(ROOT, "tools", "train_demo", "corpus", "heldout.txt")
TARGET_CHARS = 12000
WINDOW = 256
SEPARATOR = "\n<|endoftext|>\n"  # between books in heldout.txt; the excerpt must not cross one


def excerpt(text):
    """The prefix of `text` made of its first whole paragraphs (separated by a blank line),
    as close to TARGET_CHARS characters as possible, ending with the paragraph's newline."""
    limit = text.find(SEPARATOR)
    if limit < 0:
        limit = len(text)
    best = None
    pos = text.find("\n\n")
    while 0 <= pos < limit:
        if best is None or abs(pos + 1 - TARGET_CHARS) < abs(best - TARGET_CHARS):
            best = pos + 1
        pos = text.find("\n\n", pos + 2)
    if best is None:
        raise SystemExit("held-out text has no paragraph boundary before the first book separator")
    return text[:best]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def score(model_dir, ids):
    import torch
    from transformers import Qwen3MoeForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(1)  # fixed reduction order, so the float32 logits repeat exactly
    model = Qwen3MoeForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                                experts_implementation="eager")
    model.eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())
    windows = []
    with torch.no_grad():
        for s in range(0, len(ids), WINDOW):
            chunk = ids[s:s + WINDOW]
            if len(chunk) < 2:
                continue
            logits = model(torch.tensor([chunk], dtype=torch.long), use_cache=False).logits[0]
            assert logits.dtype == torch.float32
            logp = torch.log_softmax(logits[:-1].double(), dim=-1)
            nxt = torch.tensor(chunk[1:], dtype=torch.long)
            nll = -logp.gather(1, nxt[:, None])[:, 0]
            windows.append({"start": s, "len": len(chunk), "nll_sum": float(nll.sum().item())})
    return windows


def build(heldout_path):
    import tokenizers
    import torch
    import transformers
    from tokenizers import Tokenizer

    with open(heldout_path, "rb") as f:
        raw = f.read()
    text = excerpt(raw.decode("utf-8"))
    text_bytes = text.encode("utf-8")
    assert raw.startswith(text_bytes)

    model_dir = os.path.join(ROOT, MODEL_REL)
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text, "tokenizer round trip"

    windows = score(model_dir, ids)
    scored = sum(w["len"] - 1 for w in windows)
    total = math.fsum(w["nll_sum"] for w in windows)
    mean = total / scored
    golden = {
        "model": MODEL_REL,
        "model_sha256": sha256_file(os.path.join(model_dir, "model.safetensors")),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "device": "cpu",
        "text_file": TEXT_REL,
        "window": WINDOW,
        "ids": ids,
        "windows": windows,
        "scored_tokens": scored,
        "mean_nll": mean,
        "perplexity": math.exp(mean),
    }
    # One key per line, one window per line. json writes floats with repr(), the shortest
    # string that reads back to the same double.
    rows = []
    for key, value in golden.items():
        if key == "windows":
            body = ",\n".join("  " + json.dumps(w) for w in value)
            rows.append(f'"{key}": [\n{body}\n ]')
        else:
            rows.append(f"{json.dumps(key)}: {json.dumps(value)}")
    out = "{\n " + ",\n ".join(rows) + "\n}\n"
    assert json.loads(out) == golden
    print(f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}, torch {torch.__version__}",
          file=sys.stderr)
    print(f"excerpt: {len(text)} characters, {len(text_bytes)} bytes, {text.count(chr(10) * 2) + 1} paragraphs, "
          f"{len(ids)} tokens; {len(windows)} windows; scored {scored} tokens; mean nll {mean:.6f}; "
          f"perplexity {math.exp(mean):.4f}", file=sys.stderr)
    return text_bytes, out.encode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", default=DEFAULT_HELDOUT,
                    help="the demo corpus' held-out text (default: tools/train_demo/corpus/heldout.txt)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed file differs")
    args = ap.parse_args()
    if not os.path.isfile(args.heldout):
        raise SystemExit(f"{args.heldout} not found: run tools/train_demo/prepare_corpus.py first, or pass --heldout")

    text_bytes, golden_bytes = build(args.heldout)
    outputs = [(TEXT_REL, text_bytes), (GOLDEN_REL, golden_bytes)]
    if args.check:
        stale = []
        for rel, data in outputs:
            path = os.path.join(ROOT, rel)
            if not os.path.isfile(path) or open(path, "rb").read() != data:
                stale.append(rel)
        for rel in stale:
            print(f"{rel} is not what this script writes", file=sys.stderr)
        return 1 if stale else 0
    for rel, data in outputs:
        with open(os.path.join(ROOT, rel), "wb") as f:
            f.write(data)
        print(f"wrote {rel}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
