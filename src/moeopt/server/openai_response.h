// OpenAI response bodies: completions and chat completions, whole or as SSE chunks.
//
//   /v1/completions        object "text_completion", choices[].text, legacy logprobs
//                          {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}
//   /v1/chat/completions   object "chat.completion" (chunks: "chat.completion.chunk"),
//                          choices[].message / .delta, logprobs {content: [{token, logprob,
//                          bytes, top_logprobs: [{token, logprob, bytes}]}]}
// Streams send `data: <chunk>\n\n` per piece of text, a last chunk with finish_reason per
// choice (each chunk carries one choice, choices[0].index says which of the n), optionally
// a usage chunk with empty choices (stream_options.include_usage), then `data: [DONE]\n\n`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moeopt/server/openai_request.h"
#include "moeopt/server/output_assembler.h"
#include "moeopt/server/tool_call_parser.h"
#include "moeopt/tokenizer/tokenizer.h"

namespace moeopt::server {

struct ResponseInfo {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // unix seconds
  std::string model;
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

ojson usage_json(const Usage& u);
// The logprobs object of a choice for these tokens.
ojson logprobs_json(Endpoint endpoint, const std::vector<TokenLogprobEntry>& entries,
                    const tokenizer::Tokenizer& tok);
// One choice of a whole response.
struct ChoiceBody {
  std::string text;
  std::string finish_reason;
  ojson logprobs;  // null when not asked for
  std::vector<ToolCall> tool_calls;
};
// A whole (non-stream) response: choices[i] has "index" i. With tool calls (chat),
// message.tool_calls lists them and an empty content is null.
ojson full_response(const ResponseInfo& info, const std::vector<ChoiceBody>& choices, const Usage& usage);
// The same with one choice.
ojson full_response(const ResponseInfo& info, const std::string& text, const std::string& finish_reason,
                    const ojson& logprobs, const Usage& usage, const std::vector<ToolCall>& tool_calls = {});
// {"id", "type": "function", "function": {"name", "arguments"}}; `index` >= 0 adds "index"
// (stream deltas).
ojson tool_call_json(const ToolCall& call, int index = -1);
// The finish reason a chat client sees: "tool_calls" when calls were parsed and the model
// stopped on its own; "length" (cut off) and the rest stay.
std::string chat_finish_reason(const std::string& engine_reason, int num_tool_calls);
// One stream chunk of choice `index`. `first` adds the assistant role (chat); an empty
// finish_reason is null. `usage_null` adds "usage": null (when include_usage is on, as
// OpenAI does).
ojson stream_chunk(const ResponseInfo& info, const std::string& text, const std::string& finish_reason,
                   const ojson& logprobs, bool first, bool usage_null, int index = 0);
// A stream chunk of choice `index` whose delta carries these tool calls, numbered from
// `first_index`.
ojson tool_calls_chunk(const ResponseInfo& info, const std::vector<ToolCall>& calls, int first_index,
                       bool usage_null, int index = 0);
// The usage-only chunk sent last when stream_options.include_usage is set.
ojson usage_chunk(const ResponseInfo& info, const Usage& usage);
// "data: <json>\n\n"
std::string sse_event(const ojson& j);

// A random id with a prefix ("cmpl-", "chatcmpl-").
std::string make_response_id(const char* prefix);

}  // namespace moeopt::server
