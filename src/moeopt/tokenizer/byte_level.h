// The GPT-2 byte-to-character alphabet used by byte-level BPE (Qwen, DeepSeek, Llama-3).
//
// Every byte maps to one printable code point: bytes that are already printable Latin-1
// ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves, the other 68 map to U+0100 + n in byte
// order. The vocabulary is written in this alphabet, so encoding maps text bytes to these
// characters before BPE and decoding maps them back.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace moeopt::tokenizer {

class ByteLevelAlphabet {
 public:
  static const ByteLevelAlphabet& get();

  // UTF-8 of the character standing for byte b.
  const std::string& char_for_byte(uint8_t b) const { return byte_to_utf8_[b]; }
  // Byte for code point cp, or -1 when cp is not part of the alphabet.
  int byte_for_char(char32_t cp) const { return cp < char_to_byte_.size() ? char_to_byte_[cp] : -1; }

  // Maps every byte of `text` to its alphabet character.
  std::string encode(std::string_view text) const;

 private:
  ByteLevelAlphabet();
  std::array<std::string, 256> byte_to_utf8_;
  std::array<int16_t, 324> char_to_byte_;  // code points used are < 256 + 68
};

}  // namespace moeopt::tokenizer
