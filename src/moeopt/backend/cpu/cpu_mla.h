// CPU reference of the MLA ops (ops/mla.h). Inputs already validated for shapes and dtypes.
#pragma once

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"
#include "moeopt/ops/mla.h"

namespace moeopt::cpu {

Status mla_cache_write(const ops::Context& ctx, const TensorView& latent,
                       const TensorView& slot_mapping, const TensorView& latent_cache);
Status mla_rope_apply(const ops::Context& ctx, const TensorView& q, const TensorView& k_rope,
                      const TensorView& positions, const TensorView& cos_sin, bool interleaved);
Status mla_attention(const ops::Context& ctx, const TensorView& q, const TensorView& latent_cache,
                     const TensorView& kv_b, const TensorView& block_table,
                     const TensorView& context_lens, const TensorView& query_start_loc,
                     const ops::MlaParams& params, const TensorView& out);

}  // namespace moeopt::cpu
