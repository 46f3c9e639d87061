// Tensor specs of the Qwen families: qwen2, qwen3 (dense), qwen2_moe, qwen3_moe.
//
// Names and shapes follow transformers' modeling_qwen2/qwen3/qwen2_moe/qwen3_moe.py:
//   self_attn.{q,k,v,o}_proj          Qwen2 family: q/k/v bias (qkv_bias), no o bias;
//                                     Qwen3 family: bias on all four only with attention_bias
//   self_attn.{q,k}_norm.weight [hd]  Qwen3 family: RMSNorm over each head
//   mlp.gate.weight [E, H]            router (nn.Linear without bias)
//   mlp.experts.<e>.{gate,up,down}_proj.weight   [I, H], [I, H], [H, I] with I = moe_intermediate_size
//   mlp.shared_expert.{gate,up,down}_proj.weight Qwen2-MoE, width shared_expert_intermediate_size
//   mlp.shared_expert_gate.weight [1, H]          Qwen2-MoE sigmoid gate on the shared expert
//   mlp.{gate,up,down}_proj.weight    dense layers (mlp_only_layers, decoder_sparse_step), width
//                                     intermediate_size
#include "moeopt/model/tensor_specs.h"

namespace moeopt::arch_tensors {

void qwen_family(const ModelConfig& c, std::vector<TensorSpec>& out) {
  const int64_t H = c.hidden_size;
  add_embedding(c, out);
  for (int l = 0; l < int(c.num_hidden_layers); ++l) {
    const std::string p = layer_prefix(l);
    add_gqa_attention(c, l, out);
    if (c.qk_norm) {
      out.push_back(make(p + ".self_attn.q_norm.weight", {c.head_dim}, TensorRole::kAttentionNorm, l));
      out.push_back(make(p + ".self_attn.k_norm.weight", {c.head_dim}, TensorRole::kAttentionNorm, l));
    }
    if (c.layer_is_moe(l)) {
      out.push_back(make(p + ".mlp.gate.weight", {c.num_experts, H}, TensorRole::kRouter, l));
      for (int e = 0; e < int(c.num_experts); ++e)
        add_swiglu(p + ".mlp.experts." + std::to_string(e), H, c.moe_intermediate_size,
                   TensorRole::kRoutedExpert, l, e, false, false, out);
      if (c.arch == Arch::kQwen2Moe) {
        add_swiglu(p + ".mlp.shared_expert", H, c.shared_expert_intermediate_size,
                   TensorRole::kSharedExpert, l, -1, false, false, out);
        out.push_back(make(p + ".mlp.shared_expert_gate.weight", {1, H}, TensorRole::kSharedExpertGate, l));
      }
    } else {
      add_swiglu(p + ".mlp", H, c.intermediate_size, TensorRole::kDenseMlp, l, -1, false, false, out);
    }
    add_layer_norms(c, l, out);
  }
  add_final_norm_and_head(c, out);
}

}  // namespace moeopt::arch_tensors
