// argmax / log_softmax: validation and dispatch (reduce.h).
#include "moeopt/ops/reduce.h"

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {

Status argmax(const Context& ctx, const TensorView& logits, const TensorView& out) {
  constexpr const char* op = "argmax";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&logits, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "logits", logits, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "logits", logits));
  if (logits.shape[1] < 1)
    return make_error(ErrorCode::kInvalidArgument, "argmax: logits has an empty last dim");
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, {logits.shape[0]}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "out", out));
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "logits", logits, {DType::kF32}));
    return cpu::argmax(ctx, logits, out);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->argmax(ctx, logits, out);
}

Status log_softmax(const Context& ctx, const TensorView& x, const TensorView& out) {
  constexpr const char* op = "log_softmax";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "x", x));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, x.shape));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out", out));
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
    return cpu::log_softmax(ctx, x, out);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->log_softmax(ctx, x, out);
}

}  // namespace moeopt::ops
