// embedding: validation and dispatch (embedding.h).
#include "moeopt/ops/embedding.h"

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {

Status embedding(const Context& ctx, const TensorView& table, const TensorView& ids,
                 const TensorView& out) {
  constexpr const char* op = "embedding";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&table, &ids, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "table", table, 2));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "table", table));
  MOEOPT_RETURN_IF_ERROR(
      expect_dtype(op, "table", table, {DType::kBF16, DType::kF16, DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "ids", ids, 1));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "ids", ids));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "ids", ids, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, {ids.shape[0], table.shape[1]}));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out", out));
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
    return cpu::embedding(ctx, table, ids, out);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->embedding(ctx, table, ids, out);
}

}  // namespace moeopt::ops
