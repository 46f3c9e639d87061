// Multi-head latent attention (MLA: DeepSeek-V2 / V2-Lite / V3, transformers'
// DeepseekV2Attention / DeepseekV3Attention) over a paged LATENT cache.
//
// Sizes: n heads, dn = qk_nope_head_dim, dr = qk_rope_head_dim, dv = v_head_dim,
// r = kv_lora_rank, L = r + dr (the latent row: 576 for V3).
//
// Latent cache (one per layer, the same block manager and block tables as the GQA cache):
//   latent_cache  [num_blocks, block_size, 1, L]   f32 / bf16 / f16
//     row of token t = [ c_kv (r, after kv_a_layernorm) | k_rope (dr, after RoPE) ]
//   Slots, block_table, context_lens and query_start_loc mean exactly what they mean in
//   ops/attention.h (the new tokens of sequence s are its last n_s tokens, causal).
//
// mla_cache_write: latent [T, L] f32 (rows may be strided) -> latent_cache rows at
//   slot_mapping [T] int32 (negative: skipped). Rounds to the cache dtype.
//
// mla_rope_apply: rotates the rope part of every query head and the shared rope key in place
// at positions [T] int32 with cos_sin [max_positions, dr] (ops/rope.h table):
//   q       [T, n, dn + dr]   f32, dims [dn, dn + dr) of each head rotate
//   k_rope  [T, dr]           f32 (rows may be strided: a column slice of kv_a's output)
//   interleaved = true (DeepSeek's layout, transformers' apply_rotary_pos_emb_interleave):
//     input pairs (x[2i], x[2i+1]) rotate by frequency i and the result is stored
//     de-interleaved, [x'[0], x'[2], ... | x'[1], x'[3], ...]. q and k get the same
//     permutation, so scores equal DeepSeek-V2's complex-pair form (apply_rotary_emb), whose
//     output stays interleaved.
//   interleaved = false (V3 with rope_interleave: false): rotate-half as ops/rope.h.
//
// mla_attention: q [T, n, dn + dr] f32 (after rope), kv_b [n * (dn + dv), r] (the checkpoint's
// kv_b_proj.weight, bf16 / f16 / f32; rows h*(dn+dv) .. +dn are W_uk of head h, the next dv
// rows W_uv), out [T, n, dv] f32 (rows may be strided). Scores use params.scale (> 0, the
// caller folds YaRN's mscale_all_dim in: mla_softmax_scale), softmax in fp32.
//   kExpanded (transformers' form): for every cached token j and head h
//       k = [W_uk,h c_j | k_rope_j],  v = W_uv,h c_j,  out = softmax(q·k * scale) · v
//   kAbsorbed (W_uk folded into the query, W_uv applied after attention; reads only the
//   latent rows, never expands a key):
//       q_lat = W_uk,h^T q_nope [r],  score_j = (q_lat·c_j + q_rope·k_rope_j) * scale,
//       o_lat = sum_j p_j c_j [r],    out = W_uv,h o_lat
//   Both are the same function up to fp32 rounding; the model runs kAbsorbed for decode
//   steps and kExpanded for steps with prefill. Tests: tests/unit/ops_mla_test.cpp (both
//   forms against a double-precision expanded attention over unpaged arrays, odd block
//   sizes, shuffled blocks, mixed prefill/decode).
//
// CPU only for now: on another device every op returns kUnsupported.
#pragma once

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"
#include "moeopt/ops/rope.h"

namespace moeopt::ops {

enum class MlaForm { kExpanded, kAbsorbed };

struct MlaParams {
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  float scale = 0.0f;  // softmax scale, > 0
  MlaForm form = MlaForm::kAbsorbed;
};

// transformers' yarn_apply_mscale: 1/sqrt(dn + dr), times mscale^2 with
// mscale = 0.1 * mscale_all_dim * ln(factor) + 1 when the rope type is not default and
// mscale_all_dim is set and non-zero (and factor > 1; else mscale = 1).
float mla_softmax_scale(int64_t qk_head_dim, const RopeConfig& rope);

Status mla_cache_write(const Context& ctx, const TensorView& latent,
                       const TensorView& slot_mapping, const TensorView& latent_cache);

Status mla_rope_apply(const Context& ctx, const TensorView& q, const TensorView& k_rope,
                      const TensorView& positions, const TensorView& cos_sin, bool interleaved);

Status mla_attention(const Context& ctx, const TensorView& q, const TensorView& latent_cache,
                     const TensorView& kv_b, const TensorView& block_table,
                     const TensorView& context_lens, const TensorView& query_start_loc,
                     const MlaParams& params, const TensorView& out);

}  // namespace moeopt::ops
