// Sizing: parameter counts, weight and KV bytes, GPU fit and layout (conventions in sizing.h).
#include "moeopt/model/sizing.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace moeopt {

using json = nlohmann::json;

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Parameters

ParamCounts count_params(const ModelConfig& c, const std::vector<TensorSpec>& tensors,
                         const std::vector<TensorSpec>& mtp) {
  ParamCounts p;
  // Routed-expert parameters per layer, to derive the top-k share of each MoE layer.
  std::vector<int64_t> experts_in_layer(size_t(std::max<int64_t>(c.num_hidden_layers, 0)), 0);
  for (const auto& t : tensors) {
    const int64_t n = t.numel();
    p.total += n;
    switch (t.role) {
      case TensorRole::kEmbedding: p.embedding += n; break;
      case TensorRole::kLmHead: p.lm_head += n; break;
      case TensorRole::kAttention:
      case TensorRole::kAttentionNorm: p.attention += n; break;
      case TensorRole::kLayerNorm:
      case TensorRole::kFinalNorm: p.norms += n; break;
      case TensorRole::kRouter:
      case TensorRole::kRouterBias: p.router += n; break;
      case TensorRole::kRoutedExpert:
        p.routed_experts += n;
        if (t.layer >= 0 && size_t(t.layer) < experts_in_layer.size()) experts_in_layer[size_t(t.layer)] += n;
        break;
      case TensorRole::kSharedExpert:
      case TensorRole::kSharedExpertGate: p.shared_experts += n; break;
      case TensorRole::kDenseMlp: p.dense_mlp += n; break;
      case TensorRole::kMtp:
      case TensorRole::kFp8Scale: p.total -= n; break;  // not model parameters of the main model
    }
  }
  for (int64_t per_layer : experts_in_layer)
    if (per_layer > 0 && c.num_experts > 0)
      p.routed_experts_active += per_layer / c.num_experts * c.num_experts_per_tok;
  p.active = p.total - p.routed_experts + p.routed_experts_active;
  for (const auto& t : mtp) p.mtp += t.numel();
  return p;
}

// ------------------------------------------------------------------------------------------
// Bytes

std::pair<int64_t, int64_t> fp8_block(const ModelConfig& c) {
  if (c.fp8) return {c.fp8->block_n, c.fp8->block_k};
  return {128, 128};
}

int64_t fp8_tensor_bytes(const TensorSpec& t, int64_t block_n, int64_t block_k) {
  if (!t.fp8_linear || t.shape.size() != 2) return t.numel() * 2;
  return t.numel() + ceil_div(t.shape[0], block_n) * ceil_div(t.shape[1], block_k) * 4;
}

WeightBytes weight_bytes(const ModelConfig& c, const std::vector<TensorSpec>& tensors) {
  WeightBytes w;
  auto [bn, bk] = fp8_block(c);
  for (const auto& t : tensors) {
    if (t.role == TensorRole::kMtp || t.role == TensorRole::kFp8Scale) continue;
    w.bf16 += t.numel() * 2;
    w.fp8 += fp8_tensor_bytes(t, bn, bk);
  }
  return w;
}

KvBytes kv_bytes_per_token(const ModelConfig& c) {
  int64_t elems = 0;
  if (c.attention_kind == AttentionKind::kMla)
    elems = c.num_hidden_layers * (c.kv_lora_rank + c.qk_rope_head_dim);
  else
    elems = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim;
  // fp8: one byte per value, plus moeopt's f32 scale per token and kv head of K and of V
  // (ops/attention.h); the MLA latent cache has no fp8 form yet, counted as codes only.
  const int64_t scales =
      c.attention_kind == AttentionKind::kMla ? 0 : 2 * c.num_hidden_layers * c.num_key_value_heads * 4;
  return {elems * 2, elems + scales};
}

// ------------------------------------------------------------------------------------------
// GPUs

const GpuSpec& gpu_h100() {
  // H100 SXM5 80 GB: 81559 MiB as nvidia-smi reports it.
  static const GpuSpec g{"H100-80GB", "h100", int64_t(81559) << 20};
  return g;
}

const GpuSpec& gpu_h200() {
  // H200 SXM 141 GB: 143771 MiB as nvidia-smi reports it.
  static const GpuSpec g{"H200-141GB", "h200", int64_t(143771) << 20};
  return g;
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kBf16: return "bf16";
    case Precision::kFp8Weights: return "fp8";
    case Precision::kFp8WeightsFp8Kv: return "fp8+kv8";
  }
  return "?";
}

namespace {

// Attention is tensor-parallel over heads with the largest TP that divides the head count;
// the rest of the GPUs run attention data-parallel (DP = gpus / TP).
int attention_tp(const ModelConfig& c, int gpus) {
  return int(std::gcd(int64_t(gpus), c.num_attention_heads));
}

// Shape of GPU 0's shard of tensor t under the layout of sizing.h, or an empty shape when
// GPU 0 holds none of it (routed experts owned by other ranks).
std::vector<int64_t> shard_shape(const ModelConfig& c, const TensorSpec& t, int gpus, int tp) {
  std::vector<int64_t> s = t.shape;
  const std::string& n = t.name;
  switch (t.role) {
    case TensorRole::kEmbedding:
    case TensorRole::kLmHead: s[0] = ceil_div(s[0], gpus); break;  // vocab-parallel
    case TensorRole::kAttention: {
      const int64_t heads = c.num_attention_heads, kv = c.num_key_value_heads;
      auto rows_by = [&](int64_t groups) { s[0] = s[0] / groups * ceil_div(groups, tp); };
      if (ends_with(n, "q_proj.weight") || ends_with(n, "q_proj.bias") || ends_with(n, "q_b_proj.weight") ||
          ends_with(n, "kv_b_proj.weight")) {
        rows_by(heads);
      } else if (ends_with(n, "k_proj.weight") || ends_with(n, "k_proj.bias") || ends_with(n, "v_proj.weight") ||
                 ends_with(n, "v_proj.bias")) {
        rows_by(kv);  // kv heads replicated once TP exceeds them
      } else if (ends_with(n, "o_proj.weight")) {
        s[1] = s[1] / heads * ceil_div(heads, tp);
      }
      // q_a_proj, kv_a_proj_with_mqa and o_proj.bias are replicated.
      break;
    }
    case TensorRole::kRoutedExpert: {
      // Expert parallel: GPU 0 holds experts [0, ceil(E / gpus)).
      if (t.expert >= ceil_div(c.num_experts, gpus)) return {};
      break;
    }
    case TensorRole::kSharedExpert:
    case TensorRole::kDenseMlp:
      if (s.size() == 2) {
        // gate/up ([I, H]) split by rows, down ([H, I]) by columns.
        if (ends_with(n, "down_proj.weight") || ends_with(n, "w2.weight")) s[1] = ceil_div(s[1], gpus);
        else s[0] = ceil_div(s[0], gpus);
      } else if (!(ends_with(n, "down_proj.bias") || ends_with(n, "w2.bias"))) {
        s[0] = ceil_div(s[0], gpus);
      }
      break;
    case TensorRole::kAttentionNorm:
    case TensorRole::kLayerNorm:
    case TensorRole::kFinalNorm:
    case TensorRole::kRouter:
    case TensorRole::kRouterBias:
    case TensorRole::kSharedExpertGate:
    case TensorRole::kMtp:
    case TensorRole::kFp8Scale: break;  // replicated (or not part of the served model)
  }
  return s;
}

int64_t kv_bytes_per_token_per_gpu(const ModelConfig& c, int tp, bool fp8_kv) {
  const int64_t b = fp8_kv ? 1 : 2;
  if (c.attention_kind == AttentionKind::kMla)
    return c.num_hidden_layers * (c.kv_lora_rank + c.qk_rope_head_dim) * b;  // replicated latent
  // fp8: codes + one f32 scale per token and kv head, as kv_bytes_per_token.
  const int64_t per_head = fp8_kv ? c.head_dim + 4 : c.head_dim * 2;
  return 2 * c.num_hidden_layers * ceil_div(c.num_key_value_heads, tp) * per_head;
}

}  // namespace

int64_t weight_bytes_per_gpu(const ModelConfig& c, const std::vector<TensorSpec>& tensors, int gpus,
                             Precision p) {
  const int tp = attention_tp(c, gpus);
  auto [bn, bk] = fp8_block(c);
  int64_t total = 0;
  for (const auto& t : tensors) {
    if (t.role == TensorRole::kMtp || t.role == TensorRole::kFp8Scale) continue;
    TensorSpec s = t;
    s.shape = shard_shape(c, t, gpus, tp);
    if (s.shape.empty()) continue;
    total += p == Precision::kBf16 ? s.numel() * 2 : fp8_tensor_bytes(s, bn, bk);
  }
  return total;
}

FitResult fit_on_gpus(const ModelConfig& c, const std::vector<TensorSpec>& tensors, const GpuSpec& gpu,
                      int gpus, Precision p, int64_t ctx) {
  FitResult f;
  f.gpus = gpus;
  f.precision = p;
  const int tp = attention_tp(c, gpus);
  const int dp = gpus / tp;
  f.weight_bytes_per_gpu = weight_bytes_per_gpu(c, tensors, gpus, p);
  const int64_t usable = int64_t(double(gpu.memory_bytes) * kGpuMemoryFraction);
  f.kv_room_per_gpu = usable - kActivationReserveBytes - f.weight_bytes_per_gpu;
  f.kv_bytes_per_token_per_gpu = kv_bytes_per_token_per_gpu(c, tp, p == Precision::kFp8WeightsFp8Kv);
  if (f.kv_room_per_gpu > 0 && f.kv_bytes_per_token_per_gpu > 0) {
    // Each DP group of TP GPUs holds its own sequences.
    const int64_t per_group_tokens = f.kv_room_per_gpu / f.kv_bytes_per_token_per_gpu;
    f.kv_tokens = per_group_tokens * dp;
    f.max_batch = ctx > 0 ? (per_group_tokens / ctx) * dp : 0;
  }
  f.fits = f.max_batch >= 1;
  return f;
}

std::vector<std::string> fp8_tp_warnings(const ModelConfig& c, int tp, bool experts_tp) {
  std::vector<std::string> w;
  if (tp <= 1) return w;
  auto [bn, bk] = fp8_block(c);
  const int64_t block = std::max(bn, bk);
  auto check = [&](const std::string& what, int64_t width) {
    if (width <= 0) return;
    if (width % tp != 0) {
      w.push_back(fmt::format("{} {} does not split evenly over TP={}", what, width, tp));
    } else if ((width / tp) % block != 0) {
      w.push_back(fmt::format(
          "FP8 block-{}: {} {} split TP={} gives {}, not a multiple of {} (pad each shard to {} or "
          "use expert/data parallelism)",
          block, what, width, tp, width / tp, block, ceil_div(width / tp, block) * block));
    }
  };
  if (experts_tp && c.is_moe()) check("moe_intermediate_size", c.moe_intermediate_size);
  if (c.num_shared_experts > 0) check("shared expert width", c.shared_expert_intermediate_size);
  bool has_dense = !arch_is_moe_family(c.arch);
  for (int64_t l = 0; l < c.num_hidden_layers && !has_dense; ++l) has_dense = !c.layer_is_moe(l);
  if (has_dense) check("intermediate_size", c.intermediate_size);
  if (c.num_attention_heads % tp != 0) {
    w.push_back(fmt::format("num_attention_heads {} does not split over TP={} (attention uses TP={} x DP={})",
                            c.num_attention_heads, tp, attention_tp(c, tp), tp / attention_tp(c, tp)));
  } else if (c.attention_kind == AttentionKind::kGqa) {
    check("attention width (heads*head_dim)", c.num_attention_heads * c.head_dim);
  }
  return w;
}

LayoutRecommendation recommend_layout(const ModelConfig& c, const std::vector<TensorSpec>& tensors,
                                      const GpuSpec& gpu, int64_t ctx) {
  LayoutRecommendation r;
  r.gpu = gpu.name;
  const Precision precisions[] = {Precision::kBf16, Precision::kFp8Weights, Precision::kFp8WeightsFp8Kv};
  const int counts[] = {1, 2, 4, 8};
  std::optional<FitResult> chosen, best;
  for (Precision p : precisions) {
    for (int n : counts) {
      FitResult f = fit_on_gpus(c, tensors, gpu, n, p, ctx);
      if (f.max_batch >= kTargetBatch) {
        chosen = f;
        break;
      }
      if (f.fits && (!best || f.max_batch > best->max_batch)) best = f;
    }
    if (chosen) break;
  }
  if (!chosen) chosen = best;
  if (!chosen) {
    r.fits = false;
    r.summary = fmt::format("does not fit on 8 x {} even with FP8 weights and FP8 KV cache at ctx {}",
                            gpu.name, ctx);
    return r;
  }
  r.fits = true;
  r.gpus = chosen->gpus;
  r.precision = chosen->precision;
  r.tp_attention = attention_tp(c, r.gpus);
  r.ep_experts = c.is_moe() ? r.gpus : 1;
  r.max_batch = chosen->max_batch;
  std::string attn = r.tp_attention == r.gpus
                         ? fmt::format("TP{} attention", r.tp_attention)
                         : fmt::format("TP{} x DP{} attention", r.tp_attention, r.gpus / r.tp_attention);
  std::string experts = c.is_moe() ? fmt::format(", EP{} experts", r.ep_experts) : std::string();
  const char* prec = r.precision == Precision::kBf16          ? "BF16"
                     : r.precision == Precision::kFp8Weights ? "FP8 weights"
                                                             : "FP8 weights + FP8 KV";
  r.summary = fmt::format("{} x {}, {}, {}{}: {} sequences x {} tokens", r.gpus, gpu.name, prec, attn,
                          experts, r.max_batch, ctx);
  if (r.max_batch < kTargetBatch)
    r.warnings.push_back(fmt::format("only {} sequences of {} tokens fit (target {})", r.max_batch, ctx,
                                     kTargetBatch));
  if (c.is_moe() && r.gpus > 1 && c.num_experts % r.gpus != 0)
    r.warnings.push_back(fmt::format("{} experts do not split evenly over EP={} ({} on the busiest GPU)",
                                     c.num_experts, r.gpus, ceil_div(c.num_experts, r.gpus)));
  if (r.precision != Precision::kBf16)
    for (auto& w : fp8_tp_warnings(c, r.tp_attention, false)) r.warnings.push_back(w);
  if (c.attention_kind == AttentionKind::kGqa && r.tp_attention > c.num_key_value_heads)
    r.warnings.push_back(fmt::format("TP={} exceeds {} KV heads: each KV head is replicated {}x",
                                     r.tp_attention, c.num_key_value_heads,
                                     r.tp_attention / c.num_key_value_heads));
  return r;
}

// ------------------------------------------------------------------------------------------
// Checkpoint cross-check

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

Result<CheckpointCheck> check_checkpoint_tensors(const ModelConfig& c,
                                                 const std::vector<SafetensorsTensorInfo>& tensors,
                                                 const std::string& source) {
  auto expected = checkpoint_tensors(c, /*include_mtp=*/true);
  if (!expected.ok()) return expected.status();
  std::unordered_map<std::string, size_t> index;
  index.reserve(expected->size());
  for (size_t i = 0; i < expected->size(); ++i) index.emplace((*expected)[i].name, i);

  CheckpointCheck out;
  std::vector<char> seen(expected->size(), 0);
  std::vector<TensorSpec> main, mtp;  // header shapes, roles from the specs
  std::set<std::string> files;
  for (const auto& t : tensors) {
    if (ends_with(t.name, ".rotary_emb.inv_freq")) continue;
    auto it = index.find(t.name);
    if (it == index.end())
      return make_error(ErrorCode::kCorruptData,
                        "{}: tensor '{}' is not part of a {} model with this config.json (shape {})", source,
                        t.name, c.model_type, shape_str(t.shape));
    const TensorSpec& spec = (*expected)[it->second];
    if (t.shape != spec.shape)
      return make_error(ErrorCode::kCorruptData, "{}: tensor '{}' has shape {}, config.json implies {}", source,
                        t.name, shape_str(t.shape), shape_str(spec.shape));
    seen[it->second] = 1;
    ++out.tensors;
    out.bytes += int64_t(t.nbytes);
    files.insert(t.file);
    TensorSpec h = spec;
    h.shape = t.shape;
    if (spec.role == TensorRole::kMtp) {
      out.has_mtp = true;
      mtp.push_back(std::move(h));
    } else if (spec.role == TensorRole::kFp8Scale) {
      out.has_fp8_scales = true;
    } else {
      main.push_back(std::move(h));
    }
  }
  for (size_t i = 0; i < expected->size(); ++i) {
    const TensorSpec& spec = (*expected)[i];
    // The MTP module is optional, and so are its FP8 scales (checkpoints differ on whether
    // eh_proj is quantized).
    const bool mtp_part = spec.role == TensorRole::kMtp || spec.layer >= c.num_hidden_layers;
    if (!seen[i] && !mtp_part)
      return make_error(ErrorCode::kCorruptData, "{}: tensor '{}' ({}) is missing; config.json implies it", source,
                        spec.name, shape_str(spec.shape));
  }
  out.files = int64_t(files.size());
  out.params = count_params(c, main, mtp);
  return out;
}

// ------------------------------------------------------------------------------------------
// JSON report

json model_report_json(const ModelConfig& c, const std::vector<TensorSpec>& tensors,
                       const ParamCounts& params, const std::vector<const GpuSpec*>& gpus, int64_t ctx) {
  json j;
  j["model_type"] = c.model_type;
  j["architectures"] = c.architectures;
  j["is_moe"] = c.is_moe();
  j["num_layers"] = c.num_hidden_layers;
  j["num_moe_layers"] = c.num_moe_layers();
  j["num_dense_layers"] = c.num_hidden_layers - c.num_moe_layers();
  j["hidden_size"] = c.hidden_size;
  j["vocab_size"] = c.vocab_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_experts"] = c.num_experts;
  j["num_shared_experts"] = c.num_shared_experts;
  j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
  j["experts_per_token"] = c.num_experts_per_tok;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = c.torch_dtype;
  if (arch_is_deepseek(c.arch)) {
    j["first_k_dense_replace"] = c.first_k_dense_replace;
    j["moe_layer_freq"] = c.moe_layer_freq;
  } else if (c.arch == Arch::kQwen2Moe || c.arch == Arch::kQwen3Moe) {
    j["decoder_sparse_step"] = c.decoder_sparse_step;
    j["mlp_only_layers"] = c.mlp_only_layers;
  }

  json att;
  att["kind"] = c.attention_kind == AttentionKind::kMla ? "mla" : "gqa";
  att["num_heads"] = c.num_attention_heads;
  att["num_kv_heads"] = c.num_key_value_heads;
  att["head_dim"] = c.head_dim;
  att["qk_norm"] = c.qk_norm;
  att["qkv_bias"] = c.qkv_bias || c.attention_bias;
  att["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
  if (c.attention_kind == AttentionKind::kMla) {
    att["q_lora_rank"] = c.q_lora_rank ? json(*c.q_lora_rank) : json(nullptr);
    att["kv_lora_rank"] = c.kv_lora_rank;
    att["qk_nope_head_dim"] = c.qk_nope_head_dim;
    att["qk_rope_head_dim"] = c.qk_rope_head_dim;
    att["v_head_dim"] = c.v_head_dim;
  }
  json rope;
  rope["theta"] = c.rope_theta;
  rope["scaling"] = rope_scaling_type_name(c.rope_scaling.type);
  if (c.rope_scaling.type != RopeScalingType::kNone) rope["factor"] = c.rope_scaling.factor;
  att["rope"] = rope;
  j["attention"] = att;

  if (c.is_moe()) {
    json rt;
    rt["scoring"] = scoring_func_name(c.scoring_func);
    rt["topk_method"] = topk_method_name(c.topk_method);
    rt["norm_topk_prob"] = c.norm_topk_prob;
    rt["n_group"] = c.n_group;
    rt["topk_group"] = c.topk_group;
    rt["routed_scaling_factor"] = c.routed_scaling_factor;
    rt["e_score_correction_bias"] = c.e_score_correction_bias;
    rt["shared_expert_gate"] = c.shared_expert_gate;
    j["routing"] = rt;
  } else {
    j["routing"] = nullptr;
  }
  if (c.fp8) j["quantization"] = {{"method", "fp8"}, {"weight_block_size", {c.fp8->block_n, c.fp8->block_k}}};
  else j["quantization"] = nullptr;

  j["params_total"] = params.total;
  j["params_active"] = params.active;
  j["params"] = {{"embedding", params.embedding},     {"lm_head", params.lm_head},
                 {"attention", params.attention},     {"norms", params.norms},
                 {"router", params.router},           {"routed_experts", params.routed_experts},
                 {"routed_experts_active", params.routed_experts_active},
                 {"shared_experts", params.shared_experts}, {"dense_mlp", params.dense_mlp},
                 {"mtp_excluded", params.mtp}};
  WeightBytes wb = weight_bytes(c, tensors);
  j["weight_bytes"] = {{"bf16", wb.bf16}, {"fp8", wb.fp8}};
  KvBytes kv = kv_bytes_per_token(c);
  j["kv_bytes_per_token"] = {{"bf16", kv.bf16}, {"fp8", kv.fp8}};

  json fit;
  fit["ctx"] = ctx;
  fit["memory_fraction"] = kGpuMemoryFraction;
  fit["reserve_bytes_per_gpu"] = kActivationReserveBytes;
  json rec;
  for (const GpuSpec* g : gpus) {
    json rows = json::array();
    for (int n : {1, 2, 4, 8}) {
      for (Precision p : {Precision::kBf16, Precision::kFp8Weights, Precision::kFp8WeightsFp8Kv}) {
        FitResult f = fit_on_gpus(c, tensors, *g, n, p, ctx);
        rows.push_back({{"gpus", n},
                        {"precision", precision_name(p)},
                        {"weight_bytes_per_gpu", f.weight_bytes_per_gpu},
                        {"kv_tokens", f.kv_tokens},
                        {"max_batch", f.max_batch},
                        {"fits", f.fits}});
      }
    }
    fit[g->key] = {{"gpu", g->name}, {"memory_bytes", g->memory_bytes}, {"configs", rows}};
    LayoutRecommendation r = recommend_layout(c, tensors, *g, ctx);
    rec[g->key] = {{"fits", r.fits},
                   {"gpus", r.gpus},
                   {"precision", precision_name(r.precision)},
                   {"tp_attention", r.tp_attention},
                   {"ep_experts", r.ep_experts},
                   {"max_batch", r.max_batch},
                   {"summary", r.summary},
                   {"warnings", r.warnings}};
  }
  j["fit"] = fit;
  j["recommended"] = rec;
  json warn = json::object();
  for (int tp : {2, 4, 8}) warn[std::to_string(tp)] = fp8_tp_warnings(c, tp, true);
  j["fp8_tp_warnings"] = warn;
  return j;
}

}  // namespace moeopt
