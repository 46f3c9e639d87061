// OpenAI request parsing: fields map to SamplingParams; bad bodies give 400s naming the field.
#include <gtest/gtest.h>

#include "moeopt/server/openai_request.h"
#include "moeopt/server/openai_response.h"

namespace moeopt::server {
namespace {

ApiRequest parse_ok(const std::string& body, Endpoint ep = Endpoint::kCompletions) {
  ApiRequest r;
  auto err = parse_generation_request(body, ep, r);
  EXPECT_FALSE(err.has_value()) << body << " -> " << (err ? err->message : "");
  return r;
}

ApiError parse_bad(const std::string& body, Endpoint ep = Endpoint::kCompletions) {
  ApiRequest r;
  auto err = parse_generation_request(body, ep, r);
  EXPECT_TRUE(err.has_value()) << body;
  return err.value_or(ApiError{});
}

TEST(ServerRequest, CompletionFieldsMapToSamplingParams) {
  ApiRequest r = parse_ok(R"({"model": "m", "prompt": "hi", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9,
    "top_k": 40, "min_p": 0.05, "seed": 3, "presence_penalty": 0.1, "frequency_penalty": -0.2,
    "repetition_penalty": 1.3, "stop": ["a", "b"], "stop_token_ids": [5], "logprobs": 2, "stream": true,
    "stream_options": {"include_usage": true}, "ignore_eos": true, "n": 1, "user": "x"})");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt_text, "hi");
  EXPECT_FALSE(r.prompt_is_ids);
  EXPECT_EQ(r.params.max_tokens, 7);
  EXPECT_TRUE(r.max_tokens_given);
  EXPECT_FLOAT_EQ(r.params.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.params.top_p, 0.9f);
  EXPECT_EQ(r.params.top_k, 40);
  EXPECT_FLOAT_EQ(r.params.min_p, 0.05f);
  EXPECT_EQ(r.params.seed, 3u);
  EXPECT_FLOAT_EQ(r.params.presence_penalty, 0.1f);
  EXPECT_FLOAT_EQ(r.params.frequency_penalty, -0.2f);
  EXPECT_FLOAT_EQ(r.params.repetition_penalty, 1.3f);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.params.stop_token_ids, (std::vector<int32_t>{5}));
  EXPECT_EQ(r.top_logprobs, 2);
  EXPECT_EQ(r.params.logprobs, 2);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.params.ignore_eos);
}

TEST(ServerRequest, DefaultsAndNulls) {
  ApiRequest r = parse_ok(R"({"prompt": [1, 2, 3], "temperature": null, "max_tokens": null, "top_k": -1})");
  EXPECT_TRUE(r.prompt_is_ids);
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_FALSE(r.max_tokens_given);
  EXPECT_FLOAT_EQ(r.params.temperature, 1.0f);
  EXPECT_EQ(r.params.top_k, 0);
  EXPECT_EQ(r.top_logprobs, -1);
  EXPECT_EQ(r.params.logprobs, -1);
  // A one-element list of prompts is one prompt.
  EXPECT_EQ(parse_ok(R"({"prompt": ["x"]})").prompt_text, "x");
  EXPECT_EQ(parse_ok(R"({"prompt": [[4, 5]]})").prompt_ids, (std::vector<int32_t>{4, 5}));
}

TEST(ServerRequest, ChatMessagesToolsAndLogprobs) {
  ApiRequest r = parse_ok(R"({"messages": [{"role": "system", "content": "s"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
      "tools": [{"type": "function", "function": {"name": "f"}}], "logprobs": true, "top_logprobs": 4,
      "max_completion_tokens": 9, "chat_template_kwargs": {"enable_thinking": false}})",
                          Endpoint::kChat);
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1]["content"], "ab");
  EXPECT_TRUE(r.tools.is_array());
  EXPECT_EQ(r.top_logprobs, 4);
  EXPECT_EQ(r.params.max_tokens, 9);
  EXPECT_EQ(r.chat_template_kwargs["enable_thinking"], false);
  EXPECT_EQ(parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})", Endpoint::kChat)
                .top_logprobs,
            0);
}

TEST(ServerRequest, ChoicesN) {
  EXPECT_EQ(parse_ok(R"({"prompt": "x"})").n, 1);
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "n": null})").n, 1);
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "n": 3})").n, 3);
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "n": 16.0})").n, 16);
  EXPECT_EQ(parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "n": 4})", Endpoint::kChat).n, 4);
  // best_of equal to n returns every candidate: nothing to rank, accepted.
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "n": 2, "best_of": 2})").n, 2);
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "best_of": 1})").n, 1);
  ApiError e = parse_bad(R"({"prompt": "x", "n": 17})");
  EXPECT_EQ(e.message, "'n' must be in [1, 16], got 17");
  e = parse_bad(R"({"prompt": "x", "n": "3"})");
  EXPECT_EQ(e.message, "'n' must be an integer, got string");
}

TEST(ServerRequest, BadBodiesNameTheField) {
  struct Case {
    const char* body;
    Endpoint ep;
    const char* param;
  };
  const Case cases[] = {
      {"{", Endpoint::kCompletions, ""},
      {"[1]", Endpoint::kCompletions, ""},
      {R"({})", Endpoint::kCompletions, "prompt"},
      {R"({"prompt": ""})", Endpoint::kCompletions, "prompt"},
      {R"({"prompt": 5})", Endpoint::kCompletions, "prompt"},
      {R"({"prompt": [1, -2]})", Endpoint::kCompletions, "prompt"},
      {R"({"prompt": [1, 2.5]})", Endpoint::kCompletions, "prompt"},
      {R"({"prompt": ["a", "b"]})", Endpoint::kCompletions, "prompt"},
      {R"({"prompt": "x", "temperature": "hot"})", Endpoint::kCompletions, "temperature"},
      {R"({"prompt": "x", "max_tokens": 0})", Endpoint::kCompletions, "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 1.5})", Endpoint::kCompletions, "max_tokens"},
      {R"({"prompt": "x", "max_completion_tokens": -1})", Endpoint::kCompletions, "max_completion_tokens"},
      {R"({"prompt": "x", "n": 0})", Endpoint::kCompletions, "n"},
      {R"({"prompt": "x", "n": -1})", Endpoint::kCompletions, "n"},
      {R"({"prompt": "x", "n": 17})", Endpoint::kCompletions, "n"},
      {R"({"prompt": "x", "n": 2.5})", Endpoint::kCompletions, "n"},
      {R"({"prompt": "x", "n": "2"})", Endpoint::kCompletions, "n"},
      {R"({"prompt": "x", "n": true})", Endpoint::kCompletions, "n"},
      {R"({"prompt": "x", "n": 18446744073709551615})", Endpoint::kCompletions, "n"},
      {R"({"messages": [{"role": "user", "content": "x"}], "n": 99})", Endpoint::kChat, "n"},
      {R"({"prompt": "x", "best_of": 3})", Endpoint::kCompletions, "best_of"},
      {R"({"prompt": "x", "n": 2, "best_of": 3})", Endpoint::kCompletions, "best_of"},
      {R"({"prompt": "x", "n": 3, "best_of": 2})", Endpoint::kCompletions, "best_of"},
      {R"({"prompt": "x", "best_of": "1"})", Endpoint::kCompletions, "best_of"},
      {R"({"prompt": "x", "echo": "yes"})", Endpoint::kCompletions, "echo"},
      {R"({"prompt": "x", "echo": true, "logprobs": 1})", Endpoint::kCompletions, "echo"},
      {R"({"prompt": "x", "echo": true, "max_tokens": -1})", Endpoint::kCompletions, "max_tokens"},
      {R"({"prompt": "x", "logit_bias": [1]})", Endpoint::kCompletions, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"a": 1}})", Endpoint::kCompletions, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"-1": 1}})", Endpoint::kCompletions, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"99999999999": 1}})", Endpoint::kCompletions, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"5": 101}})", Endpoint::kCompletions, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"5": -100.5}})", Endpoint::kCompletions, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"5": "up"}})", Endpoint::kCompletions, "logit_bias"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": true}})", Endpoint::kChat,
       "logit_bias"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})", Endpoint::kChat,
       "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"})", Endpoint::kChat,
       "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": 1})", Endpoint::kChat, "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function",
          "function": {"name": "f"}}})", Endpoint::kChat, "tool_choice"},
      {R"({"prompt": "x", "stop": [""]})", Endpoint::kCompletions, "stop"},
      {R"({"prompt": "x", "stop": [1]})", Endpoint::kCompletions, "stop"},
      {R"({"prompt": "x", "logprobs": 21})", Endpoint::kCompletions, "logprobs"},
      {R"({"prompt": "x", "top_k": -5})", Endpoint::kCompletions, "top_k"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})", Endpoint::kCompletions, "stream_options"},
      {R"({"prompt": "x", "model": 3})", Endpoint::kCompletions, "model"},
      {R"({})", Endpoint::kChat, "messages"},
      {R"({"messages": []})", Endpoint::kChat, "messages"},
      {R"({"messages": [{"role": "user"}]})", Endpoint::kChat, "messages"},
      {R"({"messages": [{"role": "wizard", "content": "x"}]})", Endpoint::kChat, "messages"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", Endpoint::kChat, "messages"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", Endpoint::kChat, "top_logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": {}})", Endpoint::kChat, "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})",
       Endpoint::kChat, "response_format"},
  };
  for (const Case& c : cases) {
    ApiError e = parse_bad(c.body, c.ep);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << ": " << e.message;
    EXPECT_FALSE(e.message.empty());
    auto j = e.to_json();
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  }
}

TEST(ServerRequest, LogitBiasEchoAndToolChoice) {
  ApiRequest r = parse_ok(R"({"prompt": "x", "logit_bias": {"7": -100, "3": 2.5, "100000": 100}})");
  using Bias = std::vector<std::pair<int32_t, float>>;
  EXPECT_EQ(r.params.logit_bias, (Bias{{3, 2.5f}, {7, -100.0f}, {100000, 100.0f}}));
  EXPECT_FALSE(r.echo);
  EXPECT_TRUE(parse_ok(R"({"prompt": "x", "logit_bias": null})").params.logit_bias.empty());
  EXPECT_TRUE(parse_ok(R"({"prompt": "x", "logit_bias": {}})").params.logit_bias.empty());
  // Ids beyond the vocabulary are caught by SamplingParams::validate, naming the field.
  Status st = r.params.validate(50000);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.message().substr(0, 11), "logit_bias ");

  ApiRequest e = parse_ok(R"({"prompt": "x", "echo": true, "max_tokens": 0})");
  EXPECT_TRUE(e.echo);
  EXPECT_EQ(e.params.max_tokens, 0);
  EXPECT_TRUE(e.max_tokens_given);

  const std::string msgs = R"("messages": [{"role": "user", "content": "x"}])";
  const std::string tools = R"("tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}])";
  EXPECT_TRUE(parse_ok("{" + msgs + ", " + tools + "}", Endpoint::kChat).parse_tool_calls);
  EXPECT_TRUE(parse_ok("{" + msgs + ", " + tools + R"(, "tool_choice": "auto"})", Endpoint::kChat).parse_tool_calls);
  EXPECT_FALSE(parse_ok("{" + msgs + ", " + tools + R"(, "tool_choice": "none"})", Endpoint::kChat).parse_tool_calls);
  EXPECT_FALSE(parse_ok("{" + msgs + "}", Endpoint::kChat).parse_tool_calls);
  EXPECT_FALSE(parse_ok("{" + msgs + R"(, "tools": []})", Endpoint::kChat).parse_tool_calls);
}

TEST(ServerResponse, ToolCallsInMessagesAndChunks) {
  ResponseInfo info;
  info.endpoint = Endpoint::kChat;
  info.id = "chatcmpl-x";
  info.model = "m";
  ToolCall call{"call_1", "get_weather", R"({"city":"Paris"})"};
  ojson full = full_response(info, "", "tool_calls", nullptr, Usage{}, {call});
  const ojson& msg = full["choices"][0]["message"];
  EXPECT_TRUE(msg["content"].is_null());
  ASSERT_EQ(msg["tool_calls"].size(), 1u);
  EXPECT_EQ(msg["tool_calls"][0]["id"], "call_1");
  EXPECT_EQ(msg["tool_calls"][0]["type"], "function");
  EXPECT_EQ(msg["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(msg["tool_calls"][0]["function"]["arguments"], R"({"city":"Paris"})");
  EXPECT_FALSE(msg["tool_calls"][0].contains("index"));
  EXPECT_EQ(full["choices"][0]["finish_reason"], "tool_calls");
  // Text next to the calls stays content; without calls there is no tool_calls key.
  EXPECT_EQ(full_response(info, "ok", "tool_calls", nullptr, Usage{}, {call})["choices"][0]["message"]["content"],
            "ok");
  ojson plain = full_response(info, "", "stop", nullptr, Usage{});
  EXPECT_EQ(plain["choices"][0]["message"]["content"], "");
  EXPECT_FALSE(plain["choices"][0]["message"].contains("tool_calls"));

  ojson chunk = tool_calls_chunk(info, {call, ToolCall{"call_2", "f", "{}"}}, 3, true);
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_TRUE(chunk["usage"].is_null());
  const ojson& calls = chunk["choices"][0]["delta"]["tool_calls"];
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0]["index"], 3);
  EXPECT_EQ(calls[1]["index"], 4);
  EXPECT_EQ(calls[1]["id"], "call_2");
  EXPECT_EQ(calls[1]["function"]["arguments"], "{}");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());

  EXPECT_EQ(chat_finish_reason("stop", 1), "tool_calls");
  EXPECT_EQ(chat_finish_reason("stop", 0), "stop");
  EXPECT_EQ(chat_finish_reason("length", 2), "length");
}

TEST(ServerRequest, HostileBodiesAre400s) {
  // 30,000 nested arrays crashed the process through recursive copies; now the parse refuses.
  std::string deep = std::string(30000, '[') + std::string(30000, ']');
  for (const std::string& body :
       {R"({"messages": [{"role": "user", "content": )" + deep + "}]}",
        R"({"messages": [{"role": "user", "content": "hi"}], "tools": [)" + deep + "]}",
        R"({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"a": )" + deep + "}}"}) {
    ApiError e = parse_bad(body, Endpoint::kChat);
    EXPECT_EQ(e.status, 400);
    EXPECT_NE(e.message.find("deeper than 128"), std::string::npos) << e.message;
  }
  // Bytes after the document, NUL included (nlohmann alone stops at a NUL).
  EXPECT_EQ(parse_bad(std::string(R"({"prompt": "hi"})") + '\0' + " garbage").status, 400);
  EXPECT_EQ(parse_bad(R"({"prompt": "hi"} x)").status, 400);
  // Too many values: refused before they are built.
  std::string many = R"({"prompt": [1)";
  for (int i = 0; i < (1 << 20); ++i) many += ",1";
  ApiError e = parse_bad(many + "]}");
  EXPECT_NE(e.message.find("more than"), std::string::npos) << e.message;
}

TEST(ServerRequest, AssistantToolCallsWithoutContent) {
  for (const char* content : {"", R"(, "content": null)"}) {
    std::string body = std::string(R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant")") +
                       content +
                       R"(, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]})";
    ApiRequest r = parse_ok(body, Endpoint::kChat);
    EXPECT_EQ(r.messages[1]["content"], "");
    EXPECT_TRUE(r.messages[1].contains("tool_calls"));
  }
  EXPECT_EQ(parse_bad(R"({"messages": [{"role": "user", "content": null}]})", Endpoint::kChat).param, "messages");
}

TEST(ServerResponse, ChunksAndUsage) {
  ResponseInfo info{Endpoint::kChat, "chatcmpl-1", 100, "m"};
  auto first = stream_chunk(info, "", "", nullptr, true, true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["usage"].is_null());
  auto last = stream_chunk(info, "", "length", nullptr, false, false);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(last.contains("usage"));
  auto u = usage_chunk(info, Usage{5, 3, 0});
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["total_tokens"], 8);
  EXPECT_EQ(sse_event(ojson{{"a", 1}}), "data: {\"a\":1}\n\n");
  auto full = full_response(ResponseInfo{Endpoint::kCompletions, "cmpl-1", 1, "m"}, "txt", "stop", nullptr,
                            Usage{2, 1, 16});
  EXPECT_EQ(full["choices"][0]["text"], "txt");
  EXPECT_EQ(full["usage"]["prompt_tokens_details"]["cached_tokens"], 16);
  // n choices: indices 0..n-1, each its own text, finish reason and logprobs.
  auto many = full_response(ResponseInfo{Endpoint::kChat, "chatcmpl-2", 1, "m"},
                            {ChoiceBody{"a", "stop", nullptr, {}}, ChoiceBody{"", "tool_calls", ojson{{"content", 1}},
                                                                              {ToolCall{"call_1", "f", "{}"}}}},
                            Usage{4, 6, 0});
  ASSERT_EQ(many["choices"].size(), 2u);
  EXPECT_EQ(many["choices"][0]["index"], 0);
  EXPECT_EQ(many["choices"][0]["message"]["content"], "a");
  EXPECT_EQ(many["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(many["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(many["choices"][1]["index"], 1);
  EXPECT_TRUE(many["choices"][1]["message"]["content"].is_null());
  EXPECT_EQ(many["choices"][1]["message"]["tool_calls"][0]["id"], "call_1");
  EXPECT_EQ(many["choices"][1]["finish_reason"], "tool_calls");
  EXPECT_EQ(many["choices"][1]["logprobs"]["content"], 1);
  EXPECT_EQ(many["usage"]["total_tokens"], 10);
  EXPECT_EQ(stream_chunk(info, "x", "", nullptr, false, false, 3)["choices"][0]["index"], 3);
  EXPECT_EQ(tool_calls_chunk(info, {ToolCall{"call_1", "f", "{}"}}, 0, false, 2)["choices"][0]["index"], 2);
}

}  // namespace
}  // namespace moeopt::server
