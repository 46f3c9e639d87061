// ModelConfig: a Hugging Face `config.json` turned into one validated struct that every later
// stage (tensor names, sizing, weight loading, the layer recipe, init-random) reads.
//
// Supported `model_type`s: the MoE families qwen3_moe, qwen2_moe, mixtral, deepseek_v2,
// deepseek_v3, olmoe, and the dense llama, mistral, qwen2, qwen3 (recognised and reported as
// not MoE). Fields a config leaves out take the defaults of the matching transformers
// configuration class (configuration_<model_type>.py; each default is noted in config.cpp
// where it is applied). The sizes that define the model's shape (vocab_size, hidden_size,
// num_hidden_layers, num_attention_heads, intermediate_size where a dense MLP exists, the
// expert count, width and top-k of MoE families) are required instead: a config without them
// is broken, and guessing them would describe a different model.
//
// Keys that transformers 5 renamed are read in both spellings, for every family: dtype /
// torch_dtype, rope_parameters / rope_theta + rope_scaling, num_local_experts / num_experts
// (and the configuration classes' other aliases). A config with both spellings of one
// setting and different values is refused with an error naming both keys (config.cpp says why).
//
// Every error is one line naming the source file and the field, e.g.
//   "models/x/config.json: field 'num_experts_per_tok' (9) is larger than num_experts (8)".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "moeopt/core/status.h"

namespace moeopt {

// Architecture families. The HF `model_type` string is the canonical name (arch_name()).
enum class Arch {
  kQwen3Moe,
  kQwen2Moe,
  kMixtral,
  kDeepseekV2,
  kDeepseekV3,
  kOlmoe,
  kLlama,
  kMistral,
  kQwen2,
  kQwen3,
};

// "qwen3_moe", "mixtral", ...
const char* arch_name(Arch a);
// The family's HF class name, written into "architectures" ("Qwen3MoeForCausalLM", ...).
const char* arch_hf_class(Arch a);
// Parses a model_type; nullopt when unknown.
std::optional<Arch> arch_from_model_type(const std::string& model_type);
// "qwen3_moe, qwen2_moe, ..." for error messages.
std::string supported_model_types();
// True for the MoE families (a config of such a family may still have no MoE layer).
bool arch_is_moe_family(Arch a);
// True for the DeepSeek families (MLA attention, DeepSeek routing).
bool arch_is_deepseek(Arch a);

// RoPE scaling (HF `rope_scaling`, or `rope_parameters` in transformers 5; a config with both
// must give them the same meaning, see config.cpp "Two spellings of one setting"). Only the
// fields of the chosen type are meaningful; the others keep their defaults.
enum class RopeScalingType { kNone, kLinear, kDynamic, kYarn, kLlama3 };
const char* rope_scaling_type_name(RopeScalingType t);

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;  // yarn, llama3 (0: absent)
  // yarn (defaults as in transformers' _compute_yarn_parameters)
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> mscale;          // DeepSeek's yarn variant
  std::optional<double> mscale_all_dim;  // DeepSeek's yarn variant
  std::optional<double> attention_factor;
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
};

// How the router turns logits into expert weights.
enum class ScoringFunc { kSoftmax, kSigmoid };
const char* scoring_func_name(ScoringFunc s);

// How the top-k experts are chosen (DeepSeek's `topk_method`; everyone else is greedy).
//   greedy:               plain top-k over all experts
//   group_limited_greedy: (V2) keep the topk_group groups with the highest max score, then top-k
//   noaux_tc:             (V3) sigmoid scores + e_score_correction_bias; groups ranked by the
//                         sum of their top-2 biased scores; weights from the unbiased scores
enum class TopkMethod { kGreedy, kGroupLimitedGreedy, kNoauxTc };
const char* topk_method_name(TopkMethod m);

enum class AttentionKind { kGqa, kMla };

// `quantization_config` of pre-quantized FP8 checkpoints (Qwen3-*-FP8, DeepSeek-V3):
// block-wise FP8 e4m3 weights with one f32 inverse scale per [block_n, block_k] block,
// stored next to the weight as "<name>.weight_scale_inv".
struct Fp8Quantization {
  std::string quant_method = "fp8";
  std::string fmt = "e4m3";
  std::string activation_scheme = "dynamic";
  int64_t block_n = 128;  // weight_block_size[0]: rows (output features) per block
  int64_t block_k = 128;  // weight_block_size[1]: columns (input features) per block
  std::vector<std::string> modules_to_not_convert;
};

struct ModelConfig {
  std::string source;            // file the config came from (for messages)
  std::string model_type;        // as written
  std::vector<std::string> architectures;
  Arch arch = Arch::kQwen3Moe;

  // Shape of the transformer.
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;          // explicit (Qwen3, newer Mistral/Llama) or hidden / heads
  bool head_dim_explicit = false;
  int64_t intermediate_size = 0; // dense MLP width (dense layers; OLMoE: the expert width)
  std::string hidden_act = "silu";
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "bfloat16";  // "dtype" (transformers 5) or "torch_dtype" (4)

  // Attention details.
  bool attention_bias = false;   // bias on q/k/v/o (llama, qwen3, olmoe, deepseek)
  bool qkv_bias = false;         // bias on q/k/v only (qwen2 family: always/qkv_bias)
  bool mlp_bias = false;         // llama's mlp_bias
  bool qk_norm = false;          // RMSNorm on q and k (Qwen3: per head; OLMoE: whole projection)
  std::optional<double> clip_qkv;            // OLMoE
  std::optional<int64_t> sliding_window;     // effective window (null when not used)
  bool use_sliding_window = false;           // qwen2 family switch
  int64_t max_window_layers = 0;             // qwen2 family

  // MoE.
  int64_t num_experts = 0;               // routed experts (num_experts / num_local_experts / n_routed_experts,
                                         // per family; transformers 5 qwen3_moe: num_local_experts)
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;     // routed expert width (Mixtral/OLMoE: intermediate_size)
  int64_t num_shared_experts = 0;        // DeepSeek n_shared_experts; Qwen2-MoE: 1 when its width > 0
  int64_t shared_expert_intermediate_size = 0;  // total width of the shared MLP
  bool shared_expert_gate = false;       // Qwen2-MoE: sigmoid gate [1, H] on the shared expert
  bool norm_topk_prob = false;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  TopkMethod topk_method = TopkMethod::kGreedy;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  double routed_scaling_factor = 1.0;
  bool e_score_correction_bias = false;  // DeepSeek-V3 (noaux_tc)
  int64_t decoder_sparse_step = 1;       // Qwen MoE
  std::vector<int64_t> mlp_only_layers;  // Qwen MoE
  int64_t first_k_dense_replace = 0;     // DeepSeek
  int64_t moe_layer_freq = 1;            // DeepSeek
  double router_aux_loss_coef = 0.0;     // training only; kept for round trips

  // MLA (DeepSeek).
  AttentionKind attention_kind = AttentionKind::kGqa;
  std::optional<int64_t> q_lora_rank;    // null: q_proj directly (V2-Lite)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  // V3's rope_interleave (default true): the rope dims come in (even, odd) pairs, DeepSeek's
  // own layout. V2 always uses that layout (its rotation is a complex product of pairs).
  bool rope_interleave = true;
  int64_t num_nextn_predict_layers = 0;  // DeepSeek-V3 MTP module (not part of the main model)

  // Pre-quantized weights.
  std::optional<Fp8Quantization> fp8;

  // Token ids (kept for round trips; the tokenizer has the authoritative ones).
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;

  // --- derived ---
  bool is_moe() const { return num_moe_layers() > 0; }
  // Whether decoder layer `layer` (0-based) has a sparse MoE block. Rules per family:
  //   qwen2_moe/qwen3_moe: layer not in mlp_only_layers, num_experts > 0 and
  //                        (layer + 1) % decoder_sparse_step == 0
  //   deepseek_v2/v3:      layer >= first_k_dense_replace and layer % moe_layer_freq == 0
  //   mixtral, olmoe:      every layer
  //   dense families:      none
  bool layer_is_moe(int64_t layer) const;
  int64_t num_moe_layers() const;
  // q/k head dim of MLA (nope + rope) or head_dim for GQA.
  int64_t qk_head_dim() const;
};

// Parses and validates a config.json object. `source_name` prefixes every error.
Result<ModelConfig> parse_model_config(const nlohmann::json& j, const std::string& source_name);
// Reads (transparently inflating .gz) and parses a config.json file.
Result<ModelConfig> load_model_config(const std::string& path);
// Parses config text (for tests and in-memory configs).
Result<ModelConfig> parse_model_config_text(const std::string& text, const std::string& source_name);
// Writes a config.json object that transformers' AutoConfig loads back to the same model:
// the family's own key names, legacy rope_theta/rope_scaling keys (read by transformers 4.x
// and converted by 5.x). parse_model_config(model_config_to_json(c)) reproduces c.
nlohmann::json model_config_to_json(const ModelConfig& c);

}  // namespace moeopt
