// GPT-2 byte alphabet tables (see byte_level.h).
#include "moeopt/tokenizer/byte_level.h"

#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {

ByteLevelAlphabet::ByteLevelAlphabet() {
  char_to_byte_.fill(-1);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const char32_t cp = printable ? char32_t(b) : char32_t(256 + extra++);
    append_utf8(byte_to_utf8_[b], cp);
    char_to_byte_[cp] = static_cast<int16_t>(b);
  }
}

const ByteLevelAlphabet& ByteLevelAlphabet::get() {
  static const ByteLevelAlphabet table;
  return table;
}

std::string ByteLevelAlphabet::encode(std::string_view text) const {
  std::string out;
  out.reserve(text.size() * 2);
  for (unsigned char c : text) out += byte_to_utf8_[c];
  return out;
}

}  // namespace moeopt::tokenizer
