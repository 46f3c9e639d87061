// Chat templates against Hugging Face transformers.
//
// tests/data/chat_templates/cases.json lists conversations for the vendored Qwen3,
// DeepSeek-V3, Llama-3 and (with templates/mixtral_instruct.jinja) Mixtral-Instruct
// templates; goldens.json holds transformers' apply_chat_template(..., tokenize=False)
// output for each, made by tests/reference/make_chat_goldens.py. Every rendering must be
// byte-equal; where transformers raised, we must fail too (with the template's message
// when it came from raise_exception).
//
// Run: build-*/tests/test_tokenizer --gtest_filter='ChatTemplate*'
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/tokenizer/chat_template.h"

namespace moeopt::tokenizer {
namespace {

using ojson = nlohmann::ordered_json;

const std::string kRoot = MOEOPT_SOURCE_DIR;
const std::string kData = kRoot + "/tests/data/chat_templates";

ojson load_json(const std::string& path) {
  auto text = read_file(path);
  EXPECT_TRUE(text.ok()) << text.status().message();
  return text.ok() ? ojson::parse(*text) : ojson();
}

Result<ChatTemplate> template_for(const ojson& c) {
  std::string dir = kRoot + "/models/tokenizers/" + c["family"].get<std::string>();
  std::optional<std::string> override_text;
  if (c.contains("template")) {
    MOEOPT_ASSIGN_OR_RETURN(std::string t,
                            read_file(kData + "/templates/" + c["template"].get<std::string>()));
    override_text = t;
  }
  bool for_tools = c.contains("tools") && !c["tools"].is_null();
  return ChatTemplate::load(dir, for_tools, override_text);
}

// Where two strings first differ, for readable failures on long prompts.
std::string first_difference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  auto around = [&](const std::string& s) {
    size_t from = i > 40 ? i - 40 : 0;
    return ojson(s.substr(from, 80)).dump();
  };
  return "first difference at byte " + std::to_string(i) + "\n  ours:   " + around(a) +
         "\n  theirs: " + around(b);
}

TEST(ChatTemplateGoldens, ByteEqualToTransformers) {
  ojson cases = load_json(kData + "/cases.json")["cases"];
  ojson goldens = load_json(kData + "/goldens.json")["goldens"];
  ASSERT_GE(cases.size(), 30u);
  int rendered = 0, errors = 0;
  for (const auto& c : cases) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    ASSERT_TRUE(goldens.contains(name)) << "no golden: rerun tests/reference/make_chat_goldens.py";
    const ojson& g = goldens[name];
    auto tmpl = template_for(c);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status().message();
    ojson tools = c.contains("tools") ? c["tools"] : ojson(nullptr);
    ojson kwargs = c.contains("kwargs") ? c["kwargs"] : ojson(nullptr);
    auto out = tmpl->render(c["messages"], tools, c["add_generation_prompt"].get<bool>(), kwargs);
    if (g.contains("error")) {
      ++errors;
      ASSERT_FALSE(out.ok()) << "transformers raised " << g["error_type"].get<std::string>()
                             << ": " << g["error"].get<std::string>() << "\nwe rendered:\n"
                             << *out;
      if (g["error_type"] == "TemplateError") {
        EXPECT_NE(out.status().message().find(g["error"].get<std::string>()), std::string::npos)
            << out.status().message();
      }
      continue;
    }
    ++rendered;
    ASSERT_TRUE(out.ok()) << out.status().message();
    const std::string want = g["rendered"].get<std::string>();
    EXPECT_EQ(*out, want) << first_difference(*out, want);
  }
  EXPECT_GE(rendered, 30);
  EXPECT_GE(errors, 3);
}

TEST(ChatTemplateGoldens, SpecialTokensMatchTransformers) {
  ojson special = load_json(kData + "/goldens.json")["special_tokens"];
  ASSERT_FALSE(special.empty());
  for (auto it = special.begin(); it != special.end(); ++it) {
    SCOPED_TRACE(it.key());
    std::string dir = kRoot + "/models/tokenizers/" + it.key();
    auto config = ojson::parse(*read_file(dir + "/tokenizer_config.json"));
    config["chat_template"] = "x";  // llama2 ships none; the tokens are what we check
    auto t = ChatTemplate::from_tokenizer_config(config);
    ASSERT_TRUE(t.ok()) << t.status().message();
    std::map<std::string, std::string> want;
    for (auto jt = it.value().begin(); jt != it.value().end(); ++jt)
      want[jt.key()] = jt.value().get<std::string>();
    EXPECT_EQ(t->special_tokens(), want);
  }
}

TEST(ChatTemplateApi, RejectsBadInput) {
  auto t = ChatTemplate::parse("{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}");
  ASSERT_TRUE(t.ok()) << t.status().message();
  auto r = t->render(ojson::array(), nullptr, false, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("empty conversation"), std::string::npos);

  r = t->render(ojson::parse(R"(["not an object"])"), nullptr, false, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("message 0"), std::string::npos);

  r = t->render(ojson::parse(R"([{"role": "user", "content": "x"}])"), ojson::object(), false,
                nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tools"), std::string::npos);

  r = t->render(ojson::parse(R"([{"role": "user", "content": "x"}])"), nullptr, false,
                ojson::parse(R"({"messages": []})"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'messages'"), std::string::npos);

  auto bad = ChatTemplate::parse("{% if x %}\n{% endfor %}");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 2"), std::string::npos) << bad.status().message();
}

TEST(ChatTemplateApi, ExplicitTokensAndKwargsReachTheTemplate) {
  auto t = ChatTemplate::parse("{{ bos_token }}|{{ eos_token }}|{{ flag }}|{{ tools }}|{{ documents }}");
  ASSERT_TRUE(t.ok());
  auto r = t->render(ojson::parse(R"([{"role": "user", "content": "x"}])"), nullptr, false,
                     ojson::parse(R"({"flag": false})"), std::string("<s>"), std::string("</s>"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, "<s>|</s>|False|None|None");
}

TEST(ChatTemplateConfig, PicksNamedTemplatesAndAddedTokenContent) {
  ojson config = ojson::parse(R"({
    "chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}],
    "bos_token": {"__type": "AddedToken", "content": "<bos>"},
    "eos_token": "<eos>"})");
  auto d = ChatTemplate::from_tokenizer_config(config, false);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->source(), "D");
  EXPECT_EQ(d->special_tokens().at("bos_token"), "<bos>");
  EXPECT_EQ(d->special_tokens().at("eos_token"), "<eos>");
  auto tool = ChatTemplate::from_tokenizer_config(config, true);
  ASSERT_TRUE(tool.ok());
  EXPECT_EQ(tool->source(), "T");
  // Loaded without for_tools, the tool template is still used when tools are passed.
  const ojson msgs = ojson::parse(R"([{"role": "user", "content": "x"}])");
  auto plain = d->render(msgs, nullptr, false, nullptr);
  auto with_tools = d->render(msgs, ojson::parse(R"([{"type": "function"}])"), false, nullptr);
  ASSERT_TRUE(plain.ok() && with_tools.ok());
  EXPECT_EQ(*plain, "D");
  EXPECT_EQ(*with_tools, "T");

  auto none = ChatTemplate::from_tokenizer_config(ojson::parse(R"({"eos_token": "x"})"));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), ErrorCode::kNotFound);
}

TEST(ChatTemplateConfig, ChatTemplateJinjaFileWins) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("moeopt_chat_template_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": "config", "eos_token": "E"})";
  std::ofstream(dir / "chat_template.jinja") << "file {{ eos_token }}\n";
  auto t = ChatTemplate::load(dir.string());
  ASSERT_TRUE(t.ok()) << t.status().message();
  auto r = t->render(ojson::parse(R"([{"role": "user", "content": "x"}])"), nullptr, false, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "file E");  // jinja2 drops the template's single trailing newline
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moeopt::tokenizer
