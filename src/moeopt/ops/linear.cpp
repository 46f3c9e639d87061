// linear: validation and dispatch (linear.h).
#include "moeopt/ops/linear.h"

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"
#include "moeopt/ops/fp8.h"

namespace moeopt::ops {

Status linear(const Context& ctx, const TensorView& x, const LinearWeight& lw,
              const std::optional<TensorView>& bias, const TensorView& y) {
  constexpr const char* op = "linear";
  const TensorView& weight = lw.weight;
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &weight, &y}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "x", x));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "weight", weight, 2));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "weight", weight));
  MOEOPT_RETURN_IF_ERROR(
      expect_dtype(op, "weight", weight, {DType::kBF16, DType::kF16, DType::kF32, DType::kF8E4M3}));
  if (lw.is_fp8()) {
    if (!lw.scale)
      return make_error(ErrorCode::kInvalidArgument,
                        "linear: fp8 weight {} has no block scale (weight_scale_inv)",
                        weight.shape.str());
    MOEOPT_RETURN_IF_ERROR(expect_fp8_block_scale(op, "weight_scale", weight, *lw.scale));
  } else if (lw.scale) {
    return make_error(ErrorCode::kInvalidArgument,
                      "linear: a block scale was given for a {} (not fp8) weight",
                      dtype_name(weight.dtype));
  }
  const int64_t m = x.shape[0], k = x.shape[1], n = weight.shape[0];
  if (weight.shape[1] != k)
    return make_error(ErrorCode::kInvalidArgument,
                      "linear: weight has shape {}, expected [N, {}] (in_features = x's last "
                      "dim)",
                      weight.shape.str(), k);
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "y", y, {m, n}));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "y", y));
  if (bias) {
    if (bias->device != dev)
      return make_error(ErrorCode::kInvalidArgument, "linear: bias is on another device");
    MOEOPT_RETURN_IF_ERROR(expect_shape(op, "bias", *bias, {n}));
    MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "bias", *bias));
    MOEOPT_RETURN_IF_ERROR(
        expect_dtype(op, "bias", *bias, {DType::kBF16, DType::kF16, DType::kF32}));
  }
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "y", y, {DType::kF32}));
    if (lw.is_fp8()) return cpu::linear_fp8(ctx, x, weight, *lw.scale, bias, y);
    return cpu::linear(ctx, x, weight, bias, y);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  if (lw.is_fp8()) return ctx.device_backend->linear_fp8(ctx, x, weight, *lw.scale, bias, y);
  return ctx.device_backend->linear(ctx, x, weight, bias, y);
}

}  // namespace moeopt::ops
