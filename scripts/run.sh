#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone: set up, build, show what moeopt
# makes of Qwen3-30B-A3B, check this machine, then complete a prompt with the embedded default
# model (tiny-qwen3-moe-novels: a small Qwen3-MoE trained on seven public-domain novels,
# greedy, on the CPU) and measure what FP8 W8A8 weights cost it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build/bin/moeopt inspect qwen3-30b-a3b
build/bin/moeopt verify
build/bin/moeopt generate --prompt "It is a truth universally acknowledged" --max-tokens 40 --temperature 0
build/bin/moeopt bench quality --text tests/data/demo_heldout_excerpt.txt
