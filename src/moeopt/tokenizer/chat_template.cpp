// Chat templates (see chat_template.h).
#include "moeopt/tokenizer/chat_template.h"

#include <filesystem>

#include "moeopt/core/file_io.h"
#include "moeopt/core/json_limits.h"
#include "moeopt/tokenizer/jinja_builtins.h"
#include "moeopt/tokenizer/jinja_interpreter.h"
#include "moeopt/tokenizer/jinja_parser.h"

namespace moeopt::tokenizer {
namespace {

using ojson = nlohmann::ordered_json;

constexpr const char* kSpecialTokenNames[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                              "pad_token", "cls_token", "mask_token"};

// transformers' _normalize_chat_messages + _alias_reasoning_fields, on one message.
ojson normalize_message(const ojson& m) {
  ojson out = ojson::object();
  for (auto it = m.begin(); it != m.end(); ++it)
    if (!it.value().is_null()) out[it.key()] = it.value();
  const ojson* reasoning = nullptr;
  for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
    auto it = out.find(key);
    if (it != out.end() && !it->is_null()) {
      reasoning = &*it;
      break;
    }
  }
  if (!reasoning) return out;
  // {"thinking": r, **message, "reasoning_content": r}: "thinking" comes first (a message's
  // own "thinking" keeps its value), "reasoning_content" keeps its place or goes last.
  ojson r = *reasoning;
  ojson aliased = ojson::object();
  aliased["thinking"] = r;
  for (auto it = out.begin(); it != out.end(); ++it) aliased[it.key()] = it.value();
  aliased["reasoning_content"] = r;
  return aliased;
}

}  // namespace

Result<ChatTemplate> ChatTemplate::parse(std::string_view text) {
  ChatTemplate t;
  t.source_ = std::string(text);
  MOEOPT_ASSIGN_OR_RETURN(t.program_, jinja::parse_template(text));
  return t;
}

Result<ChatTemplate> ChatTemplate::from_tokenizer_config(const ojson& config, bool for_tools) {
  if (!config.is_object())
    return make_error(ErrorCode::kInvalidArgument, "tokenizer_config.json: expected an object");
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null())
    return make_error(ErrorCode::kNotFound, "tokenizer_config.json: no chat_template");
  std::string text;
  std::optional<std::string> tool_text;
  if (it->is_string()) {
    text = it->get<std::string>();
  } else if (it->is_array()) {
    std::map<std::string, std::string> named;
    for (const auto& e : *it) {
      if (!e.is_object() || !e.contains("name") || !e.contains("template") ||
          !e["name"].is_string() || !e["template"].is_string())
        return make_error(ErrorCode::kInvalidArgument,
                          "tokenizer_config.json: chat_template list entries need string "
                          "'name' and 'template'");
      named[e["name"].get<std::string>()] = e["template"].get<std::string>();
    }
    if (for_tools && named.count("tool_use")) text = named["tool_use"];
    else if (named.count("default")) text = named["default"];
    else
      return make_error(ErrorCode::kNotFound,
                        "tokenizer_config.json: chat_template list has no 'default' template");
    // Also keep "tool_use" so render() can switch to it when tools are given, as
    // transformers' get_chat_template(tools=...) does.
    if (!for_tools && named.count("tool_use")) tool_text = named["tool_use"];
  } else {
    return make_error(ErrorCode::kInvalidArgument,
                      "tokenizer_config.json: chat_template must be a string or a list");
  }
  auto parsed = parse(text);
  if (!parsed.ok()) return parsed.status().with_context("tokenizer_config.json: chat_template");
  ChatTemplate t = std::move(parsed).value();
  if (tool_text) {
    auto tool = jinja::parse_template(*tool_text);
    if (!tool.ok())
      return tool.status().with_context("tokenizer_config.json: chat_template 'tool_use'");
    t.tool_program_ = std::move(tool).value();
  }
  for (const char* name : kSpecialTokenNames) {
    auto tok = config.find(name);
    if (tok == config.end()) continue;
    if (tok->is_string()) {
      t.special_tokens_[name] = tok->get<std::string>();
    } else if (tok->is_object() && tok->contains("content") && (*tok)["content"].is_string()) {
      t.special_tokens_[name] = (*tok)["content"].get<std::string>();
    }
  }
  return t;
}

Result<ChatTemplate> ChatTemplate::load(const std::string& dir, bool for_tools,
                                        const std::optional<std::string>& template_override) {
  namespace fs = std::filesystem;
  MOEOPT_ASSIGN_OR_RETURN(std::string config_text,
                          read_file_or_gz((fs::path(dir) / "tokenizer_config.json").string(),
                                          size_t(64) << 20));
  auto parsed = parse_ordered_json(config_text);  // nesting and size limits (core/json_limits.h)
  if (!parsed.ok()) return parsed.status().with_context(dir + "/tokenizer_config.json");
  ojson config = std::move(parsed).value();
  fs::path jinja_file = fs::path(dir) / "chat_template.jinja";
  std::error_code ec;
  if (template_override) {
    config["chat_template"] = *template_override;
  } else if (fs::exists(jinja_file, ec)) {
    MOEOPT_ASSIGN_OR_RETURN(std::string text, read_file(jinja_file.string(), size_t(16) << 20));
    config["chat_template"] = text;
  }
  auto t = from_tokenizer_config(config, for_tools);
  if (!t.ok()) return t.status().with_context(dir);
  return t;
}

Result<std::string> ChatTemplate::render(const ojson& messages, const ojson& tools,
                                         bool add_generation_prompt, const ojson& extra_kwargs,
                                         const std::optional<std::string>& bos_token,
                                         const std::optional<std::string>& eos_token) const {
  if (!program_) return make_error(ErrorCode::kInternal, "chat template was not parsed");
  if (!messages.is_array())
    return make_error(ErrorCode::kInvalidArgument, "chat messages must be a JSON array");
  if (messages.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "cannot apply a chat template to an empty conversation");
  // Values built by a caller (not through parse_json) may be arbitrarily deep; everything
  // below (copies, from_json, tojson) recurses once per level.
  const JsonLimits limits;
  for (auto [what, v] : {std::pair{"messages", &messages}, {"tools", &tools},
                         {"chat template kwargs", &extra_kwargs}})
    if (json_depth(*v, limits.max_depth) > limits.max_depth)
      return make_error(ErrorCode::kInvalidArgument, "{} are nested deeper than {} levels", what,
                        limits.max_depth);
  ojson normalized = ojson::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!messages[i].is_object())
      return make_error(ErrorCode::kInvalidArgument, "chat message {} must be a JSON object", i);
    normalized.push_back(normalize_message(messages[i]));
  }
  if (!tools.is_null()) {
    if (!tools.is_array())
      return make_error(ErrorCode::kInvalidArgument, "tools must be a JSON array or null");
    for (size_t i = 0; i < tools.size(); ++i)
      if (!tools[i].is_object())
        return make_error(ErrorCode::kInvalidArgument, "tool {} must be a JSON object", i);
  }
  if (!extra_kwargs.is_null() && !extra_kwargs.is_object())
    return make_error(ErrorCode::kInvalidArgument, "chat template kwargs must be a JSON object");

  jinja::Dict ctx;
  for (const auto& [name, text] : special_tokens_) ctx.set(name, jinja::Value::string(text));
  if (bos_token) ctx.set("bos_token", jinja::Value::string(*bos_token));
  if (eos_token) ctx.set("eos_token", jinja::Value::string(*eos_token));
  if (extra_kwargs.is_object()) {
    for (auto it = extra_kwargs.begin(); it != extra_kwargs.end(); ++it) {
      const std::string& k = it.key();
      if (k == "messages" || k == "tools" || k == "documents" || k == "add_generation_prompt")
        return make_error(ErrorCode::kInvalidArgument,
                          "chat template kwargs: '{}' is set by the renderer itself", k);
      ctx.set(k, jinja::from_json(it.value()));
    }
  }
  ctx.set("messages", jinja::from_json(normalized));
  ctx.set("tools", tools.is_null() ? jinja::Value::none() : jinja::from_json(tools));
  ctx.set("documents", jinja::Value::none());
  ctx.set("add_generation_prompt", jinja::Value::boolean(add_generation_prompt));
  // Errors read "template error at line L column C: <what>"; a raise_exception() in the
  // template gives its own message as <what>.
  const jinja::Program& program = (!tools.is_null() && tool_program_) ? *tool_program_ : *program_;
  return jinja::render(program, ctx);
}

}  // namespace moeopt::tokenizer
