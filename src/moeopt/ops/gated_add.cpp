// sigmoid_gated_add: validation and dispatch (gated_add.h).
#include "moeopt/ops/gated_add.h"

#include "moeopt/backend/cpu/cpu_gated_add.h"
#include "moeopt/ops/check.h"

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
  // The CUDA backend has no implementation yet; it joins when the Qwen2-MoE GPU path does.
  if (dev != Device::kCpu) return unsupported_device(op, dev);
  for (const TensorView* t : {&x, &gate, &out})
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "tensor", *t, {DType::kF32}));
  return cpu::sigmoid_gated_add(ctx, x, gate, out);
}

}  // namespace moeopt::ops
