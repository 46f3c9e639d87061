// Unicode regular expressions for tokenizer.json patterns, on PCRE2 (8-bit, UTF + UCP, JIT).
//
// Hugging Face `tokenizers` compiles its Split/Replace patterns with Oniguruma. PCRE2 reads
// the same syntax, but a few escapes mean different things; translate_oniguruma() rewrites
// them (each rewrite is documented there) so both engines match the same strings.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt::tokenizer {

// Rewrites an Oniguruma pattern into an equivalent PCRE2 pattern.
Result<std::string> translate_oniguruma(std::string_view pattern);

class Regex {
 public:
  // Compiles an Oniguruma-syntax pattern (translated first). `where` names the component for
  // error messages.
  static Result<Regex> compile(std::string_view oniguruma_pattern, const std::string& where);
  // Compiles a literal string (for {"String": ...} patterns).
  static Result<Regex> literal(std::string_view text, const std::string& where);

  // Appends [start, end) byte ranges of the non-overlapping matches in `text`, left to
  // right. `text` must be valid UTF-8 (the tokenizer validates input first).
  Status find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pattern() const { return pattern_; }

  struct Code;  // owns the compiled pcre2_code (defined in regex.cpp)

 private:
  std::shared_ptr<Code> code_;
  std::string pattern_;  // the PCRE2 pattern actually compiled
};

}  // namespace moeopt::tokenizer
