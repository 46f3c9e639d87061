// prune_2_4: validation and dispatch (sparsity.h).
#include "moeopt/ops/sparsity.h"

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"

namespace moeopt::ops {

Status prune_2_4(const Context& ctx, const TensorView& w, const TensorView& out,
                 const float* importance) {
  constexpr const char* op = "prune_2_4";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&w, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "w", w, 2));
  MOEOPT_RETURN_IF_ERROR(
      expect_dtype(op, "w", w, {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "w", w));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {w.dtype}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, w.shape));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "out", out));
  if (dev != Device::kCpu) return unsupported_device(op, dev);  // a load-time transform
  return cpu::prune_2_4(ctx, w, out, importance);
}

}  // namespace moeopt::ops
