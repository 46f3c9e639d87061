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

void ExpertInputStats::add(const void* weight, const float* rows, int64_t n, int64_t k) {
  std::vector<double>& acc = sum_sq[weight];
  acc.resize(size_t(k), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < k; ++i) acc[size_t(i)] += double(rows[r * k + i]) * rows[r * k + i];
}

}  // namespace moeopt::ops
