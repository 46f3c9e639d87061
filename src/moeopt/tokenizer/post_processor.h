// Post-processors of tokenizer.json ("post_processor" field): what encode adds around the
// ids when add_special_tokens is set.
//
// Supported types: TemplateProcessing (the "single" template: special tokens such as BOS/EOS
// around sequence A), BertProcessing / RobertaProcessing ([cls] A [sep]), ByteLevel (only
// adjusts offsets in Hugging Face, so it adds nothing here) and Sequence. moeopt encodes one
// sequence at a time, so "pair" templates are not used.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/core/status.h"

namespace moeopt::tokenizer {

class PostProcessor {
 public:
  // Null JSON: nothing is added.
  static Result<PostProcessor> parse(const nlohmann::json& j, const std::string& where);
  // Wraps `ids` in place with the template's special tokens.
  void apply(std::vector<int32_t>& ids) const;
  bool adds_tokens() const { return !prefix_.empty() || !suffix_.empty(); }

 private:
  Status parse_into(const nlohmann::json& j, const std::string& where);
  std::vector<int32_t> prefix_, suffix_;
  bool seen_sequence_ = false;
};

}  // namespace moeopt::tokenizer
