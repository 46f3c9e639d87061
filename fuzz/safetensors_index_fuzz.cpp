// libFuzzer target for the sharded-checkpoint index parser (parse_safetensors_index). Build
// as for safetensors_header_fuzz.cpp, then:
//   mkdir -p fuzz/corpus-work/index && build-fuzz/fuzz/safetensors_index_fuzz -jobs=1 \
//         -max_total_time=300 fuzz/corpus-work/index fuzz/corpus/safetensors_index
#include "safetensors_index_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeopt::fuzz::run_safetensors_index_input(data, size);
  return 0;
}
