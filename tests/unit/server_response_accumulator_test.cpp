// ResponseAccumulator: engine events -> OpenAI choice deltas, the one routine behind both the
// SSE and the JSON answer. Token by token or all at once, the deltas make the same choice
// (text, tool calls, finish reason, usage); engine failures and shutdown aborts become the
// 500 / 503 error objects.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "moeopt/server/response_accumulator.h"
#include "moeopt/server/served_model.h"
#include "server_test_engine.h"

namespace moeopt::server {
namespace {

constexpr int32_t kImEnd = 151645;  // <|im_end|>, Qwen3's EOS
const std::string kAnswer =
    "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

// The served model (the Qwen3 tokenizer) and an engine service that is never started: the
// accumulator only reads its events and may cancel.
struct Fixture {
  std::unique_ptr<ServedModel> model;
  std::unique_ptr<EngineService> service;
  Metrics metrics;

  Fixture() {
    auto tok = tokenizer::Tokenizer::load(std::string(MOEOPT_SOURCE_DIR) + "/models/tokenizers/qwen3");
    EXPECT_TRUE(tok.ok()) << tok.status().message();
    auto engine = small_engine();
    if (!tok.ok() || !engine) return;
    model = std::make_unique<ServedModel>(std::move(*tok), std::nullopt, "m", *engine);
    service = std::make_unique<EngineService>(std::move(engine), EngineServiceOptions{}, &metrics);
  }
  std::unique_ptr<ResponseAccumulator> accumulator(const ApiRequest& ar) {
    return std::make_unique<ResponseAccumulator>(*model, ar, 7, std::make_shared<RequestStream>(1), *service,
                                                 metrics);
  }
};

ApiRequest chat_with_tools() {
  ApiRequest ar;
  ar.endpoint = Endpoint::kChat;
  ar.parse_tool_calls = true;
  ar.params.stop_token_ids = {kImEnd};
  return ar;
}

struct Choice {
  std::string content, finish;
  std::vector<ToolCall> calls;
  int deltas = 0;
};

// Feeds `ids` in events of `per_event` tokens; the last one finishes by EOS.
Choice run(ResponseAccumulator& acc, std::vector<int32_t> ids, size_t per_event) {
  ids.push_back(kImEnd);
  Choice c;
  for (size_t i = 0; i < ids.size() && !acc.done(); i += per_event) {
    StreamEvent ev;
    ev.tokens.assign(ids.begin() + i, ids.begin() + std::min(ids.size(), i + per_event));
    ev.finished = i + per_event >= ids.size();
    ev.finish_reason = ev.finished ? FinishReason::kStop : FinishReason::kNone;
    ev.cached_prompt_tokens = i == 0 ? 4 : 0;
    ChoiceDelta d = acc.consume(ev);
    EXPECT_FALSE(d.error);
    c.content += d.content;
    for (auto& call : d.calls) c.calls.push_back(call);
    if (d.finished) c.finish = d.finish_reason;
    ++c.deltas;
  }
  return c;
}

TEST(ServerResponseAccumulator, ToolCallsTheSameTokenByTokenOrAllAtOnce) {
  Fixture f;
  ASSERT_TRUE(f.model);
  auto ids = f.model->tok.encode(kAnswer, /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok());
  for (size_t per_event : {size_t(1), ids->size() + 1}) {
    auto acc = f.accumulator(chat_with_tools());
    Choice c = run(*acc, *ids, per_event);
    EXPECT_EQ(c.content, "Let me check.\n") << per_event;
    ASSERT_EQ(c.calls.size(), 1u);
    EXPECT_EQ(c.calls[0].name, "get_weather");
    EXPECT_EQ(c.calls[0].arguments, "{\"city\":\"Paris\"}");
    EXPECT_EQ(c.finish, "tool_calls");
    EXPECT_TRUE(acc->done());
    Usage u = acc->usage();
    EXPECT_EQ(u.prompt_tokens, 7);
    EXPECT_EQ(u.cached_tokens, 4);
    EXPECT_EQ(u.completion_tokens, int64_t(ids->size()) + 1);  // the EOS counts, unshown
  }
  EXPECT_NE(f.metrics.render(EngineSnapshot{}, "m").find("finish_reason=\"tool_calls\"} 2"), std::string::npos);
}

TEST(ServerResponseAccumulator, WithoutToolParsingTheTextStaysAndStopStringsCut) {
  Fixture f;
  ASSERT_TRUE(f.model);
  auto ids = f.model->tok.encode(kAnswer, /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok());
  ApiRequest ar = chat_with_tools();
  ar.parse_tool_calls = false;
  Choice whole = run(*f.accumulator(ar), *ids, 1);
  EXPECT_EQ(whole.content, kAnswer);
  EXPECT_TRUE(whole.calls.empty());
  EXPECT_EQ(whole.finish, "stop");
  ar.stop = {"check"};
  Choice cut = run(*f.accumulator(ar), *ids, 1);
  EXPECT_EQ(cut.content, "Let me ");
  EXPECT_EQ(cut.finish, "stop");
  EXPECT_LT(cut.deltas, int(ids->size()));  // done at the match
}

TEST(ServerResponseAccumulator, EngineErrorsAndAbortsAreErrorObjects) {
  Fixture f;
  ASSERT_TRUE(f.model);
  StreamEvent failed;
  failed.error = "boom";
  ChoiceDelta d = f.accumulator(chat_with_tools())->consume(failed);
  ASSERT_TRUE(d.error);
  EXPECT_EQ(d.error->status, 500);
  EXPECT_EQ(d.error->message, "engine: boom");
  StreamEvent aborted;
  aborted.finished = true;
  aborted.finish_reason = FinishReason::kAbort;
  d = f.accumulator(chat_with_tools())->consume(aborted);
  ASSERT_TRUE(d.error);
  EXPECT_EQ(d.error->status, 503);
  EXPECT_EQ(d.error->type, "server_error");
}

}  // namespace
}  // namespace moeopt::server
