// linear: validation and dispatch (linear.h).
#include "moeopt/ops/linear.h"

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {

Status linear(const Context& ctx, const TensorView& x, const TensorView& weight,
              const std::optional<TensorView>& bias, const TensorView& y) {
  constexpr const char* op = "linear";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &weight, &y}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "x", x));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "weight", weight, 2));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "weight", weight));
  MOEOPT_RETURN_IF_ERROR(
      expect_dtype(op, "weight", weight, {DType::kBF16, DType::kF16, DType::kF32}));
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
    return cpu::linear(ctx, x, weight, bias, y);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->linear(ctx, x, weight, bias, y);
}

}  // namespace moeopt::ops
