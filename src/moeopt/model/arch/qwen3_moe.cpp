// Qwen3-MoE (transformers' modeling_qwen3_moe):
//   attention: GQA, no biases, per-head RMSNorm on q and k before RoPE (q_norm/k_norm [D]),
//              head_dim independent of hidden / heads; sliding window when use_sliding_window;
//   MoE layers (layer_is_moe: not in mlp_only_layers, (l + 1) % decoder_sparse_step == 0):
//              router gate [E, H] -> softmax -> top-k -> renormalise if norm_topk_prob;
//              experts mlp.experts.<e>.{gate,up,down}_proj; no shared expert;
//   other layers: dense SwiGLU mlp.{gate,up,down}_proj of width intermediate_size.
#include "moeopt/model/arch/arch_recipes.h"

namespace moeopt::arch {

Result<DecoderWeights> qwen3_moe_weights(const WeightStore& w, const ModelConfig& c) {
  MOEOPT_ASSIGN_OR_RETURN(DecoderWeights d, load_decoder_common(w, c));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    DecoderLayerWeights& L = d.layers[size_t(l)];
    const std::string mlp = arch_tensors::layer_prefix(int(l)) + ".mlp";
    if (c.sliding_window && c.use_sliding_window) L.sliding_window = int(*c.sliding_window);
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
    L.moe = std::move(m);
  }
  return d;
}

}  // namespace moeopt::arch
