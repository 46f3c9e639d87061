// Qwen2-MoE (transformers' modeling_qwen2_moe; Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B):
//   attention: GQA with biases on q/k/v (not o), no q/k norm; sliding window only when
//              use_sliding_window (and then only on layers >= max_window_layers);
//   MoE layers (same rule as Qwen3-MoE): softmax router, top-k, renormalise if
//              norm_topk_prob (default false), plus a shared expert
//              mlp.shared_expert.{gate,up,down}_proj whose output is scaled by
//              sigmoid(x · shared_expert_gate^T) ([1, H]) and added to the routed output;
//   other layers: dense SwiGLU of width intermediate_size.
#include "moeopt/model/arch/arch_recipes.h"

namespace moeopt::arch {

Result<DecoderWeights> qwen2_moe_weights(const WeightStore& w, const ModelConfig& c) {
  MOEOPT_ASSIGN_OR_RETURN(DecoderWeights d, load_decoder_common(w, c));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    DecoderLayerWeights& L = d.layers[size_t(l)];
    const std::string mlp = arch_tensors::layer_prefix(int(l)) + ".mlp";
    if (c.sliding_window && c.use_sliding_window && l >= c.max_window_layers)
      L.sliding_window = int(*c.sliding_window);
    if (!c.layer_is_moe(l)) {
      MOEOPT_ASSIGN_OR_RETURN(L.mlp, load_swiglu(w, mlp, false));
      continue;
    }
    MoeBlockWeights m;
    MOEOPT_ASSIGN_OR_RETURN(m.router, w.get(mlp + ".gate.weight"));
    MOEOPT_ASSIGN_OR_RETURN(m.experts, load_experts(w, mlp, c.num_experts, false));
    m.params.route.top_k = int(c.num_experts_per_tok);
    m.params.route.scoring = ops::RouterScoring::kSoftmax;
    m.params.route.renormalize = c.norm_topk_prob;
    if (c.shared_expert_intermediate_size > 0) {
      MOEOPT_ASSIGN_OR_RETURN(m.shared, load_swiglu(w, mlp + ".shared_expert", false));
      MOEOPT_ASSIGN_OR_RETURN(m.shared_gate, w.get(mlp + ".shared_expert_gate.weight"));
    }
    L.moe = std::move(m);
  }
  return d;
}

}  // namespace moeopt::arch
