#!/usr/bin/env python3
"""Render tests/data/chat_templates/cases.json with Hugging Face transformers and write
tests/data/chat_templates/goldens.json, the byte-exact expectations of moeopt's chat
template renderer (tests/unit/tokenizer_chat_template_test.cpp).

Needs transformers and jinja2 but not torch. Keep them out of the project .venv:

    python3 -m venv /tmp/goldens-venv
    /tmp/goldens-venv/bin/pip install transformers jinja2
    /tmp/goldens-venv/bin/python tests/reference/make_chat_goldens.py

Each case names a tokenizer family under models/tokenizers (its tokenizer_config.json gives
the template and the special tokens) and optionally a template file under
tests/data/chat_templates/templates that replaces the family's template (the
Mixtral-Instruct template is rendered with the Llama-2 tokenizer, whose special tokens it
shares). A case whose rendering raises records the exception instead of a text.
"""
import gzip
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "chat_templates")


def tokenizer_dir(family, scratch):
    """A directory transformers can load: the vendored config plus the inflated tokenizer.json."""
    src = os.path.join(ROOT, "models", "tokenizers", family)
    dst = os.path.join(scratch, family)
    if os.path.isdir(dst):
        return dst
    os.makedirs(dst)
    shutil.copy(os.path.join(src, "tokenizer_config.json"), dst)
    gz = os.path.join(src, "tokenizer.json.gz")
    if os.path.exists(gz):
        with gzip.open(gz, "rb") as f_in, open(os.path.join(dst, "tokenizer.json"), "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)
    else:
        shutil.copy(os.path.join(src, "tokenizer.json"), dst)
    return dst


def main():
    import jinja2
    import transformers
    from transformers import AutoTokenizer

    with open(os.path.join(DATA, "cases.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]

    goldens = {}
    special_tokens = {}
    tokenizers = {}
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases:
            family = case["family"]
            if family not in tokenizers:
                tok = AutoTokenizer.from_pretrained(tokenizer_dir(family, scratch))
                tokenizers[family] = tok
                special_tokens[family] = {
                    k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)
                }
            tok = tokenizers[family]
            template = None
            if "template" in case:
                with open(os.path.join(DATA, "templates", case["template"]), encoding="utf-8") as f:
                    template = f.read()
            try:
                text = tok.apply_chat_template(
                    case["messages"],
                    tools=case.get("tools"),
                    add_generation_prompt=case["add_generation_prompt"],
                    tokenize=False,
                    chat_template=template,
                    **case.get("kwargs", {}),
                )
                goldens[case["name"]] = {"rendered": text}
            except Exception as e:  # the template (or transformers) refused the input
                goldens[case["name"]] = {"error": str(e), "error_type": type(e).__name__}

    out = {
        "generator": "tests/reference/make_chat_goldens.py",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "special_tokens": special_tokens,
        "goldens": goldens,
    }
    path = os.path.join(DATA, "goldens.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1, sort_keys=False)
        f.write("\n")
    errors = sum(1 for g in goldens.values() if "error" in g)
    print(f"wrote {path}: {len(goldens)} cases ({errors} expected errors), "
          f"transformers {transformers.__version__}, jinja2 {jinja2.__version__}")


if __name__ == "__main__":
    sys.exit(main())
