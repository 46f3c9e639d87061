// Chat templates: turn OpenAI-style messages into the prompt text a model was trained on,
// byte-equal to Hugging Face transformers' `apply_chat_template(..., tokenize=False)`.
//
// The template is the Jinja source from tokenizer_config.json ("chat_template") or a
// chat_template.jinja file next to it; our own interpreter (jinja_*.h) runs it.
// Rendering reproduces what transformers (5.x) does around the template:
//   * messages: keys whose value is null are dropped; a message with reasoning under
//     "reasoning_content", "thinking" or "reasoning" gets it under both
//     "reasoning_content" and "thinking";
//   * variables: the tokenizer's special tokens (bos_token, eos_token, ...), then the
//     caller's extra kwargs (e.g. Qwen3's enable_thinking), then messages, tools (None
//     when absent), documents (None) and add_generation_prompt.
//
// JSON objects must keep their key order (tools are printed with `tojson`), so the API
// takes nlohmann::ordered_json. Parse request bodies with ordered_json, not json.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "moeopt/core/status.h"

namespace moeopt::jinja {
struct Program;
}

namespace moeopt::tokenizer {

class ChatTemplate {
 public:
  // Parses Jinja template text. Syntax errors name the line and column.
  static Result<ChatTemplate> parse(std::string_view text);

  // From a parsed tokenizer_config.json: picks "chat_template" (a string, or a list of
  // {"name", "template"} where "default" is used, or "tool_use" when `for_tools` and it
  // exists) and records the special tokens (bos/eos/unk/pad/sep/cls/mask; AddedToken
  // objects contribute their "content"). Without `for_tools`, a "tool_use" template is
  // kept too and render() uses it for requests that pass tools.
  static Result<ChatTemplate> from_tokenizer_config(const nlohmann::ordered_json& config,
                                                    bool for_tools = false);

  // From a tokenizer directory: chat_template.jinja if present (transformers prefers it),
  // else tokenizer_config.json[.gz]. `template_override` replaces the template text while
  // keeping the directory's special tokens.
  static Result<ChatTemplate> load(const std::string& tokenizer_dir, bool for_tools = false,
                                   const std::optional<std::string>& template_override = {});

  // Renders a conversation. `messages`: array of message objects (non-empty). `tools`:
  // null or an array of tool objects. `extra_kwargs`: null or an object of extra template
  // variables. `bos_token`/`eos_token`, when set, override the tokenizer's. A template
  // that calls raise_exception() fails with kInvalidArgument and its message.
  Result<std::string> render(const nlohmann::ordered_json& messages,
                             const nlohmann::ordered_json& tools, bool add_generation_prompt,
                             const nlohmann::ordered_json& extra_kwargs,
                             const std::optional<std::string>& bos_token = std::nullopt,
                             const std::optional<std::string>& eos_token = std::nullopt) const;

  const std::string& source() const { return source_; }
  // Special tokens visible to the template (name -> text), e.g. "eos_token" -> "</s>".
  const std::map<std::string, std::string>& special_tokens() const { return special_tokens_; }

 private:
  std::string source_;
  std::shared_ptr<const jinja::Program> program_;
  std::shared_ptr<const jinja::Program> tool_program_;  // "tool_use" of a named-template list
  std::map<std::string, std::string> special_tokens_;
};

}  // namespace moeopt::tokenizer
