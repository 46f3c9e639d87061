// Tensor specs shared by every family (embedding, norms, GQA attention, SwiGLU MLPs, lm_head)
// and the entry points of tensor_specs.h that dispatch to the family files.
#include <algorithm>

#include "moeopt/model/tensor_specs.h"
#include "moeopt/ops/fp8.h"

namespace moeopt {

const char* tensor_role_name(TensorRole r) {
  switch (r) {
    case TensorRole::kEmbedding: return "embedding";
    case TensorRole::kAttention: return "attention";
    case TensorRole::kAttentionNorm: return "attention_norm";
    case TensorRole::kLayerNorm: return "layer_norm";
    case TensorRole::kRouter: return "router";
    case TensorRole::kRouterBias: return "router_bias";
    case TensorRole::kRoutedExpert: return "routed_expert";
    case TensorRole::kSharedExpert: return "shared_expert";
    case TensorRole::kSharedExpertGate: return "shared_expert_gate";
    case TensorRole::kDenseMlp: return "dense_mlp";
    case TensorRole::kFinalNorm: return "final_norm";
    case TensorRole::kLmHead: return "lm_head";
    case TensorRole::kMtp: return "mtp";
    case TensorRole::kFp8Scale: return "fp8_scale";
  }
  return "?";
}

std::string fp8_scale_name(const std::string& weight_name) {
  return weight_name + "_scale_inv";
}

TensorSpec fp8_scale_spec(const TensorSpec& w) {
  return arch_tensors::make(fp8_scale_name(w.name), ops::fp8_scale_shape(w.shape[0], w.shape[1]).vec(),
                            TensorRole::kFp8Scale, w.layer, w.expert);
}

void mark_fp8_quantized(std::vector<TensorSpec>& specs) {
  std::vector<TensorSpec> scales;
  for (TensorSpec& s : specs) {
    if (!s.fp8_linear || s.fp8_quantized || s.shape.size() != 2) continue;
    s.fp8_quantized = true;
    scales.push_back(fp8_scale_spec(s));
  }
  specs.insert(specs.end(), scales.begin(), scales.end());
}

int64_t TensorSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace arch_tensors {

TensorSpec make(std::string name, std::vector<int64_t> shape, TensorRole role, int layer, int expert,
                bool fp8_linear) {
  TensorSpec t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.role = role;
  t.layer = layer;
  t.expert = expert;
  t.fp8_linear = fp8_linear;
  return t;
}

std::string layer_prefix(int layer) { return "model.layers." + std::to_string(layer); }

void add_embedding(const ModelConfig& c, std::vector<TensorSpec>& out) {
  out.push_back(make("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, TensorRole::kEmbedding));
}

void add_final_norm_and_head(const ModelConfig& c, std::vector<TensorSpec>& out) {
  out.push_back(make("model.norm.weight", {c.hidden_size}, TensorRole::kFinalNorm));
  // Tied embeddings: the checkpoint has no lm_head.weight; the head reuses embed_tokens.
  if (!c.tie_word_embeddings)
    out.push_back(make("lm_head.weight", {c.vocab_size, c.hidden_size}, TensorRole::kLmHead));
}

void add_layer_norms(const ModelConfig& c, int layer, std::vector<TensorSpec>& out) {
  const std::string p = layer_prefix(layer);
  out.push_back(make(p + ".input_layernorm.weight", {c.hidden_size}, TensorRole::kLayerNorm, layer));
  out.push_back(make(p + ".post_attention_layernorm.weight", {c.hidden_size}, TensorRole::kLayerNorm, layer));
}

void add_gqa_attention(const ModelConfig& c, int layer, std::vector<TensorSpec>& out) {
  const std::string p = layer_prefix(layer) + ".self_attn.";
  const int64_t H = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim;
  const bool qkv_b = c.qkv_bias || c.attention_bias;
  const auto A = TensorRole::kAttention;
  out.push_back(make(p + "q_proj.weight", {q, H}, A, layer, -1, true));
  if (qkv_b) out.push_back(make(p + "q_proj.bias", {q}, A, layer));
  out.push_back(make(p + "k_proj.weight", {kv, H}, A, layer, -1, true));
  if (qkv_b) out.push_back(make(p + "k_proj.bias", {kv}, A, layer));
  out.push_back(make(p + "v_proj.weight", {kv, H}, A, layer, -1, true));
  if (qkv_b) out.push_back(make(p + "v_proj.bias", {kv}, A, layer));
  out.push_back(make(p + "o_proj.weight", {H, q}, A, layer, -1, true));
  if (c.attention_bias) out.push_back(make(p + "o_proj.bias", {H}, A, layer));
}

void add_swiglu(const std::string& prefix, int64_t hidden, int64_t width, TensorRole role, int layer,
                int expert, bool bias, bool mixtral_names, std::vector<TensorSpec>& out) {
  const char* gate = mixtral_names ? ".w1" : ".gate_proj";
  const char* down = mixtral_names ? ".w2" : ".down_proj";
  const char* up = mixtral_names ? ".w3" : ".up_proj";
  out.push_back(make(prefix + gate + ".weight", {width, hidden}, role, layer, expert, true));
  if (bias) out.push_back(make(prefix + gate + ".bias", {width}, role, layer, expert));
  out.push_back(make(prefix + up + ".weight", {width, hidden}, role, layer, expert, true));
  if (bias) out.push_back(make(prefix + up + ".bias", {width}, role, layer, expert));
  out.push_back(make(prefix + down + ".weight", {hidden, width}, role, layer, expert, true));
  if (bias) out.push_back(make(prefix + down + ".bias", {hidden}, role, layer, expert));
}

}  // namespace arch_tensors

Result<std::vector<TensorSpec>> expected_tensors(const ModelConfig& c) {
  if (c.num_hidden_layers <= 0 || c.hidden_size <= 0 || c.vocab_size <= 0)
    return make_error(ErrorCode::kInvalidArgument, "{}: config has no layers, hidden size or vocabulary",
                      c.source);
  std::vector<TensorSpec> out;
  switch (c.arch) {
    case Arch::kQwen3Moe:
    case Arch::kQwen2Moe:
    case Arch::kQwen2:
    case Arch::kQwen3: arch_tensors::qwen_family(c, out); break;
    case Arch::kLlama:
    case Arch::kMistral:
    case Arch::kMixtral: arch_tensors::llama_family(c, out); break;
    case Arch::kDeepseekV2:
    case Arch::kDeepseekV3: arch_tensors::deepseek_family(c, out); break;
    case Arch::kOlmoe: arch_tensors::olmoe_family(c, out); break;
  }
  return out;
}

Result<std::vector<TensorSpec>> checkpoint_tensors(const ModelConfig& c, bool include_mtp) {
  auto main = expected_tensors(c);
  if (!main.ok()) return main.status();
  std::vector<TensorSpec> out = std::move(*main);
  if (include_mtp) {
    auto mtp = mtp_tensors(c);
    out.insert(out.end(), std::make_move_iterator(mtp.begin()), std::make_move_iterator(mtp.end()));
  }
  if (!c.fp8) return out;
  // Block-wise FP8: every quantized Linear carries weight_scale_inv with one f32 per
  // [block_n, block_k] block (ceil on both dims), as DeepSeek-V3 and Qwen's -FP8 releases do.
  const auto& skip = c.fp8->modules_to_not_convert;
  std::vector<TensorSpec> scales;
  for (auto& t : out) {
    if (!t.fp8_linear) continue;
    const std::string module = t.name.substr(0, t.name.size() - std::string(".weight").size());
    bool skipped = std::any_of(skip.begin(), skip.end(), [&](const std::string& m) {
      return module == m || module.rfind(m + ".", 0) == 0;
    });
    if (skipped) continue;
    t.fp8_quantized = true;
    const int64_t bn = c.fp8->block_n, bk = c.fp8->block_k;  // any block size: inspect sizes it
    scales.push_back(arch_tensors::make(fp8_scale_name(t.name),
                                        {(t.shape[0] + bn - 1) / bn, (t.shape[1] + bk - 1) / bk},
                                        TensorRole::kFp8Scale, t.layer, t.expert));
  }
  out.insert(out.end(), std::make_move_iterator(scales.begin()), std::make_move_iterator(scales.end()));
  return out;
}

}  // namespace moeopt
