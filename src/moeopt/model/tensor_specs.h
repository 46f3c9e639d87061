// The tensors a checkpoint of a given ModelConfig holds: Hugging Face names exactly as the
// hub checkpoints spell them, shapes as stored (nn.Linear weights are [out_features,
// in_features]), and what each tensor is for.
//
// This list is the single source of tensor names in moeopt: the weight loader, init-random
// and `moeopt inspect`'s checkpoint cross-check all use it. One file per architecture family
// builds it (arch/<family>_tensors.cpp); shared pieces (embeddings, GQA attention, SwiGLU
// MLPs, final norm and lm_head) live in arch/common_tensors.cpp.
//
// Names are those of the per-expert hub layout (`mlp.experts.<e>.gate_proj.weight`), which
// every published checkpoint uses; transformers 5 fuses experts at load time, the files
// keep this layout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/model/config.h"

namespace moeopt {

enum class TensorRole {
  kEmbedding,      // model.embed_tokens.weight [V, H]
  kAttention,      // q/k/v/o projections (GQA) or the MLA projections, with their biases
  kAttentionNorm,  // q_norm/k_norm (Qwen3, OLMoE), MLA's q_a_layernorm/kv_a_layernorm
  kLayerNorm,      // input_layernorm / post_attention_layernorm
  kRouter,         // gate weight [E, H]
  kRouterBias,     // DeepSeek-V3 e_score_correction_bias [E]
  kRoutedExpert,   // mlp.experts.<e>.* (layer and expert set)
  kSharedExpert,   // Qwen2-MoE shared_expert.*, DeepSeek shared_experts.*
  kSharedExpertGate,  // Qwen2-MoE shared_expert_gate.weight [1, H]
  kDenseMlp,       // the MLP of dense layers
  kFinalNorm,      // model.norm.weight
  kLmHead,         // lm_head.weight [V, H] (absent when tied to the embedding)
  kMtp,            // DeepSeek-V3 multi-token-prediction module (not part of the main model)
  kFp8Scale,       // "<weight>.weight_scale_inv" of pre-quantized FP8 checkpoints
};

const char* tensor_role_name(TensorRole r);

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  TensorRole role = TensorRole::kAttention;
  int32_t layer = -1;    // decoder layer, -1 for model-level tensors
  int32_t expert = -1;   // routed expert index, -1 otherwise
  // A 2-D nn.Linear weight that FP8 block quantization applies to (attention and MLP/expert
  // projections). Embeddings, norms, biases, routers and lm_head are not.
  bool fp8_linear = false;
  // Stored as fp8 e4m3 with a "<module>.weight_scale_inv" block scale: set by
  // checkpoint_tensors on the fp8_linear weights of an fp8 config that
  // modules_to_not_convert does not exclude.
  bool fp8_quantized = false;

  int64_t numel() const;
};

// The main model's tensors (without DeepSeek-V3's MTP module and without FP8 scales), in a
// stable order: embedding, then layer by layer, then final norm and lm_head.
Result<std::vector<TensorSpec>> expected_tensors(const ModelConfig& c);

// DeepSeek-V3's multi-token-prediction layers (model.layers.<L + i>.*, i < num_nextn_predict_layers),
// which the hub checkpoint ships but inference without speculative decoding does not use.
// Empty for every other config.
std::vector<TensorSpec> mtp_tensors(const ModelConfig& c);

// What a checkpoint directory holds: expected_tensors, plus mtp_tensors when
// `include_mtp`, plus a "<name>_scale_inv" tensor ([ceil(out/bn), ceil(in/bk)]) for every
// FP8 linear weight when the config has an fp8 quantization_config (skipping
// modules_to_not_convert); those weights get fp8_quantized.
Result<std::vector<TensorSpec>> checkpoint_tensors(const ModelConfig& c, bool include_mtp);

// The name of a weight's FP8 block scale: "x.q_proj.weight" -> "x.q_proj.weight_scale_inv".
std::string fp8_scale_name(const std::string& weight_name);
// The spec of an [N, K] weight's 128x128 block scale: [ceil(N/128), ceil(K/128)], role
// kFp8Scale, the weight's layer and expert.
TensorSpec fp8_scale_spec(const TensorSpec& weight);
// Online quantisation (--fp8-weights on): every 2-D fp8_linear weight not yet fp8 becomes
// fp8_quantized, and its scale spec is appended (what a pre-quantized checkpoint of the same
// model holds, without modules_to_not_convert: routers and lm_head are never fp8_linear).
void mark_fp8_quantized(std::vector<TensorSpec>& specs);

namespace arch_tensors {
// Per-family builders (arch/<family>_tensors.cpp). Each appends to `out`.
void qwen_family(const ModelConfig& c, std::vector<TensorSpec>& out);      // qwen2, qwen3, *_moe
void llama_family(const ModelConfig& c, std::vector<TensorSpec>& out);     // llama, mistral, mixtral
void deepseek_family(const ModelConfig& c, std::vector<TensorSpec>& out);  // deepseek_v2, v3
void olmoe_family(const ModelConfig& c, std::vector<TensorSpec>& out);     // olmoe

// Shared pieces (arch/common_tensors.cpp).
TensorSpec make(std::string name, std::vector<int64_t> shape, TensorRole role, int layer = -1,
                int expert = -1, bool fp8_linear = false);
void add_embedding(const ModelConfig& c, std::vector<TensorSpec>& out);
void add_final_norm_and_head(const ModelConfig& c, std::vector<TensorSpec>& out);
void add_layer_norms(const ModelConfig& c, int layer, std::vector<TensorSpec>& out);
// q/k/v/o projections of grouped-query attention: q [heads*hd, H], k/v [kv*hd, H],
// o [H, heads*hd]; biases on q/k/v when qkv_bias or attention_bias, on o when attention_bias.
void add_gqa_attention(const ModelConfig& c, int layer, std::vector<TensorSpec>& out);
// SwiGLU MLP under `prefix` ("model.layers.3.mlp", "...experts.7"): gate_proj/up_proj
// [width, H], down_proj [H, width] (names w1/w3/w2 when `mixtral_names`).
void add_swiglu(const std::string& prefix, int64_t hidden, int64_t width, TensorRole role, int layer,
                int expert, bool bias, bool mixtral_names, std::vector<TensorSpec>& out);
std::string layer_prefix(int layer);  // "model.layers.<layer>"
}  // namespace arch_tensors

}  // namespace moeopt
