// Profile loading, overrides and feature availability. See profile.h for the file format.
//
// Every field is described once in kProfileFields (section, key, type, range); loading,
// overrides, validation, the key list and YAML output are all driven by that table, so a new
// knob is one table row plus its struct member.
#include "moeopt/engine/profile.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "moeopt/core/file_io.h"

namespace moeopt::engine {
namespace {

// Profiles are tiny; a bigger file is not a profile.
constexpr size_t kMaxProfileBytes = size_t(1) << 20;

enum class Kind { kBool, kInt, kDouble };

struct Field {
  const char* section;  // "features" | "engine"
  const char* key;
  Kind kind;
  void* (*ref)(Profile&);  // the member, as bool*, int* or double* according to `kind`
  double min;              // inclusive lower bound (numbers only)
  double max;              // inclusive upper bound (numbers only)
  bool min_exclusive;      // for (0, 1] style ranges
};

#define MOEOPT_FEATURE(member) \
  {"features", #member, Kind::kBool, [](Profile& p) -> void* { return &p.features.member; }, 0, 0, false}
#define MOEOPT_KNOB(member, kind, lo, hi, excl) \
  {"engine", #member, kind, [](Profile& p) -> void* { return &p.engine.member; }, lo, hi, excl}

const std::array<Field, 18> kProfileFields = {{
    MOEOPT_FEATURE(fused_moe),
    MOEOPT_FEATURE(cuda_graphs),
    MOEOPT_FEATURE(fp8_weights),
    MOEOPT_FEATURE(fp8_kv_cache),
    MOEOPT_FEATURE(expert_parallel),
    MOEOPT_FEATURE(dual_batch_overlap),
    MOEOPT_FEATURE(sparsity_2_4),
    MOEOPT_KNOB(max_num_seqs, Kind::kInt, 1, 65536, false),
    MOEOPT_KNOB(max_num_batched_tokens, Kind::kInt, 1, 1 << 24, false),
    MOEOPT_KNOB(kv_block_size, Kind::kInt, 8, 256, false),
    MOEOPT_KNOB(gpu_memory_utilization, Kind::kDouble, 0.0, 1.0, true),
    MOEOPT_KNOB(max_model_len, Kind::kInt, 0, 1 << 24, false),
    MOEOPT_KNOB(enable_prefix_caching, Kind::kBool, 0, 0, false),
    MOEOPT_KNOB(enable_chunked_prefill, Kind::kBool, 0, 0, false),
    MOEOPT_KNOB(max_waiting_requests, Kind::kInt, 0, 1 << 24, false),
    MOEOPT_KNOB(cuda_graph_max_batch, Kind::kInt, 0, 65536, false),
    MOEOPT_KNOB(dbo_min_tokens, Kind::kInt, 1, 1 << 24, false),
    MOEOPT_KNOB(cpu_threads, Kind::kInt, 0, 4096, false),
}};

#undef MOEOPT_FEATURE
#undef MOEOPT_KNOB

// Which features this build implements, indexed by Feature. The fused MoE kernels and
// CUDA graphs of decode steps exist in builds with the CUDA backend (they apply to
// `--device cuda`; the CPU reference runs none of these paths).
#if MOEOPT_ENGINE_WITH_CUDA
constexpr bool kCudaBuild = true;
#else
constexpr bool kCudaBuild = false;
#endif
constexpr std::array<bool, kNumFeatures> kImplemented = {
    kCudaBuild,  // fused_moe
    kCudaBuild,  // cuda_graphs
    true,        // fp8_weights (the device rule is in feature_implemented)
    true,        // fp8_kv_cache (likewise)
    false,       // expert_parallel
    false,       // dual_batch_overlap
    false,       // sparsity_2_4
};

const Field* find_field(const std::string& section, const std::string& key) {
  for (const auto& f : kProfileFields)
    if ((section.empty() || section == f.section) && key == f.key) return &f;
  return nullptr;
}

std::string full_key(const Field& f) { return std::string(f.section) + "." + f.key; }

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kBool: return "a boolean (true/false)";
    case Kind::kInt: return "an integer";
    case Kind::kDouble: return "a number";
  }
  return "?";
}

// Parses `text` into the field of `p`, strictly, and checks the field's range. `where` is
// the error prefix ("configs/x.yaml: engine.max_num_seqs").
Status set_field(Profile& p, const Field& f, const std::string& text, const std::string& where) {
  auto wrong_type = [&] {
    return make_error(ErrorCode::kInvalidArgument, "{}: expected {}, got '{}'", where, kind_name(f.kind), text);
  };
  auto out_of_range = [&] {
    return make_error(ErrorCode::kInvalidArgument, "{}: {} is out of range {}{}, {}]", where, text,
                      f.min_exclusive ? "(" : "[", f.min, f.max);
  };
  switch (f.kind) {
    case Kind::kBool: {
      if (text == "true") *static_cast<bool*>(f.ref(p)) = true;
      else if (text == "false") *static_cast<bool*>(f.ref(p)) = false;
      else return wrong_type();
      return {};
    }
    case Kind::kInt: {
      int64_t v = 0;
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (text.empty() || ec == std::errc::invalid_argument || ptr != text.data() + text.size()) return wrong_type();
      if (ec == std::errc::result_out_of_range || double(v) < f.min || double(v) > f.max) return out_of_range();
      *static_cast<int*>(f.ref(p)) = int(v);
      return {};
    }
    case Kind::kDouble: {
      // strtod accepts hex, inf and nan; a profile value must be a plain finite decimal.
      if (text.empty() || text.find_first_not_of("0123456789+-.eE") != std::string::npos) return wrong_type();
      char* end = nullptr;
      double v = std::strtod(text.c_str(), &end);
      if (end != text.c_str() + text.size() || !std::isfinite(v)) return wrong_type();
      if ((f.min_exclusive ? v <= f.min : v < f.min) || v > f.max) return out_of_range();
      *static_cast<double*>(f.ref(p)) = v;
      return {};
    }
  }
  return make_error(ErrorCode::kInternal, "{}: unknown field kind", where);
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The text of a scalar leaf, or an error when the node is not a plain scalar of the right
// kind. A quoted scalar ("256") carries the non-specific tag "!" and is a string, which no
// boolean or number field accepts.
Status leaf_text(const YAML::Node& node, const std::string& where, const Field* f, std::string& out) {
  if (node.IsNull()) return make_error(ErrorCode::kInvalidArgument, "{}: missing value", where);
  if (!node.IsScalar())
    return make_error(ErrorCode::kInvalidArgument, "{}: expected {}, got a {}", where,
                      f ? kind_name(f->kind) : "a string", node.IsMap() ? "mapping" : "list");
  if (f && node.Tag() == "!")
    return make_error(ErrorCode::kInvalidArgument, "{}: expected {}, got the string \"{}\"", where,
                      kind_name(f->kind), node.Scalar());
  out = node.Scalar();
  return {};
}

Status parse_section(Profile& p, const YAML::Node& map, const std::string& section, const std::string& source) {
  if (!map.IsMap())
    return make_error(ErrorCode::kInvalidArgument, "{}: {}: expected a mapping of keys", source, section);
  std::set<std::string> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar())
      return make_error(ErrorCode::kInvalidArgument, "{}: {}: keys must be plain names", source, section);
    const std::string key = kv.first.Scalar();
    const std::string where = fmt::format("{}: {}.{}", source, section, key);
    const Field* f = find_field(section, key);
    if (!f) return make_error(ErrorCode::kInvalidArgument, "{}: unknown key", where);
    if (!seen.insert(key).second) return make_error(ErrorCode::kInvalidArgument, "{}: duplicate key", where);
    std::string text;
    MOEOPT_RETURN_IF_ERROR(leaf_text(kv.second, where, f, text));
    MOEOPT_RETURN_IF_ERROR(set_field(p, *f, text, where));
  }
  return {};
}

Result<Profile> parse_profile_impl(const std::string& yaml_text, const std::string& source,
                                   const std::string& default_name) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return make_error(ErrorCode::kInvalidArgument, "{}: invalid YAML at line {}, column {}: {}", source,
                      e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  if (!root.IsMap())
    return make_error(ErrorCode::kInvalidArgument, "{}: expected a mapping with 'features' and 'engine'", source);
  Profile p;
  p.name = default_name;
  p.source = source;
  std::set<std::string> seen;
  for (const auto& kv : root) {
    if (!kv.first.IsScalar())
      return make_error(ErrorCode::kInvalidArgument, "{}: top-level keys must be plain names", source);
    const std::string key = kv.first.Scalar();
    if (!seen.insert(key).second)
      return make_error(ErrorCode::kInvalidArgument, "{}: {}: duplicate key", source, key);
    if (key == "name") {
      std::string name;
      MOEOPT_RETURN_IF_ERROR(leaf_text(kv.second, source + ": name", nullptr, name));
      if (name.empty()) return make_error(ErrorCode::kInvalidArgument, "{}: name: must not be empty", source);
      p.name = name;
    } else if (key == "features" || key == "engine") {
      MOEOPT_RETURN_IF_ERROR(parse_section(p, kv.second, key, source));
    } else {
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: {}: unknown key (expected name, features, engine)", source, key);
    }
  }
  MOEOPT_RETURN_IF_ERROR(validate_profile(p).with_context(source));
  return p;
}

}  // namespace

const char* feature_key(Feature f) {
  switch (f) {
    case Feature::kFusedMoe: return "fused_moe";
    case Feature::kCudaGraphs: return "cuda_graphs";
    case Feature::kFp8Weights: return "fp8_weights";
    case Feature::kFp8KvCache: return "fp8_kv_cache";
    case Feature::kExpertParallel: return "expert_parallel";
    case Feature::kDualBatchOverlap: return "dual_batch_overlap";
    case Feature::kSparsity24: return "sparsity_2_4";
  }
  return "?";
}

const std::vector<Feature>& all_features() {
  static const std::vector<Feature> kAll = {
      Feature::kFusedMoe,        Feature::kCudaGraphs,       Feature::kFp8Weights, Feature::kFp8KvCache,
      Feature::kExpertParallel,  Feature::kDualBatchOverlap, Feature::kSparsity24};
  return kAll;
}

bool Profile::feature(Feature f) const {
  switch (f) {
    case Feature::kFusedMoe: return features.fused_moe;
    case Feature::kCudaGraphs: return features.cuda_graphs;
    case Feature::kFp8Weights: return features.fp8_weights;
    case Feature::kFp8KvCache: return features.fp8_kv_cache;
    case Feature::kExpertParallel: return features.expert_parallel;
    case Feature::kDualBatchOverlap: return features.dual_batch_overlap;
    case Feature::kSparsity24: return features.sparsity_2_4;
  }
  return false;
}

void Profile::set_feature(Feature f, bool on) {
  switch (f) {
    case Feature::kFusedMoe: features.fused_moe = on; return;
    case Feature::kCudaGraphs: features.cuda_graphs = on; return;
    case Feature::kFp8Weights: features.fp8_weights = on; return;
    case Feature::kFp8KvCache: features.fp8_kv_cache = on; return;
    case Feature::kExpertParallel: features.expert_parallel = on; return;
    case Feature::kDualBatchOverlap: features.dual_batch_overlap = on; return;
    case Feature::kSparsity24: features.sparsity_2_4 = on; return;
  }
}

const std::vector<std::string>& builtin_profile_names() {
  static const std::vector<std::string> kNames = {"conservative", "balanced", "aggressive"};
  return kNames;
}

Result<Profile> parse_profile(const std::string& yaml_text, const std::string& source,
                              const std::string& default_name) {
  // yaml-cpp reports errors by throwing; nothing of it may escape the library.
  try {
    return parse_profile_impl(yaml_text, source, default_name);
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kInvalidArgument, "{}: {}", source, e.what());
  }
}

Result<Profile> load_profile(const std::string& name_or_path, const std::string& configs_dir) {
  namespace fs = std::filesystem;
  if (name_or_path.empty()) return make_error(ErrorCode::kInvalidArgument, "--profile: empty profile name");
  std::string path;
  const bool is_path = name_or_path.find('/') != std::string::npos || ends_with(name_or_path, ".yaml") ||
                       ends_with(name_or_path, ".yml");
  if (is_path) {
    path = name_or_path;
  } else {
    path = (fs::path(configs_dir) / (lower(name_or_path) + ".yaml")).string();
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      std::string known;
      for (const auto& n : builtin_profile_names()) known += (known.empty() ? "" : ", ") + n;
      return make_error(ErrorCode::kNotFound, "unknown profile '{}' (no {}; shipped profiles: {})", name_or_path,
                        path, known);
    }
  }
  MOEOPT_ASSIGN_OR_RETURN(std::string text, read_file(path, kMaxProfileBytes));
  return parse_profile(text, path, fs::path(path).stem().string());
}

Status apply_override(Profile& profile, const std::string& key, const std::string& value) {
  std::string k = key;
  std::replace(k.begin(), k.end(), '-', '_');
  std::string section;
  if (size_t dot = k.find('.'); dot != std::string::npos) {
    section = k.substr(0, dot);
    k = k.substr(dot + 1);
  }
  const Field* f = find_field(section, k);
  if (!f) return make_error(ErrorCode::kInvalidArgument, "unknown profile key '{}'", key);
  Profile updated = profile;  // all-or-nothing: a failed override leaves the profile as it was
  // A flag spells a switch as the banner prints it (on/off) or as 1/0; the file stays strict.
  std::string v = value;
  if (f->kind == Kind::kBool) {
    if (v == "on" || v == "1") v = "true";
    else if (v == "off" || v == "0") v = "false";
  }
  MOEOPT_RETURN_IF_ERROR(set_field(updated, *f, v, "override " + full_key(*f)));
  MOEOPT_RETURN_IF_ERROR(validate_profile(updated).with_context("override " + full_key(*f)));
  profile = std::move(updated);
  return {};
}

Status validate_profile(const Profile& p) {
  const EngineKnobs& e = p.engine;
  // Paged-KV block math (block index = position >> log2(block)) needs a power of two.
  if (e.kv_block_size < 8 || e.kv_block_size > 256 || (e.kv_block_size & (e.kv_block_size - 1)) != 0)
    return make_error(ErrorCode::kInvalidArgument, "engine.kv_block_size: {} is not a power of two in [8, 256]",
                      e.kv_block_size);
  // Every running sequence must be able to decode one token in a step.
  if (e.max_num_batched_tokens < e.max_num_seqs)
    return make_error(ErrorCode::kInvalidArgument,
                      "engine.max_num_batched_tokens: {} is below engine.max_num_seqs ({})",
                      e.max_num_batched_tokens, e.max_num_seqs);
  // Range checks for values set directly on the struct rather than through the table.
  Profile copy = p;
  for (const auto& f : kProfileFields) {
    if (f.kind == Kind::kBool) continue;
    double v = f.kind == Kind::kInt ? double(*static_cast<int*>(f.ref(copy))) : *static_cast<double*>(f.ref(copy));
    if (!std::isfinite(v) || (f.min_exclusive ? v <= f.min : v < f.min) || v > f.max)
      return make_error(ErrorCode::kInvalidArgument, "{}: {} is out of range {}{}, {}]", full_key(f), v,
                        f.min_exclusive ? "(" : "[", f.min, f.max);
  }
  return {};
}

std::vector<std::string> profile_keys() {
  std::vector<std::string> out;
  for (const auto& f : kProfileFields) out.push_back(full_key(f));
  return out;
}

std::string profile_to_yaml(const Profile& profile) {
  Profile p = profile;
  std::string out = fmt::format("name: {}\n", p.name);
  const char* section = "";
  for (const auto& f : kProfileFields) {
    if (std::string(section) != f.section) {
      section = f.section;
      out += fmt::format("{}:\n", section);
    }
    switch (f.kind) {
      case Kind::kBool: out += fmt::format("  {}: {}\n", f.key, *static_cast<bool*>(f.ref(p))); break;
      case Kind::kInt: out += fmt::format("  {}: {}\n", f.key, *static_cast<int*>(f.ref(p))); break;
      case Kind::kDouble: out += fmt::format("  {}: {}\n", f.key, *static_cast<double*>(f.ref(p))); break;
    }
  }
  return out;
}

bool feature_implemented(Feature f, Device device) {
  switch (f) {
    case Feature::kFp8Weights:
      // W8A8 with 128x128 block scales: the CPU reference, and the CUDA kernels of a CUDA
      // build (FP8 checkpoints and online quantisation at load on both; the GPU needs e4m3
      // tensor cores, sm_89+, which verify checks).
      return device == Device::kCpu || (device == Device::kCuda && kCudaBuild);
    case Feature::kFp8KvCache:
      // e4m3 pages with a scale per token and kv head (ops/attention.h): the CPU reference
      // and the CUDA kv-write and attention kernels (the e4m3 -> bf16 conversion needs sm_89+).
      return device == Device::kCpu || (device == Device::kCuda && kCudaBuild);
    case Feature::kFusedMoe:
    case Feature::kCudaGraphs: return device == Device::kCuda && kImplemented[size_t(f)];
    case Feature::kExpertParallel:
    case Feature::kDualBatchOverlap:
    case Feature::kSparsity24: return kImplemented[size_t(f)];
  }
  return false;
}

std::vector<FeatureState> feature_states(const Profile& profile, Device device) {
  std::vector<FeatureState> out;
  for (Feature f : all_features())
    out.push_back({f, feature_key(f), profile.feature(f), feature_implemented(f, device)});
  return out;
}

std::string describe_features(const Profile& profile, Device device) {
  std::string out = "profile " + profile.name + ":";
  for (const auto& s : feature_states(profile, device))
    out += fmt::format(" {}={}", s.key, !s.requested ? "off" : (s.implemented ? "on" : "unavailable"));
  return out;
}

}  // namespace moeopt::engine
