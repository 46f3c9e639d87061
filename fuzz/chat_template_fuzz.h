// The body of the chat-template fuzz target: the input is the JSON of a chat request
// ({"messages", "tools"?, "chat_template_kwargs"?}) rendered with the Qwen3 template the
// embedded model ships, the way the server does (bounded parse, normalize_messages).
// Shared with the CI corpus replay. Invariants: rendering returns text or a one-line
// error; it never crashes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "moeopt/server/openai_request.h"
#include "moeopt/tokenizer/chat_template.h"

namespace moeopt::fuzz {

inline int run_chat_template_input(const tokenizer::ChatTemplate& tmpl, const uint8_t* data, size_t size) {
  std::string body(reinterpret_cast<const char*>(data), size);
  server::ApiRequest ar;
  if (server::parse_generation_request(body, server::Endpoint::kChat, ar)) return 0;
  auto r = tmpl.render(ar.messages, ar.tools.is_array() ? ar.tools : server::ojson(nullptr), ar.add_generation_prompt,
                       ar.chat_template_kwargs.is_object() ? ar.chat_template_kwargs : server::ojson(nullptr));
  if (!r.ok()) {
    if (r.status().message().empty() || r.status().message().find('\n') != std::string::npos) __builtin_trap();
    return 0;
  }
  return 1;
}

}  // namespace moeopt::fuzz
