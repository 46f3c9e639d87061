// config.json as transformers 5 writes it, and the two spellings of renamed keys.
//
// tests/reference/golden_configs/tf5 holds configs written by transformers 5 `save_pretrained`
// (tests/reference/make_tf5_configs.py, version in its manifest.json and README.md) from the
// hub originals in models/catalog, the tiny engine configs and rope-scaling variants. Each must
// parse to the same model as the original it was saved from. The spelling tests below build
// their configs from the catalog files by renaming keys the way transformers 5 does.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/model/config.h"
#include "moeopt/model/tensor_specs.h"

namespace moeopt {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kRoot = MOEOPT_SOURCE_DIR;
const std::string kTf5 = kRoot + "/tests/reference/golden_configs/tf5";

json read_json(const std::string& path) {
  auto text = read_file(path);
  EXPECT_TRUE(text.ok()) << path;
  return text.ok() ? json::parse(*text) : json();
}

json manifest() { return read_json(kTf5 + "/manifest.json"); }

json raw_catalog(const std::string& name) { return read_json(kRoot + "/models/catalog/" + name + "/config.json"); }

ModelConfig parse_ok(const json& j, const std::string& what) {
  auto c = parse_model_config(j, what);
  EXPECT_TRUE(c.ok()) << what << ": " << c.status().message();
  return c.ok() ? *c : ModelConfig{};
}

std::string parse_error(const json& j) {
  auto c = parse_model_config(j, "x.json");
  EXPECT_FALSE(c.ok()) << "parsed: " << j.dump().substr(0, 200);
  if (c.ok()) return "";
  EXPECT_EQ(c.status().message().find('\n'), std::string::npos) << c.status().message();
  return c.status().message();
}

#define EXPECT_FIELD(f) EXPECT_EQ(a.f, b.f) << what << ": " #f

// Everything of a ModelConfig that describes the model (all but `source` and
// head_dim_explicit, which only says whether the file had the key: transformers 5 writes
// head_dim for Mixtral and DeepSeek, as null or as the rope part).
void expect_same_model(const ModelConfig& a, const ModelConfig& b, const std::string& what) {
  EXPECT_FIELD(model_type);
  EXPECT_FIELD(architectures);
  EXPECT_FIELD(arch);
  EXPECT_FIELD(vocab_size);
  EXPECT_FIELD(hidden_size);
  EXPECT_FIELD(num_hidden_layers);
  EXPECT_FIELD(num_attention_heads);
  EXPECT_FIELD(num_key_value_heads);
  EXPECT_FIELD(head_dim);
  EXPECT_FIELD(qk_head_dim());
  EXPECT_FIELD(intermediate_size);
  EXPECT_FIELD(hidden_act);
  EXPECT_FIELD(max_position_embeddings);
  EXPECT_FIELD(rms_norm_eps);
  EXPECT_FIELD(rope_theta);
  EXPECT_FIELD(tie_word_embeddings);
  EXPECT_FIELD(torch_dtype);

  const RopeScaling &ra = a.rope_scaling, &rb = b.rope_scaling;
  EXPECT_EQ(ra.type, rb.type) << what << ": rope type " << rope_scaling_type_name(ra.type) << " vs "
                              << rope_scaling_type_name(rb.type);
  if (ra.type == rb.type && ra.type != RopeScalingType::kNone) {
    EXPECT_EQ(ra.factor, rb.factor) << what << ": rope factor";
    // transformers 5 writes max_position_embeddings where a yarn/llama3 config left
    // original_max_position_embeddings out; moeopt's rope reads an absent one the same way.
    auto orig = [](const ModelConfig& c) {
      const int64_t o = c.rope_scaling.original_max_position_embeddings;
      return o > 0 ? o : c.max_position_embeddings;
    };
    EXPECT_EQ(orig(a), orig(b)) << what << ": rope original_max_position_embeddings";
    if (ra.type == RopeScalingType::kYarn) {
      EXPECT_EQ(ra.beta_fast, rb.beta_fast) << what;
      EXPECT_EQ(ra.beta_slow, rb.beta_slow) << what;
      EXPECT_EQ(ra.mscale, rb.mscale) << what << ": mscale";
      EXPECT_EQ(ra.mscale_all_dim, rb.mscale_all_dim) << what << ": mscale_all_dim";
      EXPECT_EQ(ra.attention_factor, rb.attention_factor) << what << ": attention_factor";
    }
    if (ra.type == RopeScalingType::kLlama3) {
      EXPECT_EQ(ra.low_freq_factor, rb.low_freq_factor) << what;
      EXPECT_EQ(ra.high_freq_factor, rb.high_freq_factor) << what;
    }
  }

  EXPECT_FIELD(attention_bias);
  EXPECT_FIELD(qkv_bias);
  EXPECT_FIELD(mlp_bias);
  EXPECT_FIELD(qk_norm);
  EXPECT_FIELD(clip_qkv);
  EXPECT_FIELD(sliding_window);
  EXPECT_FIELD(use_sliding_window);
  EXPECT_FIELD(max_window_layers);

  EXPECT_FIELD(num_experts);
  EXPECT_FIELD(num_experts_per_tok);
  EXPECT_FIELD(moe_intermediate_size);
  EXPECT_FIELD(num_shared_experts);
  EXPECT_FIELD(shared_expert_intermediate_size);
  EXPECT_FIELD(shared_expert_gate);
  EXPECT_FIELD(norm_topk_prob);
  EXPECT_FIELD(scoring_func);
  EXPECT_FIELD(topk_method);
  EXPECT_FIELD(n_group);
  EXPECT_FIELD(topk_group);
  EXPECT_FIELD(routed_scaling_factor);
  EXPECT_FIELD(e_score_correction_bias);
  EXPECT_FIELD(decoder_sparse_step);
  EXPECT_FIELD(mlp_only_layers);
  EXPECT_FIELD(first_k_dense_replace);
  EXPECT_FIELD(moe_layer_freq);
  EXPECT_FIELD(router_aux_loss_coef);
  EXPECT_FIELD(num_moe_layers());

  EXPECT_FIELD(attention_kind);
  EXPECT_FIELD(q_lora_rank);
  EXPECT_FIELD(kv_lora_rank);
  EXPECT_FIELD(qk_nope_head_dim);
  EXPECT_FIELD(qk_rope_head_dim);
  EXPECT_FIELD(v_head_dim);
  EXPECT_FIELD(num_nextn_predict_layers);

  ASSERT_EQ(a.fp8.has_value(), b.fp8.has_value()) << what << ": fp8";
  if (a.fp8) {
    EXPECT_FIELD(fp8->quant_method);
    EXPECT_FIELD(fp8->fmt);
    EXPECT_FIELD(fp8->activation_scheme);
    EXPECT_FIELD(fp8->block_n);
    EXPECT_FIELD(fp8->block_k);
    EXPECT_FIELD(fp8->modules_to_not_convert);
  }

  EXPECT_FIELD(bos_token_id);
  EXPECT_FIELD(eos_token_ids);
  EXPECT_FIELD(pad_token_id);

  // And so the same checkpoint: tensor names, shapes and roles.
  auto ta = expected_tensors(a);
  auto tb = expected_tensors(b);
  ASSERT_TRUE(ta.ok() && tb.ok()) << what;
  ASSERT_EQ(ta->size(), tb->size()) << what;
  for (size_t i = 0; i < ta->size(); ++i) {
    EXPECT_EQ((*ta)[i].name, (*tb)[i].name) << what;
    EXPECT_EQ((*ta)[i].shape, (*tb)[i].shape) << what << ": " << (*ta)[i].name;
  }
}

#undef EXPECT_FIELD

// ---------------------------------------------------------------------------------------
// The configs transformers 5 wrote

TEST(ModelConfigTf5, ManifestListsEveryConfigWrittenByTransformers5) {
  const json m = manifest();
  const std::string version = m.at("transformers_version").get<std::string>();
  EXPECT_EQ(version.rfind("5.", 0), 0u) << version;
  std::set<std::string> listed;
  for (const auto& e : m.at("configs")) {
    const std::string name = e.at("name").get<std::string>();
    EXPECT_TRUE(listed.insert(name).second) << name << " twice";
    EXPECT_TRUE(fs::is_regular_file(kRoot + "/" + e.at("original").get<std::string>())) << name;
    const json tf5 = read_json(kTf5 + "/" + name + "/config.json");
    EXPECT_EQ(tf5.value("transformers_version", ""), version) << name;
  }
  std::set<std::string> dirs;
  for (const auto& d : fs::directory_iterator(kTf5))
    if (d.is_directory()) dirs.insert(d.path().filename().string());
  EXPECT_EQ(dirs, listed);
  // Every catalog model, every tiny engine config and the rope variants.
  EXPECT_GE(listed.size(), 33u);
  for (const char* n : {"Qwen3-30B-A3B", "Qwen3-235B-A22B", "Qwen1.5-MoE-A2.7B", "Mixtral-8x7B-v0.1",
                        "DeepSeek-V2", "DeepSeek-V2-Lite", "DeepSeek-V3", "OLMoE-1B-7B-0924"})
    EXPECT_TRUE(listed.count(n)) << n;
}

// The written files really use the transformers 5 spellings (otherwise the comparison below
// would prove nothing).
TEST(ModelConfigTf5, FilesUseTheTransformers5Spellings) {
  int checked = 0, qwen3 = 0;
  const json m = manifest();
  for (const auto& e : m.at("configs")) {
    const std::string name = e.at("name").get<std::string>();
    const json j = read_json(kTf5 + "/" + name + "/config.json");
    EXPECT_TRUE(j.contains("dtype") && !j.contains("torch_dtype")) << name;
    EXPECT_TRUE(j.contains("rope_parameters") && j["rope_parameters"].contains("rope_theta") &&
                j["rope_parameters"].contains("rope_type"))
        << name;
    EXPECT_FALSE(j.contains("rope_theta")) << name;
    EXPECT_FALSE(j.contains("rope_scaling")) << name;
    if (j["model_type"] == "qwen3_moe") {
      EXPECT_TRUE(j.contains("num_local_experts") && !j.contains("num_experts")) << name;
      ++qwen3;
    }
    ++checked;
  }
  EXPECT_GE(checked, 33);
  EXPECT_GE(qwen3, 9);
}

TEST(ModelConfigTf5, EachParsesToTheModelOfItsOriginal) {
  int checked = 0;
  const json m = manifest();
  for (const auto& e : m.at("configs")) {
    const std::string name = e.at("name").get<std::string>();
    const std::string original = kRoot + "/" + e.at("original").get<std::string>();
    auto a = load_model_config(original);
    auto b = load_model_config(kTf5 + "/" + name + "/config.json");
    ASSERT_TRUE(a.ok()) << a.status().message();
    ASSERT_TRUE(b.ok()) << b.status().message();
    expect_same_model(*a, *b, name);
    ++checked;
  }
  EXPECT_GE(checked, 33);
}

// The case of the issue: a real-width Qwen3-30B-A3B config re-saved by transformers 5.
TEST(ModelConfigTf5, Qwen3_30B_A3B) {
  auto c = load_model_config(kTf5 + "/Qwen3-30B-A3B/config.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->arch, Arch::kQwen3Moe);
  EXPECT_EQ(c->num_experts, 128);
  EXPECT_EQ(c->num_experts_per_tok, 8);
  EXPECT_EQ(c->moe_intermediate_size, 768);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->num_moe_layers(), 48);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  auto t = checkpoint_tensors(*c, false);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->size(), 48u * (128u * 3u + 9u) + 3u);  // per layer: experts, gate, attention (q/k/v/o, q/k norm), 2 norms

  auto fp8 = load_model_config(kTf5 + "/Qwen3-30B-A3B-FP8/config.json");
  ASSERT_TRUE(fp8.ok()) << fp8.status().message();
  ASSERT_TRUE(fp8->fp8.has_value());
  EXPECT_EQ(fp8->fp8->block_n, 128);
  EXPECT_EQ(fp8->fp8->modules_to_not_convert.size(), 1u + 48u * 3u);
}

// Scaled rope types went through transformers 5's rope_parameters conversion intact.
TEST(ModelConfigTf5, ScaledRopeTypesInRopeParameters) {
  auto load = [](const std::string& n) {
    auto c = load_model_config(kTf5 + "/" + n + "/config.json");
    EXPECT_TRUE(c.ok()) << n << ": " << c.status().message();
    return c.ok() ? *c : ModelConfig{};
  };
  ModelConfig q = load("Qwen3-30B-A3B-rope-yarn");
  EXPECT_EQ(q.rope_scaling.type, RopeScalingType::kYarn);
  EXPECT_EQ(q.rope_scaling.factor, 4.0);
  EXPECT_EQ(q.rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(q.rope_theta, 1e6);

  ModelConfig no_orig = load("Qwen3-235B-A22B-rope-yarn-no-orig");
  EXPECT_EQ(no_orig.rope_scaling.type, RopeScalingType::kYarn);
  EXPECT_EQ(no_orig.rope_scaling.original_max_position_embeddings, 40960);  // written by transformers 5

  ModelConfig d2 = load("DeepSeek-V2");
  EXPECT_EQ(d2.rope_scaling.type, RopeScalingType::kYarn);
  EXPECT_EQ(d2.rope_scaling.factor, 40.0);
  EXPECT_EQ(d2.rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_EQ(d2.rope_scaling.mscale, 0.707);
  EXPECT_EQ(d2.rope_scaling.mscale_all_dim, 0.707);
  EXPECT_EQ(d2.head_dim, 192);  // the file's head_dim (64, the rope part) is not MLA's head dim

  ModelConfig d2a = load("DeepSeek-V2-rope-yarn-attention-factor");
  EXPECT_EQ(d2a.rope_scaling.attention_factor, 1.25);
  EXPECT_EQ(d2a.rope_scaling.beta_fast, 16.0);
  EXPECT_EQ(d2a.rope_scaling.beta_slow, 2.0);

  ModelConfig m = load("Mixtral-8x22B-v0.1-rope-llama3");
  EXPECT_EQ(m.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(m.rope_scaling.factor, 8.0);
  EXPECT_EQ(m.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(m.rope_scaling.high_freq_factor, 4.0);

  EXPECT_EQ(load("DeepSeek-V3-rope-llama3").rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(load("Mixtral-8x7B-v0.1-rope-linear").rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_EQ(load("Qwen2-57B-A14B-rope-linear").rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_EQ(load("DeepSeek-V2-Lite-rope-linear").rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_EQ(load("Qwen1.5-MoE-A2.7B-rope-dynamic").rope_scaling.type, RopeScalingType::kDynamic);
  EXPECT_EQ(load("OLMoE-1B-7B-0924-rope-dynamic").rope_scaling.type, RopeScalingType::kDynamic);
  EXPECT_EQ(load("golden-qwen3_moe_yarn").rope_scaling.type, RopeScalingType::kYarn);
}

// ---------------------------------------------------------------------------------------
// Each spelling alone, for every family

// The routed-expert count under each name transformers reads for the family.
TEST(ModelConfigSpellings, ExpertCountUnderEveryName) {
  struct Case {
    const char* model;
    const char* key;                   // as the hub file has it
    std::vector<const char*> aliases;  // what else is read
  };
  const Case cases[] = {
      {"Qwen3-30B-A3B", "num_experts", {"num_local_experts"}},
      {"Qwen1.5-MoE-A2.7B", "num_experts", {"num_local_experts"}},
      {"OLMoE-1B-7B-0924", "num_experts", {"num_local_experts"}},
      {"Mixtral-8x7B-v0.1", "num_local_experts", {"num_experts"}},
      {"DeepSeek-V2-Lite", "n_routed_experts", {"num_experts", "num_local_experts"}},
      {"DeepSeek-V3", "n_routed_experts", {"num_experts", "num_local_experts"}},
  };
  for (const auto& cs : cases) {
    const json base = raw_catalog(cs.model);
    const ModelConfig want = parse_ok(base, cs.model);
    for (const char* alias : cs.aliases) {
      json j = base;
      j[alias] = j[cs.key];
      j.erase(cs.key);
      const std::string what = std::string(cs.model) + " with " + alias;
      expect_same_model(want, parse_ok(j, what), what);
      // Both, agreeing (an int and the same value as a float count as agreeing).
      j[cs.key] = base[cs.key].get<double>();
      expect_same_model(want, parse_ok(j, what + " and " + cs.key), what + " and " + cs.key);
      // Both, disagreeing: one line naming both keys and values.
      j[cs.key] = base[cs.key];
      j[alias] = base[cs.key].get<int64_t>() * 2;
      const std::string msg = parse_error(j);
      EXPECT_NE(msg.find(fmt::format("fields '{}' ({}) and '{}' ({}) disagree", cs.key, base[cs.key].dump(), alias,
                                     base[cs.key].get<int64_t>() * 2)),
                std::string::npos)
          << what << ": " << msg;
    }
    json none = base;
    none.erase(cs.key);
    const std::string msg = parse_error(none);
    EXPECT_NE(msg.find(fmt::format("missing required field '{}' (number of routed experts; also read as", cs.key)),
              std::string::npos)
        << msg;
  }
}

// A transformers 4 config turned by hand into the 5 spellings (dtype, rope_parameters) for
// each catalog family parses to the same model, and with both spellings present and equal too.
TEST(ModelConfigSpellings, DtypeAndRopeParametersForEveryFamily) {
  for (const char* n : {"Qwen3-30B-A3B", "Qwen1.5-MoE-A2.7B", "Mixtral-8x7B-v0.1", "DeepSeek-V2-Lite", "DeepSeek-V3",
                        "OLMoE-1B-7B-0924"}) {
    const json base = raw_catalog(n);
    const ModelConfig want = parse_ok(base, n);
    json rp = base.contains("rope_scaling") && base["rope_scaling"].is_object() ? base["rope_scaling"]
                                                                                : json{{"rope_type", "default"}};
    rp["rope_theta"] = base["rope_theta"];
    json tf5 = base;
    tf5.erase("rope_scaling");
    tf5.erase("rope_theta");
    tf5.erase("torch_dtype");
    tf5["dtype"] = base["torch_dtype"];
    tf5["rope_parameters"] = rp;
    expect_same_model(want, parse_ok(tf5, n), std::string(n) + " tf5 spellings");
    json both = base;
    both["dtype"] = base["torch_dtype"];
    both["rope_parameters"] = rp;
    expect_same_model(want, parse_ok(both, n), std::string(n) + " both spellings");
  }
}

TEST(ModelConfigSpellings, MtpLayersAlias) {
  json j = raw_catalog("DeepSeek-V3");
  j["num_mtp_layers"] = j["num_nextn_predict_layers"];
  j.erase("num_nextn_predict_layers");
  EXPECT_EQ(parse_ok(j, "v3").num_nextn_predict_layers, 1);
  j["num_nextn_predict_layers"] = 2;
  EXPECT_NE(parse_error(j).find("fields 'num_nextn_predict_layers' (2) and 'num_mtp_layers' (1) disagree"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------
// Both spellings, disagreeing: one line naming both keys

TEST(ModelConfigSpellings, DisagreeingDtype) {
  json j = raw_catalog("Qwen3-30B-A3B");
  j["dtype"] = "float16";
  EXPECT_NE(parse_error(j).find("fields 'dtype' (\"float16\") and 'torch_dtype' (\"bfloat16\") disagree"),
            std::string::npos);
  j.erase("torch_dtype");
  EXPECT_EQ(parse_ok(j, "q").torch_dtype, "float16");
  j["dtype"] = "int8";
  EXPECT_NE(parse_error(j).find("field 'dtype': 'int8' is not supported"), std::string::npos);
}

TEST(ModelConfigSpellings, DisagreeingRopeTheta) {
  json j = raw_catalog("Qwen3-30B-A3B");  // rope_theta 1e6, rope_scaling null
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
  EXPECT_NE(parse_error(j).find("fields 'rope_parameters.rope_theta' (10000) and 'rope_theta' (1000000) disagree"),
            std::string::npos);
  j["rope_parameters"]["rope_theta"] = 1000000;  // same value as an integer
  EXPECT_DOUBLE_EQ(parse_ok(j, "q").rope_theta, 1e6);
  // rope_parameters without rope_theta: the top-level one.
  j["rope_parameters"].erase("rope_theta");
  EXPECT_DOUBLE_EQ(parse_ok(j, "q").rope_theta, 1e6);
  // Neither: the family default (configuration_qwen3_moe.py: 10000).
  j.erase("rope_theta");
  EXPECT_DOUBLE_EQ(parse_ok(j, "q").rope_theta, 10000.0);
}

TEST(ModelConfigSpellings, DisagreeingRopeScaling) {
  const json base = raw_catalog("DeepSeek-V2-Lite");  // yarn x40, mscale 0.707, rope_theta 10000
  json j = base;
  j["rope_parameters"] = base["rope_scaling"];
  j["rope_parameters"]["rope_theta"] = 10000;
  expect_same_model(parse_ok(base, "v2"), parse_ok(j, "v2 both"), "v2 both");

  j["rope_parameters"]["factor"] = 20;
  EXPECT_NE(parse_error(j).find("fields 'rope_parameters' and 'rope_scaling' disagree in factor (20 vs 40)"),
            std::string::npos);
  j["rope_parameters"] = base["rope_scaling"];
  j["rope_parameters"]["mscale"] = 1.0;
  EXPECT_NE(parse_error(j).find("disagree in mscale (1 vs 0.707)"), std::string::npos);
  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 40}};
  EXPECT_NE(parse_error(j).find("fields 'rope_parameters' and 'rope_scaling' disagree in type ('linear' vs 'yarn')"),
            std::string::npos);
  j["rope_parameters"] = {{"rope_type", "default"}};
  EXPECT_NE(parse_error(j).find("disagree in type ('default' vs 'yarn')"), std::string::npos);

  // A transformers 5 file gives yarn an explicit original_max_position_embeddings =
  // max_position_embeddings where the 4.x one had none: the same rotation.
  json q = raw_catalog("Qwen3-30B-A3B");
  q["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  q["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 2.0}, {"original_max_position_embeddings", 40960},
                          {"rope_theta", 1e6}};
  EXPECT_EQ(parse_ok(q, "q").rope_scaling.original_max_position_embeddings, 40960);
  q["rope_parameters"]["original_max_position_embeddings"] = 32768;
  EXPECT_NE(parse_error(q).find("disagree in original_max_position_embeddings (32768 vs 40960)"), std::string::npos);
}

TEST(ModelConfigSpellings, DisagreeingTypeAndRopeType) {
  json j = raw_catalog("DeepSeek-V3");  // rope_scaling {"type": "yarn", ...}
  j["rope_scaling"]["rope_type"] = "yarn";  // as transformers 4.3x+ and 5 add it
  EXPECT_EQ(parse_ok(j, "v3").rope_scaling.type, RopeScalingType::kYarn);
  j["rope_scaling"]["type"] = "linear";
  EXPECT_NE(parse_error(j).find("fields 'rope_scaling.rope_type' (\"yarn\") and 'rope_scaling.type' (\"linear\") disagree"),
            std::string::npos);
  j["rope_parameters"] = j["rope_scaling"];
  j.erase("rope_scaling");
  EXPECT_NE(parse_error(j).find("fields 'rope_parameters.rope_type' (\"yarn\") and 'rope_parameters.type'"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------
// rope_parameters details

// transformers 5 nests rope_parameters per layer type where layer types differ; one rope for
// every layer type is the same model, different ones are refused.
TEST(ModelConfigSpellings, RopeParametersPerLayerType) {
  json j = raw_catalog("Qwen3-30B-A3B");
  j.erase("rope_theta");
  j.erase("rope_scaling");
  const json yarn = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768},
                     {"rope_theta", 1e6}};
  j["rope_parameters"] = {{"full_attention", yarn}, {"sliding_attention", yarn}};
  ModelConfig c = parse_ok(j, "nested");
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kYarn);
  EXPECT_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  j["rope_parameters"]["sliding_attention"]["rope_theta"] = 10000.0;
  EXPECT_NE(parse_error(j).find(
                "field 'rope_parameters': a different rope per layer type ('full_attention', 'sliding_attention') is "
                "not supported"),
            std::string::npos);
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "linear"}}}};
  EXPECT_NE(parse_error(j).find("field 'rope_parameters.full_attention.factor' is required for rope type 'linear'"),
            std::string::npos);
}

TEST(ModelConfigSpellings, RopeParametersErrors) {
  json j = raw_catalog("Qwen3-30B-A3B");
  j["rope_parameters"] = "yarn";
  EXPECT_NE(parse_error(j).find("field 'rope_parameters': expected an object or null"), std::string::npos);
  j["rope_parameters"] = {{"rope_type", "longrope"}, {"factor", 2.0}};
  EXPECT_NE(parse_error(j).find("rope scaling 'longrope' is not supported"), std::string::npos);
  j["rope_parameters"] = {{"rope_type", "yarn"}};
  EXPECT_NE(parse_error(j).find("field 'rope_parameters.factor' is required for rope type 'yarn'"), std::string::npos);
  j["rope_parameters"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_NE(parse_error(j).find("'rope_parameters.original_max_position_embeddings' is required for rope type 'llama3'"),
            std::string::npos);
  // Keys that would change the rotation but that moeopt does not carry are refused, not dropped.
  j["rope_parameters"] = {{"rope_type", "default"}, {"partial_rotary_factor", 0.5}};
  EXPECT_NE(parse_error(j).find("field 'rope_parameters.partial_rotary_factor': only 1.0 is supported"),
            std::string::npos);
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"truncate", false}};
  EXPECT_NE(parse_error(j).find("field 'rope_parameters.truncate': only true is supported"), std::string::npos);
  j["rope_parameters"] = {{"rope_type", "default"}, {"partial_rotary_factor", 1.0}, {"rope_theta", 1e6}};
  parse_ok(j, "defaults of both");
}

}  // namespace
}  // namespace moeopt
