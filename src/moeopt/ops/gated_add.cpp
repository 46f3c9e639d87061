// sigmoid_gated_add, add_into: validation and dispatch (gated_add.h).
#include "moeopt/ops/gated_add.h"

#include "moeopt/backend/cpu/cpu_gated_add.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {

Status sigmoid_gated_add(const Context& ctx, const TensorView& x, const TensorView& gate,
                         const TensorView& out) {
  constexpr const char* op = "sigmoid_gated_add";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &gate, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "x", x));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "gate", gate, {x.shape[0], 1}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, x.shape));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out", out));
  if (dev != Device::kCpu) {
    if (!ctx.device_backend) return unsupported_device(op, dev);
    return ctx.device_backend->sigmoid_gated_add(ctx, x, gate, out);
  }
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "gate", gate, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
  return cpu::sigmoid_gated_add(ctx, x, gate, out);
}

Status add_into(const Context& ctx, const TensorView& x, const TensorView& out) {
  constexpr const char* op = "add_into";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "x", x));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, x.shape));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out", out));
  if (dev != Device::kCpu)
    return make_error(ErrorCode::kUnsupported, "add_into: runs on the CPU backend only for now");
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
  return cpu::add_into(ctx, x, out);
}

}  // namespace moeopt::ops
