#!/usr/bin/env python3
"""config.json files as transformers 5 writes them, for moeopt's config parser tests.

For every model in models/catalog (the hub originals; where ../shared/models holds the
authors' file of the same model it is read from there and must have the same content), every
tiny engine config in tests/reference/golden_configs/*.json, and a few rope-scaling variants
of hub originals (below), this script loads the config with the architecture's own
transformers configuration class (Qwen3MoeConfig, MixtralConfig, ...) and writes it back with
`save_pretrained`, exactly as a fine-tune or a re-save with transformers 5 does. The results
go to tests/reference/golden_configs/tf5/<name>/config.json, with manifest.json (name ->
the original it was saved from) and README.md (transformers version, table). The C++ tests
(tests/unit/model_config_tf5_test.cpp, tests/cli) parse each written file and the original
and require the same model.

The variants take a hub original and only set a legacy (transformers 4) `rope_scaling`, so
that every scaled rope type passes through transformers 5's `rope_parameters` conversion in
every family; the 4.x-style input is written next to the result as original.json.

Needs only `pip install transformers` (configuration classes import without torch).

usage: make_tf5_configs.py [--out DIR] [--hub-dir DIR]
"""
import argparse
import copy
import json
import os
import shutil
import sys
import tempfile

import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# model_type -> the transformers configuration class that owns it.
CLASSES = {
    "qwen3_moe": "Qwen3MoeConfig",
    "qwen2_moe": "Qwen2MoeConfig",
    "mixtral": "MixtralConfig",
    "deepseek_v2": "DeepseekV2Config",
    "deepseek_v3": "DeepseekV3Config",
    "olmoe": "OlmoeConfig",
}

# (variant name, hub original, legacy rope_scaling it is given). Types and keys as the
# transformers 4 rope utilities read them; both the old "type" and the newer "rope_type"
# spelling appear.
VARIANTS = [
    # Qwen3's long-context recipe (model card): YaRN x4 over the 32768 pre-training length.
    ("Qwen3-30B-A3B-rope-yarn", "Qwen3-30B-A3B",
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}),
    # YaRN without original_max_position_embeddings: transformers 5 writes
    # max_position_embeddings there, the 4.x reading uses max_position_embeddings.
    ("Qwen3-235B-A22B-rope-yarn-no-orig", "Qwen3-235B-A22B", {"type": "yarn", "factor": 2.0}),
    ("Qwen1.5-MoE-A2.7B-rope-dynamic", "Qwen1.5-MoE-A2.7B", {"type": "dynamic", "factor": 2.0}),
    ("Qwen2-57B-A14B-rope-linear", "Qwen2-57B-A14B", {"rope_type": "linear", "factor": 4.0}),
    ("Mixtral-8x7B-v0.1-rope-linear", "Mixtral-8x7B-v0.1", {"type": "linear", "factor": 2.0}),
    ("Mixtral-8x22B-v0.1-rope-llama3", "Mixtral-8x22B-v0.1",
     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}),
    ("OLMoE-1B-7B-0924-rope-dynamic", "OLMoE-1B-7B-0924", {"rope_type": "dynamic", "factor": 4.0}),
    ("DeepSeek-V2-rope-yarn-attention-factor", "DeepSeek-V2",
     {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096, "beta_fast": 16.0,
      "beta_slow": 2.0, "attention_factor": 1.25}),
    ("DeepSeek-V2-Lite-rope-linear", "DeepSeek-V2-Lite", {"type": "linear", "factor": 4.0}),
    ("DeepSeek-V3-rope-llama3", "DeepSeek-V3",
     {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 4096}),
]


def rel(path):
    return os.path.relpath(path, ROOT)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def resave(original, out_dir):
    """Loads `original` (a config dict) with its family's class and save_pretrained()s it."""
    cls = getattr(transformers, CLASSES[original["model_type"]])
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(original, f)
        cfg = cls.from_pretrained(tmp)
    os.makedirs(out_dir, exist_ok=True)
    cfg.save_pretrained(out_dir)
    return cls.__name__


def hub_originals(hub_dir):
    """[(name, path of the original)] for every catalog model."""
    catalog = os.path.join(ROOT, "models", "catalog")
    hub = {}
    if hub_dir and os.path.isdir(hub_dir):
        for d in sorted(os.listdir(hub_dir)):
            p = os.path.join(hub_dir, d, "config.json")
            if os.path.isfile(p):
                hub[d.split("__", 1)[-1]] = p
    out = []
    for name in sorted(os.listdir(catalog)):
        p = os.path.join(catalog, name, "config.json")
        if not os.path.isfile(p):
            continue
        if name in hub and load_json(hub[name]) != load_json(p):
            sys.exit(f"{hub[name]} and {p} differ: update the catalog copy first")
        out.append((name, p))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "reference", "golden_configs", "tf5"))
    ap.add_argument("--hub-dir", default=os.path.join(os.path.dirname(ROOT), "shared", "models"))
    a = ap.parse_args()
    if not transformers.__version__.startswith("5."):
        sys.exit(f"transformers {transformers.__version__}: this script records what 5.x writes")
    if os.path.isdir(a.out):
        shutil.rmtree(a.out)
    os.makedirs(a.out)

    entries = []  # (name, class, original path relative to the repo, what it is)
    for name, path in hub_originals(a.hub_dir):
        cls = resave(load_json(path), os.path.join(a.out, name))
        entries.append((name, cls, rel(path), "hub original"))

    golden = os.path.join(ROOT, "tests", "reference", "golden_configs")
    for f in sorted(os.listdir(golden)):
        if f.endswith(".json"):
            name = "golden-" + f[:-5]
            path = os.path.join(golden, f)
            cls = resave(load_json(path), os.path.join(a.out, name))
            entries.append((name, cls, rel(path), "tiny engine test config"))

    catalog = dict(hub_originals(a.hub_dir))
    for name, base, rope in VARIANTS:
        original = copy.deepcopy(load_json(catalog[base]))
        original["rope_scaling"] = rope
        d = os.path.join(a.out, name)
        cls = resave(original, d)
        with open(os.path.join(d, "original.json"), "w") as f:
            json.dump(original, f, indent=2, sort_keys=True)
            f.write("\n")
        entries.append((name, cls, rel(os.path.join(d, "original.json")),
                        f"{base} with rope_scaling {json.dumps(rope, sort_keys=True)}"))

    manifest = {
        "transformers_version": transformers.__version__,
        "configs": [{"name": n, "class": c, "original": o} for n, c, o, _ in entries],
    }
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")

    lines = [
        "# config.json as transformers 5 writes it",
        "",
        f"Generated by `tests/reference/make_tf5_configs.py` with **transformers {transformers.__version__}**",
        "(configuration classes only, no torch). Each `<name>/config.json` is the output of",
        "`<Class>.from_pretrained(original)` followed by `save_pretrained`; nothing here is",
        "hand-written. `manifest.json` names the original of each; for the rope variants the",
        "transformers-4-style input (a hub original with only `rope_scaling` set) is",
        "`<name>/original.json`. The hub originals are the `models/catalog` copies, checked to",
        "have the content of the authors' files when a folder of those is given (`--hub-dir`,",
        "default `../shared/models`). Regenerate with",
        "",
        "```sh",
        "python3 -m venv /tmp/venv-tf5 && /tmp/venv-tf5/bin/pip install transformers",
        "/tmp/venv-tf5/bin/python tests/reference/make_tf5_configs.py",
        "```",
        "",
        "What transformers 5 changes in these files: `torch_dtype` becomes `dtype`; `rope_theta`",
        "and `rope_scaling` are folded into `rope_parameters` (`rope_theta`, `rope_type`, and for",
        "yarn/llama3 an explicit `original_max_position_embeddings`); Qwen3-MoE writes",
        "`num_local_experts` instead of `num_experts`; DeepSeek gains `head_dim`",
        "(= qk_rope_head_dim) and `qk_head_dim`; Qwen2-MoE gains `layer_types` and writes",
        "`sliding_window: 0` when the window is off. `tests/unit/model_config_tf5_test.cpp` and",
        "the `cli_inspect_tf5_*` tests require each to parse to the same model as its original.",
        "",
        "| name | class | original |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {c} | {w} (`{o}`) |" for n, c, o, w in entries]
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(entries)} configs to {rel(a.out)} (transformers {transformers.__version__})")


if __name__ == "__main__":
    main()
