// FP8 checkpoints end to end on the CPU: init-random --fp8 writes the hub layout, the loader
// reads it (scales in f32 / bf16 / f16), and the W8A8 forward is compared with moeopt's own
// f32 forward on the *dequantised* weights (same values, no activation quantisation): the
// gap left is the activation quantisation only. Plus: online quantisation of the bf16
// checkpoint equals init-random's fp8 checkpoint bit for bit, and bad FP8 checkpoints fail
// with one-line errors naming the tensor or key.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/model/config.h"
#include "moeopt/model/model.h"
#include "moeopt/model/random_init.h"
#include "moeopt/model/safetensors.h"

namespace moeopt {
namespace {

namespace fs = std::filesystem;

fs::path test_root() {
  fs::path p = fs::path(MOEOPT_BINARY_DIR) / "test-cache" / "model_fp8";
  fs::create_directories(p);
  return p;
}

// A small Qwen3-MoE: hidden 256 (two blocks), moe_intermediate 192 (a 128 + 64 tail, as a
// TP shard of 768 / 4), dense layer 1 of width 320, vocab 600.
ModelConfig small_config() {
  nlohmann::json j = {
      {"architectures", {"Qwen3MoeForCausalLM"}}, {"model_type", "qwen3_moe"},
      {"vocab_size", 600}, {"hidden_size", 256}, {"num_hidden_layers", 2},
      {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 64},
      {"intermediate_size", 320}, {"moe_intermediate_size", 192}, {"num_experts", 8},
      {"num_experts_per_tok", 3}, {"norm_topk_prob", true}, {"decoder_sparse_step", 1},
      {"mlp_only_layers", {1}}, {"max_position_embeddings", 512}, {"rms_norm_eps", 1e-6},
      {"rope_theta", 1000000.0}, {"tie_word_embeddings", false}, {"torch_dtype", "bfloat16"}};
  // Parsed in memory: ctest runs these tests as parallel processes, and a config file shared
  // by all of them was read by one while another rewrote it.
  auto c = parse_model_config(j, "small_config.json");
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

std::string write_ckpt(const std::string& name, bool fp8, DType scale_dtype) {
  const fs::path dir = test_root() / name;
  fs::remove_all(dir);
  RandomInitOptions o;
  o.seed = 11;
  o.fp8 = fp8;
  o.fp8_scale_dtype = scale_dtype;
  auto r = write_random_checkpoint(small_config(), dir.string(), o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return dir.string();
}

// Logits of every position of one prompt, prefilled in one step.
std::vector<float> prompt_logits(Model& m, const std::vector<int32_t>& prompt) {
  const int32_t t = int32_t(prompt.size()), bs = 16, blocks = (t + bs - 1) / bs;
  const KvLayout kl = m.kv_layout();
  std::vector<HostTensor> caches;
  std::vector<LayerKv> kv;
  for (int64_t l = 0; l < kl.num_layers; ++l) {
    caches.emplace_back(DType::kF32, Shape{blocks, bs, kl.num_kv_heads, kl.head_dim});
    caches.emplace_back(DType::kF32, Shape{blocks, bs, kl.num_kv_heads, kl.head_dim});
    kv.push_back({caches[caches.size() - 2], caches.back()});
  }
  ForwardBatch b;
  b.token_ids = prompt;
  for (int32_t i = 0; i < t; ++i) {
    b.positions.push_back(i);
    b.slot_mapping.push_back(i);
    b.logits_rows.push_back(i);
  }
  b.query_start_loc = {0, t};
  b.context_lens = {t};
  for (int32_t i = 0; i < blocks; ++i) b.block_table.push_back(i);
  b.max_blocks_per_seq = blocks;
  HostTensor logits(DType::kF32, {t, m.config().vocab_size});
  Status st = m.forward(ops::Context{}, b, kv, logits);
  EXPECT_TRUE(st.ok()) << st.message();
  return {logits.ptr<float>(), logits.ptr<float>() + logits.numel()};
}

std::vector<int32_t> prompt_ids() {
  std::vector<int32_t> p;
  for (int i = 0; i < 40; ++i) p.push_back(int32_t((i * 131 + 7) % 600));
  return p;
}

struct Agreement {
  double min_cos = 1.0, mean_cos = 0.0, top1 = 0.0;
};

Agreement compare_rows(const std::vector<float>& a, const std::vector<float>& b, int64_t v) {
  Agreement r;
  const int64_t rows = int64_t(a.size()) / v;
  int64_t same = 0;
  for (int64_t i = 0; i < rows; ++i) {
    double dot = 0, na = 0, nb = 0;
    int64_t ia = 0, ib = 0;
    for (int64_t j = 0; j < v; ++j) {
      const double x = a[size_t(i * v + j)], y = b[size_t(i * v + j)];
      dot += x * y;
      na += x * x;
      nb += y * y;
      if (x > a[size_t(i * v + ia)]) ia = j;
      if (y > b[size_t(i * v + ib)]) ib = j;
    }
    const double c = dot / std::sqrt(na * nb);
    r.min_cos = std::min(r.min_cos, c);
    r.mean_cos += c / double(rows);
    same += ia == ib;
  }
  r.top1 = double(same) / double(rows);
  return r;
}

TEST(ModelFp8, W8A8ForwardMatchesTheDequantisedF32Forward) {
  for (DType sd : {DType::kBF16, DType::kF32, DType::kF16}) {
    const std::string dir = write_ckpt(std::string("fp8_") + dtype_name(sd), true, sd);
    auto fp8 = load_model(dir);
    ASSERT_TRUE(fp8.ok()) << fp8.status().message();
    LoadOptions deq;
    deq.format = WeightFormat::kDequantized;
    auto ref = load_model(dir, deq);
    ASSERT_TRUE(ref.ok()) << ref.status().message();
    const std::vector<float> a = prompt_logits(**fp8, prompt_ids());
    const std::vector<float> b = prompt_logits(**ref, prompt_ids());
    const Agreement g = compare_rows(a, b, 600);
    std::printf("fp8 (%s scales) W8A8 vs f32 on the dequantised weights, 40 positions: "
                "cos min %.5f mean %.5f, top-1 agreement %.3f\n",
                dtype_name(sd), g.min_cos, g.mean_cos, g.top1);
    // Activation rounding to e4m3 (3 mantissa bits, <= 1/16 relative per element) over
    // 2 layers; a loader mistake (wrong scale block, transposed scale, up/gate blocks mixed)
    // gives cos far below this.
    EXPECT_GT(g.min_cos, 0.999);
    EXPECT_GT(g.mean_cos, 0.9995);
    EXPECT_GE(g.top1, 0.95);
    EXPECT_NE(a, b);  // the W8A8 path did quantise the activations
  }
}

TEST(ModelFp8, OnlineQuantisationEqualsInitRandomFp8) {
  const std::string bf16 = write_ckpt("bf16", false, DType::kF32);
  const std::string fp8 = write_ckpt("fp8_f32_online", true, DType::kF32);
  LoadOptions on;
  on.format = WeightFormat::kFp8;
  auto quantised = load_model(bf16, on);
  ASSERT_TRUE(quantised.ok()) << quantised.status().message();
  auto stored = load_model(fp8);
  ASSERT_TRUE(stored.ok()) << stored.status().message();
  auto plain = load_model(bf16);
  ASSERT_TRUE(plain.ok());
  const std::vector<float> a = prompt_logits(**quantised, prompt_ids());
  const std::vector<float> b = prompt_logits(**stored, prompt_ids());
  EXPECT_EQ(a, b) << "quantising the bf16 checkpoint at load must give init-random's fp8 weights";
  const Agreement g = compare_rows(a, prompt_logits(**plain, prompt_ids()), 600);
  std::printf("online fp8 vs bf16 weights: cos min %.5f mean %.5f, top-1 agreement %.3f\n",
              g.min_cos, g.mean_cos, g.top1);
  EXPECT_GT(g.mean_cos, 0.99);
}

// Rewrites `src` into `dst` with one tensor dropped, or replaced by one of another shape or
// dtype (a copy of the original bytes where the size allows).
void rewrite(const std::string& src, const std::string& dst, const std::string& name,
             const std::vector<int64_t>* new_shape, const DType* new_dtype) {
  fs::remove_all(dst);
  fs::create_directories(dst);
  fs::copy_file(fs::path(src) / "config.json", fs::path(dst) / "config.json");
  auto ck = Checkpoint::open(src);
  ASSERT_TRUE(ck.ok()) << ck.status().message();
  std::vector<SafetensorsTensorSource> out;
  for (const SafetensorsTensorInfo& t : ck->tensors()) {
    if (t.name == name && !new_shape && !new_dtype) continue;
    SafetensorsTensorSource s;
    s.spec = {t.name, t.dtype, t.shape};
    if (t.name == name) {
      if (new_shape) s.spec.shape = *new_shape;
      if (new_dtype) s.spec.dtype = *new_dtype;
    }
    auto view = ck->view(t.name);
    ASSERT_TRUE(view.ok());
    const TensorView v = *view;
    s.fill = [v](uint64_t off, std::span<uint8_t> o) -> Status {
      for (size_t i = 0; i < o.size(); ++i)
        o[i] = off + i < v.nbytes() ? static_cast<const uint8_t*>(v.data)[off + i] : 0;
      return {};
    };
    out.push_back(std::move(s));
  }
  ASSERT_TRUE(write_safetensors((fs::path(dst) / "model.safetensors").string(), std::move(out)).ok());
}

TEST(ModelFp8, BadCheckpointsFailNamingTheTensor) {
  const std::string good = write_ckpt("fp8_bad_src", true, DType::kBF16);
  const std::string bad = (test_root() / "fp8_bad").string();
  const std::string scale = "model.layers.0.mlp.experts.3.down_proj.weight_scale_inv";
  rewrite(good, bad, scale, nullptr, nullptr);
  auto r = load_model(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("has no tensor '" + scale + "'"), std::string::npos)
      << r.status().message();
  const std::vector<int64_t> wrong{1, 2};
  rewrite(good, bad, scale, &wrong, nullptr);
  r = load_model(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tensor '" + scale + "' has shape [1, 2], config implies [2, 2]"),
            std::string::npos) << r.status().message();
  const DType i32 = DType::kI32;
  const std::vector<int64_t> same{2, 2};
  rewrite(good, bad, scale, &same, &i32);
  r = load_model(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("expected f32, bf16 or f16 (an fp8 block scale)"), std::string::npos)
      << r.status().message();
  const std::string w = "model.layers.1.self_attn.q_proj.weight";
  const DType bf16 = DType::kBF16;
  const std::vector<int64_t> qshape{256, 256};
  rewrite(good, bad, w, &qshape, &bf16);
  r = load_model(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tensor '" + w + "' has dtype bf16, expected fp8_e4m3"),
            std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
}

}  // namespace
}  // namespace moeopt
