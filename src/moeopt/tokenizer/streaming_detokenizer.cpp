// Incremental detokenization (see streaming_detokenizer.h).
#include "moeopt/tokenizer/streaming_detokenizer.h"

#include <span>

#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tok, bool skip_special_tokens)
    : tok_(&tok), skip_special_(skip_special_tokens) {}

std::string StreamingDetokenizer::decode_window(size_t end) const {
  return tok_->decode(std::span<const int32_t>(ids_.data() + prefix_, end - prefix_), skip_special_);
}

static bool ends_with_replacement(const std::string& s) {
  return s.size() >= kReplacementChar.size() &&
         s.compare(s.size() - kReplacementChar.size(), kReplacementChar.size(), kReplacementChar) == 0;
}

std::string StreamingDetokenizer::feed(int32_t id) {
  ++fed_;
  ids_.push_back(id);
  if (!(skip_special_ && tok_->is_special(id))) in_byte_run_ = tok_->is_byte_fallback_token(id);
  if (in_byte_run_) return {};
  std::string text = decode_window(ids_.size());
  if (text.size() <= prefix_text_.size() || ends_with_replacement(text)) return {};
  // The window decode extends the held prefix text (same leading tokens, same decoders).
  std::string out = text.compare(0, prefix_text_.size(), prefix_text_) == 0 ? text.substr(prefix_text_.size()) : text;
  // Slide: the ids just emitted become the context of the next window.
  const size_t new_prefix = read_;
  read_ = ids_.size();
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(new_prefix));
  read_ -= new_prefix;
  prefix_ = 0;
  prefix_text_ = decode_window(read_);
  return out;
}

std::string StreamingDetokenizer::finish() {
  std::string text = decode_window(ids_.size());
  std::string out;
  if (text.size() > prefix_text_.size() && text.compare(0, prefix_text_.size(), prefix_text_) == 0)
    out = text.substr(prefix_text_.size());
  read_ = ids_.size();
  prefix_text_ = std::move(text);
  return out;
}

}  // namespace moeopt::tokenizer
