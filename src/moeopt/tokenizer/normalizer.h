// Normalizers of tokenizer.json ("normalizer" field): text rewrites applied to each piece of
// the input between added tokens, before pre-tokenization.
//
// Supported types: NFC, NFD, NFKC, NFKD (utf8proc), Lowercase, Strip, Prepend, Replace
// (String or Regex pattern), Sequence. Only the text matters here: moeopt does not track
// offsets back to the original string.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "moeopt/core/status.h"
#include "moeopt/tokenizer/regex.h"

namespace moeopt::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place.
  virtual Status normalize(std::string& text) const = 0;
};

// Builds the normalizer described by `j`; null JSON gives nullptr (no normalization). An
// unknown "type" is an error naming it.
Result<std::unique_ptr<Normalizer>> parse_normalizer(const nlohmann::json& j, const std::string& where);

// Parses a {"String": text} or {"Regex": pattern} object (Replace and Split use it).
Result<Regex> parse_pattern(const nlohmann::json& j, const std::string& where);

}  // namespace moeopt::tokenizer
