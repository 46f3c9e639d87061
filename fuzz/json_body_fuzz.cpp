// libFuzzer target for bounded JSON parsing (see json_body_fuzz.h). Build as for
// safetensors_header_fuzz.cpp, then:
//   mkdir -p fuzz/corpus-work/json && build-fuzz/fuzz/json_body_fuzz -jobs=1 \
//         -max_total_time=300 fuzz/corpus-work/json fuzz/corpus/json_body
#include "json_body_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeopt::fuzz::run_json_body_input(data, size);
  return 0;
}
