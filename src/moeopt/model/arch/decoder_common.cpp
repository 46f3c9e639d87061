// load_decoder_common: the parts every decoder shares (arch_recipes.h).
#include "moeopt/model/arch/arch_recipes.h"

namespace moeopt::arch {

Result<DecoderWeights> load_decoder_common(const WeightStore& w, const ModelConfig& c) {
  DecoderWeights d;
  MOEOPT_ASSIGN_OR_RETURN(d.embed, w.get("model.embed_tokens.weight"));
  MOEOPT_ASSIGN_OR_RETURN(d.final_norm, w.get("model.norm.weight"));
  if (c.tie_word_embeddings) {
    d.lm_head = d.embed;
  } else {
    MOEOPT_ASSIGN_OR_RETURN(d.lm_head, w.get("lm_head.weight"));
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    DecoderLayerWeights L;
    const std::string p = arch_tensors::layer_prefix(int(l));
    MOEOPT_ASSIGN_OR_RETURN(L.input_norm, w.get(p + ".input_layernorm.weight"));
    MOEOPT_ASSIGN_OR_RETURN(L.post_attention_norm, w.get(p + ".post_attention_layernorm.weight"));
    if (c.attention_kind == AttentionKind::kMla) {
      MOEOPT_ASSIGN_OR_RETURN(L.mla, load_mla_attention(w, c, int(l)));
    } else {
      MOEOPT_ASSIGN_OR_RETURN(L.attn, load_gqa_attention(w, c, int(l)));
    }
    d.layers.push_back(std::move(L));
  }
  return d;
}

}  // namespace moeopt::arch
