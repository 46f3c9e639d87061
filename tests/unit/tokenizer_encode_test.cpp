// Tokenizer loading, encoding and decoding. Expected ids were produced by Hugging Face
// `tokenizers` 0.23.3 (Tokenizer.from_str on the same tokenizer.json, encode(...).ids); the
// full corpus comparison lives in tests/tokenizer/compare_hf.py.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "moeopt/tokenizer/streaming_detokenizer.h"
#include "moeopt/tokenizer/tokenizer.h"
#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {
namespace {

using Ids = std::vector<int32_t>;

const Tokenizer& vendored(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) {
    auto t = Tokenizer::load(std::string(MOEOPT_SOURCE_DIR) + "/models/tokenizers/" + name);
    EXPECT_TRUE(t.ok()) << t.status().message();
    slot = std::make_unique<Tokenizer>(std::move(t).value());
  }
  return *slot;
}

Ids enc(const Tokenizer& t, const std::string& s, bool special) {
  auto r = t.encode(s, special);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : Ids{};
}

// A tiny BPE: merges "b c" (rank 0), "a b", "a bc", "c c"; unknown characters fuse to '?';
// spaces split words; one special added token.
constexpr const char* kTinyJson = R"({"version": "1.0",
  "added_tokens": [{"id": 9, "content": "<e>", "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true}],
  "normalizer": null,
  "pre_tokenizer": {"type": "Split", "pattern": {"Regex": " "}, "behavior": "Isolated", "invert": false},
  "post_processor": null, "decoder": null,
  "model": {"type": "BPE", "dropout": null, "unk_token": "?", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": false,
            "vocab": {"?": 0, "a": 1, "b": 2, "c": 3, "ab": 4, "bc": 5, "abc": 6, " ": 7, "cc": 8},
            "merges": ["b c", "a b", "a bc", "c c"]}})";

}  // namespace

TEST(TokenizerEncode, VendoredTokenizersMatchHuggingFace) {
  const Tokenizer& qwen = vendored("qwen3");
  EXPECT_EQ(enc(qwen, "Hello world", false), (Ids{9707, 1879}));
  EXPECT_EQ(enc(qwen, "<|im_start|>user\n\xE4\xBD\xA0\xE5\xA5\xBD<|im_end|>", true), (Ids{151644, 872, 198, 108386, 151645}));
  EXPECT_EQ(enc(qwen, "I'll pay $1234.5 \xF0\x9F\x98\x80", false),
            (Ids{40, 3278, 2291, 400, 16, 17, 18, 19, 13, 20, 90316}));

  const Tokenizer& l2 = vendored("llama2");
  EXPECT_EQ(enc(l2, "Hello world", false), (Ids{22557, 1526}));
  EXPECT_EQ(enc(l2, "Hello world", true), (Ids{1, 22557, 1526}));
  EXPECT_EQ(enc(l2, "<s>hi</s>", true), (Ids{1, 1, 12014, 2}));
  EXPECT_EQ(enc(l2, "a\xF0\x9D\x95\xB3" "b", true), (Ids{1, 264, 243, 160, 152, 182, 28726}));  // byte fallback

  const Tokenizer& l3 = vendored("llama3");
  EXPECT_EQ(enc(l3, "1234567", false), (Ids{4513, 10961, 22}));
  EXPECT_EQ(enc(l3, "<|begin_of_text|>Hi", true), (Ids{128000, 13347}));

  const Tokenizer& ds = vendored("deepseek_v3");
  EXPECT_EQ(enc(ds, "\xE4\xB8\xAD\xE6\x96\x87" "123456", false), (Ids{21134, 6895, 18009}));
  EXPECT_EQ(enc(ds, "<\xEF\xBD\x9CUser\xEF\xBD\x9C>hi", false), (Ids{128803, 6366}));
}

TEST(TokenizerEncode, ConfigSpecialTokens) {
  const Tokenizer& qwen = vendored("qwen3");
  EXPECT_EQ(qwen.eos_token(), "<|im_end|>");
  EXPECT_EQ(qwen.eos_token_id(), 151645);
  EXPECT_EQ(qwen.eos_token_ids(), (Ids{151645}));
  EXPECT_FALSE(qwen.bos_token_id().has_value());
  EXPECT_FALSE(qwen.add_bos_token());
  EXPECT_FALSE(qwen.chat_template().empty());
  EXPECT_TRUE(qwen.is_special(151643));     // <|endoftext|>
  EXPECT_FALSE(qwen.is_special(151667));    // <think> is an added but not special token
  EXPECT_EQ(qwen.token_to_id("<think>"), 151667);
  EXPECT_EQ(qwen.id_to_token(9707), "Hello");
  EXPECT_FALSE(qwen.id_to_token(-1).has_value());
  EXPECT_FALSE(qwen.id_to_token(10'000'000).has_value());
  EXPECT_EQ(qwen.vocab_size(), 151669u);

  const Tokenizer& l2 = vendored("llama2");
  EXPECT_EQ(l2.bos_token_id(), 1);
  EXPECT_EQ(l2.eos_token_id(), 2);
  EXPECT_TRUE(l2.add_bos_token());
  EXPECT_EQ(l2.vocab_size(), 32000u);
  EXPECT_EQ(vendored("deepseek_v3").bos_token(), "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
}

TEST(TokenizerEncode, InvalidUtf8IsAnErrorNamingTheOffset) {
  auto r = vendored("qwen3").encode("abc\xFF" "def", false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("offset 3"), std::string::npos) << r.status().message();
  EXPECT_FALSE(vendored("llama2").encode("\xED\xA0\x80", false).ok());  // encoded surrogate
}

TEST(TokenizerEncode, TinyBpeMergesByRankAndFusesUnknowns) {
  auto t = Tokenizer::from_json(kTinyJson, "", "tiny");
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ(enc(*t, "abc", false), (Ids{6}));           // b+c first (rank 0), then a+bc
  EXPECT_EQ(enc(*t, "abcc", false), (Ids{6, 3}));
  EXPECT_EQ(enc(*t, "bcbcab", false), (Ids{5, 5, 4}));
  EXPECT_EQ(enc(*t, "ccc", false), (Ids{8, 3}));        // leftmost pair wins a tie
  EXPECT_EQ(enc(*t, "xyzab", false), (Ids{0, 4}));      // x, y, z fuse into one '?'
  EXPECT_EQ(enc(*t, "cabc<e>abx", false), (Ids{3, 6, 9, 4, 0}));
  // No decoder: tokens are joined with spaces; the special token is dropped when skipping.
  Ids ids{3, 6, 9, 4, 0};
  EXPECT_EQ(t->decode(ids, true), "c abc ab ?");
  EXPECT_EQ(t->decode(ids, false), "c abc <e> ab ?");
}

TEST(TokenizerEncode, MalformedFilesGiveErrorsNamingTheProblem) {
  auto not_json = Tokenizer::from_json("{not json", "", "bad.json");
  ASSERT_FALSE(not_json.ok());
  EXPECT_NE(not_json.status().message().find("bad.json"), std::string::npos);

  std::string unknown_norm = kTinyJson;
  unknown_norm.replace(unknown_norm.find("\"normalizer\": null"), 18, R"("normalizer": {"type": "Frobnicate"})");
  auto r = Tokenizer::from_json(unknown_norm, "", "t.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kUnsupported);
  EXPECT_NE(r.status().message().find("Frobnicate"), std::string::npos) << r.status().message();

  std::string unknown_model = kTinyJson;
  unknown_model.replace(unknown_model.find("\"type\": \"BPE\""), 13, R"("type": "Unigram")");
  r = Tokenizer::from_json(unknown_model, "", "t.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("Unigram"), std::string::npos);

  std::string bad_merge = kTinyJson;
  bad_merge.replace(bad_merge.find("\"c c\""), 5, "\"c q\"");
  r = Tokenizer::from_json(bad_merge, "", "t.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("merge 3"), std::string::npos) << r.status().message();

  std::string wrong_type = kTinyJson;
  wrong_type.replace(wrong_type.find("\"fuse_unk\": true"), 16, "\"fuse_unk\": \"yes\"");
  r = Tokenizer::from_json(wrong_type, "", "t.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("fuse_unk"), std::string::npos);

  auto missing = Tokenizer::load("/nonexistent/tokenizer/dir");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/tokenizer/dir"), std::string::npos);
}

TEST(TokenizerEncode, DecodeMatchesHuggingFace) {
  // Reference strings from tokenizers 0.23.3 decode().
  const Tokenizer& l2 = vendored("llama2");
  Ids ids{1, 22557, 1526};
  EXPECT_EQ(l2.decode(ids, true), "Hello world");          // Strip removes the leading space
  EXPECT_EQ(l2.decode(ids, false), "<s> Hello world");
  Ids partial{1, 264, 243, 160};                           // truncated 4-byte sequence
  EXPECT_EQ(l2.decode(partial, true), "a\xEF\xBF\xBD\xEF\xBF\xBD");  // one U+FFFD per byte
  const Tokenizer& qwen = vendored("qwen3");
  Ids q{151644, 872, 198, 108386, 151645};
  EXPECT_EQ(qwen.decode(q, false), "<|im_start|>user\n\xE4\xBD\xA0\xE5\xA5\xBD<|im_end|>");
  EXPECT_EQ(qwen.decode(q, true), "user\n\xE4\xBD\xA0\xE5\xA5\xBD");
}

TEST(TokenizerEncode, ConcurrentEncodesAgree) {
  const Tokenizer& qwen = vendored("qwen3");
  std::vector<std::string> texts;
  for (int k = 0; k < 200; ++k) texts.push_back("word" + std::to_string(k * 7919) + " \xE4\xB8\xAD\xE6\x96\x87 " + std::string(k % 13, 'x'));
  std::vector<Ids> serial;
  for (const auto& s : texts) serial.push_back(enc(qwen, s, false));
  std::vector<std::vector<Ids>> par(4);
  std::vector<std::thread> threads;
  for (int th = 0; th < 4; ++th)
    threads.emplace_back([&, th] {
      for (const auto& s : texts) par[th].push_back(*qwen.encode(s, false));
    });
  for (auto& t : threads) t.join();
  for (const auto& p : par) EXPECT_EQ(p, serial);
}

TEST(TokenizerStreaming, NeverSplitsACharacterAndConcatenatesToDecode) {
  const Tokenizer& l2 = vendored("llama2");
  // "a", then U+1D573 as four byte-fallback tokens, then "b".
  Ids ids{1, 264, 243, 160, 152, 182, 28726};
  StreamingDetokenizer s(l2, /*skip_special_tokens=*/true);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(s.feed(id));
  pieces.push_back(s.finish());
  EXPECT_EQ(pieces[1], "a");  // the first word: its leading space is stripped like in decode
  EXPECT_EQ(pieces[2], "");   // inside the 4-byte character: nothing yet
  EXPECT_EQ(pieces[3], "");
  EXPECT_EQ(pieces[4], "");
  std::string all;
  for (const auto& p : pieces) {
    EXPECT_TRUE(is_valid_utf8(p));
    all += p;
  }
  EXPECT_EQ(all, l2.decode(ids, true));
  EXPECT_EQ(s.size(), ids.size());

  // Byte-level: the same character split over several tokens by Qwen3.
  const Tokenizer& qwen = vendored("qwen3");
  const std::string text = "x \xF0\x9D\x95\xB3\xF0\x9F\x98\x80 y\xE4\xB8\xAD";
  Ids q = enc(qwen, text, false);
  StreamingDetokenizer sq(qwen, false);
  std::string joined;
  for (int32_t id : q) {
    std::string p = sq.feed(id);
    EXPECT_TRUE(is_valid_utf8(p)) << "piece for id " << id;
    joined += p;
  }
  joined += sq.finish();
  EXPECT_EQ(joined, text);
}

TEST(TokenizerResolve, FamilyNamesAndDirectories) {
  auto dir = resolve_tokenizer_dir("llama3", MOEOPT_SOURCE_DIR);
  ASSERT_TRUE(dir.ok()) << dir.status().message();
  EXPECT_NE(dir->find("models/tokenizers/llama3"), std::string::npos);
  auto same = resolve_tokenizer_dir(*dir, "/nowhere");
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(*same, *dir);
  auto none = resolve_tokenizer_dir("gpt9", MOEOPT_SOURCE_DIR);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), ErrorCode::kNotFound);
}

}  // namespace moeopt::tokenizer
