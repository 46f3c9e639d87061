// Mixtral (transformers' modeling_mixtral; Mixtral-8x7B, 8x22B):
//   attention: GQA, no biases, no q/k norm, sliding window when config.sliding_window is set;
//   every layer is MoE: router block_sparse_moe.gate [E, H] -> softmax over all experts ->
//              top-k -> renormalise over the k chosen (always; equal to a softmax over the
//              k selected logits); experts block_sparse_moe.experts.<e>.{w1 (gate), w3 (up),
//              w2 (down)}.
#include "moeopt/model/arch/arch_recipes.h"

namespace moeopt::arch {

Result<DecoderWeights> mixtral_weights(const WeightStore& w, const ModelConfig& c) {
  MOEOPT_ASSIGN_OR_RETURN(DecoderWeights d, load_decoder_common(w, c));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    DecoderLayerWeights& L = d.layers[size_t(l)];
    const std::string moe = arch_tensors::layer_prefix(int(l)) + ".block_sparse_moe";
    if (c.sliding_window) L.sliding_window = int(*c.sliding_window);
    MoeBlockWeights m;
    MOEOPT_ASSIGN_OR_RETURN(m.router, w.get(moe + ".gate.weight"));
    MOEOPT_ASSIGN_OR_RETURN(m.experts, load_experts(w, moe, c.num_experts, true));
    m.params.route.top_k = int(c.num_experts_per_tok);
    m.params.route.scoring = ops::RouterScoring::kSoftmax;
    m.params.route.renormalize = true;
    L.moe = std::move(m);
  }
  return d;
}

}  // namespace moeopt::arch
