// Tensor specs of OLMoE (transformers' modeling_olmoe.py).
//
//   self_attn.{q,k,v,o}_proj          bias on all four with attention_bias
//   self_attn.q_norm.weight [heads * hd]   RMSNorm over the whole q projection (not per head,
//   self_attn.k_norm.weight [kv * hd]      unlike Qwen3): OlmoeRMSNorm(hidden_size) and
//                                          OlmoeRMSNorm((hidden/heads) * kv_heads)
//   mlp.gate.weight [E, H]            router
//   mlp.experts.<e>.{gate,up,down}_proj.weight  [I, H], [I, H], [H, I], I = intermediate_size
#include "moeopt/model/tensor_specs.h"

namespace moeopt::arch_tensors {

void olmoe_family(const ModelConfig& c, std::vector<TensorSpec>& out) {
  const int64_t H = c.hidden_size;
  add_embedding(c, out);
  for (int l = 0; l < int(c.num_hidden_layers); ++l) {
    const std::string p = layer_prefix(l);
    add_gqa_attention(c, l, out);
    out.push_back(make(p + ".self_attn.q_norm.weight", {c.num_attention_heads * c.head_dim},
                       TensorRole::kAttentionNorm, l));
    out.push_back(make(p + ".self_attn.k_norm.weight", {c.num_key_value_heads * c.head_dim},
                       TensorRole::kAttentionNorm, l));
    out.push_back(make(p + ".mlp.gate.weight", {c.num_experts, H}, TensorRole::kRouter, l));
    for (int e = 0; e < int(c.num_experts); ++e)
      add_swiglu(p + ".mlp.experts." + std::to_string(e), H, c.moe_intermediate_size,
                 TensorRole::kRoutedExpert, l, e, false, false, out);
    add_layer_norms(c, l, out);
  }
  add_final_norm_and_head(c, out);
}

}  // namespace moeopt::arch_tensors
