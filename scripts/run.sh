#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone: set up, build, then show what
# moeopt makes of Qwen3-30B-A3B and whether this machine is ready.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build/bin/moeopt inspect qwen3-30b-a3b
build/bin/moeopt verify
