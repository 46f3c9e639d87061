// Accumulating adds of a shared expert's output into the routed output:
//   sigmoid_gated_add (Qwen2-MoE):  out[m, :] += sigmoid(gate[m, 0]) * x[m, :]
//   add_into (DeepSeek, ungated):   out[m, :] += x[m, :]
//   x, out [M, H] f32 (rows may be strided), gate [M, 1] f32. add_into is CPU only for now.
#pragma once

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

Status sigmoid_gated_add(const Context& ctx, const TensorView& x, const TensorView& gate,
                         const TensorView& out);
Status add_into(const Context& ctx, const TensorView& x, const TensorView& out);

}  // namespace moeopt::ops
