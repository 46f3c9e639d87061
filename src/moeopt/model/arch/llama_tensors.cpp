// Tensor specs of the Llama-shaped families: llama, mistral (dense) and mixtral (MoE).
//
// transformers' modeling_llama/mistral/mixtral.py:
//   self_attn.{q,k,v,o}_proj          llama: bias on all four with attention_bias; mistral and
//                                     mixtral: no bias
//   mlp.{gate,up,down}_proj           llama/mistral dense MLP (llama: bias with mlp_bias)
//   block_sparse_moe.gate.weight [E, H]                 Mixtral router
//   block_sparse_moe.experts.<e>.w1/w3.weight [I, H]    gate / up (I = intermediate_size)
//   block_sparse_moe.experts.<e>.w2.weight    [H, I]    down
#include "moeopt/model/tensor_specs.h"

namespace moeopt::arch_tensors {

void llama_family(const ModelConfig& c, std::vector<TensorSpec>& out) {
  const int64_t H = c.hidden_size;
  add_embedding(c, out);
  for (int l = 0; l < int(c.num_hidden_layers); ++l) {
    const std::string p = layer_prefix(l);
    add_gqa_attention(c, l, out);
    if (c.layer_is_moe(l)) {
      out.push_back(make(p + ".block_sparse_moe.gate.weight", {c.num_experts, H}, TensorRole::kRouter, l));
      for (int e = 0; e < int(c.num_experts); ++e)
        add_swiglu(p + ".block_sparse_moe.experts." + std::to_string(e), H, c.moe_intermediate_size,
                   TensorRole::kRoutedExpert, l, e, false, true, out);
    } else {
      add_swiglu(p + ".mlp", H, c.intermediate_size, TensorRole::kDenseMlp, l, -1, c.mlp_bias, false, out);
    }
    add_layer_norms(c, l, out);
  }
  add_final_norm_and_head(c, out);
}

}  // namespace moeopt::arch_tensors
