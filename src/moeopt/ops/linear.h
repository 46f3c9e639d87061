// Linear layer in Hugging Face's layout: y[M, N] = x[M, K] · W[N, K]^T (+ bias[N]).
//
//   x     [M, K]  f32 on the CPU (rows may be strided, check.h)
//   W     [N, K]  bf16 / f16 / f32, used in place (nn.Linear.weight: [out_features, in_features])
//   bias  [N]     bf16 / f16 / f32, optional (Qwen2 q/k/v projections)
//   y     [M, N]  f32 (rows may be strided, e.g. one half of a [M, 2I] gate|up buffer)
// Accumulation is fp32; each y element is one dot product over K in a fixed order, so the
// result does not depend on the thread count. y must not overlap x.
#pragma once

#include <optional>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

Status linear(const Context& ctx, const TensorView& x, const TensorView& weight,
              const std::optional<TensorView>& bias, const TensorView& y);

}  // namespace moeopt::ops
