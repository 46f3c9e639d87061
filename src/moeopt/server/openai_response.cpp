// OpenAI response bodies (see openai_response.h).
#include "moeopt/server/openai_response.h"

#include <atomic>
#include <chrono>
#include <random>

#include <fmt/format.h>

namespace moeopt::server {
namespace {

std::string token_text(const tokenizer::Tokenizer& tok, int32_t id) {
  int32_t ids[1] = {id};
  return tok.decode(std::span<const int32_t>(ids, 1), /*skip_special_tokens=*/false);
}

ojson bytes_of(const std::string& s) {
  ojson b = ojson::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

// dump() that never throws: invalid UTF-8 is replaced (the detokenizer never produces it,
// but a token string for logprobs could in principle).
std::string safe_dump(const ojson& j) {
  return j.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

const char* object_name(Endpoint e, bool chunk) {
  if (e == Endpoint::kChat) return chunk ? "chat.completion.chunk" : "chat.completion";
  return "text_completion";
}

}  // namespace

ojson usage_json(const Usage& u) {
  ojson j = {{"prompt_tokens", u.prompt_tokens},
             {"completion_tokens", u.completion_tokens},
             {"total_tokens", u.prompt_tokens + u.completion_tokens}};
  if (u.cached_tokens > 0) j["prompt_tokens_details"] = {{"cached_tokens", u.cached_tokens}};
  return j;
}

ojson logprobs_json(Endpoint endpoint, const std::vector<TokenLogprobEntry>& entries,
                    const tokenizer::Tokenizer& tok) {
  if (endpoint == Endpoint::kChat) {
    ojson content = ojson::array();
    for (const auto& e : entries) {
      std::string t = token_text(tok, e.token);
      ojson top = ojson::array();
      for (const auto& alt : e.top) {
        std::string at = token_text(tok, alt.token);
        top.push_back({{"token", at}, {"logprob", alt.logprob}, {"bytes", bytes_of(at)}});
      }
      content.push_back(
          {{"token", t}, {"logprob", e.logprob}, {"bytes", bytes_of(t)}, {"top_logprobs", top}});
    }
    return ojson{{"content", content}};
  }
  ojson tokens = ojson::array(), lps = ojson::array(), tops = ojson::array(), offs = ojson::array();
  for (const auto& e : entries) {
    tokens.push_back(token_text(tok, e.token));
    lps.push_back(e.logprob);
    ojson top = ojson::object();
    for (const auto& alt : e.top) {
      std::string at = token_text(tok, alt.token);
      if (!top.contains(at)) top[at] = alt.logprob;
    }
    tops.push_back(top);
    offs.push_back(e.text_offset);
  }
  return ojson{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offs}};
}

ojson tool_call_json(const ToolCall& call, int index) {
  ojson j = ojson::object();
  if (index >= 0) j["index"] = index;
  j["id"] = call.id;
  j["type"] = "function";
  j["function"] = {{"name", call.name}, {"arguments", call.arguments}};
  return j;
}

std::string chat_finish_reason(const std::string& engine_reason, int num_tool_calls) {
  if (num_tool_calls > 0 && engine_reason == "stop") return "tool_calls";
  return engine_reason;
}

ojson full_response(const ResponseInfo& info, const std::vector<ChoiceBody>& choices, const Usage& usage) {
  ojson list = ojson::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceBody& c = choices[i];
    ojson choice = {{"index", i}};
    if (info.endpoint == Endpoint::kChat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      if (!c.tool_calls.empty()) {
        if (c.text.empty()) choice["message"]["content"] = nullptr;
        ojson calls = ojson::array();
        for (const ToolCall& t : c.tool_calls) calls.push_back(tool_call_json(t));
        choice["message"]["tool_calls"] = std::move(calls);
      }
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = c.logprobs;
    choice["finish_reason"] = c.finish_reason.empty() ? ojson(nullptr) : ojson(c.finish_reason);
    list.push_back(std::move(choice));
  }
  return ojson{{"id", info.id},       {"object", object_name(info.endpoint, false)}, {"created", info.created},
               {"model", info.model}, {"choices", std::move(list)},                  {"usage", usage_json(usage)}};
}

ojson full_response(const ResponseInfo& info, const std::string& text, const std::string& finish_reason,
                    const ojson& logprobs, const Usage& usage, const std::vector<ToolCall>& tool_calls) {
  return full_response(info, {ChoiceBody{text, finish_reason, logprobs, tool_calls}}, usage);
}

ojson stream_chunk(const ResponseInfo& info, const std::string& text, const std::string& finish_reason,
                   const ojson& logprobs, bool first, bool usage_null, int index) {
  ojson choice = {{"index", index}};
  if (info.endpoint == Endpoint::kChat) {
    ojson delta = ojson::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = logprobs;
  choice["finish_reason"] = finish_reason.empty() ? ojson(nullptr) : ojson(finish_reason);
  ojson j = {{"id", info.id},
             {"object", object_name(info.endpoint, true)},
             {"created", info.created},
             {"model", info.model},
             {"choices", ojson::array({choice})}};
  if (usage_null) j["usage"] = nullptr;
  return j;
}

ojson tool_calls_chunk(const ResponseInfo& info, const std::vector<ToolCall>& calls, int first_index,
                       bool usage_null, int index) {
  ojson list = ojson::array();
  for (size_t i = 0; i < calls.size(); ++i) list.push_back(tool_call_json(calls[i], first_index + int(i)));
  ojson choice = {{"index", index}, {"delta", {{"tool_calls", std::move(list)}}}, {"logprobs", nullptr},
                  {"finish_reason", nullptr}};
  ojson j = {{"id", info.id},
             {"object", object_name(info.endpoint, true)},
             {"created", info.created},
             {"model", info.model},
             {"choices", ojson::array({choice})}};
  if (usage_null) j["usage"] = nullptr;
  return j;
}

ojson usage_chunk(const ResponseInfo& info, const Usage& usage) {
  return ojson{{"id", info.id},
               {"object", object_name(info.endpoint, true)},
               {"created", info.created},
               {"model", info.model},
               {"choices", ojson::array()},
               {"usage", usage_json(usage)}};
}

std::string sse_event(const ojson& j) {
  return "data: " + safe_dump(j) + "\n\n";
}

std::string make_response_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng(std::random_device{}() ^
                                   uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  return fmt::format("{}{:016x}{:04x}", prefix, rng(), counter.fetch_add(1) & 0xffff);
}

}  // namespace moeopt::server
