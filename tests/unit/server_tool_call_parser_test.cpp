// ToolCallParser: Qwen3 <tool_call> blocks -> calls; streamed pieces give the same answer as
// the whole text; malformed blocks stay content.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moeopt/server/tool_call_parser.h"

namespace moeopt::server {
namespace {

// Feeds `text` in pieces of `step` bytes (0: whole) and collects everything released.
struct Streamed {
  std::string content;
  std::vector<ToolCall> calls;
  std::string content_before_first_call;  // what was shown before the first call came out
};
Streamed stream(const std::string& text, size_t step) {
  ToolCallParser p;
  Streamed s;
  auto take = [&s](ToolCallDelta d) {
    s.content += d.content;
    if (s.calls.empty() && !d.calls.empty()) s.content_before_first_call = s.content;
    for (auto& c : d.calls) s.calls.push_back(std::move(c));
  };
  if (step == 0) step = text.size() ? text.size() : 1;
  for (size_t i = 0; i < text.size(); i += step) take(p.feed(text.substr(i, step)));
  take(p.finish());
  EXPECT_EQ(p.num_calls(), int(s.calls.size()));
  return s;
}

nlohmann::json args_of(const ToolCall& c) { return nlohmann::json::parse(c.arguments); }

TEST(ServerToolCallParser, OneCallIsParsed) {
  ToolCallDelta d = parse_tool_calls(
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}\n</tool_call>");
  EXPECT_EQ(d.content, "");
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(d.calls[0].name, "get_weather");
  EXPECT_EQ(args_of(d.calls[0]), nlohmann::json::parse(R"({"city": "Paris", "days": [1, 2]})"));
  // The id is "call_" and 24 hex digits, fresh per call.
  ASSERT_EQ(d.calls[0].id.size(), 29u);
  EXPECT_EQ(d.calls[0].id.substr(0, 5), "call_");
  EXPECT_EQ(d.calls[0].id.find_first_not_of("0123456789abcdef", 5), std::string::npos);
  EXPECT_NE(parse_tool_calls("<tool_call>{\"name\": \"f\"}</tool_call>").calls[0].id,
            parse_tool_calls("<tool_call>{\"name\": \"f\"}</tool_call>").calls[0].id);
}

TEST(ServerToolCallParser, TextBeforeAndSeveralCalls) {
  const std::string text =
      "Let me check both.\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"b\", \"arguments\": {\"y\": \"\u00e9t\u00e9\"}}\n</tool_call>\n";
  ToolCallDelta d = parse_tool_calls(text);
  EXPECT_EQ(d.content, "Let me check both.\n\n");  // whitespace between and after calls is dropped
  ASSERT_EQ(d.calls.size(), 2u);
  EXPECT_EQ(d.calls[0].name, "a");
  EXPECT_EQ(d.calls[1].name, "b");
  EXPECT_EQ(args_of(d.calls[1])["y"], "\u00e9t\u00e9");
  EXPECT_EQ(d.calls[1].arguments.find("\\u"), std::string::npos);  // UTF-8 as is, not escaped
}

TEST(ServerToolCallParser, ArgumentsForms) {
  EXPECT_EQ(parse_tool_calls("<tool_call>{\"name\": \"f\"}</tool_call>").calls.at(0).arguments, "{}");
  EXPECT_EQ(parse_tool_calls("<tool_call>{\"name\": \"f\", \"arguments\": null}</tool_call>").calls.at(0).arguments,
            "{}");
  EXPECT_EQ(parse_tool_calls("<tool_call>{\"name\": \"f\", \"parameters\": {\"a\": 1}}</tool_call>")
                .calls.at(0)
                .arguments,
            "{\"a\":1}");
  // Arguments the model already wrote as a JSON string are passed through.
  EXPECT_EQ(parse_tool_calls("<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}</tool_call>")
                .calls.at(0)
                .arguments,
            "{\"a\": 1}");
}

TEST(ServerToolCallParser, MalformedBlocksStayContent) {
  for (const std::string& text : std::vector<std::string>{
           "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": }\n</tool_call>",  // bad JSON
           "<tool_call>\n[\"f\"]\n</tool_call>",                                       // not an object
           "<tool_call>\n{\"arguments\": {}}\n</tool_call>",                             // no name
           "<tool_call>\n{\"name\": 3}\n</tool_call>",                                   // name not a string
           "<tool_call>\n{\"name\": \"\"}\n</tool_call>",                                // empty name
           "<tool_call>{\"name\": \"f\"} trailing</tool_call>",                          // bytes after the JSON
           "<tool_call>" + std::string(300, '[') + std::string(300, ']') + "</tool_call>",  // too deep
           "<tool_call>\n{\"name\": \"f\", \"argu",                                      // cut off
           "<tool_call",                                                                 // half a tag
       }) {
    for (size_t step : {size_t(0), size_t(1), size_t(5)}) {
      Streamed s = stream(text, step);
      EXPECT_TRUE(s.calls.empty()) << text;
      EXPECT_EQ(s.content, text) << "step " << step;
    }
  }
  // A bad block next to a good one: the good one is a call, the bad one text.
  ToolCallDelta d = parse_tool_calls(
      "<tool_call>{\"name\": \"ok\"}</tool_call>\n<tool_call>{oops}</tool_call>");
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(d.calls[0].name, "ok");
  EXPECT_EQ(d.content, "\n<tool_call>{oops}</tool_call>");
}

TEST(ServerToolCallParser, UnclosedValidCallAtTheEnd) {
  ToolCallDelta d = parse_tool_calls("hi <tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": 1}}\n");
  EXPECT_EQ(d.content, "hi ");
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(args_of(d.calls[0])["q"], 1);
}

TEST(ServerToolCallParser, PlainTextPassesThrough) {
  for (const std::string text : {"", "hello world", "a < b and <tool> or <tool_", "x </tool_call> y"}) {
    for (size_t step : {size_t(0), size_t(1), size_t(3)}) {
      Streamed s = stream(text, step);
      EXPECT_EQ(s.content, text);
      EXPECT_TRUE(s.calls.empty());
    }
  }
}

TEST(ServerToolCallParser, StreamingHoldsBackOnlyWhatMayBeATag) {
  ToolCallParser p;
  EXPECT_EQ(p.feed("Sure").content, "Sure");
  EXPECT_EQ(p.feed(", <tool").content, ", ");  // "<tool" may start the tag
  EXPECT_EQ(p.feed("box> ok <").content, "<toolbox> ok ");
  ToolCallDelta d = p.feed("tool_call>\n{\"name\": \"f\", ");
  EXPECT_EQ(d.content, "");
  EXPECT_TRUE(d.calls.empty());  // held until the closing tag
  d = p.feed("\"arguments\": {}}\n</tool_");
  EXPECT_TRUE(d.calls.empty());
  d = p.feed("call>");
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(d.calls[0].name, "f");
  EXPECT_EQ(p.feed("\n\n").content, "");  // whitespace after a call is held (dropped at the end)
  d = p.finish();
  EXPECT_EQ(d.content, "");
  EXPECT_EQ(p.num_calls(), 1);
}

TEST(ServerToolCallParser, StreamedPiecesMatchTheWholeText) {
  const std::string text =
      "<think>\nplan</think>\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"s\": \"</tool\"}}\n</tool_call>\n"
      "<tool_call>{bad}</tool_call>\nthen <tool_call>{\"name\": \"b\"}</tool_call>";
  ToolCallDelta whole = parse_tool_calls(text);
  ASSERT_EQ(whole.calls.size(), 2u);
  EXPECT_EQ(whole.content, "<think>\nplan</think>\n\n\n<tool_call>{bad}</tool_call>\nthen ");
  for (size_t step : {size_t(1), size_t(2), size_t(7), size_t(13)}) {
    Streamed s = stream(text, step);
    EXPECT_EQ(s.content, whole.content) << "step " << step;
    ASSERT_EQ(s.calls.size(), 2u);
    EXPECT_EQ(s.calls[0].name, "a");
    EXPECT_EQ(s.calls[0].arguments, whole.calls[0].arguments);
    EXPECT_EQ(s.calls[1].name, "b");
    // The text before the first tag was released before the call.
    EXPECT_EQ(s.content_before_first_call, "<think>\nplan</think>\n\n");
  }
}

}  // namespace
}  // namespace moeopt::server
