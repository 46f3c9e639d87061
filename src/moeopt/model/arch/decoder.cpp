// DecoderModel: the shared pre-norm decoder forward (arch/decoder.h).
//
// Per step, for T new tokens and the rows R whose logits are wanted:
//   h        = embed[token_ids]                                    [T, H]
//   per layer l:
//     residual (+)= delta;  x = rms_norm(residual) * input_norm    (layer 0: residual = h)
//     q, k, v  = x·Wq^T (+bq), x·Wk^T (+bk), x·Wv^T (+bv)          [T, Hq*D], [T, Hkv*D] x2
//     q, k     = per-head rms_norm (Qwen3), then RoPE at positions
//     cache    <- k, v at slot_mapping; attn = paged_attention(q)  [T, Hq, D]
//     delta    = attn·Wo^T (+bo)                                   [T, H]
//     residual += delta;  x = rms_norm(residual) * post_attention_norm
//     delta    = MLP(x) (dense) or MoE(x) (+ sigmoid(x·g^T) * shared_expert(x))
//   residual += delta; y = rms_norm(residual[R]) * final_norm; logits = y·lm_head^T  [R, V]
#include "moeopt/model/arch/decoder.h"

#include <cmath>

#include <fmt/format.h>

#include "moeopt/ops/activation.h"
#include "moeopt/ops/attention.h"
#include "moeopt/ops/embedding.h"
#include "moeopt/ops/gated_add.h"
#include "moeopt/ops/linear.h"
#include "moeopt/ops/norm.h"

namespace moeopt {
namespace {

// Columns [begin, end) of a contiguous 2-D f32 buffer, as a row-strided view.
TensorView cols(const TensorView& t, int64_t begin, int64_t end) {
  TensorView v = t;
  v.data = static_cast<char*>(t.data) + begin * int64_t(dtype_size(t.dtype));
  v.shape = Shape({t.shape[0], end - begin});
  v.strides[0] = t.strides[0];
  v.strides[1] = 1;
  return v;
}

// A [T, heads*D] buffer viewed as [T, heads, D] (row stride kept).
TensorView heads_view(const TensorView& t, int64_t heads, int64_t d) {
  TensorView v = t;
  v.shape = Shape({t.shape[0], heads, d});
  v.strides[0] = t.strides[0];
  v.strides[1] = d;
  v.strides[2] = 1;
  return v;
}

TensorView i32_view(const std::vector<int32_t>& v, Shape shape) {
  return TensorView::contiguous(const_cast<int32_t*>(v.data()), DType::kI32, shape);
}

std::optional<TensorView> optional_get(const WeightStore& w, const std::string& name,
                                       bool present, Status* err) {
  if (!present) return std::nullopt;
  auto r = w.get(name);
  if (!r.ok()) {
    *err = r.status();
    return std::nullopt;
  }
  return *r;
}

ops::RopeType rope_type_from(RopeScalingType t) {
  switch (t) {
    case RopeScalingType::kNone: return ops::RopeType::kDefault;
    case RopeScalingType::kLinear: return ops::RopeType::kLinear;
    case RopeScalingType::kDynamic: return ops::RopeType::kDynamic;
    case RopeScalingType::kYarn: return ops::RopeType::kYarn;
    case RopeScalingType::kLlama3: return ops::RopeType::kLlama3;
  }
  return ops::RopeType::kDefault;
}

}  // namespace

ops::RopeConfig rope_config_from(const ModelConfig& c) {
  ops::RopeConfig r;
  r.head_dim = int(c.head_dim);
  r.theta = c.rope_theta;
  r.max_position_embeddings = c.max_position_embeddings;
  const RopeScaling& s = c.rope_scaling;
  r.type = rope_type_from(s.type);
  r.factor = s.factor;
  r.attention_factor = s.attention_factor;
  r.beta_fast = s.beta_fast;
  r.beta_slow = s.beta_slow;
  r.mscale = s.mscale;
  r.mscale_all_dim = s.mscale_all_dim;
  r.original_max_position_embeddings = s.original_max_position_embeddings;
  r.low_freq_factor = s.low_freq_factor;
  r.high_freq_factor = s.high_freq_factor;
  return r;
}

Result<AttentionWeights> load_gqa_attention(const WeightStore& w, const ModelConfig& c, int layer) {
  const std::string p = arch_tensors::layer_prefix(layer) + ".self_attn.";
  AttentionWeights a;
  MOEOPT_ASSIGN_OR_RETURN(a.q, w.get(p + "q_proj.weight"));
  MOEOPT_ASSIGN_OR_RETURN(a.k, w.get(p + "k_proj.weight"));
  MOEOPT_ASSIGN_OR_RETURN(a.v, w.get(p + "v_proj.weight"));
  MOEOPT_ASSIGN_OR_RETURN(a.o, w.get(p + "o_proj.weight"));
  Status err;
  bool qkv_bias = c.qkv_bias || c.attention_bias;
  a.q_bias = optional_get(w, p + "q_proj.bias", qkv_bias, &err);
  a.k_bias = optional_get(w, p + "k_proj.bias", qkv_bias, &err);
  a.v_bias = optional_get(w, p + "v_proj.bias", qkv_bias, &err);
  a.o_bias = optional_get(w, p + "o_proj.bias", c.attention_bias, &err);
  a.q_norm = optional_get(w, p + "q_norm.weight", c.qk_norm, &err);
  a.k_norm = optional_get(w, p + "k_norm.weight", c.qk_norm, &err);
  MOEOPT_RETURN_IF_ERROR(err);
  return a;
}

Result<SwigluWeights> load_swiglu(const WeightStore& w, const std::string& prefix,
                                  bool mixtral_names) {
  SwigluWeights s;
  MOEOPT_ASSIGN_OR_RETURN(s.gate, w.get(prefix + (mixtral_names ? ".w1.weight" : ".gate_proj.weight")));
  MOEOPT_ASSIGN_OR_RETURN(s.up, w.get(prefix + (mixtral_names ? ".w3.weight" : ".up_proj.weight")));
  MOEOPT_ASSIGN_OR_RETURN(s.down, w.get(prefix + (mixtral_names ? ".w2.weight" : ".down_proj.weight")));
  return s;
}

Result<ops::ExpertWeights> load_experts(const WeightStore& w, const std::string& moe_prefix,
                                        int64_t num_experts, bool mixtral_names) {
  std::vector<TensorView> gate, up, down;
  for (int64_t e = 0; e < num_experts; ++e) {
    MOEOPT_ASSIGN_OR_RETURN(SwigluWeights s,
                            load_swiglu(w, fmt::format("{}.experts.{}", moe_prefix, e), mixtral_names));
    gate.push_back(s.gate);
    up.push_back(s.up);
    down.push_back(s.down);
  }
  ops::ExpertWeights ew = ops::ExpertWeights::per_expert(std::move(gate), std::move(up), std::move(down));
  MOEOPT_RETURN_IF_ERROR(ops::validate_expert_weights("load_experts", ew));
  return ew;
}

DecoderModel::DecoderModel(ModelConfig config, WeightStore store, DecoderWeights weights)
    : config_(std::move(config)), store_(std::move(store)), w_(std::move(weights)),
      rope_(rope_config_from(config_)) {}

KvLayout DecoderModel::kv_layout() const {
  return {config_.num_hidden_layers, config_.num_key_value_heads, config_.head_dim};
}

Status DecoderModel::ensure_rope_table(int64_t max_position) {
  // Dynamic NTK rescales with the sequence length, so its table is rebuilt as positions grow
  // (transformers' dynamic_rope_update); the other types are fixed and built once.
  int64_t want = std::max<int64_t>(max_position + 1, config_.max_position_embeddings);
  bool dynamic = rope_.type == ops::RopeType::kDynamic;
  if (cos_sin_positions_ >= want && !(dynamic && max_position + 1 > config_.max_position_embeddings))
    return {};
  if (dynamic) want = std::max(want, cos_sin_positions_);
  cos_sin_ = HostTensor(DType::kF32, {want, rope_.rotary_dim()});
  MOEOPT_RETURN_IF_ERROR(
      ops::rope_build_cos_sin(rope_, dynamic ? max_position + 1 : 0, cos_sin_.view()));
  cos_sin_positions_ = want;
  return {};
}

Status DecoderModel::forward(const ops::Context& ctx, const ForwardBatch& b,
                             const std::vector<LayerKv>& kv, const TensorView& logits) {
  const ModelConfig& c = config_;
  const int64_t T = b.num_tokens(), S = b.num_seqs(), R = int64_t(b.logits_rows.size());
  const int64_t H = c.hidden_size, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads,
                D = c.head_dim;
  const float eps = float(c.rms_norm_eps);
  if (int64_t(kv.size()) != c.num_hidden_layers)
    return make_error(ErrorCode::kInvalidArgument, "forward: {} KV layers given, model has {}",
                      kv.size(), c.num_hidden_layers);
  if (logits.ndim() != 2 || logits.shape[0] != R || logits.shape[1] != c.vocab_size)
    return make_error(ErrorCode::kInvalidArgument, "forward: logits has shape {}, expected [{}, {}]",
                      logits.shape.str(), R, c.vocab_size);
  if (T == 0) return {};
  int32_t max_pos = 0;
  for (int32_t p : b.positions) max_pos = std::max(max_pos, p);
  MOEOPT_RETURN_IF_ERROR(ensure_rope_table(max_pos));

  TensorView ids = i32_view(b.token_ids, {T});
  TensorView positions = i32_view(b.positions, {T});
  TensorView slots = i32_view(b.slot_mapping, {T});
  TensorView qsl = i32_view(b.query_start_loc, {S + 1});
  TensorView ctx_lens = i32_view(b.context_lens, {S});
  TensorView block_table = i32_view(b.block_table, {S, b.max_blocks_per_seq});

  HostTensor residual(DType::kF32, {T, H}), x(DType::kF32, {T, H}), delta(DType::kF32, {T, H});
  HostTensor qkv(DType::kF32, {T, (Hq + 2 * Hkv) * D}), attn(DType::kF32, {T, Hq, D});
  MOEOPT_RETURN_IF_ERROR(ops::embedding(ctx, w_.embed, ids, residual.view()));

  for (size_t l = 0; l < w_.layers.size(); ++l) {
    const DecoderLayerWeights& L = w_.layers[l];
    if (l == 0) {
      MOEOPT_RETURN_IF_ERROR(ops::rms_norm(ctx, residual.view(), L.input_norm, eps, x.view()));
    } else {
      MOEOPT_RETURN_IF_ERROR(
          ops::add_rms_norm(ctx, delta.view(), residual.view(), L.input_norm, eps, x.view()));
    }
    // Attention. q | k | v live side by side in one [T, (Hq + 2 Hkv) D] buffer.
    TensorView q = cols(qkv.view(), 0, Hq * D);
    TensorView k = cols(qkv.view(), Hq * D, (Hq + Hkv) * D);
    TensorView v = cols(qkv.view(), (Hq + Hkv) * D, (Hq + 2 * Hkv) * D);
    MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x.view(), L.attn.q, L.attn.q_bias, q));
    MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x.view(), L.attn.k, L.attn.k_bias, k));
    MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x.view(), L.attn.v, L.attn.v_bias, v));
    TensorView q3 = heads_view(q, Hq, D), k3 = heads_view(k, Hkv, D), v3 = heads_view(v, Hkv, D);
    if (L.attn.q_norm) {
      MOEOPT_RETURN_IF_ERROR(ops::rms_norm_per_head(ctx, q3, *L.attn.q_norm, eps, q3));
      MOEOPT_RETURN_IF_ERROR(ops::rms_norm_per_head(ctx, k3, *L.attn.k_norm, eps, k3));
    }
    MOEOPT_RETURN_IF_ERROR(ops::rope_apply(ctx, q3, k3, positions, cos_sin_.view()));
    MOEOPT_RETURN_IF_ERROR(ops::kv_cache_write(ctx, k3, v3, slots, kv[l].k, kv[l].v));
    ops::AttentionParams ap;
    ap.sliding_window = L.sliding_window;
    MOEOPT_RETURN_IF_ERROR(ops::paged_attention(ctx, q3, kv[l].k, kv[l].v, block_table, ctx_lens,
                                                qsl, ap, attn.view()));
    MOEOPT_RETURN_IF_ERROR(
        ops::linear(ctx, attn.view().reshaped({T, Hq * D}), L.attn.o, L.attn.o_bias, delta.view()));
    MOEOPT_RETURN_IF_ERROR(
        ops::add_rms_norm(ctx, delta.view(), residual.view(), L.post_attention_norm, eps, x.view()));

    // Feed-forward: dense SwiGLU or MoE (+ gated shared expert).
    auto swiglu = [&](const SwigluWeights& s, const TensorView& out) -> Status {
      const int64_t W = s.gate.shape[0];
      HostTensor gu(DType::kF32, {T, 2 * W}), act(DType::kF32, {T, W});
      MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x.view(), s.gate, std::nullopt, cols(gu.view(), 0, W)));
      MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x.view(), s.up, std::nullopt, cols(gu.view(), W, 2 * W)));
      MOEOPT_RETURN_IF_ERROR(ops::silu_and_mul(ctx, gu.view(), act.view()));
      return ops::linear(ctx, act.view(), s.down, std::nullopt, out);
    };
    if (L.mlp) {
      MOEOPT_RETURN_IF_ERROR(swiglu(*L.mlp, delta.view()));
    } else {
      const MoeBlockWeights& m = *L.moe;
      HostTensor router_logits(DType::kF32, {T, m.router.shape[0]});
      MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x.view(), m.router, std::nullopt, router_logits.view()));
      MOEOPT_RETURN_IF_ERROR(
          ops::moe_forward(ctx, x.view(), router_logits.view(), m.experts, m.params, delta.view()));
      if (b.expert_token_counts) {
        // Routing statistics only: route once more (cheap next to the experts) and count.
        const int64_t E = m.router.shape[0], k = m.params.route.top_k;
        HostTensor ids(DType::kI32, {T, k}), wts(DType::kF32, {T, k});
        MOEOPT_RETURN_IF_ERROR(ops::moe_route(ctx, router_logits.view(), m.params.route, ids.view(), wts.view()));
        int64_t* row = b.expert_token_counts + int64_t(l) * E;
        for (int64_t i = 0; i < T * k; ++i) ++row[ids.ptr<int32_t>()[i]];
      }
      if (m.shared) {
        HostTensor shared(DType::kF32, {T, H}), gate(DType::kF32, {T, 1});
        MOEOPT_RETURN_IF_ERROR(swiglu(*m.shared, shared.view()));
        MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x.view(), *m.shared_gate, std::nullopt, gate.view()));
        MOEOPT_RETURN_IF_ERROR(ops::sigmoid_gated_add(ctx, shared.view(), gate.view(), delta.view()));
      }
    }
  }
  // Final norm and LM head on the requested rows only.
  if (R == 0) return {};
  MOEOPT_RETURN_IF_ERROR(ops::add_rms_norm(ctx, delta.view(), residual.view(), w_.final_norm, eps,
                                           x.view()));
  HostTensor rows(DType::kF32, {R, H});
  MOEOPT_RETURN_IF_ERROR(ops::embedding(ctx, x.view(), i32_view(b.logits_rows, {R}), rows.view()));
  return ops::linear(ctx, rows.view(), w_.lm_head, std::nullopt, logits);
}

}  // namespace moeopt
