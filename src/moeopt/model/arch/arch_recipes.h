// Per-architecture recipes: each fills DecoderWeights from a checkpoint using its family's
// tensor names (tensor_specs.h) and routing rules. One file per architecture.
#pragma once

#include <memory>

#include "moeopt/model/arch/decoder.h"

namespace moeopt::arch {

// Shared by all recipes: embedding, per-layer norms + attention (GQA, or MLA when the config's
// attention_kind says so), final norm, LM head (tied to the embedding when the config says
// so). FFN blocks are left to the caller.
Result<DecoderWeights> load_decoder_common(const WeightStore& w, const ModelConfig& c);
// DeepSeek's MLA projections of one layer (deepseek.cpp); an fp8 kv_b_proj is refused
// (kUnsupported): the attention reads it unquantised.
Result<MlaWeights> load_mla_attention(const WeightStore& w, const ModelConfig& c, int layer);

// Qwen3-MoE, and OLMoE, whose MoE block is the same (softmax top-k, norm_topk_prob, every
// layer MoE); OLMoE's q/k norms span the whole projection, which the decoder reads from
// their shape.
Result<DecoderWeights> qwen3_moe_weights(const WeightStore& w, const ModelConfig& c);
Result<DecoderWeights> qwen2_moe_weights(const WeightStore& w, const ModelConfig& c);
Result<DecoderWeights> mixtral_weights(const WeightStore& w, const ModelConfig& c);
// DeepSeek-V2 / V3: MLA attention, DeepSeek routing, shared experts.
Result<DecoderWeights> deepseek_weights(const WeightStore& w, const ModelConfig& c);

}  // namespace moeopt::arch
