// ServedModel: what the OpenAI front knows of the one model it serves (tokenizer, chat
// template, context and KV-cache limits) and the request work that needs it: prompt token
// ids from text, token ids or chat messages, the length checks, echo text, response ids and
// the model card. Read-only after construction, shared by every handler thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "moeopt/engine/engine.h"
#include "moeopt/server/openai_request.h"
#include "moeopt/server/openai_response.h"
#include "moeopt/tokenizer/chat_template.h"
#include "moeopt/tokenizer/tokenizer.h"

namespace moeopt::server {

int64_t unix_now();

struct ServedModel {
  tokenizer::Tokenizer tok;
  std::optional<tokenizer::ChatTemplate> chat;
  std::string model_name;
  int32_t max_model_len = 0, block_size = 16, num_blocks = 0;
  int64_t vocab = 0;
  // Upper bound on the text bytes one token can stand for (longest vocabulary entry, times
  // 4 for normalizers that compose characters): a text longer than max_model_len times this
  // cannot fit, and is refused before it is tokenised.
  size_t max_text_bytes = SIZE_MAX;
  std::unordered_set<int32_t> eos_ids;
  int64_t created = 0;

  ServedModel(tokenizer::Tokenizer t, std::optional<tokenizer::ChatTemplate> chat_template, std::string name,
              Engine& engine);

  std::optional<ApiError> check_text_bytes(const std::string& text, const char* param) const;
  // Prompt token ids for a request, or the 400 that explains why there are none.
  std::optional<ApiError> build_prompt(const ApiRequest& ar, std::vector<int32_t>& ids) const;
  std::optional<ApiError> render_chat(const ojson& messages, const ojson& tools, bool add_generation_prompt,
                                      const ojson& kwargs, std::string& text) const;
  // Context-length, vocabulary and KV-capacity checks; fills the default max_tokens.
  std::optional<ApiError> check_lengths(ApiRequest& ar, const std::vector<int32_t>& ids) const;
  // The prompt as text, for `echo` (token-id prompts are decoded); "" without echo.
  std::string echo_text(const ApiRequest& ar, const std::vector<int32_t>& ids) const;
  // A fresh id and timestamp for one response.
  ResponseInfo response_info(Endpoint ep) const;
  // The /v1/models entry.
  ojson model_card() const;
};

}  // namespace moeopt::server
