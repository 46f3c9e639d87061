// The CPU reference implementations behind the op interfaces (src/moeopt/ops/*.h).
//
// Called by the ops after validation, so these assume well-formed arguments (shapes, dtypes,
// row layouts as documented in each op family header). They still bounds-check data-
// dependent indices (token ids, positions, block ids, slots) and return an error naming the
// offending entry, since those come from callers at run time.
#pragma once

#include <optional>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/attention.h"
#include "moeopt/ops/context.h"
#include "moeopt/ops/moe.h"

namespace moeopt::cpu {

using ops::Context;

Status embedding(const Context& ctx, const TensorView& table, const TensorView& ids,
                 const TensorView& out);
Status rms_norm(const Context& ctx, const TensorView& x, const TensorView& weight, float eps,
                const TensorView& out);
Status add_rms_norm(const Context& ctx, const TensorView& x, const TensorView& residual,
                    const TensorView& weight, float eps, const TensorView& out);
Status linear(const Context& ctx, const TensorView& x, const TensorView& weight,
              const std::optional<TensorView>& bias, const TensorView& y);
// W8A8 linear (ops/fp8.h): weight [N, K] fp8 e4m3, weight_scale [ceil(N/128), ceil(K/128)] f32.
Status linear_fp8(const Context& ctx, const TensorView& x, const TensorView& weight,
                  const TensorView& weight_scale, const std::optional<TensorView>& bias,
                  const TensorView& y);
Status quantize_fp8_activations(const Context& ctx, const TensorView& x, const TensorView& x_q,
                                const TensorView& x_scale);
Status quantize_fp8_weight_blocks(const Context& ctx, const TensorView& w, const TensorView& w_q,
                                  const TensorView& w_scale);
Status dequantize_fp8_weight_blocks(const Context& ctx, const TensorView& w_q,
                                    const TensorView& w_scale, const TensorView& w);
// 2:4 pruning along K (ops/sparsity.h).
Status prune_2_4(const Context& ctx, const TensorView& w, const TensorView& out,
                 const float* importance);
Status silu_and_mul(const Context& ctx, const TensorView& x, const TensorView& out);
Status silu(const Context& ctx, const TensorView& x, const TensorView& out);
Status rope_apply(const Context& ctx, const TensorView& q, const TensorView& k,
                  const TensorView& positions, const TensorView& cos_sin);
Status kv_cache_write(const Context& ctx, const TensorView& k, const TensorView& v,
                      const TensorView& slot_mapping, const TensorView& k_cache,
                      const TensorView& v_cache, const ops::KvScales& scales);
Status paged_attention(const Context& ctx, const TensorView& q, const TensorView& k_cache,
                       const TensorView& v_cache, const TensorView& block_table,
                       const TensorView& context_lens, const TensorView& query_start_loc,
                       const ops::AttentionParams& params, const TensorView& out,
                       const ops::KvScales& scales);
Status moe_route(const Context& ctx, const TensorView& router_logits,
                 const ops::RouteParams& params, const TensorView& expert_ids,
                 const TensorView& expert_weights);
Status moe_permute(const Context& ctx, const TensorView& expert_ids,
                   const TensorView& expert_weights, int64_t num_experts, int pad_rows_to,
                   const ops::MoePermutation& perm);
Status moe_experts(const Context& ctx, const TensorView& x, const ops::ExpertWeights& weights,
                   const ops::MoePermutation& perm, const TensorView& out_rows);
Status moe_combine(const Context& ctx, const TensorView& rows,
                   const TensorView& token_to_permuted_row, const TensorView& out);
Status argmax(const Context& ctx, const TensorView& logits, const TensorView& out);
Status log_softmax(const Context& ctx, const TensorView& x, const TensorView& out);

}  // namespace moeopt::cpu
