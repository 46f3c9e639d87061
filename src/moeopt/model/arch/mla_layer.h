// The MLA attention block of a DeepSeek decoder layer (transformers' DeepseekV2Attention /
// DeepseekV3Attention), written with ops:: calls only. For T tokens, x [T, H]:
//   q      = q_b(rms_norm(q_a(x)) * q_a_layernorm)   (q-LoRA)  or  q_proj(x)   [T, n, dn + dr]
//   kv     = kv_a_proj_with_mqa(x)                                          [T, r + dr]
//   c_kv   = rms_norm(kv[:, :r]) * kv_a_layernorm;  k_rope = kv[:, r:]
//   q[..., dn:], k_rope: RoPE (interleaved pairs unless V3's rope_interleave is false)
//   latent cache <- [c_kv | k_rope] at the slots; attn = mla_attention(q)   [T, n, dv]
//   out    = o_proj(attn)                                                    [T, H]
// q_a_layernorm and kv_a_layernorm use eps 1e-6 (transformers builds them with the RMSNorm
// default, not config.rms_norm_eps). The step's form (absorbed / expanded) and softmax scale
// come in `params` (ops/mla.h). Temporaries come from ctx.arena.
#pragma once

#include "moeopt/model/arch/decoder.h"
#include "moeopt/ops/mla.h"

namespace moeopt {

struct MlaLayerInputs {
  TensorView x;             // [T, H] f32, the normed hidden states
  TensorView positions;     // [T] int32
  TensorView slot_mapping;  // [T] int32
  TensorView cos_sin;       // [max_positions, dr] f32
  TensorView latent_cache;  // [num_blocks, block_size, 1, r + dr]
  TensorView block_table, context_lens, query_start_loc;
};

Status mla_attention_layer(const ops::Context& ctx, const ModelConfig& c, const MlaWeights& w,
                           const MlaLayerInputs& in, const ops::MlaParams& params,
                           const TensorView& out);

}  // namespace moeopt
