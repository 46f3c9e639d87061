#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone: set up, build, show what moeopt
# makes of Qwen3-30B-A3B, check this machine, then generate with the embedded default model
# (tiny-qwen3-moe: real Qwen3 tokenizer, random weights, materialised on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build/bin/moeopt inspect qwen3-30b-a3b
build/bin/moeopt verify
build/bin/moeopt generate --prompt-ids 9707,11,1879,0 --max-tokens 16 --temperature 0
