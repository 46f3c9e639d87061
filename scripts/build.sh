#!/usr/bin/env bash
# Configures and builds moeopt into build/ (Ninja, RelWithDebInfo). CUDA is compiled where
# nvcc exists (it is found on PATH or in /usr/local/cuda); MOEOPT_CUDA=OFF forces CPU only.
# Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
args=(-G Ninja -S . -B build)
[ -n "${MOEOPT_CUDA:-}" ] && args+=(-DMOEOPT_CUDA="$MOEOPT_CUDA")
cmake "${args[@]}" "$@" >/dev/null
cmake --build build -j "${MOEOPT_JOBS:-$(nproc)}"
