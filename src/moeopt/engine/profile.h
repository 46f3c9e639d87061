// Profiles: named sets of feature switches and engine knobs (configs/<name>.yaml).
//
// A profile file has two sections, and nothing else (unknown keys are errors):
//
//   name: balanced               # optional; defaults to the file's stem
//   features:                    # the switches of the DESIGN.md feature table
//     fused_moe: true            #   fused MoE kernels
//     cuda_graphs: true          #   CUDA-graph capture of decode steps
//     fp8_weights: true          #   FP8 W8A8 weights, 128x128 block scales (lossy)
//     fp8_kv_cache: false        #   FP8 KV cache (lossy)
//     expert_parallel: true      #   expert placement / EP over >= 2 GPUs
//     dual_batch_overlap: true   #   overlap two micro-batches' compute and all-to-all
//     sparsity_2_4: false        #   2:4 sparse experts (lossy, opt-in)
//   engine:
//     max_num_seqs: 256          # ... see kProfileFields in profile.cpp for every knob
//
// Keys missing from a file keep the built-in defaults (the conservative values), so a user
// profile may list only what it changes; the shipped profiles list every key. Values are
// typed strictly: booleans are true/false, integers have no fraction, ranges are checked.
// Every field can also be set by name through apply_override (CLI flags, tests).
//
// A profile only *asks* for features. Which ones this build implements is a separate
// question (feature_implemented, per device); the banner and `moeopt verify` print requested
// features this build lacks as "unavailable" instead of pretending they are on.
#pragma once

#include <string>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"

namespace moeopt::engine {

enum class Feature {
  kFusedMoe,
  kCudaGraphs,
  kFp8Weights,
  kFp8KvCache,
  kExpertParallel,
  kDualBatchOverlap,
  kSparsity24,
};
inline constexpr int kNumFeatures = 7;

// The YAML key of a feature ("fused_moe", ..., "sparsity_2_4").
const char* feature_key(Feature f);
// Every feature, in the order of the DESIGN.md table.
const std::vector<Feature>& all_features();

struct ProfileFeatures {
  bool fused_moe = true;
  bool cuda_graphs = true;
  bool fp8_weights = false;
  bool fp8_kv_cache = false;
  bool expert_parallel = true;
  bool dual_batch_overlap = false;
  bool sparsity_2_4 = false;
};

struct EngineKnobs {
  int max_num_seqs = 256;               // sequences in one step (running batch)
  int max_num_batched_tokens = 8192;    // token budget of one step (prefill + decode)
  int kv_block_size = 16;               // tokens per paged-KV block; a power of two, 8..256
  double gpu_memory_utilization = 0.90; // share of GPU memory the engine may use, (0, 1]
  int max_model_len = 0;                // context cap; 0 = the model's max_position_embeddings
  bool enable_prefix_caching = true;    // share full KV blocks of identical prefixes
  bool enable_chunked_prefill = true;   // split long prompts across steps
  int max_waiting_requests = 1024;      // queue bound; beyond it the server answers 429
  int cuda_graph_max_batch = 256;       // largest decode batch captured in a CUDA graph
  int dbo_min_tokens = 512;             // dual-batch overlap only for steps this large
  int cpu_threads = 0;                  // CPU backend threads; 0 = every core
};

struct Profile {
  std::string name;    // "balanced"
  std::string source;  // the file it came from ("" for built-in defaults)
  ProfileFeatures features;
  EngineKnobs engine;

  bool feature(Feature f) const;
  void set_feature(Feature f, bool on);
};

// Names of the shipped profiles, in order of increasing risk.
const std::vector<std::string>& builtin_profile_names();

// Loads a profile by name ("balanced" -> <configs_dir>/balanced.yaml) or by path (anything
// containing '/' or ending in .yaml/.yml). Errors name the file and the key.
Result<Profile> load_profile(const std::string& name_or_path, const std::string& configs_dir);
// Parses profile YAML text; `source` names the file in errors, `default_name` is used when
// the text has no `name:` key.
Result<Profile> parse_profile(const std::string& yaml_text, const std::string& source,
                              const std::string& default_name);

// Sets one field from its text form, as a CLI flag would: key is "fp8_weights",
// "features.fp8_weights", "engine.max_num_seqs" or "max-num-seqs" ('-' reads as '_');
// value is parsed with the same strict rules as the YAML file, except that a switch also
// reads on/off and 1/0 (the banner prints on/off).
Status apply_override(Profile& profile, const std::string& key, const std::string& value);
// Checks ranges and relations between fields (also run by load_profile).
Status validate_profile(const Profile& profile);

// Every settable key ("features.fused_moe", "engine.max_num_seqs", ...), for --help and
// tests.
std::vector<std::string> profile_keys();
// The profile written back as YAML (round-trips through parse_profile).
std::string profile_to_yaml(const Profile& profile);

struct FeatureState {
  Feature feature;
  std::string key;
  bool requested = false;  // the profile turns it on
  bool implemented = false;
  bool active() const { return requested && implemented; }
};
// Whether this build implements a feature on the backend a model runs on: fp8_weights and
// fp8_kv_cache on the CPU (the references) and on the GPU of a CUDA build; fused_moe and
// cuda_graphs only on the GPU of a CUDA build; expert_parallel, dual_batch_overlap and
// sparsity_2_4 nowhere yet (profile.cpp kImplemented: flip an entry in the change that lands
// the feature and its test).
bool feature_implemented(Feature f, Device device);
// One entry per feature, in table order, for the banner and `moeopt verify`.
std::vector<FeatureState> feature_states(const Profile& profile, Device device);
// One banner line: "profile balanced: fused_moe=on cuda_graphs=on fp8_weights=on
// fp8_kv_cache=off ... sparsity_2_4=unavailable" (requested but not implemented).
std::string describe_features(const Profile& profile, Device device);

}  // namespace moeopt::engine
