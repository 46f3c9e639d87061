// Deep JSON at the tokenizer's intakes: tokenizer.json, tokenizer_config.json and chat
// template inputs built in code are refused with an error, never by a stack overflow.
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "moeopt/tokenizer/chat_template.h"
#include "moeopt/tokenizer/jinja_builtins.h"
#include "moeopt/tokenizer/tokenizer.h"

namespace moeopt::tokenizer {
namespace {

using ojson = nlohmann::ordered_json;

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(TokenizerJsonLimits, DeepTokenizerJsonIsAnError) {
  std::string tok = "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": " + nested(30000) + "}}";
  auto t = Tokenizer::from_json(tok, "", "tokenizer.json");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("deeper than 128"), std::string::npos) << t.status().message();
  std::string cfg = "{\"x\": " + nested(30000) + "}";
  auto t2 = Tokenizer::from_json("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", cfg,
                                 "tokenizer.json");
  ASSERT_FALSE(t2.ok());
  EXPECT_NE(t2.status().message().find("deeper than 128"), std::string::npos) << t2.status().message();
}

TEST(TokenizerJsonLimits, ChatTemplateRefusesDeepValuesBuiltInCode) {
  auto tmpl = ChatTemplate::parse("{% for m in messages %}{{ m.content }}{% endfor %}{{ x | tojson }}");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().message();
  // Built by moves only (copying a deep value would itself recurse).
  auto make_deep = [] {
    ojson d = ojson::array();
    for (int i = 0; i < 5000; ++i) d = ojson::array({std::move(d)});
    return d;
  };
  ojson messages = ojson::array({{{"role", "user"}, {"content", "hi"}}});
  ojson kwargs = ojson::object();
  kwargs["x"] = make_deep();
  auto r = tmpl->render(messages, nullptr, false, kwargs);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nested deeper than 128"), std::string::npos) << r.status().message();
  ojson deep_msgs = ojson::array({{{"role", "user"}, {"content", "hi"}}});
  deep_msgs[0]["x"] = make_deep();
  EXPECT_FALSE(tmpl->render(deep_msgs, nullptr, false, nullptr).ok());
  ojson tools = ojson::array({ojson::object()});
  tools[0]["f"] = make_deep();
  EXPECT_FALSE(tmpl->render(messages, tools, false, nullptr).ok());
  auto ok = tmpl->render(messages, nullptr, false, ojson{{"x", ojson::array({1, 2})}});
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(*ok, "hi[1, 2]");
  // from_json itself stops converting at its cap instead of recursing on.
  jinja::Value v = jinja::from_json(make_deep());
  EXPECT_TRUE(v.is_list());
}

}  // namespace
}  // namespace moeopt::tokenizer
