// libFuzzer target for chat-template rendering (see chat_template_fuzz.h). Run from the
// source root (it loads models/tokenizers/qwen3); build as for safetensors_header_fuzz.cpp:
//   mkdir -p fuzz/corpus-work/chat && build-fuzz/fuzz/chat_template_fuzz -jobs=1 \
//         -max_total_time=300 fuzz/corpus-work/chat fuzz/corpus/chat_template
#include <cstdlib>

#include "chat_template_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const moeopt::tokenizer::ChatTemplate* tmpl = [] {
    auto t = moeopt::tokenizer::ChatTemplate::load("models/tokenizers/qwen3");
    if (!t.ok()) std::abort();
    return new moeopt::tokenizer::ChatTemplate(std::move(t).value());
  }();
  moeopt::fuzz::run_chat_template_input(*tmpl, data, size);
  return 0;
}
