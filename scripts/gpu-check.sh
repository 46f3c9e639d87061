#!/usr/bin/env bash
# One reproducible GPU check, run ON the GPU machine from the repository root:
#   builds moeopt with CUDA (Release, sm_90a), runs the GPU tests (test_cuda: every CUDA op
#   against the CPU oracle, the GPU engine against the transformers goldens), one real-width
#   Qwen3-30B-A3B layer against transformers, and the benchmarks (the MoE layer against the
#   PyTorch peer; the engine's decode and prefill against HF transformers), and writes logs +
#   JSON under OUTDIR.
# Prerequisite (prepared here, carried with the call): .gpu-bundle from scripts/gpu-bundle.sh.
# Usage: scripts/gpu-check.sh [OUTDIR]       (default: $OUT, else ./gpu-out)
#   BENCH_ARGS="--ms 1,64 --sweep"  extra arguments for bench/moe_layer.py
#   SKIP_BENCH=1 / SKIP_TESTS=1     to run only part of it (SKIP_BENCH: the MoE layer bench)
#   SKIP_ENGINE=1                   skip the real-width check and the engine benchmarks
#   ENGINE_ARGS="--batch-sizes 1,64"  extra arguments for `moeopt bench decode`
#   PROFILE_ENGINE=1                per-kernel breakdown (ncu) of decode steps at batch 1 and
#                                   128 (context 1024) and of a 4,096-token prefill, on the
#                                   model cut to 4 layers (kernel_breakdown.log)
#   SANITIZER_TOOLS="racecheck"     run only some of the tools (default: memcheck racecheck)
#   SKIP_SANITIZER=1                skip compute-sanitizer (memcheck + racecheck on the small
#                                   MoE test cases; the issue-size shapes are too slow there)
#   PROFILE_MS="1,128,1024"         per-kernel times with Nsight Compute (ncu) at these M
#                                   (empty = no profile)
#   MOEOPT_COMMIT=<sha>             commit to record where the tree travels without .git
# Files written (at most 8, flat, so the device tool returns them all):
#   env.txt build.log test_cuda.log sanitizer.log moe_layer.log moe_layer.json ncu.log
#   real_width.json engine.log decode.json prefill.json hf_decode.json  (use SKIP_* to stay
#   within the number of files one call returns)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${1:-${OUT:-$root/gpu-out}}
mkdir -p "$out"
build=${BUILD_DIR:-$root/build-cuda}
status=0

if [ -f .gpu-bundle/env.sh ]; then
  # shellcheck disable=SC1091
  source .gpu-bundle/env.sh
else
  echo "gpu-check: .gpu-bundle/env.sh missing (run scripts/gpu-bundle.sh here and carry it)" >&2
fi
{
  date -u +%FT%TZ
  echo "commit ${MOEOPT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
  nvcc --version | tail -2
  python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

echo "== build" | tee "$out/build.log"
if ! { cmake -G Ninja -S "$root" -B "$build" -DMOEOPT_CUDA=ON -DMOEOPT_BENCH=ON \
         -DCMAKE_BUILD_TYPE=Release &&
       ninja -C "$build" -j"$(nproc)" test_cuda moeopt_moe_capi moeopt_cli; } >>"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  echo "gpu-check: BUILD FAILED (see build.log)"
  exit 1
fi
tail -3 "$out/build.log"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  echo "== test_cuda"
  "$build/tests/test_cuda" >"$out/test_cuda.log" 2>&1
  rc=$?
  grep -E '^\[( +OK|  FAILED|  PASSED|  SKIPPED) ' "$out/test_cuda.log" | tail -30
  grep -B2 -A8 'Failure' "$out/test_cuda.log" | head -60
  [ $rc -eq 0 ] || { echo "gpu-check: TESTS FAILED (rc $rc)"; status=1; }
fi

if [ "${SKIP_SANITIZER:-0}" != 1 ]; then
  # Small cases only: every kernel and every code path (both permutation variants, all GEMM
  # tiles, padding, invalid ids, the ops-level and the fused layer), not the big shapes.
  small='CudaMoeRouter.*:CudaMoeExperts.SmallOddShapesAllTiles:CudaMoeExperts.BackToBack*'
  small+=':CudaMoeOps.*:Cases/CudaMoeOpsRoute.*:Cases/CudaMoeOpsPermute.*'
  small+=':Cases/CudaMoeOpsForward.*/moe_*:Cases/CudaMoeOpsForward.*/gpu_moe_odd*'
  small+=':Cases/CudaMoeOpsForward.*/gpu_moe_k32*:Cases/CudaMoeOpsForward.*/gpu_moe_k2*'
  race='CudaMoeOps.*:Cases/CudaMoeOpsPermute.*:Cases/CudaMoeOpsForward.*/gpu_moe_odd*'
  race+=':Cases/CudaMoeOpsForward.*/gpu_moe_k2*:CudaMoeRouter.TiesGoToLowestExpertId'
  race+=':CudaMoeExperts.BackToBack*'
  # The engine's other op families: the op-case table of every dense op, attention's table,
  # edge and KV-write cases, and sampling; racecheck leaves out linear, whose only hazards
  # are inside cuBLAS's own split-K kernel (reported, not ours).
  small+=':Cases/CudaDense*:*CudaAttnTable*:*CudaAttnEdge*:*CudaAttnKvWrite*:*CudaSampling*'
  # Racecheck slows the sort-based sampling cases at V = 151,936 past any budget: only the
  # small sampling cases run under it (memcheck runs them all).
  race+=':*CudaAttnTable*:*CudaAttnEdge*:CudaSampling.GreedyFastPathTies'
  race+=':Cases/CudaDense*Norm*'
  race+=':Cases/CudaDense*Rope*:Cases/CudaDense*Embedding*'
  : >"$out/sanitizer.log"
  for tool in ${SANITIZER_TOOLS:-memcheck racecheck}; do
    filter=$small
    [ $tool = racecheck ] && filter=$race
    echo "== compute-sanitizer --tool $tool" | tee -a "$out/sanitizer.log"
    timeout 240 compute-sanitizer --tool $tool --error-exitcode 3 \
        "$build/tests/test_cuda" --gtest_filter="$filter" >>"$out/sanitizer.log" 2>&1
    rc=$?
    grep -E '^(========= (ERROR SUMMARY|RACECHECK SUMMARY)|\[  PASSED|\[  FAILED)' \
        "$out/sanitizer.log" | tail -4
    [ $rc -eq 0 ] || { echo "gpu-check: compute-sanitizer $tool FAILED (rc $rc)"; status=1; }
  done
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  echo "== bench/moe_layer.py"
  # shellcheck disable=SC2086
  PYTHONUNBUFFERED=1 python3 bench/moe_layer.py --lib "$build/bench/libmoeopt_moe_capi.so" \
      --json "$out/moe_layer.json" ${BENCH_ARGS:-} 2>&1 | tee "$out/moe_layer.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpu-check: BENCH FAILED"; status=1; }
fi
if [ "${SKIP_ENGINE:-0}" != 1 ]; then
  moeopt="$build/bin/moeopt"
  echo "== real-width Qwen3-30B-A3B layer against transformers"
  python3 tests/reference/compare_real_width.py --moeopt "$moeopt" --work "${TMPDIR:-/tmp}/moeopt-rw" \
      --layers 1 --json "$out/real_width.json" 2>&1 | grep -v 'Loading weights' | tail -5
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpu-check: REAL-WIDTH CHECK FAILED"; status=1; }
  echo "== moeopt bench decode / prefill (Qwen3-30B-A3B, random weights on the GPU)" | tee "$out/engine.log"
  # shellcheck disable=SC2086
  "$moeopt" bench decode --device cuda --random-weights --model qwen3-30b-a3b \
      --json "$out/decode.json" ${ENGINE_ARGS:-} 2>&1 | grep -v 'placing weights' | tee -a "$out/engine.log"
  "$moeopt" bench prefill --device cuda --random-weights --model qwen3-30b-a3b \
      --json "$out/prefill.json" 2>&1 | grep -v 'placing weights' | tee -a "$out/engine.log"
  echo "== HF transformers peer" | tee -a "$out/engine.log"
  python3 bench/peers/hf_decode.py --json "$out/hf_decode.json" ${HF_ARGS:-} 2>&1 | tee -a "$out/engine.log"
fi
if [ "${PROFILE_ENGINE:-0}" = 1 ]; then
  moeopt="$build/bin/moeopt"
  M4="--device cuda --random-weights --model qwen3-30b-a3b --layers 4"
  : >"$out/kernel_breakdown.log"
  for b in 1 128; do
    echo "== decode, batch $b, input 1024 (4 layers): last 3 steps" | tee -a "$out/kernel_breakdown.log"
    timeout 200 python3 bench/kernel_breakdown.py --steps last:3 -- "$moeopt" bench decode $M4 \
        --input-lens 1024 --batch-sizes $b --output-len 8 2>&1 | tee -a "$out/kernel_breakdown.log"
  done
  echo "== prefill 4096 (4 layers): last step" | tee -a "$out/kernel_breakdown.log"
  timeout 200 python3 bench/kernel_breakdown.py --steps last:1 -- "$moeopt" bench prefill $M4 \
      --prompt-lens 4096 --repeats 1 2>&1 | tee -a "$out/kernel_breakdown.log"
fi
if [ -n "${PROFILE_MS:-}" ]; then
  echo "== ncu per-kernel times at M = $PROFILE_MS (uniform routing)"
  : >"$out/ncu.log"
  for m in ${PROFILE_MS//,/ }; do
    echo "---- M = $m" >>"$out/ncu.log"
    timeout 180 ncu --clock-control none -k regex:moe_ --launch-count 12 \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,sm__throughput.avg.pct_of_peak_sustained_elapsed \
        python3 bench/moe_layer.py --lib "$build/bench/libmoeopt_moe_capi.so" --ms "$m" \
        --routing uniform >>"$out/ncu.log" 2>&1 || echo "(ncu rc $?)" >>"$out/ncu.log"
  done
  grep -E '^  moe_|gpu__time_duration|dram__bytes_read' "$out/ncu.log" | head -80
fi
exit $status
