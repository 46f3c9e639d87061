// Activations of the gated MLPs.
//
// silu(v) = v * sigmoid(v) = v / (1 + exp(-v)).
// silu_and_mul: x [M, 2I] holds the gate half then the up half of each row (the layout of a
// fused gate_up projection, and of transformers' stacked gate_up_proj [E, 2I, H]);
//   out[m, i] = silu(x[m, i]) * x[m, I + i]          out [M, I]
// silu: out[m, j] = silu(x[m, j]), x and out [M, N] (out may be the same view as x).
// f32 on the CPU; rows may be strided (check.h).
#pragma once

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

Status silu_and_mul(const Context& ctx, const TensorView& x, const TensorView& out);
Status silu(const Context& ctx, const TensorView& x, const TensorView& out);

}  // namespace moeopt::ops
