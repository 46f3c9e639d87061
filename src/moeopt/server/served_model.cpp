// ServedModel (see served_model.h).
#include "moeopt/server/served_model.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

namespace moeopt::server {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ServedModel::ServedModel(tokenizer::Tokenizer t, std::optional<tokenizer::ChatTemplate> chat_template,
                         std::string name, Engine& engine)
    : tok(std::move(t)), chat(std::move(chat_template)), model_name(std::move(name)) {
  max_model_len = engine.max_model_len();
  block_size = engine.options().block_size;
  num_blocks = engine.blocks().num_blocks();
  vocab = engine.config().vocab_size;
  for (int64_t id : engine.config().eos_token_ids) eos_ids.insert(int32_t(id));
  size_t longest = 1;
  for (size_t id = 0; id < tok.vocab_size(); ++id)
    if (auto tk = tok.id_to_token(int32_t(id))) longest = std::max(longest, tk->size());
  max_text_bytes = size_t(std::max<int32_t>(max_model_len, 1)) * longest * 4;
  created = unix_now();
}

std::optional<ApiError> ServedModel::check_text_bytes(const std::string& text, const char* param) const {
  if (text.size() <= max_text_bytes) return std::nullopt;
  return bad_request(fmt::format("This model's maximum context length is {} tokens, but the prompt has {} "
                                 "bytes of text (more than {} tokens can hold)",
                                 max_model_len, text.size(), max_model_len),
                     param);
}

std::string ServedModel::echo_text(const ApiRequest& ar, const std::vector<int32_t>& ids) const {
  if (!ar.echo) return "";
  return ar.prompt_is_ids ? tok.decode(ids, /*skip_special_tokens=*/false) : ar.prompt_text;
}

ResponseInfo ServedModel::response_info(Endpoint ep) const {
  ResponseInfo info;
  info.endpoint = ep;
  info.id = make_response_id(ep == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  info.created = unix_now();
  info.model = model_name;
  return info;
}

ojson ServedModel::model_card() const {
  return ojson{{"id", model_name},    {"object", "model"},  {"created", created},
               {"owned_by", "moeopt"}, {"root", model_name}, {"max_model_len", max_model_len}};
}

std::optional<ApiError> ServedModel::render_chat(const ojson& messages, const ojson& tools,
                                                 bool add_generation_prompt, const ojson& kwargs,
                                                 std::string& text) const {
  if (!chat) return bad_request("this model has no chat template; use /v1/completions", "messages");
  auto r = chat->render(messages, tools.is_array() ? tools : ojson(nullptr), add_generation_prompt,
                        kwargs.is_object() ? kwargs : ojson(nullptr));
  if (!r.ok()) return bad_request("chat template: " + r.status().message(), "messages");
  text = std::move(*r);
  return std::nullopt;
}

std::optional<ApiError> ServedModel::build_prompt(const ApiRequest& ar,
                                                  std::vector<int32_t>& ids) const {
  if (ar.endpoint == Endpoint::kCompletions) {
    if (ar.prompt_is_ids) {
      ids = ar.prompt_ids;
      return std::nullopt;
    }
    if (auto e = check_text_bytes(ar.prompt_text, "prompt")) return e;
    auto enc = tok.encode(ar.prompt_text, /*add_special_tokens=*/true);
    if (!enc.ok()) return bad_request("prompt: " + enc.status().message(), "prompt");
    ids = std::move(*enc);
    return std::nullopt;
  }
  std::string text;
  if (auto e = render_chat(ar.messages, ar.tools, ar.add_generation_prompt, ar.chat_template_kwargs, text))
    return e;
  if (auto e = check_text_bytes(text, "messages")) return e;
  // The template already wrote the special tokens it wants.
  auto enc = tok.encode(text, /*add_special_tokens=*/false);
  if (!enc.ok()) return bad_request("messages: " + enc.status().message(), "messages");
  ids = std::move(*enc);
  return std::nullopt;
}

std::optional<ApiError> ServedModel::check_lengths(ApiRequest& ar,
                                                   const std::vector<int32_t>& ids) const {
  const char* param = ar.endpoint == Endpoint::kChat ? "messages" : "prompt";
  if (ids.empty()) return bad_request("the prompt is empty after tokenization", param);
  for (int32_t t : ids)
    if (t < 0 || t >= vocab)
      return bad_request(fmt::format("prompt token id {} is outside the vocabulary [0, {})", t, vocab),
                         param);
  const int64_t n = int64_t(ids.size());
  if (n >= max_model_len)
    return bad_request(
        fmt::format("This model's maximum context length is {} tokens, but the prompt has {} tokens "
                    "(no room to generate)",
                    max_model_len, n),
        param);
  // Largest total length the KV pool can ever hold for one sequence.
  const int64_t kv_tokens = int64_t(num_blocks) * block_size;
  const int64_t cap = std::min<int64_t>(max_model_len, kv_tokens);
  if (n >= cap)
    return bad_request(
        fmt::format("the prompt has {} tokens but the KV cache holds only {} tokens", n, kv_tokens), param);
  if (!ar.max_tokens_given) {
    ar.params.max_tokens =
        ar.endpoint == Endpoint::kChat ? int32_t(cap - n) : int32_t(std::min<int64_t>(16, cap - n));
  } else if (n + ar.params.max_tokens > max_model_len) {
    return bad_request(
        fmt::format("This model's maximum context length is {} tokens. However, you requested {} "
                    "tokens ({} in the prompt, {} for the completion)",
                    max_model_len, n + ar.params.max_tokens, n, ar.params.max_tokens),
        "max_tokens");
  } else if (n + ar.params.max_tokens > kv_tokens) {
    return bad_request(
        fmt::format("the request needs up to {} tokens of KV cache but the cache holds only {}",
                    n + ar.params.max_tokens, kv_tokens),
        "max_tokens");
  }
  SamplingParams checked = ar.params;
  if (checked.max_tokens == 0) checked.max_tokens = 1;  // echo alone (nothing is generated)
  Status st = checked.validate(vocab);
  if (!st.ok()) {
    std::string msg = st.message();
    std::string p = msg.substr(0, msg.find(' '));
    if (p == "stop") p = "stop_token_ids";
    if (p == "logprobs" && ar.endpoint == Endpoint::kChat) p = "top_logprobs";
    return bad_request(msg, p);
  }
  return std::nullopt;
}

}  // namespace moeopt::server
