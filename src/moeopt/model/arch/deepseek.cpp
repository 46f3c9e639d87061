// DeepSeek-V2 / V2-Lite / V3 (transformers' modeling_deepseek_v2 / modeling_deepseek_v3):
//   attention: MLA (arch/mla_layer.h, ops/mla.h): q-LoRA when q_lora_rank is set, else
//              q_proj; kv_a_proj_with_mqa -> kv_a_layernorm -> latent cache; kv_b_proj
//              expands (or is absorbed); softmax scale 1/sqrt(dn + dr) * yarn mscale^2;
//   MoE layers (layer >= first_k_dense_replace and layer % moe_layer_freq == 0):
//     V2: softmax scores; greedy top-k, or group_limited_greedy (keep the topk_group groups
//         with the largest max score); weights = scores * routed_scaling_factor, never
//         renormalised (transformers' V2 router has no norm_topk_prob step);
//     V3: sigmoid scores; choice = scores + e_score_correction_bias; groups ranked by the sum
//         of their two largest choices (noaux_tc, whatever topk_method says: transformers'
//         V3 router always does this); weights = unbiased scores, renormalised (+1e-20) when
//         norm_topk_prob, times routed_scaling_factor;
//     plus one shared MLP mlp.shared_experts.* of width n_shared_experts *
//     moe_intermediate_size, added ungated;
//   other layers: dense SwiGLU of width intermediate_size.
// The MTP layers of V3 (num_nextn_predict_layers) are not part of the model and are skipped.
#include "moeopt/core/logging.h"
#include "moeopt/model/arch/arch_recipes.h"

namespace moeopt::arch {

Result<MlaWeights> load_mla_attention(const WeightStore& w, const ModelConfig& c, int layer) {
  const std::string p = arch_tensors::layer_prefix(layer) + ".self_attn.";
  MlaWeights m;
  auto opt = [&](const std::string& name, bool present,
                 std::optional<TensorView>& into) -> Status {
    if (!present) return {};
    MOEOPT_ASSIGN_OR_RETURN(into, w.get(p + name));
    return {};
  };
  const bool lora = c.q_lora_rank.has_value(), b = c.attention_bias;
  MOEOPT_RETURN_IF_ERROR(opt("q_a_proj.weight", lora, m.q_a));
  MOEOPT_RETURN_IF_ERROR(opt("q_a_proj.bias", lora && b, m.q_a_bias));
  MOEOPT_RETURN_IF_ERROR(opt("q_a_layernorm.weight", lora, m.q_a_norm));
  MOEOPT_RETURN_IF_ERROR(opt("q_b_proj.weight", lora, m.q_b));
  MOEOPT_RETURN_IF_ERROR(opt("q_proj.weight", !lora, m.q));
  MOEOPT_RETURN_IF_ERROR(opt("q_proj.bias", !lora && b, m.q_bias));
  MOEOPT_ASSIGN_OR_RETURN(m.kv_a, w.get(p + "kv_a_proj_with_mqa.weight"));
  MOEOPT_RETURN_IF_ERROR(opt("kv_a_proj_with_mqa.bias", b, m.kv_a_bias));
  MOEOPT_ASSIGN_OR_RETURN(m.kv_a_norm, w.get(p + "kv_a_layernorm.weight"));
  MOEOPT_ASSIGN_OR_RETURN(m.kv_b, w.get(p + "kv_b_proj.weight"));
  MOEOPT_ASSIGN_OR_RETURN(m.o, w.get(p + "o_proj.weight"));
  MOEOPT_RETURN_IF_ERROR(opt("o_proj.bias", b, m.o_bias));
  // FP8 projections run as W8A8 through ops::linear; kv_b is read by the attention itself.
  m.q_a_scale = w.fp8_scale(p + "q_a_proj.weight");
  m.q_b_scale = w.fp8_scale(p + "q_b_proj.weight");
  m.q_scale = w.fp8_scale(p + "q_proj.weight");
  m.kv_a_scale = w.fp8_scale(p + "kv_a_proj_with_mqa.weight");
  m.o_scale = w.fp8_scale(p + "o_proj.weight");
  if (w.fp8_scale(p + "kv_b_proj.weight"))
    return make_error(ErrorCode::kUnsupported,
                      "{}: fp8 {}kv_b_proj.weight: MLA attention reads kv_b_proj in bf16/f16/f32 "
                      "only for now", c.source, p);
  return m;
}

namespace {

ops::RouteParams deepseek_route(const ModelConfig& c) {
  ops::RouteParams r;
  r.top_k = int(c.num_experts_per_tok);
  r.routed_scaling_factor = float(c.routed_scaling_factor);
  r.n_group = int(c.n_group);
  r.topk_group = int(c.topk_group);
  if (c.arch == Arch::kDeepseekV2) {
    r.scoring = ops::RouterScoring::kSoftmax;
    r.grouping = c.topk_method == TopkMethod::kGroupLimitedGreedy ? ops::ExpertGrouping::kMaxScore
                                                                  : ops::ExpertGrouping::kNone;
    r.renormalize = false;
  } else {
    r.scoring = ops::RouterScoring::kSigmoid;
    r.grouping = ops::ExpertGrouping::kTop2Sum;
    r.renormalize = c.norm_topk_prob;
    r.renormalize_eps = 1e-20f;
  }
  return r;
}

}  // namespace

Result<DecoderWeights> deepseek_weights(const WeightStore& w, const ModelConfig& c) {
  MOEOPT_ASSIGN_OR_RETURN(DecoderWeights d, load_decoder_common(w, c));  // MLA attention
  if (c.num_nextn_predict_layers > 0)
    log::info("{}: skipping {} multi-token-prediction layer(s) (model.layers.{}.*): not used "
              "without speculative decoding", c.source, c.num_nextn_predict_layers,
              c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    DecoderLayerWeights& L = d.layers[size_t(l)];
    const std::string mlp = arch_tensors::layer_prefix(int(l)) + ".mlp";
    if (!c.layer_is_moe(l)) {
      MOEOPT_ASSIGN_OR_RETURN(L.mlp, load_swiglu(w, mlp, false));
      continue;
    }
    MoeBlockWeights m;
    MOEOPT_ASSIGN_OR_RETURN(m.router, w.get(mlp + ".gate.weight"));
    MOEOPT_ASSIGN_OR_RETURN(m.experts, load_experts(w, mlp, c.num_experts, false));
    m.params.route = deepseek_route(c);
    if (c.e_score_correction_bias) {
      MOEOPT_ASSIGN_OR_RETURN(m.params.route.correction_bias,
                              w.get(mlp + ".gate.e_score_correction_bias"));
    }
    if (c.num_shared_experts > 0) {
      MOEOPT_ASSIGN_OR_RETURN(m.shared, load_swiglu(w, mlp + ".shared_experts", false));
    }
    L.moe = std::move(m);
  }
  return d;
}

}  // namespace moeopt::arch
