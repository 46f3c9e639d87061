#!/usr/bin/env bash
# A phased GPU job, run ON the GPU machine from the repository root after `source`-able
# .gpu-bundle/env.sh is there (scripts/gpu-bundle.sh, carried with the call). One Release
# build (test_cuda, the C ABI for the Python benches, the CLI), then the phases named in
# PHASES, in order, each writing under $OUT (default /tmp/out):
#   test     test_cuda --gtest_filter=$FILTER (default all), timeout $TTIME s (default 300)
#   lin      bench/linear_small_m.py at $LINMS (default 1,2,4,8,16): our linear vs torch F.linear
#   decode   bench decode per ';'-separated $VARIANTS (e.g. '--fp8-weights off;--fp8-weights on')
#            at $BATCHES (default 1,8,64,256), $LENS (default 1024), $OUTLEN (default 24)
#   prefill  bench prefill per $PVARIANTS at $PLENS (default 1024,4096)
#   moe      bench moe at $MS (default 1,8,64,256,512) with $MOEARGS
#   brk      kernel_breakdown.py of decode steps at the batches $BRKB (default 1), 4 layers
# on Qwen3-30B-A3B with --random-weights. Example:
#   PHASES=test,decode FILTER='CudaFp8*' VARIANTS='--fp8-weights off;--fp8-weights on' \
#     MOEOPT_COMMIT=abc1234 bash scripts/gpu-job.sh
# (scripts/gpu-check.sh is the fixed full check; this one is for iterating on one change.)
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .gpu-bundle/env.sh
out=${OUT:-/tmp/out}; mkdir -p "$out"
b=${BUILD_DIR:-/tmp/b}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "commit ${MOEOPT_COMMIT:-?}"; } > "$out/env.txt"
t0=$(date +%s)
if ! { cmake -G Ninja -S . -B "$b" -DMOEOPT_CUDA=ON -DMOEOPT_BENCH=ON -DCMAKE_BUILD_TYPE=Release >/dev/null &&
       ninja -C "$b" -j"$(nproc)" test_cuda moeopt_moe_capi moeopt_cli > "$out/build.log" 2>&1; }; then
  grep -E "error|Error" -A3 "$out/build.log" | head -60; echo "BUILD FAILED"; exit 1
fi
echo "build $(( $(date +%s) - t0 )) s"
M="--device cuda --random-weights --model qwen3-30b-a3b"
for ph in ${PHASES//,/ }; do
  t1=$(date +%s)
  case $ph in
  test)
    timeout "${TTIME:-300}" "$b/tests/test_cuda" --gtest_filter="${FILTER:-*}" > "$out/test_cuda.log" 2>&1
    echo "test rc $?"
    grep -E '^\[  (PASSED|FAILED)' "$out/test_cuda.log" | head -30
    grep -B3 -A12 'Failure' "$out/test_cuda.log" | head -80 ;;
  lin)
    python3 bench/linear_small_m.py --lib "$b/bench/libmoeopt_moe_capi.so" --ms "${LINMS:-1,2,4,8,16}" \
      --json "$out/linear_small_m.json" 2>&1 | tee "$out/linear_small_m.log" ;;
  decode)
    i=0; IFS=';' read -ra vs <<< "${VARIANTS:-}"; [ ${#vs[@]} -eq 0 ] && vs=("")
    for v in "${vs[@]}"; do
      # shellcheck disable=SC2086
      "$b/bin/moeopt" bench decode $M --batch-sizes "${BATCHES:-1,8,64,256}" --input-lens "${LENS:-1024}" \
        --output-len "${OUTLEN:-24}" $v --json "$out/decode_$i.json" > "$out/decode_$i.log" 2>&1
      echo "== decode [$v] rc $?"; grep -v '^\s*$' "$out/decode_$i.log" | tail -8; i=$((i + 1))
    done ;;
  prefill)
    i=0; IFS=';' read -ra vs <<< "${PVARIANTS:-}"; [ ${#vs[@]} -eq 0 ] && vs=("")
    for v in "${vs[@]}"; do
      # shellcheck disable=SC2086
      "$b/bin/moeopt" bench prefill $M --prompt-lens "${PLENS:-1024,4096}" --repeats 3 $v \
        --json "$out/prefill_$i.json" > "$out/prefill_$i.log" 2>&1
      echo "== prefill [$v] rc $?"; tail -5 "$out/prefill_$i.log"; i=$((i + 1))
    done ;;
  moe)
    # shellcheck disable=SC2086
    "$b/bin/moeopt" bench moe --ms "${MS:-1,8,64,256,512}" --routing uniform ${MOEARGS:-} > "$out/bench_moe.log" 2>&1
    cat "$out/bench_moe.log" ;;
  brk)
    for bb in ${BRKB:-1}; do
      echo "== decode batch $bb ctx 1024, 4 layers"
      # shellcheck disable=SC2086
      timeout 200 python3 bench/kernel_breakdown.py --steps last:3 -- "$b/bin/moeopt" bench decode $M --layers 4 \
        --input-lens 1024 --batch-sizes "$bb" --output-len 8 ${BRKARGS:-} 2>&1 | tail -30
    done > "$out/breakdown.log"; cat "$out/breakdown.log" ;;
  *) echo "gpu-job: unknown phase '$ph'"; exit 2 ;;
  esac
  echo "[$ph $(( $(date +%s) - t1 )) s]"
done
