// Sigmoid-gated accumulate (Qwen2-MoE's shared expert):
//   out[m, :] += sigmoid(gate[m, 0]) * x[m, :]
//   x, out [M, H] f32 (rows may be strided), gate [M, 1] f32.
#pragma once

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

Status sigmoid_gated_add(const Context& ctx, const TensorView& x, const TensorView& gate,
                         const TensorView& out);

}  // namespace moeopt::ops
