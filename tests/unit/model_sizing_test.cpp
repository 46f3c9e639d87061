// Sizing: parameter counts against the totals the model authors published, hand-computed
// bytes for a small config, KV bytes from the config formula, GPU fit and the JSON report.
//
// How "activated" is counted here (sizing.h): total minus routed experts plus the top-k
// experts of each MoE layer; embeddings and lm_head are counted in both total and active.
// Where an author counts differently or rounds its figure, the test says so and checks
// exactly that convention instead of widening the tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "moeopt/model/catalog.h"
#include "moeopt/model/config.h"
#include "moeopt/model/safetensors.h"
#include "moeopt/model/sizing.h"
#include "moeopt/model/tensor_specs.h"

namespace moeopt {
namespace {

using json = nlohmann::json;
const std::string kRoot = MOEOPT_SOURCE_DIR;

struct Sized {
  ModelConfig cfg;
  std::vector<TensorSpec> tensors;
  ParamCounts params;
};

Sized size_catalog(const std::string& name) {
  Sized s;
  auto path = catalog_config_path(kRoot, name);
  EXPECT_TRUE(path.ok()) << path.status().message();
  auto c = load_model_config(*path);
  EXPECT_TRUE(c.ok()) << c.status().message();
  s.cfg = *c;
  auto t = expected_tensors(s.cfg);
  EXPECT_TRUE(t.ok());
  s.tensors = *t;
  s.params = count_params(s.cfg, s.tensors, mtp_tensors(s.cfg));
  return s;
}

double billions(int64_t n) { return double(n) / 1e9; }

void expect_within_1pct(int64_t actual, double published_b, const std::string& what) {
  EXPECT_LE(std::fabs(billions(actual) - published_b) / published_b, 0.01)
      << what << ": " << billions(actual) << "B vs published " << published_b << "B";
}

// A figure published rounded to `unit` billions (e.g. "21B": unit 1).
void expect_rounds_to(int64_t actual, double published_b, double unit, const std::string& what) {
  EXPECT_LE(std::fabs(billions(actual) - published_b), unit / 2 + 1e-9)
      << what << ": " << billions(actual) << "B does not round to " << published_b << "B";
}

// A figure published truncated to `unit` billions (e.g. 3.35 -> "3.3B").
void expect_truncates_to(int64_t actual, double published_b, double unit, const std::string& what) {
  EXPECT_GE(billions(actual), published_b - 1e-9) << what;
  EXPECT_LT(billions(actual), published_b + unit) << what << ": " << billions(actual) << "B";
}

TEST(Sizing, PublishedTotalsWithin1Percent) {
  // Totals (every tensor of the main model) as published by the authors.
  const std::pair<const char*, double> totals[] = {
      {"Qwen3-30B-A3B", 30.5},        {"Qwen3-235B-A22B", 235.0}, {"Mixtral-8x7B-v0.1", 46.7},
      {"Mixtral-8x22B-v0.1", 141.0},  {"Qwen1.5-MoE-A2.7B", 14.3}, {"Qwen2-57B-A14B", 57.0},
      {"DeepSeek-V2-Lite", 15.7},     {"DeepSeek-V2", 236.0},     {"DeepSeek-V3", 671.0},
      {"OLMoE-1B-7B-0924", 6.9},
  };
  for (const auto& [name, b] : totals) {
    Sized s = size_catalog(name);
    expect_within_1pct(s.params.total, b, std::string(name) + " total");
  }
}

TEST(Sizing, PublishedActiveWithin1Percent) {
  const std::pair<const char*, double> active[] = {
      {"Qwen3-235B-A22B", 22.0},   {"Mixtral-8x7B-v0.1", 12.9}, {"Mixtral-8x22B-v0.1", 39.0},
      {"Qwen1.5-MoE-A2.7B", 2.7},
  };
  for (const auto& [name, b] : active) {
    Sized s = size_catalog(name);
    expect_within_1pct(s.params.active, b, std::string(name) + " active");
  }
}

TEST(Sizing, PublishedActiveRoundedFigures) {
  // Qwen3-30B-A3B: the card says 3.3B; the exact count is 3.353B (embedding and lm_head
  // included, as for Qwen1.5-MoE's 2.7B, which only matches with them). 3.353 is 1.6% above
  // 3.3, so the card truncates to one decimal (rounding would say 3.4B).
  Sized q3 = size_catalog("Qwen3-30B-A3B");
  expect_truncates_to(q3.params.active, 3.3, 0.1, "Qwen3-30B-A3B active");
  // Qwen2-57B-A14B: published in whole billions; exact 14.25B.
  Sized q2 = size_catalog("Qwen2-57B-A14B");
  expect_rounds_to(q2.params.active, 14.0, 1.0, "Qwen2-57B-A14B active");
  // OLMoE-1B-7B: the paper's 1.3B is rounded to one decimal; exact 1.282B.
  Sized ol = size_catalog("OLMoE-1B-7B-0924");
  expect_rounds_to(ol.params.active, 1.3, 0.1, "OLMoE active");
}

TEST(Sizing, DeepseekActiveExcludesTheInputEmbedding) {
  // DeepSeek's papers count activated parameters without the input embedding table (a
  // lookup, not a matmul); lm_head stays in. With that convention:
  Sized v2 = size_catalog("DeepSeek-V2");
  expect_within_1pct(v2.params.active - v2.params.embedding, 21.0, "DeepSeek-V2 active");
  // V3: 36.63B, stated in whole billions as 37B.
  Sized v3 = size_catalog("DeepSeek-V3");
  expect_rounds_to(v3.params.active - v3.params.embedding, 37.0, 1.0, "DeepSeek-V3 active");
  // V2-Lite: 2.451B, stated as 2.4B (truncated to one decimal).
  Sized lite = size_catalog("DeepSeek-V2-Lite");
  expect_truncates_to(lite.params.active - lite.params.embedding, 2.4, 0.1, "DeepSeek-V2-Lite active");
  // The published 685B of the V3 checkpoint includes the MTP module, which total excludes.
  expect_within_1pct(v3.params.total + v3.params.mtp, 685.0, "DeepSeek-V3 with MTP");
  EXPECT_GT(v3.params.mtp, 0);
  EXPECT_EQ(v2.params.mtp, 0);
}

TEST(Sizing, BreakdownSumsToTotal) {
  for (const char* n : {"Qwen1.5-MoE-A2.7B", "DeepSeek-V2-Lite", "Mixtral-8x7B-v0.1", "OLMoE-1B-7B-0924"}) {
    Sized s = size_catalog(n);
    const ParamCounts& p = s.params;
    EXPECT_EQ(p.embedding + p.lm_head + p.attention + p.norms + p.router + p.routed_experts +
                  p.shared_experts + p.dense_mlp,
              p.total)
        << n;
    EXPECT_EQ(weight_bytes(s.cfg, s.tensors).bf16, 2 * p.total) << n;
  }
}

// A small Qwen3-MoE whose numbers are worked out by hand below.
ModelConfig tiny_config() {
  json j = {{"model_type", "qwen3_moe"},    {"vocab_size", 1000},         {"hidden_size", 256},
            {"num_hidden_layers", 1},        {"num_attention_heads", 2},   {"num_key_value_heads", 1},
            {"head_dim", 128},               {"num_experts", 4},           {"num_experts_per_tok", 2},
            {"moe_intermediate_size", 192},  {"intermediate_size", 512}};
  auto c = parse_model_config(j, "tiny.json");
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

TEST(Sizing, TinyConfigByHand) {
  ModelConfig c = tiny_config();
  auto t = expected_tensors(c);
  ASSERT_TRUE(t.ok());
  ParamCounts p = count_params(c, *t);
  // q, o [256, 256]; k, v [128, 256]; q_norm, k_norm [128]; 2 layer norms + final [256];
  // router [4, 256]; 4 experts x 3 x [192 x 256]; embedding and lm_head [1000, 256].
  const int64_t attn = 2 * 65536 + 2 * 32768 + 2 * 128;
  const int64_t expert = 3 * 192 * 256;
  const int64_t total = attn + 3 * 256 + 4 * 256 + 4 * expert + 2 * 256000;
  EXPECT_EQ(p.total, total);
  EXPECT_EQ(p.active, total - 4 * expert + 2 * expert);
  EXPECT_EQ(p.routed_experts, 4 * expert);

  // FP8: a weight of [n, k] costs n*k bytes + 4 * ceil(n/128) * ceil(k/128) bytes of scales.
  const int64_t q_o = 65536 + 4 * 2 * 2;         // [256, 256]: 2 x 2 blocks
  const int64_t k_v = 32768 + 4 * 1 * 2;         // [128, 256]: 1 x 2 blocks
  const int64_t ex = 3 * (49152 + 4 * 2 * 2);    // [192, 256] and [256, 192]: 2 x 2 blocks each
  const int64_t bf16_rest = 2 * (2 * 128 + 3 * 256 + 4 * 256 + 2 * 256000);
  WeightBytes w = weight_bytes(c, *t);
  EXPECT_EQ(w.fp8, 2 * q_o + 2 * k_v + 4 * ex + bf16_rest);
  EXPECT_EQ(w.bf16, 2 * total);

  KvBytes kv = kv_bytes_per_token(c);
  EXPECT_EQ(kv.bf16, 2 * 1 * 1 * 128 * 2);  // K and V, 1 layer, 1 kv head, head_dim 128, 2 bytes
  EXPECT_EQ(kv.fp8, kv.bf16 / 2 + 2 * 4);  // codes + an f32 scale for K and for V of the head
}

TEST(Sizing, KvBytesPerToken) {
  // GQA: 2 * layers * kv_heads * head_dim * bytes, from the config values.
  Sized q = size_catalog("Qwen3-30B-A3B");
  EXPECT_EQ(kv_bytes_per_token(q.cfg).bf16, 2 * 48 * 4 * 128 * 2);
  Sized m = size_catalog("Mixtral-8x7B-v0.1");
  EXPECT_EQ(kv_bytes_per_token(m.cfg).bf16, 2 * 32 * 8 * 128 * 2);
  // MLA: layers * (kv_lora_rank + qk_rope_head_dim) * bytes (the compressed cache).
  Sized v3 = size_catalog("DeepSeek-V3");
  EXPECT_EQ(kv_bytes_per_token(v3.cfg).bf16, 61 * (512 + 64) * 2);
  EXPECT_EQ(kv_bytes_per_token(v3.cfg).fp8, 61 * (512 + 64));
}

TEST(Sizing, Fp8PaddingWarnings) {
  Sized q = size_catalog("Qwen3-30B-A3B");
  // 768 / 4 = 192: not a multiple of 128.
  auto w4 = fp8_tp_warnings(q.cfg, 4, true);
  ASSERT_FALSE(w4.empty());
  EXPECT_NE(w4[0].find("192"), std::string::npos) << w4[0];
  // 768 / 2 = 384 = 3 x 128: fine; attention 32*128/2 fine.
  EXPECT_TRUE(fp8_tp_warnings(q.cfg, 2, true).empty());
  // Under EP the experts are not split: no expert warning at TP=4.
  EXPECT_TRUE(fp8_tp_warnings(q.cfg, 4, false).empty());
  // Qwen2-57B-A14B has 28 heads: TP=8 cannot split them.
  Sized q2 = size_catalog("Qwen2-57B-A14B");
  bool heads_warning = false;
  for (const auto& s : fp8_tp_warnings(q2.cfg, 8, false))
    heads_warning |= s.find("num_attention_heads 28") != std::string::npos;
  EXPECT_TRUE(heads_warning);
}

TEST(Sizing, FitOnGpus) {
  Sized m = size_catalog("Mixtral-8x7B-v0.1");
  // 93.4 GB of BF16 weights cannot fit one 80 GB card, fit one H200 and two H100.
  EXPECT_FALSE(fit_on_gpus(m.cfg, m.tensors, gpu_h100(), 1, Precision::kBf16, 4096).fits);
  EXPECT_TRUE(fit_on_gpus(m.cfg, m.tensors, gpu_h200(), 1, Precision::kBf16, 4096).fits);
  FitResult two = fit_on_gpus(m.cfg, m.tensors, gpu_h100(), 2, Precision::kBf16, 4096);
  EXPECT_TRUE(two.fits);
  // Weights split in two (experts EP=2, attention TP=2, vocab-parallel embeddings): about half.
  EXPECT_NEAR(double(two.weight_bytes_per_gpu), double(weight_bytes(m.cfg, m.tensors).bf16) / 2, 1e8);
  // KV room and capacity follow the documented memory model.
  const int64_t usable = int64_t(double(gpu_h100().memory_bytes) * kGpuMemoryFraction);
  EXPECT_EQ(two.kv_room_per_gpu, usable - kActivationReserveBytes - two.weight_bytes_per_gpu);
  EXPECT_EQ(two.kv_bytes_per_token_per_gpu, 2 * 32 * 4 * 128 * 2);  // 8 KV heads over TP=2
  EXPECT_EQ(two.kv_tokens, two.kv_room_per_gpu / two.kv_bytes_per_token_per_gpu);
  EXPECT_EQ(two.max_batch, two.kv_tokens / 4096);
  // FP8 KV doubles the tokens.
  FitResult kv8 = fit_on_gpus(m.cfg, m.tensors, gpu_h100(), 2, Precision::kFp8WeightsFp8Kv, 4096);
  EXPECT_GT(kv8.kv_tokens, 2 * two.kv_tokens);

  // DeepSeek-V3: ~671 GB even in FP8 does not fit 8 x 80 GB; it does fit 8 x H200 in FP8.
  Sized v3 = size_catalog("DeepSeek-V3");
  LayoutRecommendation r100 = recommend_layout(v3.cfg, v3.tensors, gpu_h100(), 8192);
  EXPECT_FALSE(r100.fits) << r100.summary;
  LayoutRecommendation r200 = recommend_layout(v3.cfg, v3.tensors, gpu_h200(), 8192);
  EXPECT_TRUE(r200.fits);
  EXPECT_EQ(r200.gpus, 8);
  EXPECT_NE(r200.precision, Precision::kBf16);
  EXPECT_EQ(r200.ep_experts, 8);
}

TEST(Sizing, RecommendationPrefersFewestGpusInBf16) {
  Sized q = size_catalog("Qwen3-30B-A3B");
  LayoutRecommendation r = recommend_layout(q.cfg, q.tensors, gpu_h200(), 8192);
  ASSERT_TRUE(r.fits);
  EXPECT_EQ(r.gpus, 1);  // 61 GB of BF16 weights leave ~70 GB of KV on one H200
  EXPECT_EQ(r.precision, Precision::kBf16);
  EXPECT_GE(r.max_batch, kTargetBatch);
}

TEST(Sizing, ReportJsonKeys) {
  Sized q = size_catalog("Qwen3-30B-A3B");
  json j = model_report_json(q.cfg, q.tensors, q.params, {&gpu_h100(), &gpu_h200()}, 8192);
  for (const char* k : {"model_type", "is_moe", "num_layers", "num_moe_layers", "hidden_size", "num_experts",
                        "num_shared_experts", "experts_per_token", "moe_intermediate_size", "params_total",
                        "params_active"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["model_type"], "qwen3_moe");
  EXPECT_EQ(j["is_moe"], true);
  EXPECT_EQ(j["num_layers"], 48);
  EXPECT_EQ(j["num_moe_layers"], 48);
  EXPECT_EQ(j["hidden_size"], 2048);
  EXPECT_EQ(j["num_experts"], 128);
  EXPECT_EQ(j["num_shared_experts"], 0);
  EXPECT_EQ(j["experts_per_token"], 8);
  EXPECT_EQ(j["moe_intermediate_size"], 768);
  EXPECT_EQ(j["params_total"], q.params.total);
  ASSERT_TRUE(j["weight_bytes"].is_object());
  EXPECT_TRUE(j["weight_bytes"]["bf16"].is_number_integer());
  EXPECT_TRUE(j["weight_bytes"]["fp8"].is_number_integer());
  ASSERT_TRUE(j["kv_bytes_per_token"].is_object());
  EXPECT_EQ(j["kv_bytes_per_token"]["bf16"], 98304);
  EXPECT_EQ(j["kv_bytes_per_token"]["fp8"], 49152 + 48 * 2 * 4 * 4);  // + f32 scale per token, kv head, K/V
  EXPECT_EQ(j["attention"]["kind"], "gqa");
  EXPECT_EQ(j["routing"]["scoring"], "softmax");
  EXPECT_EQ(j["fit"]["h100"]["configs"].size(), 4u * 3u);
  EXPECT_TRUE(j["recommended"]["h200"]["fits"].get<bool>());
  EXPECT_FALSE(j["fp8_tp_warnings"]["4"].empty());
}

// ---------------------------------------------------------------------------------------
// Checkpoint cross-check: a real (tiny, zero-filled) sharded checkpoint written with the
// safetensors writer, then variants with one tensor wrong.

struct TinyCheckpoint {
  ModelConfig cfg;
  std::vector<TensorSpec> specs;
  std::string dir;
};

TinyCheckpoint tiny_checkpoint_config() {
  TinyCheckpoint t;
  auto c = load_model_config(kRoot + "/tests/data/tensor_names_hf/Qwen3-30B-A3B/config.json");
  EXPECT_TRUE(c.ok()) << c.status().message();
  t.cfg = *c;
  t.specs = *expected_tensors(t.cfg);
  t.dir = (std::filesystem::temp_directory_path() / ("moeopt_ckpt_test_" + std::to_string(getpid()))).string();
  return t;
}

std::vector<SafetensorsTensorInfo> infos_of(const std::vector<TensorSpec>& specs) {
  std::vector<SafetensorsTensorInfo> v;
  for (const auto& s : specs) {
    SafetensorsTensorInfo i;
    i.name = s.name;
    i.dtype = DType::kBF16;
    i.shape = s.shape;
    i.nbytes = uint64_t(s.numel()) * 2;
    i.file = "model.safetensors";
    v.push_back(i);
  }
  return v;
}

TEST(Sizing, CheckpointCrossCheckOnRealFiles) {
  TinyCheckpoint t = tiny_checkpoint_config();
  std::vector<SafetensorsTensorSource> src;
  for (const auto& s : t.specs) {
    SafetensorsTensorSource ts;
    ts.spec = {s.name, DType::kBF16, s.shape};
    ts.fill = [](uint64_t, std::span<uint8_t> out) {
      std::fill(out.begin(), out.end(), uint8_t(0));
      return Status();
    };
    src.push_back(std::move(ts));
  }
  ShardedWriteOptions opt;
  opt.max_shard_bytes = 60000;  // several shards
  auto w = write_sharded_safetensors(t.dir, std::move(src), opt);
  ASSERT_TRUE(w.ok()) << w.status().message();
  auto ck = Checkpoint::open(t.dir);
  ASSERT_TRUE(ck.ok()) << ck.status().message();
  auto r = check_checkpoint_tensors(t.cfg, ck->tensors(), t.dir);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ParamCounts want = count_params(t.cfg, t.specs);
  EXPECT_EQ(r->params.total, want.total);
  EXPECT_EQ(r->params.active, want.active);
  EXPECT_EQ(r->tensors, int64_t(t.specs.size()));
  EXPECT_EQ(r->files, int64_t(w->files.size()));
  EXPECT_GT(r->files, 1);
  EXPECT_EQ(r->bytes, 2 * want.total);
  std::filesystem::remove_all(t.dir);
}

TEST(Sizing, CheckpointCrossCheckNamesTheTensor) {
  TinyCheckpoint t = tiny_checkpoint_config();
  auto good = infos_of(t.specs);
  ASSERT_TRUE(check_checkpoint_tensors(t.cfg, good, "ckpt").ok());

  auto extra = good;
  extra.push_back(extra.back());
  extra.back().name = "model.layers.0.mlp.foo.weight";
  auto r = check_checkpoint_tensors(t.cfg, extra, "ckpt");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("ckpt: tensor 'model.layers.0.mlp.foo.weight' is not part of a qwen3_moe"),
            std::string::npos)
      << r.status().message();

  auto shape = good;
  for (auto& i : shape)
    if (i.name == "model.layers.0.mlp.experts.0.gate_proj.weight") i.shape = {33, 64};
  r = check_checkpoint_tensors(t.cfg, shape, "ckpt");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(
                "tensor 'model.layers.0.mlp.experts.0.gate_proj.weight' has shape [33, 64], config.json implies [32, 64]"),
            std::string::npos)
      << r.status().message();

  auto missing = good;
  missing.erase(std::remove_if(missing.begin(), missing.end(),
                               [](const SafetensorsTensorInfo& i) { return i.name == "model.norm.weight"; }),
                missing.end());
  r = check_checkpoint_tensors(t.cfg, missing, "ckpt");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tensor 'model.norm.weight' ([64]) is missing"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(r.status().code(), ErrorCode::kCorruptData);
}

TEST(Sizing, CheckpointCrossCheckFp8Scales) {
  // The same tiny model declared FP8: scales become required, and are counted apart.
  TinyCheckpoint t = tiny_checkpoint_config();
  t.cfg.fp8 = Fp8Quantization{};
  auto all = checkpoint_tensors(t.cfg, false);
  ASSERT_TRUE(all.ok());
  auto r = check_checkpoint_tensors(t.cfg, infos_of(*all), "ckpt");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->has_fp8_scales);
  EXPECT_EQ(r->params.total, count_params(t.cfg, t.specs).total);
  auto no_scales = check_checkpoint_tensors(t.cfg, infos_of(t.specs), "ckpt");
  ASSERT_FALSE(no_scales.ok());
  EXPECT_NE(no_scales.status().message().find("weight_scale_inv"), std::string::npos);
}

}  // namespace
}  // namespace moeopt
