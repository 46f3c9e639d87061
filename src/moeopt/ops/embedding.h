// Embedding lookup: out[t, :] = table[ids[t], :].
//
//   table [V, H]  bf16 / f16 / f32 (the checkpoint's embed_tokens, used in place)
//   ids   [T]     int32, each in [0, V) (checked on the CPU: an id out of range is an error)
//   out   [T, H]  f32 on the CPU (rows may be strided, see check.h)
#pragma once

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

Status embedding(const Context& ctx, const TensorView& table, const TensorView& ids,
                 const TensorView& out);

}  // namespace moeopt::ops
