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
    return std::make_unique<ResponseAccumulator>(*model, ar, 7, std::make_shared<RequestStream>(1, ar.n),
                                                 *service, metrics);
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

TEST(ServerResponseAccumulator, NChoicesAreAssembledApartAndUsageSums) {
  Fixture f;
  ASSERT_TRUE(f.model);
  auto a = f.model->tok.encode(kAnswer, /*add_special_tokens=*/false);
  auto b = f.model->tok.encode("Hello there, Paris.", /*add_special_tokens=*/false);
  ASSERT_TRUE(a.ok() && b.ok());
  ApiRequest one = chat_with_tools();
  one.parse_tool_calls = false;
  one.stop = {"check"};
  // Each choice alone: the reference.
  Choice want_a = run(*f.accumulator(one), *a, 1);
  auto acc_b = f.accumulator(one);
  Choice want_b = run(*acc_b, *b, 1);
  int64_t tokens_a = 0;
  {
    auto acc_a = f.accumulator(one);
    run(*acc_a, *a, 1);
    tokens_a = acc_a->usage().completion_tokens;
  }
  ASSERT_EQ(want_a.content, "Let me ");
  ASSERT_EQ(want_b.content, "Hello there, Paris.");

  // Two choices, their events interleaved token by token.
  ApiRequest two = one;
  two.n = 2;
  auto acc = f.accumulator(two);
  EXPECT_EQ(acc->num_choices(), 2);
  std::vector<int32_t> ids[2] = {*a, *b};
  for (auto& v : ids) v.push_back(kImEnd);
  Choice got[2];
  size_t pos[2] = {0, 0};
  for (int turn = 0; !acc->done() && turn < 1000; ++turn) {
    const int c = turn % 2;
    if (pos[c] >= ids[c].size()) continue;
    StreamEvent ev;
    ev.choice = c;
    ev.tokens = {ids[c][pos[c]++]};
    ev.finished = pos[c] == ids[c].size();
    ev.finish_reason = ev.finished ? FinishReason::kStop : FinishReason::kNone;
    ChoiceDelta d = acc->consume(ev);
    ASSERT_FALSE(d.error);
    EXPECT_EQ(d.index, c);
    got[c].content += d.content;
    if (d.finished) {
      EXPECT_TRUE(got[c].finish.empty()) << "choice " << c << " finished twice";
      got[c].finish = d.finish_reason;
    }
    // The stop string ends choice 0 early; choice 1 still runs, so the answer is not done.
    if (got[0].finish == "stop" && got[1].finish.empty()) {
      EXPECT_FALSE(acc->done());
    }
  }
  EXPECT_TRUE(acc->done());
  EXPECT_EQ(got[0].content, want_a.content);
  EXPECT_EQ(got[0].finish, "stop");
  EXPECT_EQ(got[1].content, want_b.content);
  EXPECT_EQ(got[1].finish, "stop");
  Usage u = acc->usage();
  EXPECT_EQ(u.prompt_tokens, 7);  // once, not per choice
  EXPECT_EQ(u.completion_tokens, tokens_a + acc_b->usage().completion_tokens);
  EXPECT_GT(tokens_a, 0);
  EXPECT_EQ(acc_b->usage().completion_tokens, int64_t(b->size()) + 1);
}

TEST(ServerRequestStream, EventsMergePerChoiceAndFinishWhenAllChoicesDid) {
  RequestStream s(1, 2);
  auto ev = [](int choice, std::vector<int32_t> tokens, bool finished) {
    StreamEvent e;
    e.choice = choice;
    e.tokens = std::move(tokens);
    e.finished = finished;
    e.finish_reason = finished ? FinishReason::kLength : FinishReason::kNone;
    return e;
  };
  s.push(ev(0, {1}, false));
  s.push(ev(1, {10}, false));
  s.push(ev(0, {2}, true));
  s.push(ev(0, {3}, false));  // after choice 0's final event: dropped
  EXPECT_FALSE(s.finished());
  auto first = s.wait(std::chrono::milliseconds(0));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->choice, 0);
  EXPECT_EQ(first->tokens, (std::vector<int32_t>{1, 2}));
  EXPECT_TRUE(first->finished);
  s.push(ev(1, {11}, true));
  EXPECT_TRUE(s.finished());
  auto second = s.wait(std::chrono::milliseconds(0));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->choice, 1);
  EXPECT_EQ(second->tokens, (std::vector<int32_t>{10, 11}));
  EXPECT_TRUE(second->finished);
  EXPECT_FALSE(s.wait(std::chrono::milliseconds(0)));
  // An engine error ends every choice at once.
  RequestStream t(2, 3);
  StreamEvent err = ev(1, {}, false);
  err.error = "boom";
  t.push(err);
  EXPECT_TRUE(t.finished());
  t.push(ev(0, {1}, false));
  auto only = t.wait(std::chrono::milliseconds(0));
  ASSERT_TRUE(only);
  EXPECT_EQ(only->error, "boom");
  EXPECT_FALSE(t.wait(std::chrono::milliseconds(0)));
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
