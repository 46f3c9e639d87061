// CPU reference of ops::sigmoid_gated_add and ops::add_into (ops/gated_add.h). Inputs already validated.
#pragma once

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::cpu {

Status sigmoid_gated_add(const ops::Context& ctx, const TensorView& x, const TensorView& gate,
                         const TensorView& out);
Status add_into(const ops::Context& ctx, const TensorView& x, const TensorView& out);

}  // namespace moeopt::cpu
