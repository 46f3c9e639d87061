// `moeopt chat-template`: render a conversation with a tokenizer's chat template and print
// the prompt text exactly (no trailing newline is added), as transformers'
// apply_chat_template(..., tokenize=False) would.
//
//   moeopt chat-template --tokenizer DIR|FAMILY --messages FILE [--tools FILE]
//                        [--add-generation-prompt] [--kwargs JSON] [--template FILE]
//
// DIR is a tokenizer directory (tokenizer_config.json[.gz], optional chat_template.jinja);
// a bare FAMILY name (qwen3, llama3, ...) means models/tokenizers/FAMILY under the data
// root. --messages takes a JSON array of messages, or an object with a "messages" array
// (and optionally "tools"); "-" reads stdin. --template renders that Jinja file instead of
// the tokenizer's own template (the tokenizer still supplies bos/eos tokens).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>

#include "commands.h"
#include "moeopt/core/file_io.h"
#include "moeopt/core/json_limits.h"
#include "moeopt/tokenizer/chat_template.h"

namespace moeopt::cli {
namespace {

using ojson = nlohmann::ordered_json;

struct ChatTemplateOptions {
  std::string tokenizer;
  std::string messages;
  std::string tools;
  std::string kwargs;
  std::string template_file;
  bool add_generation_prompt = false;
};

Result<ojson> read_json_file(const std::string& path, const char* what) {
  std::string text;
  if (path == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    MOEOPT_ASSIGN_OR_RETURN(text, read_file(path, size_t(256) << 20));
  }
  auto parsed = parse_ordered_json(text);  // nesting and size limits (core/json_limits.h)
  if (!parsed.ok()) return parsed.status().with_context(fmt::format("{} {}", what, path));
  return parsed;
}

std::string resolve_tokenizer_dir(const std::string& arg) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(arg, ec)) return arg;
  return (fs::path(data_root()) / "models" / "tokenizers" / arg).string();
}

int run(const ChatTemplateOptions& o) {
  const std::string cmd = "chat-template";
  auto messages_doc = read_json_file(o.messages, "--messages");
  if (!messages_doc.ok()) return report_error(cmd, messages_doc.status());
  ojson messages = *messages_doc;
  ojson tools = nullptr;
  if (messages.is_object()) {
    if (messages.contains("tools")) tools = messages["tools"];
    if (!messages.contains("messages"))
      return report_error(cmd, make_error(ErrorCode::kInvalidArgument,
                                          "--messages {}: object without a \"messages\" array",
                                          o.messages));
    messages = ojson(messages["messages"]);
  }
  if (!o.tools.empty()) {
    auto t = read_json_file(o.tools, "--tools");
    if (!t.ok()) return report_error(cmd, t.status());
    tools = *t;
  }
  ojson kwargs = nullptr;
  if (!o.kwargs.empty()) {
    auto parsed = parse_ordered_json(o.kwargs);
    if (!parsed.ok()) return report_error(cmd, parsed.status().with_context("--kwargs"));
    kwargs = std::move(parsed).value();
  }
  std::optional<std::string> template_text;
  if (!o.template_file.empty()) {
    auto text = read_file(o.template_file, size_t(16) << 20);
    if (!text.ok()) return report_error(cmd, text.status());
    template_text = *text;
  }
  auto tmpl = tokenizer::ChatTemplate::load(resolve_tokenizer_dir(o.tokenizer),
                                            /*for_tools=*/!tools.is_null(), template_text);
  if (!tmpl.ok()) return report_error(cmd, tmpl.status());
  auto out = tmpl->render(messages, tools, o.add_generation_prompt, kwargs);
  if (!out.ok()) return report_error(cmd, out.status());
  std::fwrite(out->data(), 1, out->size(), stdout);
  return 0;
}

RunFn setup(CLI::App& app) {
  auto* sub = app.add_subcommand("chat-template",
                                 "Render chat messages with a tokenizer's chat template");
  auto o = std::make_shared<ChatTemplateOptions>();
  sub->add_option("--tokenizer", o->tokenizer,
                  "Tokenizer directory, or a family name under models/tokenizers")
      ->required();
  sub->add_option("--messages", o->messages, "JSON file with the messages array ('-' = stdin)")
      ->required();
  sub->add_option("--tools", o->tools, "JSON file with the tools array");
  sub->add_flag("--add-generation-prompt", o->add_generation_prompt,
                "Append the assistant turn header");
  sub->add_option("--kwargs", o->kwargs,
                  "Extra template variables as a JSON object, e.g. '{\"enable_thinking\": false}'");
  sub->add_option("--template", o->template_file,
                  "Render this Jinja template file instead of the tokenizer's own");
  return [o]() { return run(*o); };
}

MOEOPT_REGISTER_COMMAND(setup);

}  // namespace
}  // namespace moeopt::cli
