// libFuzzer target for the safetensors header parser (untrusted input: every downloaded
// checkpoint). scripts/fuzz.sh builds, replays and fuzzes every target (--campaign N for a
// long run); by hand (clang only):
//   cmake -G Ninja -S . -B build-fuzz -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
//         -DMOEOPT_CUDA=OFF -DMOEOPT_BENCH=OFF -DMOEOPT_TESTS=OFF -DMOEOPT_FUZZ=ON
//   ninja -C build-fuzz safetensors_header_fuzz
//   mkdir -p fuzz/corpus-work/header && build-fuzz/fuzz/safetensors_header_fuzz -jobs=1 \
//         -dict=fuzz/safetensors_header.dict -max_total_time=600 \
//         fuzz/corpus-work/header fuzz/corpus/safetensors_header
// New inputs land in fuzz/corpus-work (git-ignored); keep only a few small, distinct ones
// in fuzz/corpus/safetensors_header (named found-<hash>), which CI replays
// (model_safetensors_test) and tests/python cross-checks against the reference reader.
#include "safetensors_header_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeopt::fuzz::run_safetensors_header_input(data, size);
  return 0;
}
