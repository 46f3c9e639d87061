// libFuzzer target for the HTTP request path: head parser + OpenAI body parsers (see
// http_request_fuzz.h). Build as for safetensors_header_fuzz.cpp, then:
//   mkdir -p fuzz/corpus-work/http && build-fuzz/fuzz/http_request_fuzz -jobs=1 \
//         -max_total_time=300 -dict=fuzz/http_request.dict fuzz/corpus-work/http fuzz/corpus/http_request
#include "http_request_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeopt::fuzz::run_http_request_input(data, size);
  return 0;
}
