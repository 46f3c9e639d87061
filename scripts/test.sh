#!/usr/bin/env bash
# Sets up, builds (CUDA sources compiled where nvcc exists) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "${MOEOPT_JOBS:-$(nproc)}"
