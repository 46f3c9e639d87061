#!/usr/bin/env bash
# Sets up, builds (CUDA sources compiled where nvcc exists) and runs every test, then the
# sanitizer/fuzz step (scripts/fuzz.sh: clang ASan+UBSan build of fuzz/, every corpus
# replayed, each target fuzzed MOEOPT_FUZZ_TIME seconds). MOEOPT_SKIP_FUZZ=1 skips that step
# for local runs and says so; CI never sets it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "${MOEOPT_JOBS:-$(nproc)}"
if [ "${MOEOPT_SKIP_FUZZ:-0}" != 0 ]; then
  echo "test: SKIPPED the sanitizer/fuzz step (MOEOPT_SKIP_FUZZ=$MOEOPT_SKIP_FUZZ); CI runs it"
else
  scripts/fuzz.sh
fi
