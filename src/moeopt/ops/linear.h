// Linear layer in Hugging Face's layout: y[M, N] = x[M, K] · W[N, K]^T (+ bias[N]).
//
//   x      [M, K]  f32 on the CPU (rows may be strided, check.h)
//   W      [N, K]  bf16 / f16 / f32, used in place (nn.Linear.weight: [out_features, in_features])
//                  or fp8 e4m3 with its block scale (below)
//   scale  [ceil(N/128), ceil(K/128)] f32: present iff W is fp8 (HF `weight_scale_inv`)
//   bias   [N]     bf16 / f16 / f32, optional (Qwen2 q/k/v projections)
//   y      [M, N]  f32 (rows may be strided, e.g. one half of a [M, 2I] gate|up buffer)
// Accumulation is fp32; each y element is one dot product over K in a fixed order, so the
// result does not depend on the thread count. y must not overlap x.
//
// An fp8 weight runs W8A8 exactly as ops/fp8.h defines it: x is quantised per token in
// groups of 128 along K, the block products are scaled and summed in f32. Any N and K
// (partial last blocks). Tests: tests/unit/ops_linear_test.cpp (op cases kLinear*,
// kLinearFp8 against a double-precision reference).
#pragma once

#include <optional>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

// A linear layer's weight: the matrix, plus its block scale when the matrix is fp8. Built
// implicitly from a TensorView (or HostTensor), so unquantised callers pass the view.
struct LinearWeight {
  TensorView weight;                 // [N, K]
  std::optional<TensorView> scale;   // [ceil(N/128), ceil(K/128)] f32, fp8 weights only

  LinearWeight(const TensorView& w) : weight(w) {}                        // NOLINT
  LinearWeight(const HostTensor& w) : weight(w.view()) {}                 // NOLINT
  LinearWeight(const TensorView& w, const std::optional<TensorView>& s) : weight(w), scale(s) {}
  bool is_fp8() const { return weight.dtype == DType::kF8E4M3; }
};

Status linear(const Context& ctx, const TensorView& x, const LinearWeight& weight,
              const std::optional<TensorView>& bias, const TensorView& y);

}  // namespace moeopt::ops
