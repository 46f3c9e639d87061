// OutputAssembler: one request's generated tokens -> the text and logprobs the client sees.
//
// Runs in the request's HTTP handler thread (not the engine thread). Per token:
//   1. the streaming detokenizer turns it into a text piece (skip_special_tokens as asked);
//   2. the StopMatcher releases the text that cannot be part of a stop string;
//   3. when logprobs are wanted, the token, its logprob and alternatives are recorded.
// A final EOS / stop_token_ids token (the engine's "stop") is counted but its text is not
// shown, as OpenAI-compatible servers do. When a stop string matches, tokens after it are
// dropped and stopped_by_string() turns true: the caller cancels the engine request.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "moeopt/server/engine_service.h"
#include "moeopt/server/stop_matcher.h"
#include "moeopt/tokenizer/streaming_detokenizer.h"
#include "moeopt/tokenizer/tokenizer.h"

namespace moeopt::server {

struct TokenLogprobEntry {
  int32_t token = -1;
  float logprob = 0;
  std::vector<TokenLogprob> top;
  size_t text_offset = 0;  // where this token's text starts in the output
};

struct OutputDelta {
  std::string text;
  std::vector<TokenLogprobEntry> logprobs;
  bool finished = false;
  std::string finish_reason;  // "stop" / "length" when finished
};

class OutputAssembler {
 public:
  OutputAssembler(const tokenizer::Tokenizer& tok, std::vector<std::string> stops,
                  std::unordered_set<int32_t> hidden_final_ids, bool skip_special_tokens, bool want_logprobs);

  OutputDelta consume(const StreamEvent& ev);

  bool done() const { return done_; }
  bool stopped_by_string() const { return stopper_.stopped(); }
  int32_t completion_tokens() const { return tokens_; }
  const std::string& text() const { return text_; }

 private:
  void emit(OutputDelta& d, const std::string& piece);

  tokenizer::StreamingDetokenizer detok_;
  StopMatcher stopper_;
  std::unordered_set<int32_t> hidden_;
  bool want_logprobs_;
  bool done_ = false;
  int32_t tokens_ = 0;
  std::string text_;  // everything emitted so far
};

}  // namespace moeopt::server
