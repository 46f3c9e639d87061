// Pre-tokenizers of tokenizer.json ("pre_tokenizer" field): split normalized text into the
// words that BPE encodes one by one.
//
// Supported types: Split (String or Regex pattern, every split behaviour, invert),
// ByteLevel (add_prefix_space, use_regex with the GPT-2 pattern), Digits, Metaspace
// (replacement, prepend_scheme, split), Whitespace, WhitespaceSplit, Sequence.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/core/status.h"

namespace moeopt::tokenizer {

// One piece of text during pre-tokenization.
struct Piece {
  std::string text;
  // True for the piece that starts at offset 0 of the original input (Metaspace's
  // prepend_scheme "first" only prepends there).
  bool at_origin = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their sub-pieces; empty pieces are dropped.
  virtual Status pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// Builds the pre-tokenizer described by `j`; null gives nullptr (the whole piece is one word).
Result<std::unique_ptr<PreTokenizer>> parse_pre_tokenizer(const nlohmann::json& j, const std::string& where);

}  // namespace moeopt::tokenizer
