#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang, AddressSanitizer and UBSan into
# build-fuzz/, replays every corpus in fuzz/corpus input by input, then fuzzes each target
# for a bounded time. Any crash, leak, UB report, assertion, timeout or out-of-memory fails
# the run (non-zero exit) and leaves the offending input under build-fuzz/artifacts/.
#
#   scripts/fuzz.sh                   CI: build, replay, fuzz each target MOEOPT_FUZZ_TIME s (15)
#   scripts/fuzz.sh --time 60         longer bounded run
#   scripts/fuzz.sh --replay-only     build and replay the corpora only
#   scripts/fuzz.sh --campaign 1000000 [target...]
#                                     run each target until >= N executions, one worker, into
#                                     the persistent fuzz/corpus-work/<target> (git-ignored),
#                                     and print the numbers docs/architecture.md records
#
# New inputs of a bounded run go to a temporary directory, never into fuzz/corpus (the repo
# is not modified). Clang: MOEOPT_FUZZ_CXX, else clang++ on PATH, else the newest
# clang++-NN; scripts/setup.sh installs clang and its runtimes (libclang-rt-dev).
# Builds with MOEOPT_JOBS parallel jobs (default: all cores); fuzzing is one process, one core.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(safetensors_header safetensors_index http_request json_body chat_template tokenizer)
fuzz_time=${MOEOPT_FUZZ_TIME:-15}
campaign=0
replay_only=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) fuzz_time=$2; shift 2 ;;
    --campaign) campaign=$2; shift 2 ;;
    --replay-only) replay_only=1; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "fuzz: no target $t (have: ${all_targets[*]})" >&2; exit 2; }
done

# --- compiler: clang with libFuzzer and the sanitizer runtimes ------------------------------
cxx=${MOEOPT_FUZZ_CXX:-}
if [ -z "$cxx" ]; then
  if command -v clang++ >/dev/null; then cxx=clang++
  else cxx=$(compgen -c clang++- | grep -E '^clang\+\+-[0-9]+$' | sort -t- -k2 -n | tail -1 || true)
  fi
fi
[ -n "$cxx" ] && command -v "$cxx" >/dev/null ||
  { echo "fuzz: no clang++ found (scripts/setup.sh installs clang)" >&2; exit 1; }
cc=${cxx/clang++/clang}
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$probe/p.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>"$probe/err"; then
  cat "$probe/err" >&2
  echo "fuzz: $cxx cannot link -fsanitize=fuzzer,address,undefined; install its runtimes" \
       "(Debian 12+: libclang-rt-dev, older: libclang-common-<ver>-dev)" >&2
  exit 1
fi
echo "fuzz: $("$cxx" --version | head -1)"

# --- build ---------------------------------------------------------------------------------
build=${MOEOPT_FUZZ_BUILD:-build-fuzz}
cxx=$(command -v "$cxx"); cc=$(command -v "$cc")
# CMake drops the whole cache (and our -D options) when the compiler changes: start afresh.
if [ -f "$build/CMakeCache.txt" ] &&
   ! grep -qx "CMAKE_CXX_COMPILER:[A-Z]*=$cxx" "$build/CMakeCache.txt"; then
  rm -rf "$build"
fi
cmake -G Ninja -S . -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DMOEOPT_CUDA=OFF -DMOEOPT_TESTS=OFF -DMOEOPT_BENCH=OFF -DMOEOPT_FUZZ=ON >/dev/null
cmake --build "$build" --target fuzz_targets -j "${MOEOPT_JOBS:-$(nproc)}"

# Sanitizer reports are fatal and symbolised; libFuzzer's own leak check stays on.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
artifacts=$PWD/$build/artifacts
mkdir -p "$artifacts"
logs=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$probe" "$logs" "$work"' EXIT
common=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

fail() {  # target, log, what
  echo "fuzz: FAILED: $1: $3; last lines of the log:" >&2
  tail -n 60 "$2" >&2
  cp "$2" "$artifacts/$1.log"
  echo "fuzz: log in $artifacts/$1.log; inputs in $artifacts/ (reproduce:" \
       "$build/fuzz/$1_fuzz <input>, from the source root)" >&2
  exit 1
}
# A sanitizer line in a log that libFuzzer did not turn into a failure is still a finding.
check_log() {  # target, log
  if grep -qE 'runtime error:|ERROR: (Address|Leak|Undefined)Sanitizer|ERROR: libFuzzer' "$2"; then
    fail "$1" "$2" "sanitizer report"
  fi
}
last() { grep -E '^#[0-9]+' "$2" | tail -1 | grep -oE "$1: [0-9]+" | cut -d' ' -f2; }
stat() { grep -E "^stat::$1:" "$2" | awk '{print $2}'; }

# --- replay: every corpus file, one by one --------------------------------------------------
for t in "${targets[@]}"; do
  mapfile -t files < <(find "fuzz/corpus/$t" -type f | sort)
  log=$logs/$t.replay
  if ! "$build/fuzz/${t}_fuzz" "${common[@]}" "${files[@]}" >"$log" 2>&1; then
    fail "$t" "$log" "corpus replay crashed"
  fi
  check_log "$t" "$log"
  echo "fuzz: replay $t: ${#files[@]} inputs ok"
done
[ "$replay_only" = 1 ] && { echo "fuzz: replay ok"; exit 0; }

# --- fuzz ----------------------------------------------------------------------------------
rows=()
for t in "${targets[@]}"; do
  dict=(); [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  if [ "$campaign" -gt 0 ]; then
    corpus=fuzz/corpus-work/$t; mkdir -p "$corpus"
    limit=(-runs="$campaign")
  else
    corpus=$work/$t; mkdir -p "$corpus"
    limit=(-max_total_time="$fuzz_time")
  fi
  log=$logs/$t.fuzz
  echo "fuzz: $t (${limit[*]})"
  start=$(date +%s)
  if ! "$build/fuzz/${t}_fuzz" "${common[@]}" "${limit[@]}" "${dict[@]}" \
       -artifact_prefix="$artifacts/$t-" "$corpus" "fuzz/corpus/$t" >"$log" 2>&1; then
    fail "$t" "$log" "fuzzing found a crash, leak, timeout or out-of-memory"
  fi
  check_log "$t" "$log"
  secs=$(( $(date +%s) - start ))
  [ "$campaign" -gt 0 ] && cp "$log" "fuzz/fuzz-$t.log"
  n=$(find "$corpus" -type f | wc -l); kb=$(( ($(find "$corpus" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}') + 1023) / 1024 ))
  rows+=("| $t | $(stat number_of_executed_units "$log") | $(stat average_exec_per_sec "$log") |\
 $(last cov "$log") / $(last ft "$log") | $n ($kb KiB) | ${secs} s | $(stat peak_rss_mb "$log") MB |")
done
echo
echo "| target | executions | exec/s | coverage / features | corpus | time | peak RSS |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo "fuzz: ok, no findings"
