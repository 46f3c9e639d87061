// Row reductions the engine needs on logits.
//
// argmax:      logits [M, V] f32 -> out [M] int32. Ties go to the lowest index and NaN counts
//              as larger than any number (first NaN wins), as torch.argmax does on the CPU.
//              The CUDA backend never picks a NaN (the largest number wins; a row of NaN
//              answers 0): a documented difference, only for rows a model has poisoned.
// log_softmax: x [M, V] f32 -> out [M, V] f32, out = x - max - log(sum(exp(x - max))),
//              computed in fp32 with a double-precision sum (out may be the same view as x).
#pragma once

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

Status argmax(const Context& ctx, const TensorView& logits, const TensorView& out);
Status log_softmax(const Context& ctx, const TensorView& x, const TensorView& out);

}  // namespace moeopt::ops
