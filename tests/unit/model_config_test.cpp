// ModelConfig parsing, validation errors, layer_is_moe rules, the catalog and tensor specs.
//
// Expected values come from the official config.json files in models/catalog (copied from
// the model authors' releases) and from the transformers modeling code (tensor names and
// shapes), never from running this code.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/model/catalog.h"
#include "moeopt/model/config.h"
#include "moeopt/model/tensor_specs.h"

namespace moeopt {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kRoot = MOEOPT_SOURCE_DIR;

ModelConfig load_catalog(const std::string& name) {
  auto path = catalog_config_path(kRoot, name);
  EXPECT_TRUE(path.ok()) << path.status().message();
  auto c = load_model_config(*path);
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

json raw_catalog(const std::string& name) {
  auto text = read_file(kRoot + "/models/catalog/" + name + "/config.json");
  return json::parse(*text);
}

std::map<std::string, TensorSpec> by_name(const std::vector<TensorSpec>& v) {
  std::map<std::string, TensorSpec> m;
  for (const auto& t : v) m[t.name] = t;
  return m;
}

using Shape = std::vector<int64_t>;

// ---------------------------------------------------------------------------------------
// Parsing the catalog

TEST(ModelConfig, EveryCatalogConfigParses) {
  auto names = list_catalog(kRoot);
  ASSERT_TRUE(names.ok()) << names.status().message();
  EXPECT_GE(names->size(), 13u);
  for (const auto& n : *names) {
    auto c = load_model_config(kRoot + "/models/catalog/" + n + "/config.json");
    ASSERT_TRUE(c.ok()) << n << ": " << c.status().message();
    json raw = raw_catalog(n);
    EXPECT_EQ(c->model_type, raw["model_type"].get<std::string>()) << n;
    EXPECT_EQ(c->hidden_size, raw["hidden_size"].get<int64_t>()) << n;
    EXPECT_EQ(c->num_hidden_layers, raw["num_hidden_layers"].get<int64_t>()) << n;
    EXPECT_EQ(c->vocab_size, raw["vocab_size"].get<int64_t>()) << n;
    EXPECT_EQ(c->num_experts_per_tok, raw["num_experts_per_tok"].get<int64_t>()) << n;
    EXPECT_TRUE(c->is_moe()) << n;
  }
}

TEST(ModelConfig, Qwen3MoeFields) {
  ModelConfig c = load_catalog("Qwen3-30B-A3B");
  EXPECT_EQ(c.arch, Arch::kQwen3Moe);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 128);  // explicit in the config (32 * 128 != 2048)
  EXPECT_TRUE(c.head_dim_explicit);
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.moe_intermediate_size, 768);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias || c.attention_bias);
  EXPECT_EQ(c.num_moe_layers(), 48);
  EXPECT_FALSE(c.sliding_window.has_value());  // use_sliding_window false
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kNone);
  EXPECT_FALSE(c.fp8.has_value());
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151645});
}

TEST(ModelConfig, Fp8QuantizationConfig) {
  ModelConfig c = load_catalog("qwen3-30b-a3b-fp8");
  ASSERT_TRUE(c.fp8.has_value());
  EXPECT_EQ(c.fp8->block_n, 128);
  EXPECT_EQ(c.fp8->block_k, 128);
  EXPECT_EQ(c.fp8->fmt, "e4m3");
  EXPECT_EQ(c.fp8->modules_to_not_convert.size(), 1u + 48u * 3u);
  ModelConfig v3 = load_catalog("DeepSeek-V3");
  ASSERT_TRUE(v3.fp8.has_value());
  EXPECT_EQ(v3.fp8->block_n, 128);
}

TEST(ModelConfig, MixtralFields) {
  ModelConfig c = load_catalog("mixtral-8x7b");
  EXPECT_EQ(c.arch, Arch::kMixtral);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.moe_intermediate_size, 14336);  // Mixtral experts use intermediate_size
  EXPECT_EQ(c.head_dim, 4096 / 32);
  EXPECT_FALSE(c.head_dim_explicit);
  EXPECT_TRUE(c.norm_topk_prob);  // MixtralSparseMoeBlock renormalises the top-k weights
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
}

TEST(ModelConfig, Qwen2MoeFields) {
  ModelConfig c = load_catalog("Qwen1.5-MoE-A2.7B");
  EXPECT_EQ(c.arch, Arch::kQwen2Moe);
  EXPECT_TRUE(c.qkv_bias);  // qkv_bias absent -> True (configuration_qwen2_moe.py)
  EXPECT_EQ(c.num_shared_experts, 1);
  EXPECT_EQ(c.shared_expert_intermediate_size, 5632);
  EXPECT_TRUE(c.shared_expert_gate);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.norm_topk_prob);
}

TEST(ModelConfig, DeepseekFields) {
  ModelConfig lite = load_catalog("DeepSeek-V2-Lite");
  EXPECT_EQ(lite.attention_kind, AttentionKind::kMla);
  EXPECT_FALSE(lite.q_lora_rank.has_value());  // "q_lora_rank": null
  EXPECT_EQ(lite.kv_lora_rank, 512);
  EXPECT_EQ(lite.num_shared_experts, 2);
  EXPECT_EQ(lite.shared_expert_intermediate_size, 2 * 1408);
  EXPECT_EQ(lite.rope_scaling.type, RopeScalingType::kYarn);
  EXPECT_DOUBLE_EQ(lite.rope_scaling.factor, 40.0);
  EXPECT_EQ(lite.rope_scaling.original_max_position_embeddings, 4096);
  ASSERT_TRUE(lite.rope_scaling.mscale.has_value());
  EXPECT_DOUBLE_EQ(*lite.rope_scaling.mscale, 0.707);

  ModelConfig v2 = load_catalog("DeepSeek-V2");
  EXPECT_EQ(v2.q_lora_rank, 1536);
  EXPECT_EQ(v2.topk_method, TopkMethod::kGroupLimitedGreedy);
  EXPECT_EQ(v2.scoring_func, ScoringFunc::kSoftmax);
  EXPECT_EQ(v2.n_group, 8);
  EXPECT_EQ(v2.topk_group, 3);
  EXPECT_DOUBLE_EQ(v2.routed_scaling_factor, 16.0);
  EXPECT_FALSE(v2.e_score_correction_bias);

  ModelConfig v3 = load_catalog("DeepSeek-V3");
  EXPECT_EQ(v3.scoring_func, ScoringFunc::kSigmoid);
  EXPECT_EQ(v3.topk_method, TopkMethod::kNoauxTc);
  EXPECT_TRUE(v3.e_score_correction_bias);
  EXPECT_TRUE(v3.norm_topk_prob);
  EXPECT_EQ(v3.first_k_dense_replace, 3);
  EXPECT_EQ(v3.num_nextn_predict_layers, 1);
  EXPECT_EQ(v3.num_moe_layers(), 61 - 3);
}

TEST(ModelConfig, OlmoeFields) {
  ModelConfig c = load_catalog("OLMoE-1B-7B");
  EXPECT_EQ(c.arch, Arch::kOlmoe);
  EXPECT_EQ(c.moe_intermediate_size, 1024);
  EXPECT_EQ(c.num_key_value_heads, 16);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);  // no key in the config: OlmoeConfig's default
  EXPECT_TRUE(c.qk_norm);
}

TEST(ModelConfig, DenseFamiliesAreNotMoe) {
  json j = {{"model_type", "llama"},         {"vocab_size", 32000}, {"hidden_size", 4096},
            {"num_hidden_layers", 32},       {"num_attention_heads", 32},
            {"num_key_value_heads", 8},      {"intermediate_size", 14336}};
  auto c = parse_model_config(j, "llama.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_FALSE(c->is_moe());
  EXPECT_EQ(c->num_moe_layers(), 0);
  EXPECT_EQ(c->head_dim, 4096 / 32);
  j["model_type"] = "qwen3";
  j["num_attention_heads"] = 16;  // hidden / heads = 256, but Qwen3Config's default is 128
  c = parse_model_config(j, "qwen3.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_TRUE(c->qk_norm);
  j["model_type"] = "qwen2";
  c = parse_model_config(j, "qwen2.json");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->qkv_bias);
  j.erase("intermediate_size");
  c = parse_model_config(j, "qwen2.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("'intermediate_size'"), std::string::npos);
}

TEST(ModelConfig, ModelTypeFromArchitectures) {
  json j = raw_catalog("Mixtral-8x7B-v0.1");
  j.erase("model_type");
  auto c = parse_model_config(j, "x.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->arch, Arch::kMixtral);
}

// ---------------------------------------------------------------------------------------
// layer_is_moe

TEST(ModelConfig, QwenLayerRule) {
  json j = raw_catalog("Qwen3-30B-A3B");
  j["num_hidden_layers"] = 6;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  auto c = parse_model_config(j, "q.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  // (layer + 1) % 2 == 0 -> layers 1, 3, 5; layer 3 forced dense.
  std::vector<bool> want = {false, true, false, false, false, true};
  for (int l = 0; l < 6; ++l) EXPECT_EQ(c->layer_is_moe(l), want[size_t(l)]) << l;
  EXPECT_FALSE(c->layer_is_moe(6));
  EXPECT_FALSE(c->layer_is_moe(-1));
  // Dense layers need intermediate_size: present in the Qwen3 config (6144).
  auto t = expected_tensors(*c);
  ASSERT_TRUE(t.ok());
  auto m = by_name(*t);
  ASSERT_TRUE(m.count("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_EQ(m["model.layers.0.mlp.gate_proj.weight"].shape, (Shape{6144, 2048}));
  EXPECT_TRUE(m.count("model.layers.1.mlp.experts.127.down_proj.weight"));
  EXPECT_FALSE(m.count("model.layers.3.mlp.gate.weight"));
}

TEST(ModelConfig, DeepseekLayerRule) {
  json j = raw_catalog("DeepSeek-V2-Lite");
  j["num_hidden_layers"] = 7;
  j["first_k_dense_replace"] = 2;
  j["moe_layer_freq"] = 2;
  auto c = parse_model_config(j, "d.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  // layer >= 2 and layer % 2 == 0 -> 2, 4, 6.
  std::vector<bool> want = {false, false, true, false, true, false, true};
  for (int l = 0; l < 7; ++l) EXPECT_EQ(c->layer_is_moe(l), want[size_t(l)]) << l;
}

TEST(ModelConfig, MixtralAndOlmoeEveryLayer) {
  for (const char* n : {"Mixtral-8x22B-v0.1", "OLMoE-1B-7B-0924"}) {
    ModelConfig c = load_catalog(n);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) EXPECT_TRUE(c.layer_is_moe(l)) << n << " " << l;
  }
}

// ---------------------------------------------------------------------------------------
// Malformed configs: each file in tests/data/bad_configs with the error it must produce.

TEST(ModelConfig, BadConfigsGiveTheirErrors) {
  const std::map<std::string, std::string> want = {
      {"missing_hidden_size.json", "missing required field 'hidden_size'"},
      {"negative_layers.json", "field 'num_hidden_layers' must be a positive integer, got -4"},
      {"zero_heads.json", "field 'num_attention_heads' must be a positive integer, got 0"},
      {"string_hidden_size.json", "field 'hidden_size': expected an integer, got \"2048\""},
      {"fractional_vocab.json", "field 'vocab_size': expected an integer"},
      {"topk_larger_than_experts.json", "field 'num_experts_per_tok' (9) is larger than num_experts (8)"},
      {"kv_heads_not_dividing.json", "field 'num_key_value_heads' (5) must divide num_attention_heads (32)"},
      {"heads_not_dividing_hidden.json", "field 'num_attention_heads' (32) must divide hidden_size (4100)"},
      {"unknown_model_type.json", "field 'model_type': 'gpt2' is not supported (supported: qwen3_moe"},
      {"missing_model_type.json", "missing required field 'model_type'"},
      {"bool_experts.json", "field 'num_experts': expected an integer, got true"},
      {"mlp_only_layer_out_of_range.json", "field 'mlp_only_layers': layer 48 is outside"},
      {"unknown_rope_type.json", "rope scaling 'longrope' is not supported"},
      {"yarn_without_factor.json", "field 'rope_scaling.factor' is required for rope type 'yarn'"},
      {"unsupported_quantization.json", "'awq' is not supported"},
      {"bad_block_size.json", "field 'quantization_config.weight_block_size': expected [rows, cols]"},
      {"n_group_not_dividing.json", "field 'n_group' (7) must divide n_routed_experts (160)"},
      {"topk_group_larger_than_n_group.json", "field 'topk_group' (9) is larger than n_group (8)"},
      {"missing_moe_intermediate_size.json", "missing required field 'moe_intermediate_size'"},
      {"tie_embeddings_not_bool.json", "field 'tie_word_embeddings': expected true or false"},
      {"hidden_size_out_of_range.json", "field 'hidden_size' = 1000000000000 is out of range"},
      {"mixtral_missing_experts.json", "missing required field 'num_local_experts'"},
      {"negative_rms_norm_eps.json", "field 'rms_norm_eps' = -1e-06 is out of range"},
      {"unsupported_activation.json", "field 'hidden_act': 'gelu' is not supported"},
      {"not_an_object.json", "expected a JSON object"},
      {"invalid_json.json", "invalid JSON: "},
  };
  const std::string dir = kRoot + "/tests/data/bad_configs";
  std::set<std::string> seen;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string file = e.path().filename().string();
    seen.insert(file);
    auto it = want.find(file);
    ASSERT_NE(it, want.end()) << file << " has no expected error in this table";
    auto c = load_model_config(e.path().string());
    ASSERT_FALSE(c.ok()) << file << " parsed";
    const std::string& msg = c.status().message();
    EXPECT_NE(msg.find(it->second), std::string::npos) << file << ": " << msg;
    EXPECT_EQ(msg.rfind(e.path().string() + ": ", 0), 0u) << "error must start with the file: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
    EXPECT_TRUE(c.status().code() == ErrorCode::kInvalidArgument ||
                c.status().code() == ErrorCode::kUnsupported)
        << file;
  }
  EXPECT_EQ(seen.size(), want.size()) << "a table entry has no file";
}

// Every top-level key of every architecture's config replaced by hostile values: parsing
// never crashes, errors are one line naming the file, a wrong type names the key, and a
// config that is accepted yields a sane tensor list.
TEST(ModelConfig, HostileValuesNeverCrash) {
  const json bad_values[] = {nullptr, "x", -1, 0, 1e30, int64_t(1) << 62, json::array(), json::object(), true, 0.5};
  const std::string dir = kRoot + "/tests/data/tensor_names_hf";
  int parsed = 0, rejected = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!fs::is_regular_file(e.path() / "config.json")) continue;
    const json base = json::parse(*read_file((e.path() / "config.json").string()));
    for (const auto& [key, orig] : base.items()) {
      for (const json& v : bad_values) {
        json j = base;
        j[key] = v;
        auto c = parse_model_config(j, "hostile.json");
        if (!c.ok()) {
          ++rejected;
          const std::string& m = c.status().message();
          EXPECT_EQ(m.rfind("hostile.json: ", 0), 0u) << m;
          EXPECT_EQ(m.find('\n'), std::string::npos) << m;
          if (v == "x") {
            EXPECT_NE(m.find(key), std::string::npos) << key << ": " << m;
          }
          continue;
        }
        ++parsed;
        auto t = expected_tensors(*c);
        ASSERT_TRUE(t.ok()) << key;
        for (const auto& s : *t)
          for (int64_t d : s.shape) ASSERT_GE(d, 1) << key << "=" << v.dump() << ": " << s.name;
      }
    }
  }
  EXPECT_GT(parsed, 100);
  EXPECT_GT(rejected, 100);
}

TEST(ModelConfig, ImplausibleProductsAreRejected) {
  // Each size within its own bound, but together far beyond any model.
  json j = raw_catalog("Qwen3-30B-A3B");
  j["num_hidden_layers"] = 4096;
  j["num_experts"] = 65536;
  auto c = parse_model_config(j, "big.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("tensors, more than"), std::string::npos) << c.status().message();
  j = raw_catalog("Qwen3-30B-A3B");
  j["hidden_size"] = 262144;
  j["moe_intermediate_size"] = 1 << 20;
  c = parse_model_config(j, "big.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("parameters, beyond"), std::string::npos) << c.status().message();
}

TEST(ModelConfig, MissingFileIsNotFound) {
  auto c = load_model_config(kRoot + "/tests/data/bad_configs/no_such_file.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), ErrorCode::kNotFound);
}

// ---------------------------------------------------------------------------------------
// Writing config.json back

TEST(ModelConfig, RoundTripKeepsTheModel) {
  auto names = list_catalog(kRoot);
  ASSERT_TRUE(names.ok());
  for (const auto& n : *names) {
    ModelConfig a = load_catalog(n);
    json out = model_config_to_json(a);
    auto b = parse_model_config(out, "roundtrip.json");
    ASSERT_TRUE(b.ok()) << n << ": " << b.status().message();
    EXPECT_EQ(b->arch, a.arch) << n;
    EXPECT_EQ(b->head_dim, a.head_dim) << n;
    EXPECT_EQ(b->num_key_value_heads, a.num_key_value_heads) << n;
    EXPECT_EQ(b->num_moe_layers(), a.num_moe_layers()) << n;
    EXPECT_EQ(b->rope_scaling.type, a.rope_scaling.type) << n;
    EXPECT_EQ(b->q_lora_rank, a.q_lora_rank) << n;
    EXPECT_EQ(b->fp8.has_value(), a.fp8.has_value()) << n;
    EXPECT_EQ(b->norm_topk_prob, a.norm_topk_prob) << n;
    EXPECT_EQ(b->qkv_bias, a.qkv_bias) << n;
    EXPECT_EQ(b->topk_method, a.topk_method) << n;
    EXPECT_DOUBLE_EQ(b->rope_theta, a.rope_theta) << n;
    auto ta = expected_tensors(a);
    auto tb = expected_tensors(*b);
    ASSERT_TRUE(ta.ok() && tb.ok());
    ASSERT_EQ(ta->size(), tb->size()) << n;
    for (size_t i = 0; i < ta->size(); ++i) {
      EXPECT_EQ((*ta)[i].name, (*tb)[i].name);
      EXPECT_EQ((*ta)[i].shape, (*tb)[i].shape);
    }
    // The original file's shape-defining keys survive with the same values.
    json raw = raw_catalog(n);
    for (const char* k : {"hidden_size", "num_hidden_layers", "vocab_size", "num_experts_per_tok",
                          "num_attention_heads", "num_key_value_heads", "model_type"})
      if (raw.contains(k)) {
        EXPECT_EQ(out[k], raw[k]) << n << " " << k;
      }
  }
}

// ---------------------------------------------------------------------------------------
// Catalog

TEST(Catalog, NamesAreCaseInsensitive) {
  auto a = catalog_config_path(kRoot, "Qwen3-30B-A3B");
  auto b = catalog_config_path(kRoot, "qwen3-30b-a3b");
  auto c = catalog_config_path(kRoot, "QWEN3-30B-A3B");
  auto d = catalog_config_path(kRoot, "Qwen/Qwen3-30B-A3B");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(*a, *c);
  EXPECT_EQ(*a, *d);
  EXPECT_TRUE(fs::exists(*a));
}

TEST(Catalog, VersionSuffixMayBeLeftOut) {
  auto m = catalog_config_path(kRoot, "mixtral-8x7b");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_NE(m->find("Mixtral-8x7B-v0.1"), std::string::npos);
  auto i = catalog_config_path(kRoot, "Mixtral-8x7B-Instruct");
  ASSERT_TRUE(i.ok());
  EXPECT_NE(i->find("Mixtral-8x7B-Instruct-v0.1"), std::string::npos);
  // "Qwen3-30B-A3B" must not be taken as a shortening of "-FP8" or "-Instruct-2507".
  auto q = catalog_config_path(kRoot, "qwen3-30b-a3b");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(fs::path(*q).parent_path().filename(), "Qwen3-30B-A3B");
}

TEST(Catalog, UnknownNameListsCatalog) {
  auto r = catalog_config_path(kRoot, "gpt-5");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(r.status().message().find("Qwen3-30B-A3B"), std::string::npos);
}

TEST(Catalog, ResolveModelSource) {
  auto cat = resolve_model_source("deepseek-v3", kRoot);
  ASSERT_TRUE(cat.ok());
  EXPECT_EQ(cat->kind, ModelSourceKind::kCatalog);
  EXPECT_EQ(cat->name, "DeepSeek-V3");
  const std::string dir = kRoot + "/models/catalog/OLMoE-1B-7B-0924";
  auto d = resolve_model_source(dir, kRoot);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->kind, ModelSourceKind::kCheckpointDir);
  EXPECT_EQ(d->checkpoint_dir, dir);
  auto f = resolve_model_source(dir + "/config.json", kRoot);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, ModelSourceKind::kConfigFile);
  auto missing = resolve_model_source("/nonexistent/dir/config.json", kRoot);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no such file"), std::string::npos);
  auto nocfg = resolve_model_source(kRoot + "/tests/data", kRoot);
  ASSERT_FALSE(nocfg.ok());
  EXPECT_NE(nocfg.status().message().find("no config.json"), std::string::npos);
}

// ---------------------------------------------------------------------------------------
// Tensor specs: names and shapes as in transformers' modeling_*.py

TEST(TensorSpecs, Qwen3Moe) {
  auto t = expected_tensors(load_catalog("Qwen3-30B-A3B"));
  ASSERT_TRUE(t.ok());
  auto m = by_name(*t);
  EXPECT_EQ(m.size(), t->size()) << "duplicate names";
  EXPECT_EQ(m.at("model.embed_tokens.weight").shape, (Shape{151936, 2048}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_proj.weight").shape, (Shape{32 * 128, 2048}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.k_proj.weight").shape, (Shape{4 * 128, 2048}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.o_proj.weight").shape, (Shape{2048, 32 * 128}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_norm.weight").shape, (Shape{128}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.k_norm.weight").shape, (Shape{128}));
  EXPECT_EQ(m.at("model.layers.0.mlp.gate.weight").shape, (Shape{128, 2048}));
  EXPECT_EQ(m.at("model.layers.0.mlp.experts.3.gate_proj.weight").shape, (Shape{768, 2048}));
  EXPECT_EQ(m.at("model.layers.47.mlp.experts.127.down_proj.weight").shape, (Shape{2048, 768}));
  EXPECT_EQ(m.at("model.layers.47.post_attention_layernorm.weight").shape, (Shape{2048}));
  EXPECT_EQ(m.at("lm_head.weight").shape, (Shape{151936, 2048}));
  EXPECT_EQ(m.at("model.norm.weight").shape, (Shape{2048}));
  EXPECT_FALSE(m.count("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_EQ(m.at("model.layers.5.mlp.experts.7.up_proj.weight").role, TensorRole::kRoutedExpert);
  EXPECT_EQ(m.at("model.layers.5.mlp.experts.7.up_proj.weight").expert, 7);
  EXPECT_EQ(m.at("model.layers.5.mlp.experts.7.up_proj.weight").layer, 5);
  // 3 + 48 * (4 attn + 2 qk-norm + 2 layer norms + router + 128 * 3) tensors + norm + lm_head.
  EXPECT_EQ(t->size(), size_t(1 + 48 * (4 + 2 + 2 + 1 + 128 * 3) + 2));
}

TEST(TensorSpecs, Mixtral) {
  auto t = expected_tensors(load_catalog("Mixtral-8x7B-v0.1"));
  ASSERT_TRUE(t.ok());
  auto m = by_name(*t);
  EXPECT_EQ(m.at("model.layers.0.block_sparse_moe.gate.weight").shape, (Shape{8, 4096}));
  EXPECT_EQ(m.at("model.layers.0.block_sparse_moe.experts.3.w1.weight").shape, (Shape{14336, 4096}));
  EXPECT_EQ(m.at("model.layers.0.block_sparse_moe.experts.3.w2.weight").shape, (Shape{4096, 14336}));
  EXPECT_EQ(m.at("model.layers.0.block_sparse_moe.experts.3.w3.weight").shape, (Shape{14336, 4096}));
  EXPECT_EQ(m.at("model.layers.31.self_attn.v_proj.weight").shape, (Shape{8 * 128, 4096}));
  EXPECT_FALSE(m.count("model.layers.0.self_attn.q_norm.weight"));
}

TEST(TensorSpecs, Qwen2MoeSharedExpertAndBias) {
  auto t = expected_tensors(load_catalog("Qwen2-57B-A14B"));
  ASSERT_TRUE(t.ok());
  auto m = by_name(*t);
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_proj.bias").shape, (Shape{3584}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.k_proj.bias").shape, (Shape{4 * 128}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.v_proj.bias").shape, (Shape{4 * 128}));
  EXPECT_FALSE(m.count("model.layers.0.self_attn.o_proj.bias"));
  EXPECT_EQ(m.at("model.layers.0.mlp.shared_expert.gate_proj.weight").shape, (Shape{20480, 3584}));
  EXPECT_EQ(m.at("model.layers.0.mlp.shared_expert.down_proj.weight").shape, (Shape{3584, 20480}));
  EXPECT_EQ(m.at("model.layers.0.mlp.shared_expert_gate.weight").shape, (Shape{1, 3584}));
  EXPECT_EQ(m.at("model.layers.0.mlp.experts.63.up_proj.weight").shape, (Shape{2560, 3584}));
}

TEST(TensorSpecs, OlmoeNormsCoverTheWholeProjection) {
  auto t = expected_tensors(load_catalog("OLMoE-1B-7B-0924"));
  ASSERT_TRUE(t.ok());
  auto m = by_name(*t);
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_norm.weight").shape, (Shape{2048}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.k_norm.weight").shape, (Shape{2048}));
  EXPECT_EQ(m.at("model.layers.15.mlp.experts.63.gate_proj.weight").shape, (Shape{1024, 2048}));
  EXPECT_EQ(m.at("model.layers.15.mlp.gate.weight").shape, (Shape{64, 2048}));
}

TEST(TensorSpecs, DeepseekMla) {
  auto lite = expected_tensors(load_catalog("DeepSeek-V2-Lite"));
  ASSERT_TRUE(lite.ok());
  auto m = by_name(*lite);
  // q_lora_rank null: plain q_proj of 16 heads x (128 + 64).
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_proj.weight").shape, (Shape{16 * 192, 2048}));
  EXPECT_FALSE(m.count("model.layers.0.self_attn.q_a_proj.weight"));
  EXPECT_EQ(m.at("model.layers.0.self_attn.kv_a_proj_with_mqa.weight").shape, (Shape{512 + 64, 2048}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.kv_a_layernorm.weight").shape, (Shape{512}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.kv_b_proj.weight").shape, (Shape{16 * (128 + 128), 512}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.o_proj.weight").shape, (Shape{2048, 16 * 128}));
  // first_k_dense_replace = 1: layer 0 dense, layer 1 MoE.
  EXPECT_EQ(m.at("model.layers.0.mlp.gate_proj.weight").shape, (Shape{10944, 2048}));
  EXPECT_FALSE(m.count("model.layers.0.mlp.gate.weight"));
  EXPECT_EQ(m.at("model.layers.1.mlp.gate.weight").shape, (Shape{64, 2048}));
  EXPECT_EQ(m.at("model.layers.1.mlp.shared_experts.gate_proj.weight").shape, (Shape{2 * 1408, 2048}));
  EXPECT_FALSE(m.count("model.layers.1.mlp.gate.e_score_correction_bias"));

  ModelConfig v3c = load_catalog("DeepSeek-V3");
  auto v3 = expected_tensors(v3c);
  ASSERT_TRUE(v3.ok());
  auto n = by_name(*v3);
  EXPECT_EQ(n.size(), v3->size()) << "duplicate names";
  EXPECT_EQ(n.at("model.layers.3.self_attn.q_a_proj.weight").shape, (Shape{1536, 7168}));
  EXPECT_EQ(n.at("model.layers.3.self_attn.q_a_layernorm.weight").shape, (Shape{1536}));
  EXPECT_EQ(n.at("model.layers.3.self_attn.q_b_proj.weight").shape, (Shape{128 * 192, 1536}));
  EXPECT_EQ(n.at("model.layers.3.mlp.gate.e_score_correction_bias").shape, (Shape{256}));
  EXPECT_EQ(n.at("model.layers.3.mlp.shared_experts.down_proj.weight").shape, (Shape{7168, 2048}));
  EXPECT_EQ(n.at("model.layers.2.mlp.down_proj.weight").shape, (Shape{7168, 18432}));
  EXPECT_FALSE(n.count("model.layers.61.enorm.weight"));  // MTP not in the main model
  auto mtp = by_name(mtp_tensors(v3c));
  EXPECT_EQ(mtp.at("model.layers.61.eh_proj.weight").shape, (Shape{7168, 2 * 7168}));
  EXPECT_EQ(mtp.at("model.layers.61.shared_head.head.weight").shape, (Shape{129280, 7168}));
  EXPECT_TRUE(mtp.count("model.layers.61.mlp.experts.255.down_proj.weight"));
  EXPECT_TRUE(mtp_tensors(load_catalog("DeepSeek-V2")).empty());
}

TEST(TensorSpecs, TiedEmbeddingsHaveNoLmHead) {
  json j = raw_catalog("Qwen3-30B-A3B");
  j["tie_word_embeddings"] = true;
  auto c = parse_model_config(j, "tied.json");
  ASSERT_TRUE(c.ok());
  auto t = expected_tensors(*c);
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(by_name(*t).count("lm_head.weight"));
}

TEST(TensorSpecs, Fp8CheckpointScales) {
  ModelConfig c = load_catalog("Qwen3-30B-A3B-FP8");
  auto t = checkpoint_tensors(c, false);
  ASSERT_TRUE(t.ok());
  auto m = by_name(*t);
  // [768, 2048] in 128x128 blocks -> [6, 16]; [2048, 768] -> [16, 6].
  EXPECT_EQ(m.at("model.layers.0.mlp.experts.0.gate_proj.weight_scale_inv").shape, (Shape{6, 16}));
  EXPECT_EQ(m.at("model.layers.0.mlp.experts.0.down_proj.weight_scale_inv").shape, (Shape{16, 6}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.k_proj.weight_scale_inv").shape, (Shape{4, 16}));
  EXPECT_FALSE(m.count("model.layers.0.mlp.gate.weight_scale_inv"));  // router stays BF16
  EXPECT_FALSE(m.count("lm_head.weight_scale_inv"));
  EXPECT_FALSE(m.count("model.embed_tokens.weight_scale_inv"));
  // A BF16 checkpoint has no scales.
  auto plain = checkpoint_tensors(load_catalog("Qwen3-30B-A3B"), false);
  ASSERT_TRUE(plain.ok());
  for (const auto& s : *plain) EXPECT_NE(s.role, TensorRole::kFp8Scale);
}

// Every config under tests/data/tensor_names_hf against the tensors transformers saves for it
// (names and shapes, produced on the GPU machine by hf_tensor_names.py in that folder).
TEST(TensorSpecs, MatchTransformers) {
  const std::string dir = kRoot + "/tests/data/tensor_names_hf";
  int checked = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!fs::is_regular_file(e.path() / "tensors.json")) continue;
    const std::string n = e.path().filename().string();
    auto c = load_model_config((e.path() / "config.json").string());
    ASSERT_TRUE(c.ok()) << n << ": " << c.status().message();
    auto ours = expected_tensors(*c);
    ASSERT_TRUE(ours.ok());
    json ref = json::parse(*read_file((e.path() / "tensors.json").string()))["tensors"];
    std::map<std::string, Shape> mine;
    for (const auto& t : *ours) mine[t.name] = t.shape;
    EXPECT_EQ(mine.size(), ours->size()) << n << ": duplicate names";
    for (const auto& [name, shape] : ref.items()) {
      auto it = mine.find(name);
      if (it == mine.end()) {
        ADD_FAILURE() << n << ": transformers has " << name << ", we do not";
        continue;
      }
      EXPECT_EQ(it->second, shape.get<Shape>()) << n << ": " << name;
    }
    for (const auto& [name, shape] : mine)
      EXPECT_TRUE(ref.contains(name)) << n << ": we list " << name << ", transformers does not";
    ++checked;
  }
  EXPECT_GE(checked, 17);
}

}  // namespace
}  // namespace moeopt
