// libFuzzer target for tokenizer encode/decode (see tokenizer_fuzz.h). Run from the source
// root (it loads models/tokenizers/qwen3); build as for safetensors_header_fuzz.cpp:
//   mkdir -p fuzz/corpus-work/tok && build-fuzz/fuzz/tokenizer_fuzz -jobs=1 \
//         -max_total_time=300 fuzz/corpus-work/tok fuzz/corpus/tokenizer
#include <cstdlib>

#include "tokenizer_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const moeopt::tokenizer::Tokenizer* tok = [] {
    auto t = moeopt::tokenizer::Tokenizer::load("models/tokenizers/qwen3");
    if (!t.ok()) std::abort();
    return new moeopt::tokenizer::Tokenizer(std::move(t).value());
  }();
  moeopt::fuzz::run_tokenizer_input(*tok, data, size);
  return 0;
}
