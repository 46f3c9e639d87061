// RMSNorm family, computed as Hugging Face's Qwen3/Mixtral/Llama RMSNorm does:
//   var = mean(x^2) over the last dim (in fp32);  y = w * (x * rsqrt(var + eps)).
//
// All take x as [rows, D] or [rows, heads, D]: the normalised dim is always the last one and
// the weight is [D]. A 3-D x is the per-head form used for Qwen3's q_norm / k_norm
// ([tokens, heads, head_dim] with weight [head_dim]). Rows may be strided (check.h), so a q or
// k slice of a fused QKV buffer can be normalised in place: out may be the very same view as
// x (each row is read fully before it is written); partial overlaps are not allowed.
//
//   x, out, residual  f32 on the CPU (bf16 on CUDA later)
//   weight            [D] bf16 / f16 / f32
#pragma once

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

// out = rms_norm(x) * weight.
Status rms_norm(const Context& ctx, const TensorView& x, const TensorView& weight, float eps,
                const TensorView& out);

// Fused residual add + norm (the pre-norm transformer step):
//   residual += x;  out = rms_norm(residual) * weight.
// x, residual and out are [rows, D]; residual is updated in place.
Status add_rms_norm(const Context& ctx, const TensorView& x, const TensorView& residual,
                    const TensorView& weight, float eps, const TensorView& out);

// Per-head RMSNorm (q_norm / k_norm): x [tokens, heads, head_dim], weight [head_dim].
// Same computation as rms_norm on a 3-D view; this entry point insists on 3-D.
Status rms_norm_per_head(const Context& ctx, const TensorView& x, const TensorView& weight,
                         float eps, const TensorView& out);

}  // namespace moeopt::ops
