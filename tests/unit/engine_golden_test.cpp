// The CPU engine against Hugging Face transformers.
//
// For each tiny config in tests/reference/golden_configs, init-random writes the checkpoint
// (seed 0, deterministic), the engine runs every golden prompt in ONE batch with greedy
// decoding, and the results must match what transformers computed from the same files
// (tests/reference/make_golden.py, goldens in tests/data/goldens): last-prompt-position
// logits within 2e-3 and the 24 greedy tokens identical. The same prompts are then rerun
// one at a time and with a KV pool so small that sequences get preempted: the tokens must
// not change.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/engine/engine.h"
#include "moeopt/model/config.h"
#include "moeopt/model/model_cache.h"
#include "golden_support.h"

namespace fs = std::filesystem;

namespace moeopt {
namespace {

const fs::path kSource = MOEOPT_SOURCE_DIR;

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  // init-random of the golden config (seed 0), written once into the test cache
  // (MOEOPT_CACHE, set by CTest) through a temporary directory renamed into place, so
  // tests running in parallel processes never share a half-written checkpoint.
  static fs::path checkpoint(const std::string& name) {
    auto dir = materialize_random_checkpoint(
        (kSource / "tests/reference/golden_configs" / (name + ".json")).string(), 0, std::nullopt, "");
    EXPECT_TRUE(dir.ok()) << dir.status().message();
    return dir.ok() ? fs::path(*dir) : fs::path();
  }

  static std::unique_ptr<Engine> engine(const fs::path& dir, EngineOptions eo = {}) {
    auto model = load_model(dir.string());
    EXPECT_TRUE(model.ok()) << model.status().message();
    if (!model.ok()) return nullptr;
    if (eo.num_threads == 0) eo.num_threads = 2;
    auto e = Engine::create(std::move(*model), eo);
    EXPECT_TRUE(e.ok()) << e.status().message();
    return e.ok() ? std::move(*e) : nullptr;
  }

  static std::vector<Request> requests(const nlohmann::json& golden) {
    return golden_requests(golden);
  }
};

TEST_P(GoldenTest, MatchesTransformers) {
  const std::string name = GetParam();
  auto text = read_file((kSource / "tests/data/goldens" / (name + ".json.gz")).string());
  ASSERT_TRUE(text.ok()) << text.status().message() << " (run tests/reference/make_golden.py)";
  auto golden = nlohmann::json::parse(*text);
  fs::path dir = checkpoint(name);
  auto e = engine(dir);
  ASSERT_TRUE(e);
  auto out = run_to_completion(*e, requests(golden));
  ASSERT_TRUE(out.ok()) << out.status().message();
  ASSERT_EQ(out->size(), golden["prompts"].size());
  for (size_t i = 0; i < out->size(); ++i) {
    const auto& g = golden["prompts"][i];
    auto want_logits = g["last_logits"].get<std::vector<double>>();
    const auto& got_logits = (*out)[i].prompt_logits_last;
    ASSERT_EQ(got_logits.size(), want_logits.size()) << "prompt " << i;
    double worst = 0;
    for (size_t v = 0; v < want_logits.size(); ++v)
      worst = std::max(worst, std::fabs(double(got_logits[v]) - want_logits[v]));
    EXPECT_LE(worst, 2e-3) << name << " prompt " << i << ": max |dlogit| " << worst;
    std::printf("%s prompt %zu: max |dlogit| %.2e\n", name.c_str(), i, worst);
    EXPECT_EQ((*out)[i].tokens, g["greedy"].get<std::vector<int32_t>>()) << name << " prompt " << i;
  }
}

TEST_P(GoldenTest, BatchingAndPreemptionDoNotChangeTokens) {
  const std::string name = GetParam();
  auto text = read_file((kSource / "tests/data/goldens" / (name + ".json.gz")).string());
  ASSERT_TRUE(text.ok()) << text.status().message();
  auto golden = nlohmann::json::parse(*text);
  fs::path dir = checkpoint(name);
  auto batched = engine(dir);
  ASSERT_TRUE(batched);
  auto all = run_to_completion(*batched, requests(golden));
  ASSERT_TRUE(all.ok()) << all.status().message();
  // One at a time.
  auto single = engine(dir);
  auto reqs = requests(golden);
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto one = run_to_completion(*single, {reqs[i]});
    ASSERT_TRUE(one.ok()) << one.status().message();
    EXPECT_EQ((*one)[0].tokens, (*all)[i].tokens) << "prompt " << i;
  }
  // A pool of 16 blocks of 4 tokens (one long sequence alone needs 14) and chunked prefill
  // (budget 7 tokens per step): sequences must be
  // preempted and recomputed, and still produce the same tokens.
  EngineOptions tiny;
  tiny.block_size = 4;
  tiny.num_kv_blocks = 16;
  tiny.max_num_batched_tokens = 7;
  auto small = engine(dir, tiny);
  auto squeezed = run_to_completion(*small, requests(golden));
  ASSERT_TRUE(squeezed.ok()) << squeezed.status().message();
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ((*squeezed)[i].tokens, (*all)[i].tokens) << "prompt " << i;
  EXPECT_GT(small->scheduler().num_preemptions(), 0);
}

TEST_P(GoldenTest, CountsTokensRoutedToEachExpert) {
  const std::string name = GetParam();
  auto text = read_file((kSource / "tests/data/goldens" / (name + ".json.gz")).string());
  ASSERT_TRUE(text.ok()) << text.status().message();
  auto golden = nlohmann::json::parse(*text);
  auto e = engine(checkpoint(name));
  ASSERT_TRUE(e);
  auto reqs = requests(golden);
  int64_t forwarded = 0;  // every prompt token and every generated token but the last
  for (auto& r : reqs) forwarded += int64_t(r.prompt.size()) + r.params.max_tokens - 1;
  ASSERT_TRUE(run_to_completion(*e, reqs).ok());
  const ModelConfig& c = e->config();
  const auto& counts = e->expert_token_counts();
  ASSERT_EQ(int64_t(counts.size()), c.num_hidden_layers * c.num_experts);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    int64_t sum = 0, used = 0;
    for (int64_t x = 0; x < c.num_experts; ++x) {
      sum += counts[size_t(l * c.num_experts + x)];
      used += counts[size_t(l * c.num_experts + x)] > 0;
    }
    if (c.layer_is_moe(l)) {
      EXPECT_EQ(sum, forwarded * c.num_experts_per_tok) << "layer " << l;
      EXPECT_GE(used, std::min<int64_t>(c.num_experts, 2)) << "layer " << l;  // not all on one expert
    } else {
      EXPECT_EQ(sum, 0) << "dense layer " << l;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, GoldenTest, ::testing::ValuesIn(golden_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace moeopt
