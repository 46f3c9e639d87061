// FP8 block-scale helpers, validation and dispatch (fp8.h).
#include "moeopt/ops/fp8.h"

#include <cmath>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {

float fp8_quantize_group(const float* x, int64_t n, uint8_t* q) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  const float scale = fp8_scale_from_amax(amax);
  for (int64_t i = 0; i < n; ++i) q[i] = f32_to_fp8e4m3(x[i] / scale);
  return scale;
}

Status expect_fp8_block_scale(const char* op, const char* name, const TensorView& weight,
                              const TensorView& scale) {
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "weight", weight, {DType::kF8E4M3}));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "weight", weight, 2));
  MOEOPT_RETURN_IF_ERROR(expect_present(op, name, scale));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, name, scale, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(
      expect_shape(op, name, scale, fp8_scale_shape(weight.shape[0], weight.shape[1])));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, name, scale));
  if (scale.device != weight.device)
    return make_error(ErrorCode::kInvalidArgument, "{}: {} is on another device than the weight",
                      op, name);
  return {};
}

Status quantize_fp8_activations(const Context& ctx, const TensorView& x, const TensorView& x_q,
                                const TensorView& x_scale) {
  constexpr const char* op = "quantize_fp8_activations";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &x_q, &x_scale}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "x", x));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32}));
  const int64_t m = x.shape[0], k = x.shape[1];
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x_q", x_q, {DType::kF8E4M3}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "x_q", x_q, {m, k}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "x_q", x_q));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x_scale", x_scale, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "x_scale", x_scale, {m, fp8_blocks(k)}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "x_scale", x_scale));
  if (dev == Device::kCpu) return cpu::quantize_fp8_activations(ctx, x, x_q, x_scale);
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->quantize_fp8_activations(ctx, x, x_q, x_scale);
}

namespace {

Status check_weight_pair(const char* op, const TensorView& w, const TensorView& w_q,
                         const TensorView& w_scale, Device* dev) {
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&w, &w_q, &w_scale}, dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "w", w, 2));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "w", w));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "w_q", w_q, w.shape));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "w_q", w_q));
  return expect_fp8_block_scale(op, "w_scale", w_q, w_scale);
}

}  // namespace

Status quantize_fp8_weight_blocks(const Context& ctx, const TensorView& w, const TensorView& w_q,
                                  const TensorView& w_scale) {
  constexpr const char* op = "quantize_fp8_weight_blocks";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(check_weight_pair(op, w, w_q, w_scale, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "w", w, {DType::kBF16, DType::kF16, DType::kF32}));
  if (dev == Device::kCpu) return cpu::quantize_fp8_weight_blocks(ctx, w, w_q, w_scale);
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->quantize_fp8_weight_blocks(ctx, w, w_q, w_scale);
}

Status dequantize_fp8_weight_blocks(const Context& ctx, const TensorView& w_q,
                                    const TensorView& w_scale, const TensorView& w) {
  constexpr const char* op = "dequantize_fp8_weight_blocks";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(check_weight_pair(op, w, w_q, w_scale, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "w", w, {DType::kBF16, DType::kF16, DType::kF32}));
  if (dev == Device::kCpu) return cpu::dequantize_fp8_weight_blocks(ctx, w_q, w_scale, w);
  return unsupported_device(op, dev);
}

}  // namespace moeopt::ops
