// mla_attention_layer: the MLA block of a DeepSeek layer (mla_layer.h).
#include "moeopt/model/arch/mla_layer.h"

#include "moeopt/ops/linear.h"
#include "moeopt/ops/norm.h"
#include "moeopt/ops/scratch.h"

namespace moeopt {
namespace {

constexpr float kLatentNormEps = 1e-6f;  // DeepseekV{2,3}RMSNorm's default

}  // namespace

Status mla_attention_layer(const ops::Context& ctx, const ModelConfig& c, const MlaWeights& w,
                           const MlaLayerInputs& in, const ops::MlaParams& params,
                           const TensorView& out) {
  if (!ctx.arena) return make_error(ErrorCode::kInvalidArgument, "mla_attention_layer: the context has no arena");
  const int64_t T = in.x.shape[0], n = c.num_attention_heads;
  const int64_t dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dv = c.v_head_dim;
  const int64_t r = c.kv_lora_rank;
  const DType act = in.x.dtype;
  auto tmp = [&](const Shape& shape) { return ctx.arena->alloc(act, shape); };

  MOEOPT_ASSIGN_OR_RETURN(TensorView q, tmp({T, n * (dn + dr)}));
  if (w.q_a) {
    MOEOPT_ASSIGN_OR_RETURN(TensorView qa, tmp({T, w.q_a->shape[0]}));
    MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, in.x, {*w.q_a, w.q_a_scale}, w.q_a_bias, qa));
    MOEOPT_RETURN_IF_ERROR(ops::rms_norm(ctx, qa, *w.q_a_norm, kLatentNormEps, qa));
    MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, qa, {*w.q_b, w.q_b_scale}, std::nullopt, q));
  } else {
    MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, in.x, {*w.q, w.q_scale}, w.q_bias, q));
  }
  MOEOPT_ASSIGN_OR_RETURN(TensorView kv, tmp({T, r + dr}));
  MOEOPT_RETURN_IF_ERROR(ops::linear(ctx, in.x, {w.kv_a, w.kv_a_scale}, w.kv_a_bias, kv));
  TensorView c_kv = kv.slice1(0, r), k_rope = kv.slice1(r, r + dr);
  MOEOPT_RETURN_IF_ERROR(ops::rms_norm(ctx, c_kv, w.kv_a_norm, kLatentNormEps, c_kv));
  TensorView q3 = q.reshaped({T, n, dn + dr});
  MOEOPT_RETURN_IF_ERROR(
      ops::mla_rope_apply(ctx, q3, k_rope, in.positions, in.cos_sin, c.rope_interleave));
  MOEOPT_RETURN_IF_ERROR(ops::mla_cache_write(ctx, kv, in.slot_mapping, in.latent_cache));
  MOEOPT_ASSIGN_OR_RETURN(TensorView attn, tmp({T, n, dv}));
  MOEOPT_RETURN_IF_ERROR(ops::mla_attention(ctx, q3, in.latent_cache, w.kv_b, in.block_table,
                                            in.context_lens, in.query_start_loc, params, attn));
  return ops::linear(ctx, attn.reshaped({T, n * dv}), {w.o, w.o_scale}, w.o_bias, out);
}

}  // namespace moeopt
