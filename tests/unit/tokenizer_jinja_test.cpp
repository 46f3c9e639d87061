// The Jinja interpreter against Python jinja2.
//
// tests/data/chat_templates/jinja_cases.json is a table of small templates with their
// variables. JinjaVsPython runs tests/chat/render_jinja_cases.py (jinja2 from the project
// .venv, configured as transformers configures it) and requires our interpreter to print
// exactly what jinja2 prints, and to fail where jinja2 raises. The remaining tests check
// what jinja2 cannot tell us: our error messages and resource limits.
//
// Run: build-*/tests/test_tokenizer --gtest_filter='Jinja*'
// Without a .venv (scripts/setup.sh makes it) JinjaVsPython fails; set
// MOEOPT_SKIP_PYTHON_REFERENCE=1 to skip it instead.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/tokenizer/jinja_builtins.h"
#include "moeopt/tokenizer/jinja_interpreter.h"
#include "moeopt/tokenizer/jinja_parser.h"

namespace moeopt::jinja {
namespace {

using ojson = nlohmann::ordered_json;
constexpr std::time_t kPinnedNow = 1700000000;

Result<std::string> render_text(const std::string& tmpl, const ojson& context = ojson::object(),
                                RenderOptions opts = {}) {
  MOEOPT_ASSIGN_OR_RETURN(auto program, parse_template(tmpl));
  Value ctx = from_json(context);
  return render(*program, ctx.as_dict(), opts);
}

std::string run_command(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    *status = -1;
    return out;
  }
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

TEST(JinjaVsPython, EveryCaseMatchesJinja2) {
  const std::string root = MOEOPT_SOURCE_DIR;
  const std::string python = root + "/.venv/bin/python";
  if (!std::filesystem::exists(python)) {
    if (std::getenv("MOEOPT_SKIP_PYTHON_REFERENCE")) GTEST_SKIP() << "no .venv";
    FAIL() << python << " is missing: run scripts/setup.sh (or set MOEOPT_SKIP_PYTHON_REFERENCE=1)";
  }
  const std::string cases_path = root + "/tests/data/chat_templates/jinja_cases.json";
  int status = 0;
  std::string out = run_command("'" + python + "' '" + root + "/tests/chat/render_jinja_cases.py' --now " +
                                    std::to_string(kPinnedNow) + " '" + cases_path + "'",
                                &status);
  ASSERT_EQ(status, 0) << "render_jinja_cases.py failed";
  ojson expected = ojson::parse(out);
  auto cases_text = read_file(cases_path);
  ASSERT_TRUE(cases_text.ok()) << cases_text.status().message();
  ojson cases = ojson::parse(*cases_text)["cases"];
  ASSERT_GE(cases.size(), 100u);

  RenderOptions opts;
  opts.now = kPinnedNow;
  int compared = 0;
  for (const auto& c : cases) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    ASSERT_TRUE(expected.contains(name));
    const ojson& want = expected[name];
    auto got = render_text(c["template"], c["context"], opts);
    if (want.contains("error")) {
      EXPECT_FALSE(got.ok()) << "jinja2 raised " << want["type"].get<std::string>() << ": "
                             << want["error"].get<std::string>() << "\nbut we rendered: "
                             << (got.ok() ? *got : "");
      if (!got.ok() && want["type"] == "TemplateError") {
        // raise_exception: the template's own message must reach the caller.
        EXPECT_NE(got.status().message().find(want["error"].get<std::string>()), std::string::npos)
            << got.status().message();
      }
    } else {
      EXPECT_TRUE(got.ok()) << got.status().message();
      if (got.ok()) {
        EXPECT_EQ(*got, want["out"].get<std::string>()) << "template: " << c["template"];
      }
    }
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(cases.size()));
}

TEST(JinjaErrors, SyntaxErrorsNameLineAndColumn) {
  auto r = render_text("line one\n{% if true %}\n  {{ 1 + }}\n{% endif %}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("line 3 column"), std::string::npos) << r.status().message();

  r = render_text("{% for x in xs %}\nno end");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("endfor"), std::string::npos) << r.status().message();

  r = render_text("ok\n\n   {% include 'other.jinja' %}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("line 3 column 7"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("unsupported statement 'include'"), std::string::npos);

  r = render_text("{{ 'unterminated }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unterminated string"), std::string::npos);

  r = render_text("{# never closed");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("comment"), std::string::npos);

  r = render_text("{{ a < b < c }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("chained comparisons"), std::string::npos);
}

TEST(JinjaErrors, RuntimeErrorsNameTheProblem) {
  auto r = render_text("x\n{{ raise_exception('roles must alternate') }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("roles must alternate"), std::string::npos);
  EXPECT_NE(r.status().message().find("line 2"), std::string::npos) << r.status().message();

  r = render_text("{{ m.content.strip() }}", ojson{{"m", ojson::object()}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'dict object' has no attribute 'content'"),
            std::string::npos)
      << r.status().message();

  r = render_text("{{ x | no_such_filter }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no filter named 'no_such_filter'"), std::string::npos);

  r = render_text("{{ x is no_such_test }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no test named 'no_such_test'"), std::string::npos);

  r = render_text("{{ [1].append(2) }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unsafe"), std::string::npos);
}

TEST(JinjaLimits, UntrustedTemplatesCannotRunAway) {
  auto r = render_text("{{ range(100001)|length }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("range too big"), std::string::npos);

  RenderOptions small;
  small.max_output_bytes = 1000;
  r = render_text("{% for i in range(1000) %}0123456789{% endfor %}", ojson::object(), small);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("exceeds"), std::string::npos);

  RenderOptions few;
  few.max_loop_iterations = 50;
  r = render_text("{% for i in range(10) %}{% for j in range(10) %}{% endfor %}{% endfor %}",
                  ojson::object(), few);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("iteration limit"), std::string::npos);

  r = render_text("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("recursion"), std::string::npos);

  r = render_text("{{ 'x' * 100000000 }}");
  ASSERT_FALSE(r.ok());

  // Deep nesting is refused before the parser's recursion can exhaust the stack.
  for (std::string open : {"(", "[", "not ", "-"}) {
    std::string close = open == "(" ? ")" : open == "[" ? "]" : "";
    std::string deep = "{{ ";
    for (int i = 0; i < 100000; ++i) deep += open;
    deep += "1";
    for (int i = 0; i < 100000; ++i) deep += close;
    r = render_text(deep + " }}");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("nesting"), std::string::npos) << r.status().message();
  }
  // Deep expressions inside deep macro recursion stay within the evaluation depth limit.
  std::string nested = "1";
  for (int i = 0; i < 200; ++i) nested = "(" + nested + " + 0)";
  r = render_text("{% macro f(n) %}{{ f(n + " + nested + ") }}{% endmacro %}{{ f(0) }}");
  ASSERT_FALSE(r.ok());

  std::string blocks;
  for (int i = 0; i < 5000; ++i) blocks += "{% if true %}";
  r = render_text(blocks);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nesting"), std::string::npos);
}

TEST(JinjaJson, ObjectKeyOrderIsKept) {
  // tools|tojson must print keys in the caller's order (Python dicts keep insertion order).
  ojson ctx = ojson::parse(R"({"t": {"zeta": 1, "alpha": {"b": 2, "a": 3}}})");
  auto r = render_text("{{ t|tojson }}", ctx);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, R"({"zeta": 1, "alpha": {"b": 2, "a": 3}})");
}


// Templates are untrusted input: every truncation and many one-character deletions of the
// real templates must parse or fail cleanly, and whatever parses must render or fail
// cleanly (run under ASan/UBSan to catch memory errors).
TEST(JinjaRobustness, DamagedRealTemplatesFailCleanly) {
  const std::string root = MOEOPT_SOURCE_DIR;
  std::vector<std::string> sources;
  for (const char* family : {"qwen3", "deepseek_v3", "llama3"}) {
    auto text = read_file(root + "/models/tokenizers/" + family + "/tokenizer_config.json");
    ASSERT_TRUE(text.ok()) << text.status().message();
    sources.push_back(ojson::parse(*text)["chat_template"].get<std::string>());
  }
  auto mixtral = read_file(root + "/tests/data/chat_templates/templates/mixtral_instruct.jinja");
  ASSERT_TRUE(mixtral.ok());
  sources.push_back(*mixtral);
  const ojson ctx = ojson::parse(R"({
    "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                 {"role": "assistant", "content": "a", "reasoning_content": "r",
                  "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
                 {"role": "tool", "content": "t"}, {"role": "user", "content": "u2"}],
    "tools": [{"type": "function", "function": {"name": "f"}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
  RenderOptions opts;
  opts.max_output_bytes = 1 << 20;
  opts.max_loop_iterations = 100000;
  size_t parsed = 0, failed = 0;
  auto attempt = [&](const std::string& text) {
    auto r = render_text(text, ctx, opts);
    if (r.ok()) ++parsed;
    else {
      ++failed;
      EXPECT_FALSE(r.status().message().empty());
    }
  };
  for (const auto& src : sources) {
    for (size_t n = 0; n <= src.size(); n += (n < 600 ? 1 : 5)) attempt(src.substr(0, n));
    for (size_t i = 0; i < src.size(); i += 11) attempt(src.substr(0, i) + src.substr(i + 1));
  }
  EXPECT_GT(parsed, 0u);
  EXPECT_GT(failed, 0u);
}

}  // namespace
}  // namespace moeopt::jinja
