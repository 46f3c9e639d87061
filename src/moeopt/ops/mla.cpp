// MLA ops: validation and dispatch (mla.h). Checks here are about shapes and dtypes; the CPU
// backend also checks the data-dependent indices (slots, block table, query_start_loc).
#include "moeopt/ops/mla.h"

#include <cmath>

#include "moeopt/backend/cpu/cpu_mla.h"
#include "moeopt/ops/check.h"

namespace moeopt::ops {
namespace {

Status check_latent_cache(const char* op, const TensorView& cache) {
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "latent_cache", cache, 4));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "latent_cache", cache));
  MOEOPT_RETURN_IF_ERROR(
      expect_dtype(op, "latent_cache", cache, {DType::kF32, DType::kBF16, DType::kF16}));
  if (cache.shape[1] <= 0 || cache.shape[2] != 1 || cache.shape[3] <= 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: latent_cache has shape {}, expected [num_blocks, block_size > 0, 1, "
                      "kv_lora_rank + qk_rope_head_dim]",
                      op, cache.shape.str());
  return {};
}

// MLA runs on the CPU reference only; other devices get one clear line.
Status cpu_only(const char* op, Device dev) {
  if (dev == Device::kCpu) return {};
  return make_error(ErrorCode::kUnsupported,
                    "{}: MLA attention (DeepSeek) runs on the CPU backend only for now", op);
}

}  // namespace

float mla_softmax_scale(int64_t qk_head_dim, const RopeConfig& rope) {
  double scale = 1.0 / std::sqrt(double(qk_head_dim));
  if (rope.type != RopeType::kDefault && rope.mscale_all_dim && *rope.mscale_all_dim != 0.0) {
    // yarn_get_mscale(factor, mscale_all_dim)
    const double m = rope.factor <= 1.0 ? 1.0 : 0.1 * *rope.mscale_all_dim * std::log(rope.factor) + 1.0;
    scale *= m * m;
  }
  return float(scale);
}

Status mla_cache_write(const Context& ctx, const TensorView& latent,
                       const TensorView& slot_mapping, const TensorView& latent_cache) {
  constexpr const char* op = "mla_cache_write";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&latent, &slot_mapping, &latent_cache}, &dev));
  MOEOPT_RETURN_IF_ERROR(cpu_only(op, dev));
  MOEOPT_RETURN_IF_ERROR(check_latent_cache(op, latent_cache));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "latent", latent, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "latent", latent));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "latent", latent, {DType::kF32}));
  const int64_t t = latent.shape[0];
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "latent", latent, {t, latent_cache.shape[3]}));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "slot_mapping", slot_mapping, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "slot_mapping", slot_mapping, {t}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "slot_mapping", slot_mapping));
  return cpu::mla_cache_write(ctx, latent, slot_mapping, latent_cache);
}

Status mla_rope_apply(const Context& ctx, const TensorView& q, const TensorView& k_rope,
                      const TensorView& positions, const TensorView& cos_sin, bool interleaved) {
  constexpr const char* op = "mla_rope_apply";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&q, &k_rope, &positions, &cos_sin}, &dev));
  MOEOPT_RETURN_IF_ERROR(cpu_only(op, dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "q", q, 3));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "q", q));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "k_rope", k_rope, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "k_rope", k_rope));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "q", q, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "k_rope", k_rope, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "cos_sin", cos_sin, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "cos_sin", cos_sin, 2));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "cos_sin", cos_sin));
  const int64_t t = q.shape[0], dr = k_rope.shape[1];
  if (dr <= 0 || dr % 2 != 0 || dr > q.shape[2] || cos_sin.shape[1] != dr)
    return make_error(ErrorCode::kInvalidArgument,
                      "mla_rope_apply: k_rope has {} dims and cos_sin {}: expected the same even "
                      "qk_rope_head_dim, at most q's head dim {}",
                      dr, cos_sin.shape[1], q.shape[2]);
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "k_rope", k_rope, {t, dr}));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "positions", positions, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "positions", positions, {t}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "positions", positions));
  return cpu::mla_rope_apply(ctx, q, k_rope, positions, cos_sin, interleaved);
}

Status mla_attention(const Context& ctx, const TensorView& q, const TensorView& latent_cache,
                     const TensorView& kv_b, const TensorView& block_table,
                     const TensorView& context_lens, const TensorView& query_start_loc,
                     const MlaParams& p, const TensorView& out) {
  constexpr const char* op = "mla_attention";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(
      op, {&q, &latent_cache, &kv_b, &block_table, &context_lens, &query_start_loc, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(cpu_only(op, dev));
  MOEOPT_RETURN_IF_ERROR(check_latent_cache(op, latent_cache));
  const int64_t dn = p.qk_nope_head_dim, dr = p.qk_rope_head_dim, dv = p.v_head_dim;
  const int64_t r = latent_cache.shape[3] - dr;
  if (dn < 0 || dr <= 0 || dv <= 0 || r <= 0 || !(p.scale > 0.0f))
    return make_error(ErrorCode::kInvalidArgument,
                      "mla_attention: qk_nope {} / qk_rope {} / v {} head dims, latent rank {} "
                      "and scale {} must be positive (qk_nope may be 0)",
                      dn, dr, dv, r, p.scale);
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "q", q, 3));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "q", q));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "q", q, {DType::kF32}));
  const int64_t t = q.shape[0], n = q.shape[1];
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "q", q, {t, n, dn + dr}));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "out", out, 3));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out", out));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, {t, n, dv}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "kv_b", kv_b));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "kv_b", kv_b, {DType::kF32, DType::kBF16, DType::kF16}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "kv_b", kv_b, {n * (dn + dv), r}));
  MOEOPT_RETURN_IF_ERROR(expect_paged_metadata(op, block_table, context_lens, query_start_loc));
  return cpu::mla_attention(ctx, q, latent_cache, kv_b, block_table, context_lens,
                            query_start_loc, p, out);
}

}  // namespace moeopt::ops
