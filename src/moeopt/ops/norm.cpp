// RMSNorm family: validation and dispatch (norm.h).
#include "moeopt/ops/norm.h"

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {
namespace {

Status check_norm(const char* op, const TensorView& x, const TensorView& weight,
                  const TensorView& out, float eps) {
  if (x.ndim() != 2 && x.ndim() != 3)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: x has shape {}, expected [rows, D] or [tokens, heads, D]", op,
                      x.shape.str());
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "x", x));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out", out));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, x.shape));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "weight", weight));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "weight", weight, {x.shape[-1]}));
  MOEOPT_RETURN_IF_ERROR(
      expect_dtype(op, "weight", weight, {DType::kBF16, DType::kF16, DType::kF32}));
  if (!(eps >= 0.0f))
    return make_error(ErrorCode::kInvalidArgument, "{}: eps {} must be >= 0", op, eps);
  if (out.data != x.data && out.ndim() == x.ndim()) {
    // Same view (in place) is fine; any other overlap would be read after being written.
    const char* xb = static_cast<const char*>(x.data);
    const char* ob = static_cast<const char*>(out.data);
    const int64_t span = (x.shape[0] - 1) * row_stride(x) + row_elems(x);
    const int64_t bytes = span * int64_t(dtype_size(x.dtype));
    if (ob < xb + bytes && xb < ob + bytes)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: out partially overlaps x (only exact in-place is allowed)", op);
  }
  return {};
}

}  // namespace

Status rms_norm(const Context& ctx, const TensorView& x, const TensorView& weight, float eps,
                const TensorView& out) {
  constexpr const char* op = "rms_norm";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &weight, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(check_norm(op, x, weight, out, eps));
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
    return cpu::rms_norm(ctx, x, weight, eps, out);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->rms_norm(ctx, x, weight, eps, out);
}

Status rms_norm_per_head(const Context& ctx, const TensorView& x, const TensorView& weight,
                         float eps, const TensorView& out) {
  MOEOPT_RETURN_IF_ERROR(expect_ndim("rms_norm_per_head", "x", x, 3));
  return rms_norm(ctx, x, weight, eps, out);
}

Status add_rms_norm(const Context& ctx, const TensorView& x, const TensorView& residual,
                    const TensorView& weight, float eps, const TensorView& out) {
  constexpr const char* op = "add_rms_norm";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &residual, &weight, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(check_norm(op, x, weight, out, eps));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "residual", residual));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "residual", residual, x.shape));
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "residual", residual, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
    return cpu::add_rms_norm(ctx, x, residual, weight, eps, out);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->add_rms_norm(ctx, x, residual, weight, eps, out);
}

}  // namespace moeopt::ops
