#!/usr/bin/env python3
"""Tokenizer encode throughput, one thread: moeopt against HF `tokenizers` on the same corpus.

Both sides encode every corpus string without special tokens, repeatedly, after one warm-up
pass (so both BPE word caches are warm), and report input MB/s. HF runs
`encode_batch_fast` (ids without offsets, like ours; `encode_batch` on versions without it)
with RAYON_NUM_THREADS=1 (one thread, no per-call Python overhead); moeopt runs
bench_tokenizer_encode (Google Benchmark).

usage: tokenizer_speed.py --bench build/bench/bench_tokenizer_encode [--families qwen3,...]
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402  (after the thread settings)


def load_corpus(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def hf_mbps(family, corpus, seconds=3.0):
    tok_path = os.path.join(ROOT, "models", "tokenizers", family, "tokenizer.json.gz")
    with gzip.open(tok_path, "rt", encoding="utf-8") as f:
        tok = Tokenizer.from_str(f.read())
    nbytes = sum(len(s.encode("utf-8")) for s in corpus)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # ids without offsets when available
    encode(corpus, add_special_tokens=False)  # warm-up
    passes, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        encode(corpus, add_special_tokens=False)
        passes += 1
    return passes * nbytes / (time.perf_counter() - start) / 1e6


def ours_mbps(bench, family, corpus_path):
    out = subprocess.run([bench, "--tokenizer", os.path.join(ROOT, "models", "tokenizers", family),
                          "--corpus", corpus_path, "--benchmark_format=json",
                          "--benchmark_min_time=3s"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["benchmarks"][0]["bytes_per_second"] / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--corpus", default=os.path.join(ROOT, "tests/data/tokenizer_corpus/corpus.jsonl.gz"))
    ap.add_argument("--families", default="qwen3,deepseek_v3,llama3,llama2")
    a = ap.parse_args()
    corpus = load_corpus(a.corpus)
    print(f"corpus: {len(corpus)} strings, {sum(len(s.encode()) for s in corpus) / 1e6:.2f} MB")
    print(f"{'tokenizer':<12} {'moeopt MB/s':>12} {'HF MB/s':>10} {'ratio':>7}")
    for fam in a.families.split(","):
        ours, hf = ours_mbps(a.bench, fam, a.corpus), hf_mbps(fam, corpus)
        print(f"{fam:<12} {ours:>12.2f} {hf:>10.2f} {ours / hf:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
