// Tensor specs of DeepSeek-V2 / V3 (transformers' modeling_deepseek_v2/v3.py and DeepSeek's
// own modeling_deepseek.py shipped with the checkpoints; both use these names).
//
// Multi-head latent attention (MLA), per layer, with n = heads, dn = qk_nope_head_dim,
// dr = qk_rope_head_dim, dv = v_head_dim, rq = q_lora_rank, rkv = kv_lora_rank:
//   q_lora_rank set:   self_attn.q_a_proj.weight [rq, H], q_a_layernorm.weight [rq],
//                      q_b_proj.weight [n*(dn+dr), rq]
//   q_lora_rank null:  self_attn.q_proj.weight [n*(dn+dr), H]          (V2-Lite)
//   self_attn.kv_a_proj_with_mqa.weight [rkv + dr, H]   compressed kv + the shared rope key
//   self_attn.kv_a_layernorm.weight [rkv]
//   self_attn.kv_b_proj.weight [n*(dn+dv), rkv]
//   self_attn.o_proj.weight [H, n*dv]
//   (attention_bias adds biases to q_a/q/kv_a_proj and o_proj.)
// MLP: dense layers (layer < first_k_dense_replace or off moe_layer_freq) mlp.{gate,up,down}_proj
// with intermediate_size; MoE layers mlp.gate.weight [E, H], V3's mlp.gate.e_score_correction_bias
// [E] (noaux_tc), mlp.experts.<e>.*, and one mlp.shared_experts.* MLP of width
// n_shared_experts * moe_intermediate_size.
// MTP (V3, num_nextn_predict_layers): model.layers.<L+i>.{embed_tokens, enorm, hnorm, eh_proj
// [H, 2H], shared_head.norm, shared_head.head} plus a full MoE decoder layer.
#include "moeopt/model/tensor_specs.h"

namespace moeopt::arch_tensors {

namespace {

void add_mla(const ModelConfig& c, int l, TensorRole role, TensorRole norm_role, std::vector<TensorSpec>& out) {
  const std::string p = layer_prefix(l) + ".self_attn.";
  const int64_t H = c.hidden_size, n = c.num_attention_heads;
  const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  const bool b = c.attention_bias;
  if (c.q_lora_rank) {
    const int64_t rq = *c.q_lora_rank;
    out.push_back(make(p + "q_a_proj.weight", {rq, H}, role, l, -1, true));
    if (b) out.push_back(make(p + "q_a_proj.bias", {rq}, role, l));
    out.push_back(make(p + "q_a_layernorm.weight", {rq}, norm_role, l));
    out.push_back(make(p + "q_b_proj.weight", {n * qk, rq}, role, l, -1, true));
  } else {
    out.push_back(make(p + "q_proj.weight", {n * qk, H}, role, l, -1, true));
    if (b) out.push_back(make(p + "q_proj.bias", {n * qk}, role, l));
  }
  const int64_t kva = c.kv_lora_rank + c.qk_rope_head_dim;
  out.push_back(make(p + "kv_a_proj_with_mqa.weight", {kva, H}, role, l, -1, true));
  if (b) out.push_back(make(p + "kv_a_proj_with_mqa.bias", {kva}, role, l));
  out.push_back(make(p + "kv_a_layernorm.weight", {c.kv_lora_rank}, norm_role, l));
  out.push_back(make(p + "kv_b_proj.weight", {n * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank},
                     role, l, -1, true));
  out.push_back(make(p + "o_proj.weight", {H, n * c.v_head_dim}, role, l, -1, true));
  if (b) out.push_back(make(p + "o_proj.bias", {H}, role, l));
}

// One decoder layer. `mtp` relabels every tensor as part of the MTP module.
void add_layer(const ModelConfig& c, int l, bool moe, bool mtp, std::vector<TensorSpec>& out) {
  const std::string p = layer_prefix(l);
  const int64_t H = c.hidden_size;
  auto R = [&](TensorRole r) { return mtp ? TensorRole::kMtp : r; };
  add_mla(c, l, R(TensorRole::kAttention), R(TensorRole::kAttentionNorm), out);
  if (moe) {
    out.push_back(make(p + ".mlp.gate.weight", {c.num_experts, H}, R(TensorRole::kRouter), l));
    if (c.e_score_correction_bias)
      out.push_back(make(p + ".mlp.gate.e_score_correction_bias", {c.num_experts}, R(TensorRole::kRouterBias), l));
    for (int e = 0; e < int(c.num_experts); ++e)
      add_swiglu(p + ".mlp.experts." + std::to_string(e), H, c.moe_intermediate_size,
                 R(TensorRole::kRoutedExpert), l, e, false, false, out);
    if (c.num_shared_experts > 0)
      add_swiglu(p + ".mlp.shared_experts", H, c.shared_expert_intermediate_size,
                 R(TensorRole::kSharedExpert), l, -1, false, false, out);
  } else {
    add_swiglu(p + ".mlp", H, c.intermediate_size, R(TensorRole::kDenseMlp), l, -1, false, false, out);
  }
  out.push_back(make(p + ".input_layernorm.weight", {H}, R(TensorRole::kLayerNorm), l));
  out.push_back(make(p + ".post_attention_layernorm.weight", {H}, R(TensorRole::kLayerNorm), l));
}

}  // namespace

void deepseek_family(const ModelConfig& c, std::vector<TensorSpec>& out) {
  add_embedding(c, out);
  for (int l = 0; l < int(c.num_hidden_layers); ++l) add_layer(c, l, c.layer_is_moe(l), false, out);
  add_final_norm_and_head(c, out);
}

}  // namespace moeopt::arch_tensors

namespace moeopt {

std::vector<TensorSpec> mtp_tensors(const ModelConfig& c) {
  using namespace arch_tensors;
  std::vector<TensorSpec> out;
  if (!arch_is_deepseek(c.arch)) return out;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  for (int64_t i = 0; i < c.num_nextn_predict_layers; ++i) {
    const int l = int(c.num_hidden_layers + i);
    const std::string p = layer_prefix(l);
    const auto M = TensorRole::kMtp;
    out.push_back(make(p + ".embed_tokens.weight", {V, H}, M, l));
    out.push_back(make(p + ".enorm.weight", {H}, M, l));
    out.push_back(make(p + ".hnorm.weight", {H}, M, l));
    out.push_back(make(p + ".eh_proj.weight", {H, 2 * H}, M, l, -1, true));
    // The MTP layer is past first_k_dense_replace, so it is an MoE layer like the last ones.
    add_layer(c, l, c.num_experts > 0, true, out);
    out.push_back(make(p + ".shared_head.norm.weight", {H}, M, l));
    out.push_back(make(p + ".shared_head.head.weight", {V, H}, M, l));
  }
  return out;
}

}  // namespace moeopt
