// silu_and_mul / silu: validation and dispatch (activation.h).
#include "moeopt/ops/activation.h"

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {

Status silu_and_mul(const Context& ctx, const TensorView& x, const TensorView& out) {
  constexpr const char* op = "silu_and_mul";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "x", x));
  if (x.shape[1] % 2 != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "silu_and_mul: x has shape {}, expected an even last dim (gate | up)",
                      x.shape.str());
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, {x.shape[0], x.shape[1] / 2}));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out", out));
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
    return cpu::silu_and_mul(ctx, x, out);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->silu_and_mul(ctx, x, out);
}

Status silu(const Context& ctx, const TensorView& x, const TensorView& out) {
  constexpr const char* op = "silu";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "x", x));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, x.shape));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out", out));
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
    return cpu::silu(ctx, x, out);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->silu(ctx, x, out);
}

}  // namespace moeopt::ops
