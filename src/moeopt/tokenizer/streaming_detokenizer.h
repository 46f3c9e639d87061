// StreamingDetokenizer: incremental decoding of a growing id sequence, for streamed
// generation output.
//
// Each feed(id) returns the text that became final with that id. The pieces never end in a
// broken UTF-8 sequence, and their concatenation followed by finish() equals
// Tokenizer::decode of all ids fed.
//
// How: the text of a window of ids is decoded twice — without and with the newest ids — and
// the difference is emitted. The window always starts at a token that was already decoded
// in context, so decoders that look at the first token (SentencePiece's leading-space
// Strip, Metaspace) treat it the same way in both decodes. Text ending in U+FFFD may still
// be an incomplete UTF-8 sequence and is held back until more ids arrive (or finish()).
// With a ByteFallback decoder a run of <0xXX> tokens is decoded as one unit (valid UTF-8 or
// one U+FFFD per byte), so nothing is emitted while the newest token is a byte token (a
// special token skipped by skip_special_tokens does not end such a run, so it does not count).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moeopt/tokenizer/tokenizer.h"

namespace moeopt::tokenizer {

class StreamingDetokenizer {
 public:
  // `tok` must outlive this object.
  StreamingDetokenizer(const Tokenizer& tok, bool skip_special_tokens);

  // Adds one id; returns newly completed text (possibly empty).
  std::string feed(int32_t id);
  // Returns whatever text is still held back (call once the sequence is complete).
  std::string finish();

  // Number of ids fed so far.
  size_t size() const { return fed_; }

 private:
  std::string decode_window(size_t end) const;

  const Tokenizer* tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;  // ids from the window start on (earlier ones are dropped)
  size_t prefix_ = 0;         // window start within ids_ (always 0 after trimming)
  size_t read_ = 0;           // ids_[0, read_) have been emitted
  std::string prefix_text_;   // decode of ids_[prefix_, read_)
  size_t fed_ = 0;
  bool in_byte_run_ = false;  // the newest token that produces text is a <0xXX> token
};

}  // namespace moeopt::tokenizer
