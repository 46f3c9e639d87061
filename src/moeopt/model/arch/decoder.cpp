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
// DeepSeek layers replace the attention with MLA (arch/mla_layer.h) and add their shared
// experts ungated.
#include "moeopt/model/arch/decoder.h"
#include "moeopt/model/arch/mla_layer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "moeopt/ops/activation.h"
#include "moeopt/ops/attention.h"
#include "moeopt/ops/embedding.h"
#include "moeopt/ops/fp8.h"
#include "moeopt/ops/gated_add.h"
#include "moeopt/ops/linear.h"
#include "moeopt/ops/mla.h"
#include "moeopt/ops/device_backend.h"
#include "moeopt/ops/moe.h"
#include "moeopt/ops/norm.h"
#include "moeopt/ops/scratch.h"

namespace moeopt {
namespace {

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
  r.head_dim = int(c.attention_kind == AttentionKind::kMla ? c.qk_rope_head_dim : c.head_dim);
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
  a.q_scale = w.fp8_scale(p + "q_proj.weight");
  a.k_scale = w.fp8_scale(p + "k_proj.weight");
  a.v_scale = w.fp8_scale(p + "v_proj.weight");
  a.o_scale = w.fp8_scale(p + "o_proj.weight");
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
  const std::string g = prefix + (mixtral_names ? ".w1.weight" : ".gate_proj.weight");
  const std::string u = prefix + (mixtral_names ? ".w3.weight" : ".up_proj.weight");
  const std::string d = prefix + (mixtral_names ? ".w2.weight" : ".down_proj.weight");
  MOEOPT_ASSIGN_OR_RETURN(s.gate, w.get(g));
  MOEOPT_ASSIGN_OR_RETURN(s.up, w.get(u));
  MOEOPT_ASSIGN_OR_RETURN(s.down, w.get(d));
  s.gate_scale = w.fp8_scale(g);
  s.up_scale = w.fp8_scale(u);
  s.down_scale = w.fp8_scale(d);
  return s;
}

Result<ops::ExpertWeights> load_experts(const WeightStore& w, const std::string& moe_prefix,
                                        int64_t num_experts, bool mixtral_names) {
  if (const ops::ExpertWeights* st = w.stacked_experts(moe_prefix)) return *st;
  std::vector<TensorView> gate, up, down, gate_s, up_s, down_s;
  for (int64_t e = 0; e < num_experts; ++e) {
    MOEOPT_ASSIGN_OR_RETURN(SwigluWeights s,
                            load_swiglu(w, fmt::format("{}.experts.{}", moe_prefix, e), mixtral_names));
    gate.push_back(s.gate);
    up.push_back(s.up);
    down.push_back(s.down);
    if (s.gate_scale) gate_s.push_back(*s.gate_scale);
    if (s.up_scale) up_s.push_back(*s.up_scale);
    if (s.down_scale) down_s.push_back(*s.down_scale);
  }
  ops::ExpertWeights ew = ops::ExpertWeights::per_expert_fp8(
      std::move(gate), std::move(up), std::move(down), std::move(gate_s), std::move(up_s),
      std::move(down_s));
  MOEOPT_RETURN_IF_ERROR(ops::validate_expert_weights("load_experts", ew));
  return ew;
}

namespace {

// `b` starts where `a` ends (same dtype, device, contiguous): they can be read as one.
bool adjacent(const TensorView& a, const TensorView& b) {
  return a.dtype == b.dtype && a.device == b.device && a.is_contiguous() && b.is_contiguous() &&
         static_cast<const char*>(a.data) + a.nbytes() == static_cast<const char*>(b.data);
}

// Rows of the given 2-D (or 1-D) tensors as one tensor, if they are adjacent in order.
std::optional<TensorView> concat_rows(std::initializer_list<const TensorView*> parts) {
  const TensorView* prev = nullptr;
  int64_t rows = 0;
  for (const TensorView* t : parts) {
    if (prev && (!adjacent(*prev, *t) || t->ndim() != prev->ndim() ||
                 (t->ndim() == 2 && t->shape[1] != prev->shape[1])))
      return std::nullopt;
    rows += t->shape[0];
    prev = t;
  }
  const TensorView& first = **parts.begin();
  Shape s = first.shape;
  s[0] = rows;
  return TensorView::contiguous(first.data, first.dtype, s, first.device);
}

// FP8 parts fuse only when their scales are adjacent too and every part but the last ends on
// a 128-row block, so that the fused scale's block rows are the parts' block rows in order.
bool fp8_blocks_align(std::initializer_list<const TensorView*> parts) {
  size_t i = 0;
  for (const TensorView* t : parts)
    if (++i < parts.size() && t->shape[0] % ops::kFp8BlockSize != 0) return false;
  return true;
}

}  // namespace

void fuse_adjacent_weights(DecoderWeights& w) {
  auto fuse_swiglu = [](SwigluWeights& s) {
    if (!s.gate_scale && !s.up_scale) {
      s.gate_up = concat_rows({&s.gate, &s.up});
    } else if (s.gate_scale && s.up_scale && fp8_blocks_align({&s.gate, &s.up})) {
      std::optional<TensorView> fw = concat_rows({&s.gate, &s.up});
      std::optional<TensorView> fs = concat_rows({&*s.gate_scale, &*s.up_scale});
      if (fw && fs) {
        s.gate_up = fw;
        s.gate_up_scale = fs;
      }
    }
  };
  for (DecoderLayerWeights& L : w.layers) {
    AttentionWeights& a = L.attn;
    if (L.mlp) fuse_swiglu(*L.mlp);
    if (L.moe && L.moe->shared) fuse_swiglu(*L.moe->shared);
    if (L.mla) continue;  // no q/k/v to fuse
    const bool fp8 = a.q_scale || a.k_scale || a.v_scale;
    std::optional<TensorView> qkv = concat_rows({&a.q, &a.k, &a.v}), qkv_scale;
    if (fp8) {
      if (!(a.q_scale && a.k_scale && a.v_scale) || !fp8_blocks_align({&a.q, &a.k, &a.v}))
        continue;
      qkv_scale = concat_rows({&*a.q_scale, &*a.k_scale, &*a.v_scale});
      if (!qkv_scale) continue;
    }
    std::optional<TensorView> qkv_bias;
    if (a.q_bias && a.k_bias && a.v_bias) {
      qkv_bias = concat_rows({&*a.q_bias, &*a.k_bias, &*a.v_bias});
      if (!qkv_bias) continue;  // the fused weight needs the fused bias
    }
    a.qkv = qkv;
    a.qkv_scale = qkv_scale;
    a.qkv_bias = qkv_bias;
  }
}

DecoderModel::DecoderModel(ModelConfig config, WeightStore store, DecoderWeights weights)
    : config_(std::move(config)), store_(std::move(store)), w_(std::move(weights)),
      rope_(rope_config_from(config_)) {
  fuse_adjacent_weights(w_);
}

KvLayout DecoderModel::kv_layout() const {
  if (config_.attention_kind == AttentionKind::kMla)  // latent rows, ops/mla.h
    return {config_.num_hidden_layers, 1, config_.kv_lora_rank + config_.qk_rope_head_dim, true};
  return {config_.num_hidden_layers, config_.num_key_value_heads, config_.head_dim};
}

Status DecoderModel::ensure_rope_table(const ops::Context& ctx, int64_t max_position) {
  // Dynamic NTK rescales with the sequence length, so its table is rebuilt as positions grow
  // (transformers' dynamic_rope_update); the other types are fixed and built once.
  int64_t want = std::max<int64_t>(max_position + 1, config_.max_position_embeddings);
  bool dynamic = rope_.type == ops::RopeType::kDynamic;
  if (cos_sin_positions_ < want || (dynamic && max_position + 1 > config_.max_position_embeddings)) {
    if (dynamic) want = std::max(want, cos_sin_positions_);
    cos_sin_ = HostTensor(DType::kF32, {want, rope_.rotary_dim()});
    MOEOPT_RETURN_IF_ERROR(
        ops::rope_build_cos_sin(rope_, dynamic ? max_position + 1 : 0, cos_sin_.view()));
    cos_sin_positions_ = want;
    cos_sin_device_.reset();
  }
  if (w_.embed.device == Device::kCpu || cos_sin_device_) return {};
  ops::DeviceBackend* be = ctx.device_backend;
  MOEOPT_ASSIGN_OR_RETURN(void* p, be->allocate(cos_sin_.nbytes()));
  cos_sin_device_ = std::shared_ptr<void>(p, [be](void* q) { be->release(q); });
  return be->copy_to_device(ctx, p, cos_sin_.ptr<void>(), cos_sin_.nbytes());
}

Status DecoderModel::forward(const ops::Context& ctx, const ForwardBatch& b,
                             const std::vector<LayerKv>& kv, const TensorView& logits) {
  if (b.num_tokens() == 0) return {};
  if (device() == Device::kCpu && !ctx.arena) {
    // The CPU path without an arena: host temporaries owned by this call.
    ops::ScratchArena arena(nullptr, size_t(1) << 20);
    ops::Context c = ctx;
    c.arena = &arena;
    MOEOPT_ASSIGN_OR_RETURN(BatchTensors t, prepare(c, b));
    return run(c, b, t, kv, logits);
  }
  MOEOPT_ASSIGN_OR_RETURN(BatchTensors t, prepare(ctx, b));
  return run(ctx, b, t, kv, logits);
}

Result<BatchTensors> DecoderModel::prepare(const ops::Context& ctx, const ForwardBatch& b) {
  const int64_t T = b.num_tokens(), S = b.num_seqs(), R = int64_t(b.logits_rows.size());
  const bool on_device = device() == Device::kCuda;
  if (on_device && (!ctx.device_backend || !ctx.arena || ctx.arena->device() != Device::kCuda))
    return make_error(ErrorCode::kInvalidArgument,
                      "forward: the model is on the GPU; the context needs its device backend and "
                      "a device scratch arena");
  if (!ctx.arena) return make_error(ErrorCode::kInvalidArgument, "prepare: the context has no arena");
  if (int64_t(b.positions.size()) != T || int64_t(b.slot_mapping.size()) != T ||
      int64_t(b.query_start_loc.size()) != S + 1 ||
      int64_t(b.block_table.size()) != S * int64_t(b.max_blocks_per_seq))
    return make_error(ErrorCode::kInvalidArgument, "forward: inconsistent batch vectors");
  int32_t max_pos = 0;
  for (int32_t p : b.positions) max_pos = std::max(max_pos, p);
  MOEOPT_RETURN_IF_ERROR(ensure_rope_table(ctx, max_pos));
  // The batch's index vectors, copied to the device when the model runs there.
  auto indices = [&](const std::vector<int32_t>& v, const Shape& shape) -> Result<TensorView> {
    TensorView host = i32_view(v, shape);
    if (!on_device) return host;
    MOEOPT_ASSIGN_OR_RETURN(TensorView dev, ctx.arena->alloc(DType::kI32, shape));
    MOEOPT_RETURN_IF_ERROR(ctx.device_backend->copy_to_device(ctx, dev.data, host.data, host.nbytes()));
    return dev;
  };
  BatchTensors t;
  MOEOPT_ASSIGN_OR_RETURN(t.token_ids, indices(b.token_ids, {T}));
  MOEOPT_ASSIGN_OR_RETURN(t.positions, indices(b.positions, {T}));
  MOEOPT_ASSIGN_OR_RETURN(t.slot_mapping, indices(b.slot_mapping, {T}));
  MOEOPT_ASSIGN_OR_RETURN(t.query_start_loc, indices(b.query_start_loc, {S + 1}));
  MOEOPT_ASSIGN_OR_RETURN(t.context_lens, indices(b.context_lens, {S}));
  MOEOPT_ASSIGN_OR_RETURN(t.block_table, indices(b.block_table, {S, b.max_blocks_per_seq}));
  MOEOPT_ASSIGN_OR_RETURN(t.logits_rows, indices(b.logits_rows, {R}));
  return t;
}

Status DecoderModel::run(const ops::Context& ctx, const ForwardBatch& b, const BatchTensors& bt,
                         const std::vector<LayerKv>& kv, const TensorView& logits) {
  const ModelConfig& c = config_;
  const int64_t T = b.num_tokens(), S = b.num_seqs(), R = int64_t(b.logits_rows.size());
  const int64_t H = c.hidden_size, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads,
                D = c.head_dim;
  const float eps = float(c.rms_norm_eps);
  const bool on_device = device() == Device::kCuda;
  if (int64_t(kv.size()) != c.num_hidden_layers)
    return make_error(ErrorCode::kInvalidArgument, "forward: {} KV layers given, model has {}",
                      kv.size(), c.num_hidden_layers);
  if (logits.ndim() != 2 || logits.shape[0] != R || logits.shape[1] != c.vocab_size)
    return make_error(ErrorCode::kInvalidArgument, "forward: logits has shape {}, expected [{}, {}]",
                      logits.shape.str(), R, c.vocab_size);
  if (T == 0) return {};
  int32_t max_ctx = 0, max_q = 0;
  for (int32_t n : b.context_lens) max_ctx = std::max(max_ctx, n);
  for (int64_t i = 0; i < S; ++i)
    max_q = std::max(max_q, b.query_start_loc[size_t(i + 1)] - b.query_start_loc[size_t(i)]);
  auto tmp = [&](DType dt, const Shape& shape) { return ctx.arena->alloc(dt, shape); };
  const DType act = on_device ? DType::kBF16 : DType::kF32;
  const TensorView& ids = bt.token_ids;
  const TensorView& positions = bt.positions;
  const TensorView& slots = bt.slot_mapping;
  const TensorView& qsl = bt.query_start_loc;
  const TensorView& ctx_lens = bt.context_lens;
  const TensorView& block_table = bt.block_table;
  const TensorView& logits_rows = bt.logits_rows;
  const TensorView cos_sin =
      on_device ? TensorView::contiguous(cos_sin_device_.get(), DType::kF32, cos_sin_.shape(), Device::kCuda)
                : cos_sin_.view();

  MOEOPT_ASSIGN_OR_RETURN(TensorView residual, tmp(DType::kF32, {T, H}));
  MOEOPT_ASSIGN_OR_RETURN(TensorView x, tmp(act, {T, H}));
  MOEOPT_ASSIGN_OR_RETURN(TensorView delta, tmp(act, {T, H}));
  MOEOPT_ASSIGN_OR_RETURN(TensorView qkv, tmp(act, {T, (Hq + 2 * Hkv) * D}));
  MOEOPT_ASSIGN_OR_RETURN(TensorView attn, tmp(act, {T, Hq, D}));
  MOEOPT_RETURN_IF_ERROR(ops::embedding(ctx, w_.embed, ids, residual));

  TensorView shared_out, shared_gate, router_logits;
  if (c.is_moe()) {
    MOEOPT_ASSIGN_OR_RETURN(router_logits, tmp(DType::kF32, {T, c.num_experts}));
    MOEOPT_ASSIGN_OR_RETURN(shared_out, tmp(act, {T, H}));
    MOEOPT_ASSIGN_OR_RETURN(shared_gate, tmp(DType::kF32, {T, 1}));
  }
  auto swiglu = [&](const SwigluWeights& sw, const TensorView& out) -> Status {
    const int64_t W = sw.gate.shape[0];
    MOEOPT_ASSIGN_OR_RETURN(TensorView g, tmp(act, {T, 2 * W}));
    MOEOPT_ASSIGN_OR_RETURN(TensorView a, tmp(act, {T, W}));
    if (sw.gate_up) {
      MOEOPT_RETURN_IF_ERROR(
          ops::linear(ctx, x, {*sw.gate_up, sw.gate_up_scale}, std::nullopt, g));
    } else {
      MOEOPT_RETURN_IF_ERROR(
          ops::linear(ctx, x, {sw.gate, sw.gate_scale}, std::nullopt, g.slice1(0, W)));
      MOEOPT_RETURN_IF_ERROR(
          ops::linear(ctx, x, {sw.up, sw.up_scale}, std::nullopt, g.slice1(W, 2 * W)));
    }
    MOEOPT_RETURN_IF_ERROR(ops::silu_and_mul(ctx, g, a));
    return ops::linear(ctx, a, {sw.down, sw.down_scale}, std::nullopt, out);
  };

  // Feed-forward of layer l on x into delta: dense SwiGLU or MoE (+ the shared expert, gated
  // by sigmoid(x·g^T) for Qwen2-MoE, ungated for DeepSeek).
  auto feed_forward = [&](const DecoderLayerWeights& L, size_t l) -> Status {
    if (L.mlp) return swiglu(*L.mlp, delta);
    const MoeBlockWeights& m = *L.moe;
    MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x, m.router, std::nullopt, router_logits));
    MOEOPT_RETURN_IF_ERROR(ops::moe_forward(ctx, x, router_logits, m.experts, m.params, delta));
    if (b.expert_token_counts) {
      // Routing statistics only: route once more (cheap next to the experts) and count on
      // the host. On a device that copies the ids back (a sync per layer), so the engine
      // asks for it there only on the steps it is told to (Engine::count_expert_tokens) and
      // the device runner runs those steps eagerly.
      const int64_t E = m.router.shape[0], topk = m.params.route.top_k;
      MOEOPT_ASSIGN_OR_RETURN(TensorView eids, tmp(DType::kI32, {T, topk}));
      MOEOPT_ASSIGN_OR_RETURN(TensorView wts, tmp(DType::kF32, {T, topk}));
      MOEOPT_RETURN_IF_ERROR(ops::moe_route(ctx, router_logits, m.params.route, eids, wts));
      std::vector<int32_t> host_ids(size_t(T * topk));
      if (on_device) {
        MOEOPT_RETURN_IF_ERROR(ctx.device_backend->copy_to_host(ctx, host_ids.data(), eids.data,
                                                                host_ids.size() * 4));
      } else {
        std::copy_n(eids.ptr<int32_t>(), host_ids.size(), host_ids.begin());
      }
      int64_t* row = b.expert_token_counts + int64_t(l) * E;
      for (int32_t e : host_ids) ++row[e];
    }
    if (m.shared) {
      MOEOPT_RETURN_IF_ERROR(swiglu(*m.shared, shared_out));
      if (!m.shared_gate) return ops::add_into(ctx, shared_out, delta);  // DeepSeek: ungated
      MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x, *m.shared_gate, std::nullopt, shared_gate));
      MOEOPT_RETURN_IF_ERROR(ops::sigmoid_gated_add(ctx, shared_out, shared_gate, delta));
    }
    return {};
  };

  // MLA: the absorbed form when every sequence decodes one token (reads only the latent rows),
  // the expanded one for steps with prefill (ops/mla.h).
  ops::MlaParams mla_params;
  mla_params.qk_nope_head_dim = c.qk_nope_head_dim;
  mla_params.qk_rope_head_dim = c.qk_rope_head_dim;
  mla_params.v_head_dim = c.v_head_dim;
  mla_params.scale = ops::mla_softmax_scale(c.qk_head_dim(), rope_);
  mla_params.form = max_q <= 1 ? ops::MlaForm::kAbsorbed : ops::MlaForm::kExpanded;

  for (size_t l = 0; l < w_.layers.size(); ++l) {
    const DecoderLayerWeights& L = w_.layers[l];
    if (l == 0) {
      MOEOPT_RETURN_IF_ERROR(ops::rms_norm(ctx, residual, L.input_norm, eps, x));
    } else {
      MOEOPT_RETURN_IF_ERROR(ops::add_rms_norm(ctx, delta, residual, L.input_norm, eps, x));
    }
    if (L.mla) {  // DeepSeek: latent attention over the latent cache (arch/mla_layer.h)
      MlaLayerInputs in{x, positions, slots, cos_sin, kv[l].k, block_table, ctx_lens, qsl};
      MOEOPT_RETURN_IF_ERROR(mla_attention_layer(ctx, c, *L.mla, in, mla_params, delta));
      MOEOPT_RETURN_IF_ERROR(ops::add_rms_norm(ctx, delta, residual, L.post_attention_norm, eps, x));
      MOEOPT_RETURN_IF_ERROR(feed_forward(L, l));
      continue;
    }
    // Attention. q | k | v live side by side in one [T, (Hq + 2 Hkv) D] buffer.
    TensorView q = qkv.slice1(0, Hq * D);
    TensorView k = qkv.slice1(Hq * D, (Hq + Hkv) * D);
    TensorView v = qkv.slice1((Hq + Hkv) * D, (Hq + 2 * Hkv) * D);
    if (L.attn.qkv) {
      MOEOPT_RETURN_IF_ERROR(
          ops::linear(ctx, x, {*L.attn.qkv, L.attn.qkv_scale}, L.attn.qkv_bias, qkv));
    } else {
      MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x, {L.attn.q, L.attn.q_scale}, L.attn.q_bias, q));
      MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x, {L.attn.k, L.attn.k_scale}, L.attn.k_bias, k));
      MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, x, {L.attn.v, L.attn.v_scale}, L.attn.v_bias, v));
    }
    TensorView q3 = heads_view(q, Hq, D), k3 = heads_view(k, Hkv, D), v3 = heads_view(v, Hkv, D);
    if (L.attn.q_norm && L.attn.q_norm->numel() == D) {  // Qwen3: per head
      MOEOPT_RETURN_IF_ERROR(ops::rms_norm_per_head(ctx, q3, *L.attn.q_norm, eps, q3));
      MOEOPT_RETURN_IF_ERROR(ops::rms_norm_per_head(ctx, k3, *L.attn.k_norm, eps, k3));
    } else if (L.attn.q_norm) {  // OLMoE: over the whole q and k projections
      MOEOPT_RETURN_IF_ERROR(ops::rms_norm(ctx, q, *L.attn.q_norm, eps, q));
      MOEOPT_RETURN_IF_ERROR(ops::rms_norm(ctx, k, *L.attn.k_norm, eps, k));
    }
    MOEOPT_RETURN_IF_ERROR(ops::rope_apply(ctx, q3, k3, positions, cos_sin));
    const ops::KvScales kv_scales{kv[l].k_scale, kv[l].v_scale};  // empty unless fp8
    MOEOPT_RETURN_IF_ERROR(ops::kv_cache_write(ctx, k3, v3, slots, kv[l].k, kv[l].v, kv_scales));
    ops::AttentionParams ap;
    ap.sliding_window = L.sliding_window;
    ap.max_context_len = std::max(max_ctx, b.max_context_len_bound);
    ap.max_query_len = std::max(max_q, b.max_query_len_bound);
    MOEOPT_RETURN_IF_ERROR(ops::paged_attention(ctx, q3, kv[l].k, kv[l].v, block_table, ctx_lens,
                                                qsl, ap, attn, kv_scales));
    MOEOPT_RETURN_IF_ERROR(
        ops::linear(ctx, attn.reshaped({T, Hq * D}), {L.attn.o, L.attn.o_scale}, L.attn.o_bias, delta));
    MOEOPT_RETURN_IF_ERROR(
        ops::add_rms_norm(ctx, delta, residual, L.post_attention_norm, eps, x));

    MOEOPT_RETURN_IF_ERROR(feed_forward(L, l));
  }
  // Final norm and LM head on the requested rows only.
  if (R == 0) return {};
  MOEOPT_RETURN_IF_ERROR(ops::add_rms_norm(ctx, delta, residual, w_.final_norm, eps, x));
  MOEOPT_ASSIGN_OR_RETURN(TensorView rows, tmp(act, {R, H}));
  MOEOPT_RETURN_IF_ERROR(ops::embedding(ctx, x, logits_rows, rows));
  return ops::linear(ctx, rows, w_.lm_head, std::nullopt, logits);
}

}  // namespace moeopt
