// The trained demo model (models/tiny-qwen3-moe-novels, the embedded default) against Hugging
// Face transformers: its perplexity of a held-out excerpt of its corpus, as moeopt's CPU
// reference computes it (model/quality.h), equals transformers' float32 CPU value to 1e-3
// relative, window by window and in total.
//
// The golden (tests/data/demo_perplexity_golden.json, written by
// tests/reference/make_demo_ppl_golden.py) holds the excerpt's token ids from HF tokenizers,
// the windows (256 tokens, non-overlapping, each scored from its own start), each window's
// summed negative log-likelihood and the perplexity. The tokenizer itself is checked against
// HF tokenizers by the tokenizer_hf_tiny_qwen3_moe_novels test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/model/model.h"
#include "moeopt/model/quality.h"

namespace fs = std::filesystem;

namespace moeopt {
namespace {

const fs::path kSource = MOEOPT_SOURCE_DIR;

// The golden and the model it names.
struct Golden {
  nlohmann::json g;
  std::unique_ptr<Model> model;
};

Golden load_golden() {
  Golden out;
  auto text = read_file((kSource / "tests/data/demo_perplexity_golden.json").string());
  EXPECT_TRUE(text.ok()) << text.status().message();
  if (!text.ok()) return out;
  out.g = nlohmann::json::parse(*text);
  auto model = load_model((kSource / out.g["model"].get<std::string>()).string());
  EXPECT_TRUE(model.ok()) << model.status().message();
  if (model.ok()) out.model = std::move(*model);
  return out;
}

TEST(DemoModel, PerplexityEqualsTransformers) {
  auto [g, model] = load_golden();
  ASSERT_TRUE(model);
  ThreadPool pool(0);
  const ops::Context ctx{.pool = &pool};
  const auto ids = g["ids"].get<std::vector<int32_t>>();
  const int window = g["window"].get<int>();

  // Window by window: the same windows, each within 1e-3 of transformers' summed NLL.
  const auto windows = token_windows(ids, window);
  ASSERT_EQ(windows.size(), g["windows"].size());
  for (size_t i = 0; i < windows.size(); ++i) {
    const auto& gw = g["windows"][i];
    ASSERT_EQ(int64_t(windows[i].size()), gw["len"].get<int64_t>()) << "window " << i;
    auto w = perplexity(*model, ctx, windows[i], window);
    ASSERT_TRUE(w.ok()) << w.status().message();
    const double want = gw["nll_sum"].get<double>();
    EXPECT_LE(std::fabs(w->nll_sum - want) / want, 1e-3) << "window " << i << ": " << w->nll_sum
                                                         << " vs " << want;
  }
  auto r = perplexity(*model, ctx, ids, window);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->scored_tokens, g["scored_tokens"].get<int64_t>());
  const double want = g["perplexity"].get<double>();
  const double rel = std::fabs(r->perplexity - want) / want;
  EXPECT_LE(rel, 1e-3) << "moeopt " << r->perplexity << " vs transformers " << want;
  std::printf("demo model perplexity on %s: moeopt %.6f, transformers %.6f (relative difference %.2e)\n",
              g["text_file"].get<std::string>().c_str(), r->perplexity, want, rel);
}

// The FP8 KV cache's quality cost on the trained model (model/quality.h compare_models: the
// same weights, an f32 cache against an e4m3 one), on the golden's first 512 tokens. With an
// f32 cache on both sides the comparison must see no difference at all; with FP8 it must see
// one, and a small one: measured KL 0.0022 nats, top-1 0.969 on the whole excerpt
// (docs/perf.md); the bounds leave about 4x margin on KL. The default cache of a CPU model
// (quality.h reference_kv_dtype) is that f32 one; bf16 is a GPU cache and refused here.
TEST(DemoModel, Fp8KvCacheCostIsSmallAndMeasured) {
  auto [g, model] = load_golden();
  ASSERT_TRUE(model);
  ThreadPool pool(0);
  const ops::Context ctx{.pool = &pool};
  auto ids = g["ids"].get<std::vector<int32_t>>();
  ids.resize(std::min<size_t>(ids.size(), 512));
  const auto windows = token_windows(ids, 256);

  auto same = compare_models(*model, *model, ctx, windows, DType::kF32);
  ASSERT_TRUE(same.ok()) << same.status().message();
  EXPECT_EQ(same->mean_kl, 0.0);
  EXPECT_EQ(same->top1_agreement, 1.0);
  // A CPU model's default cache is its reference cache, f32: the same logits bit for bit.
  EXPECT_EQ(reference_kv_dtype(*model), DType::kF32);
  auto f32_logits = prompt_logits(*model, ctx, windows[0], DType::kF32);
  auto default_logits = prompt_logits(*model, ctx, windows[0]);
  ASSERT_TRUE(f32_logits.ok() && default_logits.ok());
  EXPECT_EQ(*f32_logits, *default_logits);

  auto fp8 = compare_models(*model, *model, ctx, windows, DType::kF8E4M3);
  ASSERT_TRUE(fp8.ok()) << fp8.status().message();
  EXPECT_GT(fp8->mean_kl, 0.0);
  EXPECT_LT(fp8->mean_kl, 0.01);
  EXPECT_GE(fp8->top1_agreement, 0.9);
  EXPECT_LT(std::fabs(fp8->test_perplexity / fp8->reference_perplexity - 1.0), 0.02);
  std::printf("FP8 KV cache on the demo model (%lld positions): KL %.5f nats, top-1 %.4f, "
              "perplexity %.4f -> %.4f\n",
              (long long)fp8->positions, fp8->mean_kl, fp8->top1_agreement,
              fp8->reference_perplexity, fp8->test_perplexity);

  EXPECT_FALSE(compare_models(*model, *model, ctx, windows, DType::kBF16).ok());
}

TEST(DemoModel, PerplexityRejectsOutOfVocabularyTokens) {
  auto model = load_model((kSource / "models/tiny-qwen3-moe-novels").string());
  ASSERT_TRUE(model.ok()) << model.status().message();
  ThreadPool pool(1);
  const ops::Context ctx{.pool = &pool};
  EXPECT_FALSE(perplexity(**model, ctx, {1, 2, 8192}, 256).ok());
  EXPECT_FALSE(perplexity(**model, ctx, {1}, 256).ok());
  EXPECT_FALSE(perplexity(**model, ctx, {1, 2, 3}, 1).ok());
}

}  // namespace
}  // namespace moeopt
