// kv_cache_write / paged_attention: validation and dispatch (attention.h). Checks here are
// about shapes and dtypes; the CPU backend also checks the data-dependent indices.
#include "moeopt/ops/attention.h"

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {
namespace {

Status check_caches(const char* op, const TensorView& k_cache, const TensorView& v_cache,
                    const KvScales& scales) {
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "k_cache", k_cache, 4));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "k_cache", k_cache));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "v_cache", v_cache));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "v_cache", v_cache, k_cache.shape));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "k_cache", k_cache,
                                      {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3}));
  if (v_cache.dtype != k_cache.dtype)
    return make_error(ErrorCode::kInvalidArgument, "{}: v_cache has dtype {}, k_cache has {}",
                      op, dtype_name(v_cache.dtype), dtype_name(k_cache.dtype));
  if (k_cache.shape[1] <= 0)
    return make_error(ErrorCode::kInvalidArgument, "{}: block_size must be > 0", op);
  const bool fp8 = k_cache.dtype == DType::kF8E4M3;
  if (!fp8) {
    if (!scales.empty())
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: KV scales are given for a {} cache (only fp8_e4m3 caches have them)",
                        op, dtype_name(k_cache.dtype));
    return {};
  }
  if (scales.k.data == nullptr || scales.v.data == nullptr)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: an fp8_e4m3 cache needs its k and v scales", op);
  const Shape ss{k_cache.shape[0], k_cache.shape[1], k_cache.shape[2]};
  for (const auto& [name, t] : {std::pair{"k_scale", &scales.k}, std::pair{"v_scale", &scales.v}}) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, name, *t, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_shape(op, name, *t, ss));
    MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, name, *t));
    if (t->device != k_cache.device)
      return make_error(ErrorCode::kInvalidArgument, "{}: {} is not on the cache's device", op,
                        name);
  }
  return {};
}

}  // namespace

Status kv_cache_write(const Context& ctx, const TensorView& k, const TensorView& v,
                      const TensorView& slot_mapping, const TensorView& k_cache,
                      const TensorView& v_cache, const KvScales& scales) {
  constexpr const char* op = "kv_cache_write";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(
      expect_same_device(op, {&k, &v, &slot_mapping, &k_cache, &v_cache}, &dev));
  MOEOPT_RETURN_IF_ERROR(check_caches(op, k_cache, v_cache, scales));
  const int64_t hkv = k_cache.shape[2], d = k_cache.shape[3];
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "k", k, 3));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "k", k));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "v", v));
  const int64_t t = k.shape[0];
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "k", k, {t, hkv, d}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "v", v, {t, hkv, d}));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "slot_mapping", slot_mapping, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "slot_mapping", slot_mapping, {t}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "slot_mapping", slot_mapping));
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "k", k, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "v", v, {DType::kF32}));
    return cpu::kv_cache_write(ctx, k, v, slot_mapping, k_cache, v_cache, scales);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->kv_cache_write(ctx, k, v, slot_mapping, k_cache, v_cache, scales);
}

Status paged_attention(const Context& ctx, const TensorView& q, const TensorView& k_cache,
                       const TensorView& v_cache, const TensorView& block_table,
                       const TensorView& context_lens, const TensorView& query_start_loc,
                       const AttentionParams& params, const TensorView& out,
                       const KvScales& scales) {
  constexpr const char* op = "paged_attention";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(
      op, {&q, &k_cache, &v_cache, &block_table, &context_lens, &query_start_loc, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(check_caches(op, k_cache, v_cache, scales));
  const int64_t hkv = k_cache.shape[2], d = k_cache.shape[3];
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "q", q, 3));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "q", q));
  const int64_t t = q.shape[0], hq = q.shape[1];
  if (q.shape[2] != d)
    return make_error(ErrorCode::kInvalidArgument,
                      "paged_attention: q has shape {}, head_dim differs from the cache's {}",
                      q.shape.str(), d);
  if (hq <= 0 || hkv <= 0 || hq % hkv != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "paged_attention: q has {} heads, not a multiple of the cache's {} kv "
                      "heads",
                      hq, hkv);
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, q.shape));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out", out));
  MOEOPT_RETURN_IF_ERROR(expect_paged_metadata(op, block_table, context_lens, query_start_loc));
  if (params.sliding_window < 0 || !(params.scale >= 0.0f))
    return make_error(ErrorCode::kInvalidArgument,
                      "paged_attention: sliding_window {} and scale {} must be >= 0",
                      params.sliding_window, params.scale);
  (void)t;
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "q", q, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
    return cpu::paged_attention(ctx, q, k_cache, v_cache, block_table, context_lens,
                                query_start_loc, params, out, scales);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->paged_attention(ctx, q, k_cache, v_cache, block_table,
                                             context_lens, query_start_loc, params, out, scales);
}

}  // namespace moeopt::ops
