// The body of the tokenizer fuzz target: encode any bytes with the Qwen3 tokenizer, then
// decode the ids. Shared with the CI corpus replay. Invariants: every id is inside the
// vocabulary; ASCII text without special-token markers decodes back to itself (ASCII is
// unchanged by the NFC normalizer); nothing crashes on invalid UTF-8.
#pragma once

#include <cstdint>
#include <string>

#include "moeopt/tokenizer/tokenizer.h"

namespace moeopt::fuzz {

inline int run_tokenizer_input(const tokenizer::Tokenizer& tok, const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto ids = tok.encode(text, /*add_special_tokens=*/false);
  if (!ids.ok()) {
    if (ids.status().message().empty()) __builtin_trap();
    return 0;
  }
  for (int32_t id : *ids)
    if (id < 0 || size_t(id) >= tok.vocab_size()) __builtin_trap();
  std::string back = tok.decode(*ids, /*skip_special_tokens=*/false);
  bool ascii = true;
  for (unsigned char c : text) ascii = ascii && c < 0x80;
  if (ascii && text.find("<|") == std::string::npos && back != text) __builtin_trap();
  return 1;
}

}  // namespace moeopt::fuzz
