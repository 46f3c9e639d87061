// OpenAI request bodies -> what the engine needs.
//
// parse_generation_request turns the JSON body of POST /v1/completions or
// /v1/chat/completions into an ApiRequest, checking every field it uses for type and
// range. It never throws; a bad body gives an ApiError with the HTTP status, the OpenAI
// error type and the offending parameter, e.g.
//   400 invalid_request_error param=temperature "'temperature' must be a number, got string".
// Unknown fields are ignored (clients send many optional ones); fields that would change
// the output but are not implemented (best_of other than n, suffix, non-text
// response_format, tool_choice "required" or a named function) are rejected, never
// silently dropped. `n` is an integer in [1, kMaxChoices].
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/core/json_limits.h"
#include "moeopt/engine/sampling_params.h"

namespace moeopt::server {

using ojson = nlohmann::ordered_json;

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with a status.
struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // "" -> null
  std::string code;   // "" -> null

  ojson to_json() const;
};
ApiError bad_request(std::string message, std::string param = "");
// Any other error object ("" param / code: null).
ApiError api_error(int status, std::string type, std::string message, std::string param = "",
                   std::string code = "");

enum class Endpoint { kCompletions, kChat };

// The most choices (`n`) one request may ask for.
inline constexpr int32_t kMaxChoices = 16;

struct ApiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;  // "" when absent

  // /v1/completions: the prompt as text, or as token ids.
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
  bool prompt_is_ids = false;

  // /v1/chat/completions: messages (content parts flattened to strings), tools, template
  // arguments.
  ojson messages;
  ojson tools;                 // null or array
  ojson chat_template_kwargs;  // null or object
  bool add_generation_prompt = true;
  // `tools` given and tool_choice not "none": <tool_call> blocks in the output become
  // message.tool_calls (tool_call_parser.h).
  bool parse_tool_calls = false;
  // /v1/completions `echo`: the prompt text comes before the completion (max_tokens may
  // then be 0: the answer is the prompt alone).
  bool echo = false;

  SamplingParams params;
  // Choices: n samples of the prompt, each its own sequence; with a seed, choice i samples
  // with seed + i (Engine::add_samples).
  int32_t n = 1;
  bool max_tokens_given = false;  // else the endpoint's default applies
  std::vector<std::string> stop;  // stop strings (not included in the output text)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int top_logprobs = -1;       // -1: no logprobs; else this many alternatives per token
  bool skip_special_tokens = true;
};

// Parses and checks a request body. Returns nullopt on success.
std::optional<ApiError> parse_generation_request(const std::string& body, Endpoint endpoint, ApiRequest& out);

// Limits on request bodies (core/json_limits.h): nesting depth 128, at most 1 Mi values
// (a body of token ids for the longest context fits many times), so a body's parsed form
// costs a bounded multiple of its size and nothing after parsing recurses deeply.
inline constexpr JsonLimits kBodyJsonLimits{128, size_t(1) << 20};

// Parses any JSON object body (for /tokenize, /detokenize). Deep nesting, too many values,
// NUL bytes and bytes after the document are 400s.
std::optional<ApiError> parse_json_object(const std::string& body, ojson& out);

// Checks `messages` and flattens each message's text parts to one string (what the chat
// endpoint and /tokenize pass to the template).
std::optional<ApiError> normalize_messages(const ojson& in, ojson& out);


// Reads an optional array of token ids (each in [0, 2^31)). `what` names the field.
std::optional<ApiError> read_token_ids(const ojson& v, const std::string& what, std::vector<int32_t>& out);

}  // namespace moeopt::server
