// Profiles: the shipped configs/*.yaml against DESIGN.md's feature table, strict parsing
// (unknown keys, wrong types, ranges, duplicates), overrides, and feature availability.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>

#include "moeopt/engine/profile.h"

namespace moeopt::engine {
namespace {

const std::string kConfigs = std::string(MOEOPT_SOURCE_DIR) + "/configs";

// DESIGN.md's table, row by row: conservative / balanced / aggressive.
struct Row {
  Feature f;
  bool conservative, balanced, aggressive;
};
const Row kDesignTable[] = {
    {Feature::kFusedMoe, true, true, true},
    {Feature::kCudaGraphs, true, true, true},
    {Feature::kFp8Weights, false, true, true},
    {Feature::kFp8KvCache, false, false, true},
    {Feature::kExpertParallel, true, true, true},
    {Feature::kDualBatchOverlap, false, true, true},
    {Feature::kSparsity24, false, false, false},  // aggressive: opt-in flag only
};

TEST(Profile, ShippedProfilesMatchTheDesignTable) {
  for (const auto& name : builtin_profile_names()) {
    auto p = load_profile(name, kConfigs);
    ASSERT_TRUE(p.ok()) << p.status().message();
    EXPECT_EQ(p->name, name);
    for (const auto& row : kDesignTable) {
      bool want = name == "conservative" ? row.conservative : name == "balanced" ? row.balanced : row.aggressive;
      EXPECT_EQ(p->feature(row.f), want) << name << " " << feature_key(row.f);
    }
  }
}

TEST(Profile, ShippedProfilesListEveryKey) {
  // Defaults must never silently decide a shipped profile: each file sets every key.
  for (const auto& name : builtin_profile_names()) {
    std::ifstream in(kConfigs + "/" + name + ".yaml");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (const auto& key : profile_keys()) {
      std::string leaf = key.substr(key.find('.') + 1);
      EXPECT_NE(text.find("\n  " + leaf + ":"), std::string::npos) << name << " lacks " << key;
    }
  }
}

TEST(Profile, NamesAreCaseInsensitiveAndPathsWork) {
  auto p = load_profile("Balanced", kConfigs);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->name, "balanced");
  auto q = load_profile(kConfigs + "/aggressive.yaml", "/nonexistent");
  ASSERT_TRUE(q.ok()) << q.status().message();
  EXPECT_TRUE(q->features.fp8_kv_cache);
}

TEST(Profile, UnknownNameAndMissingFile) {
  auto p = load_profile("turbo", kConfigs);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(p.status().message().find("turbo"), std::string::npos);
  EXPECT_NE(p.status().message().find("conservative"), std::string::npos);
  auto q = load_profile("/nonexistent/dir/x.yaml", kConfigs);
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("/nonexistent/dir/x.yaml"), std::string::npos);
}

TEST(Profile, MissingKeysKeepConservativeDefaults) {
  auto p = parse_profile("features:\n  fp8_weights: true\n", "mine.yaml", "mine");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->name, "mine");
  EXPECT_TRUE(p->features.fp8_weights);
  EXPECT_TRUE(p->features.fused_moe);
  EXPECT_EQ(p->engine.kv_block_size, 16);
  auto c = load_profile("conservative", kConfigs);
  ASSERT_TRUE(c.ok());
  Profile defaults;
  defaults.name = "conservative";
  EXPECT_EQ(profile_to_yaml(*c), profile_to_yaml(defaults));
}

// Each malformed profile and a fragment its one-line error must contain (file and key).
struct BadCase {
  const char* yaml;
  const char* expect;
};
const BadCase kBad[] = {
    {"features:\n  fused_moe: true\n  turbo_mode: true\n", "bad.yaml: features.turbo_mode: unknown key"},
    {"engine:\n  fp8_weights: true\n", "bad.yaml: engine.fp8_weights: unknown key"},  // wrong section
    {"speed: 11\n", "bad.yaml: speed: unknown key"},
    {"features:\n  fused_moe: yes\n", "features.fused_moe: expected a boolean"},
    {"features:\n  fused_moe: 1\n", "features.fused_moe: expected a boolean"},
    {"features:\n  fused_moe: \"true\"\n", "features.fused_moe: expected a boolean (true/false), got the string"},
    {"engine:\n  max_num_seqs: 12.5\n", "engine.max_num_seqs: expected an integer, got '12.5'"},
    {"engine:\n  max_num_seqs: \"256\"\n", "engine.max_num_seqs: expected an integer"},
    {"engine:\n  max_num_seqs: [1, 2]\n", "engine.max_num_seqs: expected an integer, got a list"},
    {"engine:\n  max_num_seqs:\n", "engine.max_num_seqs: missing value"},
    {"engine:\n  max_num_seqs: 0\n", "engine.max_num_seqs: 0 is out of range [1, 65536]"},
    {"engine:\n  max_num_seqs: -3\n", "engine.max_num_seqs: -3 is out of range"},
    {"engine:\n  max_num_seqs: 99999999999999999999\n", "engine.max_num_seqs: 99999999999999999999 is out of range"},
    {"engine:\n  gpu_memory_utilization: 0\n", "engine.gpu_memory_utilization: 0 is out of range (0, 1]"},
    {"engine:\n  gpu_memory_utilization: 1.5\n", "engine.gpu_memory_utilization: 1.5 is out of range"},
    {"engine:\n  gpu_memory_utilization: .nan\n", "engine.gpu_memory_utilization: expected a number"},
    {"engine:\n  gpu_memory_utilization: 0x1p-1\n", "engine.gpu_memory_utilization: expected a number"},
    {"engine:\n  kv_block_size: 24\n", "engine.kv_block_size: 24 is not a power of two"},
    {"engine:\n  max_num_seqs: 512\n  max_num_batched_tokens: 256\n", "max_num_batched_tokens: 256 is below"},
    {"engine:\n  max_num_seqs: 8\n  max_num_seqs: 9\n", "engine.max_num_seqs: duplicate key"},
    {"features: true\n", "bad.yaml: features: expected a mapping"},
    {"- a\n- b\n", "bad.yaml: expected a mapping"},
    {"", "bad.yaml: expected a mapping"},
    {"features:\n  fused_moe: [true\n", "bad.yaml: invalid YAML at line"},
    {"name: \"\"\n", "bad.yaml: name: must not be empty"},
    {"name: [a]\n", "bad.yaml: name: expected a string, got a list"},
};

TEST(Profile, MalformedProfilesGiveOneLineErrorsNamingFileAndKey) {
  for (const auto& c : kBad) {
    auto p = parse_profile(c.yaml, "bad.yaml", "bad");
    ASSERT_FALSE(p.ok()) << c.yaml;
    EXPECT_EQ(p.status().code(), ErrorCode::kInvalidArgument) << c.yaml;
    const std::string& msg = p.status().message();
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "yaml:\n" << c.yaml << "got: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(Profile, OverridesBySeveralSpellings) {
  auto p = load_profile("conservative", kConfigs);
  ASSERT_TRUE(p.ok());
  Profile prof = *p;
  ASSERT_TRUE(apply_override(prof, "fp8_weights", "true").ok());
  ASSERT_TRUE(apply_override(prof, "features.fp8-kv-cache", "true").ok());
  ASSERT_TRUE(apply_override(prof, "max-num-seqs", "64").ok());
  ASSERT_TRUE(apply_override(prof, "engine.gpu_memory_utilization", "0.5").ok());
  ASSERT_TRUE(apply_override(prof, "enable_prefix_caching", "false").ok());
  EXPECT_TRUE(prof.features.fp8_weights);
  EXPECT_TRUE(prof.features.fp8_kv_cache);
  EXPECT_EQ(prof.engine.max_num_seqs, 64);
  EXPECT_DOUBLE_EQ(prof.engine.gpu_memory_utilization, 0.5);
  EXPECT_FALSE(prof.engine.enable_prefix_caching);
}

TEST(Profile, BadOverridesLeaveTheProfileUnchanged) {
  Profile prof;
  const std::string before = profile_to_yaml(prof);
  struct { const char* key; const char* value; const char* expect; } cases[] = {
      {"turbo", "true", "unknown profile key 'turbo'"},
      {"engine.fused_moe", "true", "unknown profile key"},
      {"fused_moe", "yes", "override features.fused_moe: expected a boolean"},
      {"max_num_seqs", "lots", "override engine.max_num_seqs: expected an integer, got 'lots'"},
      {"kv_block_size", "12", "override engine.kv_block_size: engine.kv_block_size: 12 is not a power of two"},
      {"max_num_batched_tokens", "8", "max_num_batched_tokens: 8 is below engine.max_num_seqs (256)"},
  };
  for (const auto& c : cases) {
    Status st = apply_override(prof, c.key, c.value);
    ASSERT_FALSE(st.ok()) << c.key;
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << st.message();
    EXPECT_EQ(profile_to_yaml(prof), before) << c.key;
  }
}

TEST(Profile, EveryKeyIsOverridableAndRoundTripsThroughYaml) {
  // A value different from each default, of the right type, for every key.
  const std::pair<const char*, const char*> kValues[] = {
      {"features.fused_moe", "false"},          {"features.cuda_graphs", "false"},
      {"features.fp8_weights", "true"},         {"features.fp8_kv_cache", "true"},
      {"features.expert_parallel", "false"},    {"features.dual_batch_overlap", "true"},
      {"features.sparsity_2_4", "true"},        {"engine.max_num_seqs", "128"},
      {"engine.max_num_batched_tokens", "16384"}, {"engine.kv_block_size", "32"},
      {"engine.gpu_memory_utilization", "0.75"}, {"engine.max_model_len", "4096"},
      {"engine.enable_prefix_caching", "false"}, {"engine.enable_chunked_prefill", "false"},
      {"engine.max_waiting_requests", "7"},     {"engine.cuda_graph_max_batch", "64"},
      {"engine.dbo_min_tokens", "2048"},        {"engine.cpu_threads", "3"},
  };
  ASSERT_EQ(profile_keys().size(), std::size(kValues));
  Profile prof;
  prof.name = "custom";
  const Profile defaults = prof;
  for (const auto& [key, value] : kValues) {
    Profile before = prof;
    ASSERT_TRUE(apply_override(prof, key, value).ok()) << key << "=" << value;
    EXPECT_NE(profile_to_yaml(prof), profile_to_yaml(before)) << key << " changed nothing";
  }
  auto back = parse_profile(profile_to_yaml(prof), "roundtrip.yaml", "x");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(profile_to_yaml(*back), profile_to_yaml(prof));
  EXPECT_NE(profile_to_yaml(*back), profile_to_yaml(defaults));
  EXPECT_EQ(back->name, "custom");
  EXPECT_EQ(back->engine.kv_block_size, 32);
  EXPECT_EQ(back->engine.max_waiting_requests, 7);
  EXPECT_DOUBLE_EQ(back->engine.gpu_memory_utilization, 0.75);
  EXPECT_FALSE(back->features.fused_moe);
  EXPECT_TRUE(back->features.sparsity_2_4);
}

TEST(Profile, UnbuiltFeaturesAreReportedUnavailableOnEveryDevice) {
  // aggressive asks for every feature but 2:4 (opt-in only); what no backend has yet must read
  // "unavailable", never "on", and the GPU paths only exist in a build with the CUDA backend.
  auto p = load_profile("aggressive", kConfigs);
  ASSERT_TRUE(p.ok());
  for (Device d : {Device::kCpu, Device::kCuda}) {
    const auto states = feature_states(*p, d);
    ASSERT_EQ(states.size(), size_t(kNumFeatures));
    for (const auto& s : states) {
      const bool gpu_only = s.key == std::string("fused_moe") || s.key == std::string("cuda_graphs");
      const bool nowhere = s.key == std::string("expert_parallel") ||
                           s.key == std::string("dual_batch_overlap") ||
                           s.key == std::string("sparsity_2_4");
#if MOEOPT_ENGINE_WITH_CUDA
      constexpr bool kCudaBuild = true;
#else
      constexpr bool kCudaBuild = false;
#endif
      const bool want = !nowhere && (d == Device::kCuda ? kCudaBuild : !gpu_only);
      EXPECT_EQ(s.implemented, want) << s.key << " on " << (d == Device::kCpu ? "cpu" : "cuda");
    }
    const std::string banner = describe_features(*p, d);
    EXPECT_NE(banner.find("expert_parallel=unavailable"), std::string::npos) << banner;
    EXPECT_NE(banner.find("sparsity_2_4=off"), std::string::npos) << banner;  // opt-in only
    EXPECT_EQ(banner.find("=on", banner.find("expert_parallel")), std::string::npos) << banner;
  }
}

}  // namespace
}  // namespace moeopt::engine

namespace moeopt::engine {
namespace {

TEST(Profile, OverridesReadOnOffAndOneZero) {
  Profile prof;
  ASSERT_TRUE(apply_override(prof, "cuda-graphs", "off").ok());
  EXPECT_FALSE(prof.features.cuda_graphs);
  ASSERT_TRUE(apply_override(prof, "cuda_graphs", "on").ok());
  EXPECT_TRUE(prof.features.cuda_graphs);
  ASSERT_TRUE(apply_override(prof, "fp8_weights", "1").ok());
  EXPECT_TRUE(prof.features.fp8_weights);
  ASSERT_TRUE(apply_override(prof, "features.fp8_weights", "0").ok());
  EXPECT_FALSE(prof.features.fp8_weights);
  // The YAML file stays strict.
  EXPECT_FALSE(parse_profile("features:\n  fp8_weights: on\n", "x.yaml", "x").ok());
}

TEST(Profile, Fp8WeightsRunOnTheCpuAndOnTheGpuOfACudaBuild) {
  Profile prof;
  prof.name = "balanced";
  prof.features.fp8_weights = true;
  EXPECT_TRUE(feature_implemented(Feature::kFp8Weights, Device::kCpu));
  EXPECT_NE(describe_features(prof, Device::kCpu).find("fp8_weights=on"), std::string::npos);
#if MOEOPT_ENGINE_WITH_CUDA
  EXPECT_TRUE(feature_implemented(Feature::kFp8Weights, Device::kCuda));
  EXPECT_NE(describe_features(prof, Device::kCuda).find("fp8_weights=on"), std::string::npos);
#else
  EXPECT_FALSE(feature_implemented(Feature::kFp8Weights, Device::kCuda));
  EXPECT_NE(describe_features(prof, Device::kCuda).find("fp8_weights=unavailable"), std::string::npos);
#endif
  prof.features.fp8_weights = false;
  EXPECT_NE(describe_features(prof, Device::kCpu).find("fp8_weights=off"), std::string::npos);
  // The CPU runs no fused MoE kernels or CUDA graphs.
  EXPECT_FALSE(feature_implemented(Feature::kFusedMoe, Device::kCpu));
  EXPECT_FALSE(feature_implemented(Feature::kCudaGraphs, Device::kCpu));
}

}  // namespace
}  // namespace moeopt::engine
