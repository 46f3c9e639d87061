// The GPU engine against Hugging Face transformers: the tiny goldens of the CPU engine
// (tests/reference/make_golden.py, float32 transformers) run on the CUDA backend.
//
// The GPU computes in bf16 activations (f32 residual stream, f32 accumulation), transformers
// in float32, so logits differ by bf16 rounding: the bound is kLogitTol on max |dlogit|
// (the tiny models' logits are O(1-10)). Top-1 routing gets kTop1LogitTol: with one expert
// per token nothing averages a routing near-tie out, so a bf16 rounding that flips a token to
// its second-best expert moves the logits by O(1) (seen: 0.94 on qwen3_moe_top1_tied_odd,
// prompt 1, on an H100) while the greedy continuation still matches token for token. Greedy tokens must equal transformers' up to the
// first step whose golden top-1/top-2 margin is below kMarginTol (there bf16 rounding may
// legitimately pick the other token; the test then stops comparing that prompt and says so).
//
// Also: the weights generated on the GPU (--random-weights) are byte-identical to the
// checkpoint init-random writes, uploaded; CUDA-graph decode equals eager decode; and the
// one-at-a-time, batched and preempting runs give the same tokens on the GPU.
// Every test skips without a CUDA device.
#include <gtest/gtest.h>

#if MOEOPT_HAVE_CUDA

#include <cuda_runtime.h>

#include "cuda_test_support.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/core/file_io.h"
#include "moeopt/engine/engine.h"
#include "moeopt/model/config.h"
#include "moeopt/model/device_weights.h"
#include "moeopt/model/model_cache.h"
#include "golden_support.h"

namespace fs = std::filesystem;

namespace moeopt {
namespace {

constexpr double kLogitTol = 0.15;
constexpr double kTop1LogitTol = 1.5;
constexpr double kMarginTol = 0.1;

const fs::path kSource = MOEOPT_SOURCE_DIR;

class CudaGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    name_ = GetParam();
    auto text = read_file((kSource / "tests/data/goldens" / (name_ + ".json.gz")).string());
    ASSERT_TRUE(text.ok()) << text.status().message();
    golden_ = nlohmann::json::parse(*text);
    auto dir = materialize_random_checkpoint(
        (kSource / "tests/reference/golden_configs" / (name_ + ".json")).string(), 0, std::nullopt, "");
    ASSERT_TRUE(dir.ok()) << dir.status().message();
    dir_ = *dir;
    ctx_.device_backend = &backend_;
    auto cfg = load_model_config((fs::path(dir_) / "config.json").string());
    ASSERT_TRUE(cfg.ok()) << cfg.status().message();
    if (cfg->attention_kind == AttentionKind::kMla) {
      // No MLA kernels on the GPU yet: loading must refuse in one line, before any upload.
      DeviceWeightsOptions wo;
      wo.ctx = &ctx_;
      auto model = load_model_to_device(dir_, wo);
      ASSERT_FALSE(model.ok());
      EXPECT_EQ(model.status().code(), ErrorCode::kUnsupported) << model.status().message();
      GTEST_SKIP() << name_ << ": " << model.status().message();
    }
  }

  std::unique_ptr<Engine> engine(EngineOptions eo = {}) {
    DeviceWeightsOptions wo;
    wo.ctx = &ctx_;
    auto model = load_model_to_device(dir_, wo);
    EXPECT_TRUE(model.ok()) << model.status().message();
    if (!model.ok()) return nullptr;
    eo.device = &backend_;
    if (eo.max_num_seqs == 64) eo.max_num_seqs = 8;
    auto e = Engine::create(std::move(*model), eo);
    EXPECT_TRUE(e.ok()) << e.status().message();
    return e.ok() ? std::move(*e) : nullptr;
  }

  std::vector<Request> requests() const { return golden_requests(golden_); }

  // The backend outlives the engines (declared first, destroyed last).
  cuda::CudaBackend backend_;
  ops::Context ctx_;
  std::string name_;
  std::string dir_;
  nlohmann::json golden_;
};

TEST_P(CudaGoldenTest, MatchesTransformers) {
  auto e = engine();
  ASSERT_TRUE(e);
  auto out = run_to_completion(*e, requests());
  ASSERT_TRUE(out.ok()) << out.status().message();
  const double tol = e->config().num_experts_per_tok == 1 ? kTop1LogitTol : kLogitTol;
  for (size_t i = 0; i < out->size(); ++i) {
    const auto& g = golden_["prompts"][i];
    auto want = g["last_logits"].get<std::vector<double>>();
    const auto& got = (*out)[i].prompt_logits_last;
    ASSERT_EQ(got.size(), want.size()) << "prompt " << i;
    double worst = 0;
    for (size_t v = 0; v < want.size(); ++v) worst = std::max(worst, std::fabs(double(got[v]) - want[v]));
    EXPECT_LE(worst, tol) << name_ << " prompt " << i;
    auto greedy = g["greedy"].get<std::vector<int32_t>>();
    auto margins = g["margins"].get<std::vector<double>>();
    size_t compared = 0;
    for (; compared < greedy.size(); ++compared) {
      if (margins[compared] < kMarginTol) break;  // a near-tie: bf16 may choose either
      ASSERT_LT(compared, (*out)[i].tokens.size());
      EXPECT_EQ((*out)[i].tokens[compared], greedy[compared]) << name_ << " prompt " << i << " step " << compared;
      if ((*out)[i].tokens[compared] != greedy[compared]) break;
    }
    std::printf("%s prompt %zu: max |dlogit| %.2e, %zu/%zu greedy tokens compared%s\n", name_.c_str(), i,
                worst, compared, greedy.size(), compared < greedy.size() ? " (stopped at a near-tie)" : "");
  }
}

TEST_P(CudaGoldenTest, GraphsBatchingAndPreemptionDoNotChangeTokens) {
  EngineOptions eager;
  eager.cuda_graphs = false;
  auto a = engine(eager);
  auto b = engine();
  ASSERT_TRUE(a && b);
  auto ea = run_to_completion(*a, requests());
  auto eb = run_to_completion(*b, requests());
  ASSERT_TRUE(ea.ok()) << ea.status().message();
  ASSERT_TRUE(eb.ok()) << eb.status().message();
  for (size_t i = 0; i < ea->size(); ++i)
    EXPECT_EQ((*ea)[i].tokens, (*eb)[i].tokens) << "graphs vs eager, prompt " << i;
  auto reqs = requests();
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto one = run_to_completion(*b, {reqs[i]});
    ASSERT_TRUE(one.ok()) << one.status().message();
    EXPECT_EQ((*one)[0].tokens, (*eb)[i].tokens) << "alone vs batched, prompt " << i;
  }
  EngineOptions tiny;
  tiny.block_size = 4;
  tiny.num_kv_blocks = 16;
  tiny.max_num_batched_tokens = 7;
  auto small = engine(tiny);
  ASSERT_TRUE(small);
  auto squeezed = run_to_completion(*small, requests());
  ASSERT_TRUE(squeezed.ok()) << squeezed.status().message();
  for (size_t i = 0; i < reqs.size(); ++i)
    EXPECT_EQ((*squeezed)[i].tokens, (*eb)[i].tokens) << "preempted, prompt " << i;
  EXPECT_GT(small->scheduler().num_preemptions(), 0);
}

// Device weights generated in place equal the init-random checkpoint uploaded, byte for byte.
TEST_P(CudaGoldenTest, RandomWeightsOnTheGpuEqualTheCheckpoint) {
  auto cfg = load_model_config((fs::path(dir_) / "config.json").string());
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  auto host = WeightStore::open(dir_, *cfg);
  ASSERT_TRUE(host.ok()) << host.status().message();
  DeviceWeightsOptions wo;
  wo.ctx = &ctx_;
  auto up = upload_weights(*cfg, *host, wo);
  auto gen = random_device_weights(*cfg, 0, wo);
  ASSERT_TRUE(up.ok()) << up.status().message();
  ASSERT_TRUE(gen.ok()) << gen.status().message();
  for (const TensorSpec& s : up->specs()) {
    auto a = up->get(s.name);
    auto b = gen->get(s.name);
    ASSERT_TRUE(a.ok() && b.ok()) << s.name;
    // Same layout, so the same row strides; compare the rows' bytes.
    const int64_t rows = a->ndim() >= 2 ? a->shape[0] : 1, cols = a->numel() / rows;
    const int64_t stride = a->ndim() >= 2 ? a->strides[0] : cols;
    std::vector<uint16_t> ha(size_t(rows * stride)), hb(size_t(rows * stride));
    ASSERT_EQ(cudaMemcpy(ha.data(), a->data, ha.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(hb.data(), b->data, hb.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(ha[size_t(r * stride + c)], hb[size_t(r * stride + c)]) << s.name << " [" << r << ", " << c << "]";
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, CudaGoldenTest, ::testing::ValuesIn(golden_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace moeopt

#endif  // MOEOPT_HAVE_CUDA
