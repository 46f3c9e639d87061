// config.json -> ModelConfig: field reading with one-line errors, per-family defaults and
// validation. Defaults are those of transformers' configuration_<model_type>.py classes
// (checked against transformers main, late 2025); DeepSeek fields the transformers classes
// dropped (moe_layer_freq, scoring_func, num_nextn_predict_layers) follow DeepSeek's own
// configuration_deepseek.py published with the checkpoints.
#include "moeopt/model/config.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/core/json_limits.h"

namespace moeopt {

using json = nlohmann::json;

// ------------------------------------------------------------------------------------------
// Names

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::kQwen3Moe: return "qwen3_moe";
    case Arch::kQwen2Moe: return "qwen2_moe";
    case Arch::kMixtral: return "mixtral";
    case Arch::kDeepseekV2: return "deepseek_v2";
    case Arch::kDeepseekV3: return "deepseek_v3";
    case Arch::kOlmoe: return "olmoe";
    case Arch::kLlama: return "llama";
    case Arch::kMistral: return "mistral";
    case Arch::kQwen2: return "qwen2";
    case Arch::kQwen3: return "qwen3";
  }
  return "?";
}

const char* arch_hf_class(Arch a) {
  switch (a) {
    case Arch::kQwen3Moe: return "Qwen3MoeForCausalLM";
    case Arch::kQwen2Moe: return "Qwen2MoeForCausalLM";
    case Arch::kMixtral: return "MixtralForCausalLM";
    case Arch::kDeepseekV2: return "DeepseekV2ForCausalLM";
    case Arch::kDeepseekV3: return "DeepseekV3ForCausalLM";
    case Arch::kOlmoe: return "OlmoeForCausalLM";
    case Arch::kLlama: return "LlamaForCausalLM";
    case Arch::kMistral: return "MistralForCausalLM";
    case Arch::kQwen2: return "Qwen2ForCausalLM";
    case Arch::kQwen3: return "Qwen3ForCausalLM";
  }
  return "?";
}

static constexpr Arch kAllArchs[] = {Arch::kQwen3Moe, Arch::kQwen2Moe,   Arch::kMixtral,
                                     Arch::kDeepseekV2, Arch::kDeepseekV3, Arch::kOlmoe,
                                     Arch::kLlama,    Arch::kMistral,    Arch::kQwen2,
                                     Arch::kQwen3};

std::optional<Arch> arch_from_model_type(const std::string& model_type) {
  for (Arch a : kAllArchs)
    if (model_type == arch_name(a)) return a;
  return std::nullopt;
}

static std::optional<Arch> arch_from_class(const std::string& cls) {
  for (Arch a : kAllArchs)
    if (cls == arch_hf_class(a)) return a;
  return std::nullopt;
}

std::string supported_model_types() {
  std::string s;
  for (Arch a : kAllArchs) {
    if (!s.empty()) s += ", ";
    s += arch_name(a);
  }
  return s;
}

bool arch_is_moe_family(Arch a) {
  switch (a) {
    case Arch::kQwen3Moe:
    case Arch::kQwen2Moe:
    case Arch::kMixtral:
    case Arch::kDeepseekV2:
    case Arch::kDeepseekV3:
    case Arch::kOlmoe: return true;
    case Arch::kLlama:
    case Arch::kMistral:
    case Arch::kQwen2:
    case Arch::kQwen3: return false;
  }
  return false;
}

bool arch_is_deepseek(Arch a) { return a == Arch::kDeepseekV2 || a == Arch::kDeepseekV3; }

const char* rope_scaling_type_name(RopeScalingType t) {
  switch (t) {
    case RopeScalingType::kNone: return "default";
    case RopeScalingType::kLinear: return "linear";
    case RopeScalingType::kDynamic: return "dynamic";
    case RopeScalingType::kYarn: return "yarn";
    case RopeScalingType::kLlama3: return "llama3";
  }
  return "?";
}

const char* scoring_func_name(ScoringFunc s) {
  switch (s) {
    case ScoringFunc::kSoftmax: return "softmax";
    case ScoringFunc::kSigmoid: return "sigmoid";
  }
  return "?";
}

const char* topk_method_name(TopkMethod m) {
  switch (m) {
    case TopkMethod::kGreedy: return "greedy";
    case TopkMethod::kGroupLimitedGreedy: return "group_limited_greedy";
    case TopkMethod::kNoauxTc: return "noaux_tc";
  }
  return "?";
}

// ------------------------------------------------------------------------------------------
// Derived

bool ModelConfig::layer_is_moe(int64_t layer) const {
  if (layer < 0 || layer >= num_hidden_layers || num_experts <= 0) return false;
  switch (arch) {
    case Arch::kQwen3Moe:
    case Arch::kQwen2Moe:
      if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end())
        return false;
      return (layer + 1) % decoder_sparse_step == 0;
    case Arch::kDeepseekV2:
    case Arch::kDeepseekV3: return layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
    case Arch::kMixtral:
    case Arch::kOlmoe: return true;
    case Arch::kLlama:
    case Arch::kMistral:
    case Arch::kQwen2:
    case Arch::kQwen3: return false;
  }
  return false;
}

int64_t ModelConfig::num_moe_layers() const {
  int64_t n = 0;
  for (int64_t l = 0; l < num_hidden_layers; ++l) n += layer_is_moe(l) ? 1 : 0;
  return n;
}

int64_t ModelConfig::qk_head_dim() const {
  return attention_kind == AttentionKind::kMla ? qk_nope_head_dim + qk_rope_head_dim : head_dim;
}

// ------------------------------------------------------------------------------------------
// Field reader: keeps the first error so the parser reads straight down; every accessor
// returns a usable value (the default) after an error, and parse checks status() at the end
// of each stage.

namespace {

// Upper bounds on sizes: far above any real model, low enough that products of a few of
// them cannot overflow int64 in the parameter counts.
constexpr int64_t kMaxVocab = int64_t(1) << 24;
constexpr int64_t kMaxHidden = int64_t(1) << 18;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxIntermediate = int64_t(1) << 20;
constexpr int64_t kMaxExperts = int64_t(1) << 16;
constexpr int64_t kMaxPositions = int64_t(1) << 30;
constexpr int64_t kMaxTensors = int64_t(1) << 22;
constexpr double kMaxParams = 1e14;

std::string short_dump(const json& v) {
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

class Reader {
 public:
  Reader(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  const Status& status() const { return st_; }
  bool ok() const { return st_.ok(); }
  const std::string& source() const { return source_; }

  // Present and not null.
  bool has(const char* key) const {
    auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
  }
  const json* get(const char* key) const {
    auto it = j_.find(key);
    return (it == j_.end() || it->is_null()) ? nullptr : &*it;
  }

  template <typename... Args>
  void fail(ErrorCode code, fmt::format_string<Args...> f, Args&&... args) {
    if (st_.ok())
      st_ = Status(code, source_ + ": " + fmt::format(f, std::forward<Args>(args)...));
  }

  // An integer JSON value (an integral float such as 4096.0 is accepted too).
  std::optional<int64_t> as_int(const char* key, const json& v) {
    if (v.is_number_integer() && !v.is_number_unsigned()) return v.get<int64_t>();
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u <= uint64_t(std::numeric_limits<int64_t>::max())) return int64_t(u);
    } else if (v.is_number_float()) {
      double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return int64_t(d);
    }
    fail(ErrorCode::kInvalidArgument, "field '{}': expected an integer, got {}", key, short_dump(v));
    return std::nullopt;
  }

  // Integer in [lo, hi]; `def` when absent or null; error when required and absent.
  int64_t integer(const char* key, std::optional<int64_t> def, int64_t lo, int64_t hi,
                  const char* why_required = nullptr) {
    const json* v = get(key);
    if (!v) {
      if (def) return *def;
      fail(ErrorCode::kInvalidArgument, "missing required field '{}'{}", key,
           why_required ? std::string(" (") + why_required + ")" : std::string());
      return lo;
    }
    auto x = as_int(key, *v);
    if (!x) return lo;
    if (*x < lo || *x > hi) {
      if (*x < lo && lo == 1)
        fail(ErrorCode::kInvalidArgument, "field '{}' must be a positive integer, got {}", key, *x);
      else if (*x < lo && lo == 0)
        fail(ErrorCode::kInvalidArgument, "field '{}' must not be negative, got {}", key, *x);
      else
        fail(ErrorCode::kInvalidArgument, "field '{}' = {} is out of range [{}, {}]", key, *x, lo, hi);
      return lo;
    }
    return *x;
  }

  double number(const char* key, double def, double lo, double hi, bool lo_exclusive = false) {
    const json* v = get(key);
    if (!v) return def;
    if (!v->is_number()) {
      fail(ErrorCode::kInvalidArgument, "field '{}': expected a number, got {}", key, short_dump(*v));
      return def;
    }
    double d = v->get<double>();
    if (!std::isfinite(d) || d < lo || d > hi || (lo_exclusive && d == lo)) {
      fail(ErrorCode::kInvalidArgument, "field '{}' = {} is out of range {}{}, {}]", key, d,
           lo_exclusive ? "(" : "[", lo, hi);
      return def;
    }
    return d;
  }

  bool boolean(const char* key, bool def) {
    const json* v = get(key);
    if (!v) return def;
    if (!v->is_boolean()) {
      fail(ErrorCode::kInvalidArgument, "field '{}': expected true or false, got {}", key, short_dump(*v));
      return def;
    }
    return v->get<bool>();
  }

  std::string string(const char* key, const std::string& def) {
    const json* v = get(key);
    if (!v) return def;
    if (!v->is_string()) {
      fail(ErrorCode::kInvalidArgument, "field '{}': expected a string, got {}", key, short_dump(*v));
      return def;
    }
    return v->get<std::string>();
  }

  // The key, among spellings of one setting, that the config uses: the first of `keys`
  // present (and not null), nullptr when none is. Several present with different values are
  // an error naming both (see "Two spellings of one setting" below). `prefix`
  // ("rope_parameters.") is put before the keys in messages.
  const char* one_of(std::initializer_list<const char*> keys, const std::string& prefix = "") {
    const char* first = nullptr;
    for (const char* k : keys) {
      const json* v = get(k);
      if (!v) continue;
      if (!first) {
        first = k;
      } else if (*v != *get(first)) {  // numbers compare by value: 128 == 128.0
        fail(ErrorCode::kInvalidArgument,
             "fields '{}{}' ({}) and '{}{}' ({}) disagree (two spellings of one setting: keep one)", prefix,
             first, short_dump(*get(first)), prefix, k, short_dump(*v));
        break;
      }
    }
    return first;
  }

  // Token ids: an integer or a list of integers.
  std::vector<int64_t> int_or_list(const char* key) {
    std::vector<int64_t> out;
    const json* v = get(key);
    if (!v) return out;
    if (v->is_array()) {
      for (const auto& e : *v) {
        auto x = as_int(key, e);
        if (!x) return {};
        out.push_back(*x);
      }
    } else if (auto x = as_int(key, *v)) {
      out.push_back(*x);
    }
    return out;
  }

 private:
  const json& j_;
  std::string source_;
  Status st_;
};

// Family defaults that differ between the transformers configuration classes.
struct FamilyDefaults {
  std::optional<int64_t> num_key_value_heads;  // nullopt: = num_attention_heads
  int64_t max_position_embeddings;
  double rms_norm_eps;
  double rope_theta;
};

FamilyDefaults family_defaults(Arch a) {
  switch (a) {
    // configuration_qwen3_moe.py: kv 4, 32768 positions, eps 1e-6, theta 10000
    case Arch::kQwen3Moe: return {4, 32768, 1e-6, 10000.0};
    // configuration_qwen2_moe.py: kv 16, 32768, 1e-6, 10000
    case Arch::kQwen2Moe: return {16, 32768, 1e-6, 10000.0};
    // configuration_mixtral.py: kv 8, 4096*32, 1e-5, 1e6
    case Arch::kMixtral: return {8, 4096 * 32, 1e-5, 1e6};
    // configuration_deepseek_v2.py: kv = heads, 2048, 1e-6, 10000
    case Arch::kDeepseekV2: return {std::nullopt, 2048, 1e-6, 10000.0};
    // configuration_deepseek_v3.py: kv 128, 4096, 1e-6, 10000
    case Arch::kDeepseekV3: return {128, 4096, 1e-6, 10000.0};
    // configuration_olmoe.py: kv = heads, 4096, 1e-5, 10000
    case Arch::kOlmoe: return {std::nullopt, 4096, 1e-5, 10000.0};
    // configuration_llama.py: kv = heads, 2048, 1e-6, 10000
    case Arch::kLlama: return {std::nullopt, 2048, 1e-6, 10000.0};
    // configuration_mistral.py: kv 8, 4096*32, 1e-6, 10000
    case Arch::kMistral: return {8, 4096 * 32, 1e-6, 10000.0};
    // configuration_qwen2.py: kv 32, 32768, 1e-6, 10000
    case Arch::kQwen2: return {32, 32768, 1e-6, 10000.0};
    // configuration_qwen3.py: kv 32, 32768, 1e-6, 10000
    case Arch::kQwen3: return {32, 32768, 1e-6, 10000.0};
  }
  return {std::nullopt, 2048, 1e-6, 10000.0};
}

// ------------------------------------------------------------------------------------------
// Two spellings of one setting
//
// transformers 5 renamed several config keys and `save_pretrained` writes only the new ones:
//   torch_dtype                      -> dtype
//   rope_theta, rope_scaling         -> rope_parameters {rope_theta, rope_type, factor, ...}
//   rope_scaling.type                -> rope_type (inside the dict; 4.3x+ already wrote both)
//   num_experts (qwen3_moe)          -> num_local_experts
// and every configuration class maps aliases onto its own keys (attribute_map: mixtral
// num_experts, deepseek_v2 num_experts, deepseek_v3 num_local_experts and num_mtp_layers,
// olmoe num_local_experts). Both spellings are read for every family.
//
// When a file has both spellings with different values, parsing fails with one line naming
// both keys and their values; equal values are accepted. Neither spelling is preferred
// because transformers itself does not agree on one: 5.x takes the old rope_scaling over
// rope_parameters (and then the top-level rope_theta) but the new dtype over torch_dtype and
// num_local_experts over num_experts, while 4.x reads only the old keys. Whichever one we
// picked, some transformers version would run the same file as a different model; such a
// file was edited by hand or by a tool that updated one key only, and saying so is the
// useful answer.

// One rope dict: `rope_parameters` (transformers 5) or `rope_scaling` (4.x), at `key`.
struct RopeDict {
  std::optional<double> theta;  // rope_parameters.rope_theta (4.x rope_scaling has none)
  RopeScaling scaling;
};

std::optional<RopeDict> read_rope_dict(Reader& r, const json& obj, const std::string& key) {
  RopeDict d;
  Reader s(obj, r.source());
  // Errors of the inner reader, re-issued by `r` without the repeated source prefix.
  auto pass_on = [&]() {
    r.fail(s.status().code(), "{}", s.status().message().substr(r.source().size() + 2));
    return std::nullopt;
  };
  if (s.has("rope_theta")) d.theta = s.number("rope_theta", 0.0, 0.0, 1e12, true);
  const char* type_key = s.one_of({"rope_type", "type"}, key + ".");
  std::string type = type_key ? s.string(type_key, "default") : "default";
  if (!s.ok()) return pass_on();
  RopeScaling& o = d.scaling;
  if (type == "default") {
    o.type = RopeScalingType::kNone;
  } else if (type == "linear") {
    o.type = RopeScalingType::kLinear;
  } else if (type == "dynamic") {
    o.type = RopeScalingType::kDynamic;
  } else if (type == "yarn") {
    o.type = RopeScalingType::kYarn;
  } else if (type == "llama3") {
    o.type = RopeScalingType::kLlama3;
  } else {
    r.fail(ErrorCode::kUnsupported,
           "field '{}.type': rope scaling '{}' is not supported (default, linear, dynamic, yarn, llama3)",
           key, type);
    return std::nullopt;
  }
  if (o.type != RopeScalingType::kNone) {
    if (!s.has("factor"))
      s.fail(ErrorCode::kInvalidArgument, "field '{}.factor' is required for rope type '{}'", key, type);
    o.factor = s.number("factor", 1.0, 0.0, 1e6, true);
  }
  o.original_max_position_embeddings =
      s.integer("original_max_position_embeddings", int64_t(0), 0, kMaxPositions);
  o.beta_fast = s.number("beta_fast", 32.0, 0.0, 1e6);
  o.beta_slow = s.number("beta_slow", 1.0, 0.0, 1e6);
  if (s.has("mscale")) o.mscale = s.number("mscale", 1.0, 0.0, 1e6);
  if (s.has("mscale_all_dim")) o.mscale_all_dim = s.number("mscale_all_dim", 1.0, 0.0, 1e6);
  if (s.has("attention_factor")) o.attention_factor = s.number("attention_factor", 1.0, 0.0, 1e6);
  o.low_freq_factor = s.number("low_freq_factor", 1.0, 0.0, 1e6);
  o.high_freq_factor = s.number("high_freq_factor", 4.0, 0.0, 1e6);
  if (o.type == RopeScalingType::kLlama3 && o.original_max_position_embeddings == 0)
    s.fail(ErrorCode::kInvalidArgument,
           "field '{}.original_max_position_embeddings' is required for rope type 'llama3'", key);
  // transformers 5 keys that change the rotation but that ModelConfig does not carry: a value
  // other than the default would be silently dropped, so it is refused instead.
  if (s.has("partial_rotary_factor") && s.number("partial_rotary_factor", 1.0, 0.0, 1.0, true) != 1.0)
    s.fail(ErrorCode::kUnsupported, "field '{}.partial_rotary_factor': only 1.0 is supported", key);
  if (s.has("truncate") && !s.boolean("truncate", true))
    s.fail(ErrorCode::kUnsupported, "field '{}.truncate': only true is supported", key);
  if (!s.ok()) return pass_on();
  return d;
}

// The first field in which two rope scalings of the same config differ, as "factor (4 vs
// 2)"; nullopt when they describe the same rotation. Only the fields of the type count, and
// an absent original_max_position_embeddings is max_position_embeddings (what transformers 5
// writes there, and what moeopt's rope uses).
std::optional<std::string> rope_difference(const RopeScaling& a, const RopeScaling& b, int64_t max_pos) {
  if (a.type != b.type)
    return fmt::format("type ('{}' vs '{}')", rope_scaling_type_name(a.type), rope_scaling_type_name(b.type));
  if (a.type == RopeScalingType::kNone) return std::nullopt;
  auto num = [](const char* f, double x, double y) -> std::optional<std::string> {
    if (x == y) return std::nullopt;
    return fmt::format("{} ({} vs {})", f, x, y);
  };
  auto opt = [](const char* f, const std::optional<double>& x,
                const std::optional<double>& y) -> std::optional<std::string> {
    if (x == y) return std::nullopt;
    auto show = [](const std::optional<double>& v) { return v ? fmt::format("{}", *v) : std::string("absent"); };
    return fmt::format("{} ({} vs {})", f, show(x), show(y));
  };
  if (auto d = num("factor", a.factor, b.factor)) return d;
  if (a.type == RopeScalingType::kYarn || a.type == RopeScalingType::kLlama3) {
    auto orig = [&](const RopeScaling& s) {
      return s.original_max_position_embeddings > 0 ? s.original_max_position_embeddings : max_pos;
    };
    if (orig(a) != orig(b))
      return fmt::format("original_max_position_embeddings ({} vs {})", orig(a), orig(b));
  }
  if (a.type == RopeScalingType::kYarn) {
    if (auto d = num("beta_fast", a.beta_fast, b.beta_fast)) return d;
    if (auto d = num("beta_slow", a.beta_slow, b.beta_slow)) return d;
    if (auto d = opt("mscale", a.mscale, b.mscale)) return d;
    if (auto d = opt("mscale_all_dim", a.mscale_all_dim, b.mscale_all_dim)) return d;
    if (auto d = opt("attention_factor", a.attention_factor, b.attention_factor)) return d;
  }
  if (a.type == RopeScalingType::kLlama3) {
    if (auto d = num("low_freq_factor", a.low_freq_factor, b.low_freq_factor)) return d;
    if (auto d = num("high_freq_factor", a.high_freq_factor, b.high_freq_factor)) return d;
  }
  return std::nullopt;
}

// rope_theta and the scaling, from any mix of transformers 4 keys (top-level rope_theta,
// rope_scaling) and transformers 5 ones (rope_parameters), as explained above. c.rope_theta
// holds the top-level value or the family default on entry.
void parse_rope(Reader& r, ModelConfig& c) {
  std::optional<RopeDict> p, s;
  std::string p_key = "rope_parameters";
  if (const json* v = r.get("rope_parameters")) {
    if (!v->is_object()) {
      r.fail(ErrorCode::kInvalidArgument, "field 'rope_parameters': expected an object or null, got {}",
             short_dump(*v));
      return;
    }
    // transformers 5 nests the dict per layer type ({"full_attention": {...},
    // "sliding_attention": {...}}) for models whose layer types rotate differently. One rope
    // for all layers is all these families have: accept the nesting when every entry is the same.
    const json* dict = v;
    bool nested = !v->empty();
    for (const auto& [k, e] : v->items()) nested = nested && e.is_object();
    if (nested) {
      for (const auto& [k, e] : v->items()) {
        if (e != v->begin().value()) {
          r.fail(ErrorCode::kUnsupported,
                 "field 'rope_parameters': a different rope per layer type ('{}', '{}') is not supported",
                 v->begin().key(), k);
          return;
        }
      }
      p_key = "rope_parameters." + v->begin().key();
      dict = &v->begin().value();
    }
    p = read_rope_dict(r, *dict, p_key);
    if (!p) return;
  }
  if (const json* v = r.get("rope_scaling")) {
    if (!v->is_object()) {
      r.fail(ErrorCode::kInvalidArgument, "field 'rope_scaling': expected an object or null, got {}",
             short_dump(*v));
      return;
    }
    s = read_rope_dict(r, *v, "rope_scaling");
    if (!s) return;
  }

  // rope_theta: top level (4.x), inside rope_parameters (5.x) or, rarely, inside rope_scaling.
  std::optional<std::pair<std::string, double>> theta;
  auto take_theta = [&](const std::string& key, std::optional<double> v) {
    if (!v || !r.ok()) return;
    if (!theta) theta.emplace(key, *v);
    else if (theta->second != *v)
      r.fail(ErrorCode::kInvalidArgument,
             "fields '{}' ({}) and '{}' ({}) disagree (two spellings of one setting: keep one)", theta->first,
             theta->second, key, *v);
  };
  take_theta(p_key + ".rope_theta", p ? p->theta : std::nullopt);
  take_theta("rope_scaling.rope_theta", s ? s->theta : std::nullopt);
  take_theta("rope_theta", r.has("rope_theta") ? std::optional<double>(c.rope_theta) : std::nullopt);
  if (!r.ok()) return;
  if (theta) c.rope_theta = theta->second;

  if (p && s) {
    if (auto d = rope_difference(p->scaling, s->scaling, c.max_position_embeddings)) {
      r.fail(ErrorCode::kInvalidArgument,
             "fields '{}' and 'rope_scaling' disagree in {} (two spellings of one setting: keep one)", p_key, *d);
      return;
    }
  }
  if (p) c.rope_scaling = p->scaling;
  else if (s) c.rope_scaling = s->scaling;
}

void parse_quantization(Reader& r, ModelConfig& c) {
  const json* q = r.get("quantization_config");
  if (!q) return;
  if (!q->is_object()) {
    r.fail(ErrorCode::kInvalidArgument, "field 'quantization_config': expected an object, got {}",
           short_dump(*q));
    return;
  }
  Reader s(*q, r.source());
  std::string method = s.string("quant_method", "");
  if (method != "fp8") {
    r.fail(ErrorCode::kUnsupported,
           "field 'quantization_config.quant_method': '{}' is not supported (only block-wise fp8)",
           method);
    return;
  }
  Fp8Quantization f;
  f.quant_method = method;
  f.fmt = s.string("fmt", "e4m3");
  f.activation_scheme = s.string("activation_scheme", "dynamic");
  const json* bs = s.get("weight_block_size");
  if (!bs) {
    r.fail(ErrorCode::kUnsupported,
           "field 'quantization_config.weight_block_size' is missing: only block-wise fp8 is supported");
    return;
  }
  if (!bs->is_array() || bs->size() != 2) {
    r.fail(ErrorCode::kInvalidArgument,
           "field 'quantization_config.weight_block_size': expected [rows, cols], got {}", short_dump(*bs));
    return;
  }
  for (int i = 0; i < 2; ++i) {
    auto v = s.as_int("quantization_config.weight_block_size", (*bs)[i]);
    if (!v || *v <= 0 || *v > 65536) {
      r.fail(ErrorCode::kInvalidArgument,
             "field 'quantization_config.weight_block_size': expected two positive integers, got {}",
             short_dump(*bs));
      return;
    }
    (i == 0 ? f.block_n : f.block_k) = *v;
  }
  if (f.fmt != "e4m3")
    s.fail(ErrorCode::kUnsupported, "field 'quantization_config.fmt': '{}' is not supported (e4m3)", f.fmt);
  if (const json* m = s.get("modules_to_not_convert")) {
    if (!m->is_array()) {
      s.fail(ErrorCode::kInvalidArgument,
             "field 'quantization_config.modules_to_not_convert': expected a list of strings");
    } else {
      for (const auto& e : *m) {
        if (!e.is_string()) {
          s.fail(ErrorCode::kInvalidArgument,
                 "field 'quantization_config.modules_to_not_convert': expected a list of strings");
          break;
        }
        f.modules_to_not_convert.push_back(e.get<std::string>());
      }
    }
  }
  if (!s.ok()) {
    r.fail(s.status().code(), "{}", s.status().message().substr(r.source().size() + 2));
    return;
  }
  c.fp8 = std::move(f);
}

// Routed-expert fields, one family at a time.
void parse_moe(Reader& r, ModelConfig& c) {
  const bool ds = arch_is_deepseek(c.arch);
  // The family's own key first, then the spellings transformers reads for it: qwen3_moe
  // writes num_local_experts from 5.x on; the others are the classes' attribute_map aliases
  // (qwen2_moe has none, but is read like qwen3_moe, its sibling).
  const char* canonical = c.arch == Arch::kMixtral ? "num_local_experts"
                          : ds                      ? "n_routed_experts"
                                                    : "num_experts";
  const char* experts_key = c.arch == Arch::kMixtral ? r.one_of({"num_local_experts", "num_experts"})
                            : ds ? r.one_of({"n_routed_experts", "num_experts", "num_local_experts"})
                                 : r.one_of({"num_experts", "num_local_experts"});
  if (!r.ok()) return;
  if (!experts_key) {
    r.fail(ErrorCode::kInvalidArgument, "missing required field '{}' (number of routed experts; also read as {})",
           canonical,
           c.arch == Arch::kMixtral ? "'num_experts'"
           : ds                     ? "'num_experts' or 'num_local_experts'"
                                    : "'num_local_experts'");
    return;
  }
  c.num_experts = r.integer(experts_key, std::nullopt, 1, kMaxExperts, "number of routed experts");
  c.num_experts_per_tok = r.integer("num_experts_per_tok", std::nullopt, 1, kMaxExperts, "experts per token");
  if (!r.ok()) return;
  if (c.num_experts_per_tok > c.num_experts) {
    r.fail(ErrorCode::kInvalidArgument, "field 'num_experts_per_tok' ({}) is larger than {} ({})",
           c.num_experts_per_tok, experts_key, c.num_experts);
    return;
  }
  switch (c.arch) {
    case Arch::kQwen3Moe:
    case Arch::kQwen2Moe: {
      c.moe_intermediate_size =
          r.integer("moe_intermediate_size", std::nullopt, 1, kMaxIntermediate, "routed expert width");
      c.norm_topk_prob = r.boolean("norm_topk_prob", false);  // both classes: False
      c.decoder_sparse_step = r.integer("decoder_sparse_step", int64_t(1), 1, kMaxLayers);
      if (const json* m = r.get("mlp_only_layers")) {
        if (!m->is_array()) {
          r.fail(ErrorCode::kInvalidArgument, "field 'mlp_only_layers': expected a list of layer indices");
          return;
        }
        for (const auto& e : *m) {
          auto v = r.as_int("mlp_only_layers", e);
          if (!v) return;
          if (*v < 0 || *v >= c.num_hidden_layers) {
            r.fail(ErrorCode::kInvalidArgument,
                   "field 'mlp_only_layers': layer {} is outside [0, num_hidden_layers={})", *v,
                   c.num_hidden_layers);
            return;
          }
          c.mlp_only_layers.push_back(*v);
        }
      }
      if (c.arch == Arch::kQwen2Moe) {
        // Qwen2MoeSparseMoeBlock always builds the shared expert and its [1, H] sigmoid gate.
        c.shared_expert_intermediate_size = r.integer("shared_expert_intermediate_size", std::nullopt,
                                                      1, kMaxIntermediate, "shared expert width");
        c.num_shared_experts = 1;
        c.shared_expert_gate = true;
      }
      break;
    }
    case Arch::kMixtral:
      // MixtralSparseMoeBlock: experts are intermediate_size wide; top-k softmax weights are
      // renormalised to sum to 1 (there is no norm_topk_prob key).
      c.moe_intermediate_size = c.intermediate_size;
      c.norm_topk_prob = true;
      break;
    case Arch::kOlmoe:
      c.moe_intermediate_size = c.intermediate_size;    // OlmoeSparseMoeBlock uses intermediate_size
      c.norm_topk_prob = r.boolean("norm_topk_prob", false);
      break;
    case Arch::kDeepseekV2:
    case Arch::kDeepseekV3: {
      const bool v3 = c.arch == Arch::kDeepseekV3;
      c.moe_intermediate_size =
          r.integer("moe_intermediate_size", std::nullopt, 1, kMaxIntermediate, "routed expert width");
      // Defaults: V2 class n_shared_experts 2, V3 1; the shared MLP is n_shared * width wide.
      c.num_shared_experts = r.integer("n_shared_experts", v3 ? 1 : 2, 0, kMaxExperts);
      c.shared_expert_intermediate_size = c.num_shared_experts * c.moe_intermediate_size;
      c.first_k_dense_replace = r.integer("first_k_dense_replace", v3 ? 3 : 0, 0, c.num_hidden_layers);
      c.moe_layer_freq = r.integer("moe_layer_freq", int64_t(1), 1, kMaxLayers);
      c.norm_topk_prob = r.boolean("norm_topk_prob", v3);
      c.routed_scaling_factor = r.number("routed_scaling_factor", v3 ? 2.5 : 1.0, 0.0, 1e6, true);
      std::string scoring = r.string("scoring_func", v3 ? "sigmoid" : "softmax");
      if (scoring == "softmax") c.scoring_func = ScoringFunc::kSoftmax;
      else if (scoring == "sigmoid") c.scoring_func = ScoringFunc::kSigmoid;
      else r.fail(ErrorCode::kUnsupported, "field 'scoring_func': '{}' is not supported (softmax, sigmoid)", scoring);
      std::string method = r.string("topk_method", v3 ? "noaux_tc" : "greedy");
      if (method == "greedy") c.topk_method = TopkMethod::kGreedy;
      else if (method == "group_limited_greedy") c.topk_method = TopkMethod::kGroupLimitedGreedy;
      else if (method == "noaux_tc") c.topk_method = TopkMethod::kNoauxTc;
      else
        r.fail(ErrorCode::kUnsupported,
               "field 'topk_method': '{}' is not supported (greedy, group_limited_greedy, noaux_tc)", method);
      c.n_group = r.integer("n_group", v3 ? 8 : 1, 1, kMaxExperts);
      c.topk_group = r.integer("topk_group", v3 ? 4 : 1, 1, kMaxExperts);
      c.e_score_correction_bias = c.topk_method == TopkMethod::kNoauxTc;
      if (!r.ok()) return;
      if (c.num_experts % c.n_group != 0) {
        r.fail(ErrorCode::kInvalidArgument, "field 'n_group' ({}) must divide n_routed_experts ({})",
               c.n_group, c.num_experts);
        return;
      }
      if (c.topk_group > c.n_group) {
        r.fail(ErrorCode::kInvalidArgument, "field 'topk_group' ({}) is larger than n_group ({})",
               c.topk_group, c.n_group);
        return;
      }
      if (c.topk_method != TopkMethod::kGreedy &&
          c.num_experts_per_tok > c.topk_group * (c.num_experts / c.n_group)) {
        r.fail(ErrorCode::kInvalidArgument,
               "field 'num_experts_per_tok' ({}) is larger than the {} experts in topk_group={} groups",
               c.num_experts_per_tok, c.topk_group * (c.num_experts / c.n_group), c.topk_group);
        return;
      }
      break;
    }
    case Arch::kLlama:
    case Arch::kMistral:
    case Arch::kQwen2:
    case Arch::kQwen3: break;
  }
  c.router_aux_loss_coef = r.number("router_aux_loss_coef", ds ? 0.0 : 0.001, 0.0, 1e6);
}

void parse_mla(Reader& r, ModelConfig& c) {
  c.attention_kind = AttentionKind::kMla;
  // Both DeepSeek classes: q_lora_rank 1536 (null = no query compression), kv_lora_rank 512,
  // qk_nope 128, qk_rope 64, v_head 128.
  // (q_lora_rank is read by the caller: absent and null mean different things.)
  c.kv_lora_rank = r.integer("kv_lora_rank", int64_t(512), 1, kMaxHidden);
  c.qk_nope_head_dim = r.integer("qk_nope_head_dim", int64_t(128), 0, kMaxHeadDim);
  c.qk_rope_head_dim = r.integer("qk_rope_head_dim", int64_t(64), 1, kMaxHeadDim);
  c.v_head_dim = r.integer("v_head_dim", int64_t(128), 1, kMaxHeadDim);
  c.head_dim = c.qk_nope_head_dim + c.qk_rope_head_dim;
  // configuration_deepseek_v3.py: rope_interleave=True; V2 has no such switch.
  c.rope_interleave = c.arch == Arch::kDeepseekV3 ? r.boolean("rope_interleave", true) : true;
  // DeepseekV3Config reads num_mtp_layers as an alias (attribute_map).
  const char* mtp_key = r.one_of({"num_nextn_predict_layers", "num_mtp_layers"});
  c.num_nextn_predict_layers = mtp_key ? r.integer(mtp_key, int64_t(0), 0, 16) : 0;
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Parse

Result<ModelConfig> parse_model_config(const json& j, const std::string& source_name) {
  if (!j.is_object())
    return make_error(ErrorCode::kInvalidArgument, "{}: expected a JSON object, got {}", source_name,
                      short_dump(j));
  Reader r(j, source_name);
  ModelConfig c;
  c.source = source_name;

  // Architecture: model_type first, else the HF class name in "architectures".
  if (const json* a = r.get("architectures")) {
    if (!a->is_array()) {
      r.fail(ErrorCode::kInvalidArgument, "field 'architectures': expected a list of strings");
    } else {
      for (const auto& e : *a) {
        if (!e.is_string()) {
          r.fail(ErrorCode::kInvalidArgument, "field 'architectures': expected a list of strings");
          break;
        }
        c.architectures.push_back(e.get<std::string>());
      }
    }
  }
  c.model_type = r.string("model_type", "");
  if (!r.ok()) return r.status();
  if (c.model_type.empty()) {
    std::optional<Arch> from_class;
    for (const auto& cls : c.architectures)
      if ((from_class = arch_from_class(cls))) break;
    if (!from_class)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: missing required field 'model_type' (supported: {})", source_name,
                        supported_model_types());
    c.arch = *from_class;
    c.model_type = arch_name(c.arch);
  } else {
    auto a = arch_from_model_type(c.model_type);
    if (!a)
      return make_error(ErrorCode::kUnsupported,
                        "{}: field 'model_type': '{}' is not supported (supported: {})", source_name,
                        c.model_type, supported_model_types());
    c.arch = *a;
  }
  const Arch arch = c.arch;
  const bool ds = arch_is_deepseek(arch);
  const FamilyDefaults fd = family_defaults(arch);

  // Shape.
  c.vocab_size = r.integer("vocab_size", std::nullopt, 1, kMaxVocab);
  c.hidden_size = r.integer("hidden_size", std::nullopt, 1, kMaxHidden);
  c.num_hidden_layers = r.integer("num_hidden_layers", std::nullopt, 1, kMaxLayers);
  c.num_attention_heads = r.integer("num_attention_heads", std::nullopt, 1, kMaxHeads);
  if (!r.ok()) return r.status();
  c.num_key_value_heads = r.integer("num_key_value_heads", fd.num_key_value_heads.value_or(c.num_attention_heads),
                                    1, kMaxHeads);
  if (!r.ok()) return r.status();
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: field 'num_key_value_heads' ({}) must divide num_attention_heads ({})",
                      source_name, c.num_key_value_heads, c.num_attention_heads);

  // The dense MLP width is needed by dense families, by Mixtral/OLMoE (their expert width)
  // and by MoE families only when some layer is dense; checked after the MoE fields below.
  if (r.has("intermediate_size")) c.intermediate_size = r.integer("intermediate_size", std::nullopt, 1, kMaxIntermediate);
  c.hidden_act = r.string("hidden_act", "silu");
  c.max_position_embeddings = r.integer("max_position_embeddings", fd.max_position_embeddings, 1, kMaxPositions);
  c.rms_norm_eps = r.number("rms_norm_eps", fd.rms_norm_eps, 0.0, 1.0, true);
  c.rope_theta = r.number("rope_theta", fd.rope_theta, 0.0, 1e12, true);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);  // False in every class here
  if (!r.ok()) return r.status();
  if (c.hidden_act != "silu")
    return make_error(ErrorCode::kUnsupported, "{}: field 'hidden_act': '{}' is not supported (silu)",
                      source_name, c.hidden_act);
  parse_rope(r, c);
  if (!r.ok()) return r.status();

  // Weight dtype: "dtype" (transformers 5) or "torch_dtype" (4).
  const char* dtype_key = r.one_of({"dtype", "torch_dtype"});
  if (dtype_key) c.torch_dtype = r.string(dtype_key, "bfloat16");
  if (!r.ok()) return r.status();
  if (c.torch_dtype != "bfloat16" && c.torch_dtype != "float16" && c.torch_dtype != "float32")
    return make_error(ErrorCode::kUnsupported,
                      "{}: field '{}': '{}' is not supported (bfloat16, float16, float32)", source_name,
                      dtype_key ? dtype_key : "dtype", c.torch_dtype);

  // Attention.
  if (ds) {
    parse_mla(r, c);
    // q_lora_rank: absent -> 1536 (class default); null -> no query compression.
    if (j.contains("q_lora_rank")) {
      if (!j.at("q_lora_rank").is_null())
        c.q_lora_rank = r.integer("q_lora_rank", std::nullopt, 1, kMaxHidden);
    } else {
      c.q_lora_rank = 1536;
    }
  } else {
    c.head_dim_explicit = r.has("head_dim");
    if (c.head_dim_explicit) {
      c.head_dim = r.integer("head_dim", std::nullopt, 1, kMaxHeadDim);
    } else if (arch == Arch::kQwen3) {
      c.head_dim = 128;  // configuration_qwen3.py: head_dim=128
    } else {
      if (c.hidden_size % c.num_attention_heads != 0)
        return make_error(ErrorCode::kInvalidArgument,
                          "{}: field 'num_attention_heads' ({}) must divide hidden_size ({}) when "
                          "head_dim is not given",
                          source_name, c.num_attention_heads, c.hidden_size);
      c.head_dim = c.hidden_size / c.num_attention_heads;
    }
  }
  switch (arch) {
    case Arch::kQwen2:
      c.qkv_bias = true;  // Qwen2Attention: q/k/v Linear(bias=True), o_proj bias=False
      break;
    case Arch::kQwen2Moe:
      c.qkv_bias = r.boolean("qkv_bias", true);  // configuration_qwen2_moe.py: qkv_bias=True
      break;
    case Arch::kMixtral:
    case Arch::kMistral: break;  // no attention bias
    case Arch::kQwen3:
    case Arch::kQwen3Moe:
    case Arch::kOlmoe:
    case Arch::kLlama:
    case Arch::kDeepseekV2:
    case Arch::kDeepseekV3: c.attention_bias = r.boolean("attention_bias", false); break;
  }
  if (arch == Arch::kLlama) c.mlp_bias = r.boolean("mlp_bias", false);
  c.qk_norm = arch == Arch::kQwen3 || arch == Arch::kQwen3Moe || arch == Arch::kOlmoe;
  if (arch == Arch::kOlmoe && r.has("clip_qkv")) c.clip_qkv = r.number("clip_qkv", 0.0, 0.0, 1e9, true);

  // Sliding window: qwen2 family and qwen3 use it only when use_sliding_window is true
  // (the classes then keep `sliding_window`, default 4096); mistral/mixtral use the value
  // itself (mistral default 4096, mixtral None).
  switch (arch) {
    case Arch::kQwen2:
    case Arch::kQwen2Moe:
    case Arch::kQwen3:
    case Arch::kQwen3Moe:
      c.use_sliding_window = r.boolean("use_sliding_window", false);
      c.max_window_layers = r.integer("max_window_layers", int64_t(28), 0, kMaxLayers);
      if (c.use_sliding_window) c.sliding_window = r.integer("sliding_window", int64_t(4096), 1, kMaxPositions);
      break;
    case Arch::kMistral:
      if (!j.contains("sliding_window")) c.sliding_window = 4096;
      else if (r.has("sliding_window")) c.sliding_window = r.integer("sliding_window", std::nullopt, 1, kMaxPositions);
      break;
    case Arch::kMixtral:
      if (r.has("sliding_window")) c.sliding_window = r.integer("sliding_window", std::nullopt, 1, kMaxPositions);
      break;
    case Arch::kLlama:
    case Arch::kOlmoe:
    case Arch::kDeepseekV2:
    case Arch::kDeepseekV3: break;
  }
  if (!r.ok()) return r.status();

  // Mixtral and OLMoE take their expert width from intermediate_size.
  if ((arch == Arch::kMixtral || arch == Arch::kOlmoe) && c.intermediate_size == 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: missing required field 'intermediate_size' (expert width)", source_name);

  // MoE.
  if (arch_is_moe_family(arch)) {
    parse_moe(r, c);
    if (!r.ok()) return r.status();
  }

  // Dense MLP width: required when a layer uses it.
  if (c.intermediate_size == 0) {
    bool needed = !arch_is_moe_family(arch);
    for (int64_t l = 0; l < c.num_hidden_layers && !needed; ++l) needed = !c.layer_is_moe(l);
    if (needed)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: missing required field 'intermediate_size' (dense MLP width)", source_name);
  }

  parse_quantization(r, c);
  if (!r.ok()) return r.status();

  // Each field is within its own bounds; their products must stay sane too, so that tensor
  // lists and parameter counts of a hostile config cannot exhaust memory or overflow int64.
  // The largest real models are ~45k tensors and ~1e12 parameters.
  {
    const double layers = double(c.num_hidden_layers), H = double(c.hidden_size);
    const double tensors = layers * (3.0 * double(c.num_experts) + 32.0);
    if (tensors > double(kMaxTensors))
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: field 'num_hidden_layers' ({}) x {} experts implies {:.0f} tensors, more than the "
                        "{} supported",
                        source_name, c.num_hidden_layers, c.num_experts, tensors, kMaxTensors);
    const double width = double(std::max({c.intermediate_size, c.moe_intermediate_size * std::max<int64_t>(c.num_experts, 1) +
                                                                   c.shared_expert_intermediate_size}));
    const double attn = double(c.num_attention_heads) * double(std::max(c.qk_head_dim(), c.v_head_dim)) * 4.0 +
                        double(c.kv_lora_rank + c.q_lora_rank.value_or(0));
    const double params = 2.0 * double(c.vocab_size) * H + layers * H * (3.0 * width + attn);
    if (params > kMaxParams)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: the sizes imply about {:.3g} parameters, beyond the {:.0e} supported (check hidden_size, "
                        "intermediate sizes and expert counts)",
                        source_name, params, kMaxParams);
  }

  // Token ids (no validation beyond being integers).
  if (r.has("bos_token_id")) c.bos_token_id = r.integer("bos_token_id", std::nullopt, 0, kMaxVocab * 64);
  if (r.has("pad_token_id")) c.pad_token_id = r.integer("pad_token_id", std::nullopt, 0, kMaxVocab * 64);
  c.eos_token_ids = r.int_or_list("eos_token_id");
  if (!r.ok()) return r.status();
  return c;
}

Result<ModelConfig> parse_model_config_text(const std::string& text, const std::string& source_name) {
  json j;
  try {
    Status bounded = check_json_text(text);  // nesting and size limits (core/json_limits.h)
    if (!bounded.ok()) return bounded.with_context(source_name);
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 3, column 5: ..."
    std::string what = e.what();
    auto pos = what.find("] ");
    if (pos != std::string::npos) what = what.substr(pos + 2);
    return make_error(ErrorCode::kInvalidArgument, "{}: invalid JSON: {}", source_name, what);
  }
  return parse_model_config(j, source_name);
}

Result<ModelConfig> load_model_config(const std::string& path) {
  // Real configs are a few kB (the FP8 one with its module list ~7 kB); 16 MB is plenty.
  auto text = read_file(path, size_t(16) << 20);
  if (!text.ok()) return text.status();
  return parse_model_config_text(*text, path);
}

// ------------------------------------------------------------------------------------------
// Write

json model_config_to_json(const ModelConfig& c) {
  json j;
  const Arch a = c.arch;
  const bool ds = arch_is_deepseek(a);
  j["architectures"] = c.architectures.empty() ? json::array({arch_hf_class(a)}) : json(c.architectures);
  j["model_type"] = arch_name(a);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  if (c.intermediate_size > 0) j["intermediate_size"] = c.intermediate_size;
  j["hidden_act"] = c.hidden_act;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type == RopeScalingType::kNone) {
    j["rope_scaling"] = nullptr;
  } else {
    const RopeScaling& s = c.rope_scaling;
    json rs;
    rs["type"] = rope_scaling_type_name(s.type);
    rs["rope_type"] = rope_scaling_type_name(s.type);
    rs["factor"] = s.factor;
    if (s.original_max_position_embeddings > 0)
      rs["original_max_position_embeddings"] = s.original_max_position_embeddings;
    if (s.type == RopeScalingType::kYarn) {
      rs["beta_fast"] = s.beta_fast;
      rs["beta_slow"] = s.beta_slow;
      if (s.mscale) rs["mscale"] = *s.mscale;
      if (s.mscale_all_dim) rs["mscale_all_dim"] = *s.mscale_all_dim;
      if (s.attention_factor) rs["attention_factor"] = *s.attention_factor;
    }
    if (s.type == RopeScalingType::kLlama3) {
      rs["low_freq_factor"] = s.low_freq_factor;
      rs["high_freq_factor"] = s.high_freq_factor;
    }
    j["rope_scaling"] = rs;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = c.torch_dtype;
  j["use_cache"] = true;
  j["initializer_range"] = 0.02;
  j["attention_dropout"] = 0.0;

  if (!ds && c.head_dim_explicit) j["head_dim"] = c.head_dim;
  if (!ds && !c.head_dim_explicit && a == Arch::kQwen3) j["head_dim"] = c.head_dim;
  switch (a) {
    case Arch::kQwen2Moe: j["qkv_bias"] = c.qkv_bias; break;
    case Arch::kQwen3:
    case Arch::kQwen3Moe:
    case Arch::kOlmoe:
    case Arch::kLlama:
    case Arch::kDeepseekV2:
    case Arch::kDeepseekV3: j["attention_bias"] = c.attention_bias; break;
    case Arch::kQwen2:
    case Arch::kMixtral:
    case Arch::kMistral: break;
  }
  if (a == Arch::kLlama) j["mlp_bias"] = c.mlp_bias;
  if (a == Arch::kOlmoe) j["clip_qkv"] = c.clip_qkv ? json(*c.clip_qkv) : json(nullptr);
  switch (a) {
    case Arch::kQwen2:
    case Arch::kQwen2Moe:
    case Arch::kQwen3:
    case Arch::kQwen3Moe:
      j["use_sliding_window"] = c.use_sliding_window;
      j["max_window_layers"] = c.max_window_layers;
      j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
      break;
    case Arch::kMistral:
    case Arch::kMixtral: j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr); break;
    case Arch::kLlama:
    case Arch::kOlmoe:
    case Arch::kDeepseekV2:
    case Arch::kDeepseekV3: break;
  }

  switch (a) {
    case Arch::kQwen3Moe:
    case Arch::kQwen2Moe:
      j["num_experts"] = c.num_experts;
      j["num_experts_per_tok"] = c.num_experts_per_tok;
      j["moe_intermediate_size"] = c.moe_intermediate_size;
      j["norm_topk_prob"] = c.norm_topk_prob;
      j["decoder_sparse_step"] = c.decoder_sparse_step;
      j["mlp_only_layers"] = c.mlp_only_layers;
      j["router_aux_loss_coef"] = c.router_aux_loss_coef;
      j["output_router_logits"] = false;
      if (a == Arch::kQwen2Moe) j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
      break;
    case Arch::kMixtral:
      j["num_local_experts"] = c.num_experts;
      j["num_experts_per_tok"] = c.num_experts_per_tok;
      j["router_aux_loss_coef"] = c.router_aux_loss_coef;
      j["output_router_logits"] = false;
      break;
    case Arch::kOlmoe:
      j["num_experts"] = c.num_experts;
      j["num_experts_per_tok"] = c.num_experts_per_tok;
      j["norm_topk_prob"] = c.norm_topk_prob;
      j["router_aux_loss_coef"] = c.router_aux_loss_coef;
      j["output_router_logits"] = false;
      break;
    case Arch::kDeepseekV2:
    case Arch::kDeepseekV3:
      j["n_routed_experts"] = c.num_experts;
      j["num_experts_per_tok"] = c.num_experts_per_tok;
      j["moe_intermediate_size"] = c.moe_intermediate_size;
      j["n_shared_experts"] = c.num_shared_experts;
      j["first_k_dense_replace"] = c.first_k_dense_replace;
      j["moe_layer_freq"] = c.moe_layer_freq;
      j["norm_topk_prob"] = c.norm_topk_prob;
      j["routed_scaling_factor"] = c.routed_scaling_factor;
      j["scoring_func"] = scoring_func_name(c.scoring_func);
      j["topk_method"] = topk_method_name(c.topk_method);
      j["n_group"] = c.n_group;
      j["topk_group"] = c.topk_group;
      j["q_lora_rank"] = c.q_lora_rank ? json(*c.q_lora_rank) : json(nullptr);
      j["kv_lora_rank"] = c.kv_lora_rank;
      j["qk_nope_head_dim"] = c.qk_nope_head_dim;
      j["qk_rope_head_dim"] = c.qk_rope_head_dim;
      j["v_head_dim"] = c.v_head_dim;
      if (a == Arch::kDeepseekV3) j["rope_interleave"] = c.rope_interleave;
      if (c.num_nextn_predict_layers > 0) j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
      break;
    case Arch::kLlama:
    case Arch::kMistral:
    case Arch::kQwen2:
    case Arch::kQwen3: break;
  }
  if (c.fp8) {
    json q;
    q["quant_method"] = c.fp8->quant_method;
    q["fmt"] = c.fp8->fmt;
    q["activation_scheme"] = c.fp8->activation_scheme;
    q["weight_block_size"] = {c.fp8->block_n, c.fp8->block_k};
    if (!c.fp8->modules_to_not_convert.empty()) q["modules_to_not_convert"] = c.fp8->modules_to_not_convert;
    j["quantization_config"] = q;
  }
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids;
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  return j;
}

}  // namespace moeopt
