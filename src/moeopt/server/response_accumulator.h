// ResponseAccumulator: one generation request's engine events -> the pieces of its OpenAI
// choices (n of them, each with its own text, stop strings, tool calls, logprobs and finish
// reason). Streamed (SSE) and whole (JSON) answers are two sinks of the same deltas
// (openai_generate.cpp), so a stream's deltas, gathered per choice index, concatenate to the
// non-streamed answer.
//
// Per event from the request's RequestStream (each event is about one choice):
//   * an engine error is a 500; an abort the server did not ask for (shutdown) a 503; either
//     is the answer for the whole request;
//   * the choice's OutputAssembler turns tokens into text and logprobs and applies stop
//     strings; a stop string that matched before the engine finished cancels that choice's
//     sequence (as completed);
//   * with tool parsing (chat with tools), the ToolCallParser takes <tool_call> blocks out of
//     the text, and the finish reason is "tool_calls" when there were calls (counted in the
//     metrics here, as the EngineService was told the caller counts it);
//   * usage: the prompt counts once, completion tokens are the sum over the choices, cached
//     prompt tokens follow the engine's count.
//
// Stop strings are matched here, on the handler thread, and cancelled back into the engine,
// so `moeopt generate` and `bench` cannot use them; moving them into the engine's output
// stage is a separate change.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moeopt/server/engine_service.h"
#include "moeopt/server/metrics.h"
#include "moeopt/server/openai_request.h"
#include "moeopt/server/openai_response.h"
#include "moeopt/server/output_assembler.h"
#include "moeopt/server/tool_call_parser.h"

namespace moeopt::server {

struct ServedModel;

struct ChoiceDelta {
  int32_t index = 0;                        // which choice (0..n-1)
  std::optional<ApiError> error;            // the answer is this error instead (nothing else set)
  std::string content;                      // text to show now
  std::vector<TokenLogprobEntry> logprobs;  // of the tokens taken now (when asked for)
  std::vector<ToolCall> calls;              // tool calls completed now
  bool finished = false;
  std::string finish_reason;  // as the client sees it, when finished
};

class ResponseAccumulator {
 public:
  ResponseAccumulator(const ServedModel& model, const ApiRequest& ar, int64_t prompt_tokens,
                      std::shared_ptr<RequestStream> stream, EngineService& service, Metrics& metrics);

  // Waits up to `timeout` for the next event and takes it; nullopt when none came.
  std::optional<ChoiceDelta> next(std::chrono::milliseconds timeout);
  ChoiceDelta consume(const StreamEvent& ev);
  int32_t num_choices() const { return int32_t(choices_.size()); }
  // Every choice is complete (finished, or stopped by a stop string).
  bool done() const;
  // Cancels the engine request (all its choices) unless it is complete and the engine is
  // done with it (the response was torn down early: client gone, server stopping).
  void cancel_unless_finished(bool complete);
  void cancel();

  const ResponseInfo& info() const { return info_; }
  Usage usage() const;
  // The logprobs object for these entries; null when logprobs were not asked for.
  ojson logprobs_json(const std::vector<TokenLogprobEntry>& entries) const;

 private:
  struct Choice {
    OutputAssembler assembler;
    std::optional<ToolCallParser> tools;
  };

  const tokenizer::Tokenizer& tok_;
  ResponseInfo info_;
  std::vector<std::unique_ptr<Choice>> choices_;
  bool want_logprobs_;
  Usage usage_;
  std::shared_ptr<RequestStream> stream_;
  EngineService& service_;
  Metrics& metrics_;
};

}  // namespace moeopt::server
