#!/usr/bin/env python3
"""Trains the demo model's byte-level BPE tokenizer on the corpus's training split.

The pipeline is Qwen3's (models/tokenizers/qwen3), which moeopt's tokenizer reproduces:
NFC normaliser, a Split pre-tokenizer with Qwen3's regex (Isolated) followed by ByteLevel
without its own regex, BPE without byte fallback, ByteLevel post-processor and decoder.
One special token, <|endoftext|> (id 0), separates documents and ends generation.

    python3 tools/train_demo/train_tokenizer.py --corpus tools/train_demo/corpus \
        --out models/tiny-qwen3-moe-novels [--vocab-size 8192]

Writes tokenizer.json and tokenizer_config.json into OUT. The result depends only on the
corpus and the tokenizers version (training is deterministic).
"""
import argparse
import json
import os

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL = "<|endoftext|>"
# Qwen3's pre-tokenizer regex, as in models/tokenizers/qwen3/tokenizer.json.gz.
SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def documents(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [d.strip("\n") for d in text.split("\n" + SPECIAL + "\n")]


def build(vocab_size):
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tok, trainer


def tokenizer_config():
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            "0": {"content": SPECIAL, "lstrip": False, "normalized": False, "rstrip": False,
                  "single_word": False, "special": True},
        },
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": SPECIAL,
        "errors": "replace",
        "model_max_length": 4096,
        "pad_token": SPECIAL,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="directory written by prepare_corpus.py")
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab-size", type=int, default=8192)
    args = ap.parse_args()

    docs = documents(os.path.join(args.corpus, "train.txt"))
    tok, trainer = build(args.vocab_size)
    # One paragraph (with the blank line that follows it) per sample: no pre-token spans two.
    samples = [p + "\n\n" for d in docs for p in d.split("\n\n")]
    tok.train_from_iterator(samples, trainer=trainer, length=len(samples))
    if tok.token_to_id(SPECIAL) != 0:
        raise SystemExit(f"{SPECIAL} is not id 0")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "tokenizer.json")
    # Spell the no-op fields as Qwen3's file does: "" subword affixes, and the decoder's
    # ByteLevel flags (which decoding ignores) as the pre-tokenizer's.
    spec = json.loads(tok.to_str())
    spec["model"]["continuing_subword_prefix"] = ""
    spec["model"]["end_of_word_suffix"] = ""
    spec["decoder"] = dict(spec["post_processor"])
    with open(path, "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False, indent=2)
        f.write("\n")
    reloaded = Tokenizer.from_file(path)
    probe = docs[0][:20000]
    if reloaded.encode(probe).ids != tok.encode(probe).ids:
        raise SystemExit("the rewritten tokenizer.json encodes differently")
    tok = reloaded
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(), f, indent=2)
        f.write("\n")
    n = sum(len(tok.encode(d).ids) for d in docs)
    chars = sum(len(d) for d in docs)
    print(f"tokenizers {tokenizers.__version__}: vocab {tok.get_vocab_size()}, train split {n} tokens "
          f"({chars / n:.2f} chars/token) -> {args.out}")


if __name__ == "__main__":
    main()
