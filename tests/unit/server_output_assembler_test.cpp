// OutputAssembler with the real Qwen3 tokenizer: streamed text equals the text that was
// encoded, stop strings cut it, a final EOS is counted but not shown.
#include <gtest/gtest.h>

#include <string>

#include "moeopt/server/output_assembler.h"
#include "moeopt/tokenizer/tokenizer.h"

namespace moeopt::server {
namespace {

const std::string kText = "Hello world! This is a test of streaming, with ünïcödé and emoji 🙂 too.";
constexpr int32_t kImEnd = 151645;  // <|im_end|>, Qwen3's EOS

tokenizer::Tokenizer& qwen3() {
  static auto tok = tokenizer::Tokenizer::load(std::string(MOEOPT_SOURCE_DIR) + "/models/tokenizers/qwen3");
  EXPECT_TRUE(tok.ok()) << tok.status().message();
  return *tok;
}

// Feeds `ids` one event per token; the last event finishes with `reason`.
std::string stream_all(OutputAssembler& a, const std::vector<int32_t>& ids, FinishReason reason,
                       std::string* finish = nullptr) {
  std::string out;
  for (size_t i = 0; i < ids.size() && !a.done(); ++i) {
    StreamEvent ev;
    ev.tokens = {ids[i]};
    SampleResult sr;
    sr.token = ids[i];
    sr.logprob = -1.0f;
    ev.samples = {sr};
    ev.finished = i + 1 == ids.size();
    ev.finish_reason = ev.finished ? reason : FinishReason::kNone;
    OutputDelta d = a.consume(ev);
    out += d.text;
    if (d.finished && finish) *finish = d.finish_reason;
  }
  return out;
}

TEST(OutputAssembler, StreamedTextEqualsTheEncodedText) {
  auto ids = qwen3().encode(kText, false);
  ASSERT_TRUE(ids.ok());
  OutputAssembler a(qwen3(), {}, {kImEnd}, true, false);
  std::string finish;
  EXPECT_EQ(stream_all(a, *ids, FinishReason::kLength, &finish), kText);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(a.completion_tokens(), int32_t(ids->size()));
}

TEST(OutputAssembler, FinalEosIsCountedButNotShown) {
  auto ids = qwen3().encode("Short answer.", false);
  ASSERT_TRUE(ids.ok());
  ids->push_back(kImEnd);
  OutputAssembler a(qwen3(), {}, {kImEnd}, /*skip_special_tokens=*/false, false);
  std::string finish;
  EXPECT_EQ(stream_all(a, *ids, FinishReason::kStop, &finish), "Short answer.");
  EXPECT_EQ(finish, "stop");
  EXPECT_EQ(a.completion_tokens(), int32_t(ids->size()));
}

TEST(OutputAssembler, StopStringCutsTextAndLaterTokens) {
  auto ids = qwen3().encode(kText, false);
  ASSERT_TRUE(ids.ok());
  OutputAssembler a(qwen3(), {"is a"}, {}, true, true);
  std::string finish;
  EXPECT_EQ(stream_all(a, *ids, FinishReason::kLength, &finish), "Hello world! This ");
  EXPECT_EQ(finish, "stop");
  EXPECT_TRUE(a.stopped_by_string());
  EXPECT_LT(a.completion_tokens(), int32_t(ids->size()));
  // A stop string inside a multi-byte run: nothing after it, nothing broken before it.
  OutputAssembler b(qwen3(), {"cödé"}, {}, true, false);
  EXPECT_EQ(stream_all(b, *ids, FinishReason::kLength), "Hello world! This is a test of streaming, with ünï");
}

TEST(OutputAssembler, LogprobEntriesFollowTheText) {
  auto ids = qwen3().encode("one two three", false);
  ASSERT_TRUE(ids.ok());
  OutputAssembler a(qwen3(), {}, {}, true, true);
  std::vector<TokenLogprobEntry> all;
  for (size_t i = 0; i < ids->size(); ++i) {
    StreamEvent ev;
    ev.tokens = {(*ids)[i]};
    SampleResult sr;
    sr.token = (*ids)[i];
    sr.logprob = -0.5f * float(i + 1);
    ev.samples = {sr};
    ev.finished = i + 1 == ids->size();
    ev.finish_reason = ev.finished ? FinishReason::kLength : FinishReason::kNone;
    for (auto& e : a.consume(ev).logprobs) all.push_back(e);
  }
  ASSERT_EQ(all.size(), ids->size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].token, (*ids)[i]);
    EXPECT_FLOAT_EQ(all[i].logprob, -0.5f * float(i + 1));
  }
  EXPECT_EQ(all.front().text_offset, 0u);
  EXPECT_EQ(all.back().text_offset, std::string("one two").size());
}

}  // namespace
}  // namespace moeopt::server
