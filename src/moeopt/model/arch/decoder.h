// The decoder skeleton shared by the MoE families (Qwen3-MoE, Mixtral, Qwen2-MoE, DeepSeek,
// and the dense Llama/Qwen models): embedding -> N x [RMSNorm -> attention -> RMSNorm -> MLP
// or MoE] -> RMSNorm -> LM head, pre-norm with a residual stream. Attention is GQA over the
// paged K/V cache or, for DeepSeek, MLA over the paged latent cache (ops/mla.h).
//
// Each architecture file (arch/<name>.cpp) fills a DecoderWeights from the checkpoint using
// the tensor names of tensor_specs.h and the family's routing rules; this file runs it.
// Activations are f32 on the CPU; weights are used in place from the checkpoint mapping.
// When the weights live on a device (model/device_weights.h), the same forward runs there:
// activations bf16 except the residual stream (f32), router logits and logits (f32);
// temporaries come from ctx.arena and the batch's index vectors are copied up once per step.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "moeopt/model/model.h"
#include "moeopt/model/weights.h"
#include "moeopt/ops/moe.h"
#include "moeopt/ops/rope.h"

namespace moeopt {

// FP8 weights (ops/fp8.h) carry their f32 block scales in the *_scale fields; the forward
// passes weight and scale to ops::linear / ops::moe_forward together (ops::LinearWeight).
struct AttentionWeights {
  TensorView q, k, v, o;                         // [Hq*D, H], [Hkv*D, H] x2, [H, Hq*D]
  std::optional<TensorView> q_scale, k_scale, v_scale, o_scale;  // fp8 only
  std::optional<TensorView> q_bias, k_bias, v_bias, o_bias;
  std::optional<TensorView> q_norm, k_norm;      // [D] per-head RMSNorm (Qwen3), or over the
                                                 // whole projection, [Hq*D] / [Hkv*D] (OLMoE)
  // q, k, v as one [(Hq + 2 Hkv) D, H] matrix when they are adjacent in memory (the device
  // layout puts them so, see model/device_weights.h): one GEMM instead of three. FP8: when
  // their block scales are adjacent too and q and k end on 128-row blocks, qkv_scale is the
  // fused [ceil((Hq + 2 Hkv) D / 128), ceil(H/128)] scale.
  std::optional<TensorView> qkv, qkv_bias, qkv_scale;
};

// Multi-head latent attention (DeepSeek, ops/mla.h; shapes in arch/deepseek_tensors.cpp).
struct MlaWeights {
  std::optional<TensorView> q_a, q_a_bias, q_a_norm, q_b;  // q-LoRA: [rq, H], [rq], [rq], [n(dn+dr), rq]
  std::optional<TensorView> q, q_bias;                     // no q-LoRA: [n(dn+dr), H]
  TensorView kv_a;                                         // [r + dr, H]
  std::optional<TensorView> kv_a_bias;                     // [r + dr]
  TensorView kv_a_norm;                                    // [r]
  TensorView kv_b;                                         // [n(dn+dv), r]
  TensorView o;                                            // [H, n dv]
  std::optional<TensorView> o_bias;                        // [H]
  std::optional<TensorView> q_a_scale, q_b_scale, q_scale, kv_a_scale, o_scale;  // fp8 only
};

struct SwigluWeights {
  TensorView gate, up, down;                     // [W, H], [W, H], [H, W]
  std::optional<TensorView> gate_scale, up_scale, down_scale;    // fp8 only
  std::optional<TensorView> gate_up;             // [2W, H] when gate and up are adjacent
  std::optional<TensorView> gate_up_scale;       // fp8: its fused scale (W % 128 == 0)
};

struct MoeBlockWeights {
  TensorView router;                             // [E, H]
  ops::ExpertWeights experts;
  ops::MoeParams params;
  std::optional<SwigluWeights> shared;           // Qwen2-MoE shared expert
  std::optional<TensorView> shared_gate;         // [1, H]: sigmoid gate on the shared output
                                                 // (absent: added ungated, DeepSeek)
};

struct DecoderLayerWeights {
  TensorView input_norm, post_attention_norm;    // [H]
  AttentionWeights attn;                         // GQA layers
  std::optional<MlaWeights> mla;                 // MLA layers (DeepSeek): attn is unused
  std::optional<SwigluWeights> mlp;              // dense layers
  std::optional<MoeBlockWeights> moe;            // sparse layers
  int sliding_window = 0;                        // 0: full attention
};

struct DecoderWeights {
  TensorView embed;                              // [V, H]
  std::vector<DecoderLayerWeights> layers;
  TensorView final_norm;                         // [H]
  TensorView lm_head;                            // [V, H] (the embedding when tied)
};

// ModelConfig -> the rope op's settings (rope_theta, rope_scaling, head_dim; for MLA the
// rotary dims are qk_rope_head_dim, as transformers' DeepSeek configs set head_dim).
ops::RopeConfig rope_config_from(const ModelConfig& c);

// Helpers for arch files.
Result<AttentionWeights> load_gqa_attention(const WeightStore& w, const ModelConfig& c, int layer);
Result<SwigluWeights> load_swiglu(const WeightStore& w, const std::string& prefix,
                                  bool mixtral_names);
// Routed experts under "<layer prefix>.<moe_module>.experts.<e>" (per-expert tensors).
Result<ops::ExpertWeights> load_experts(const WeightStore& w, const std::string& moe_prefix,
                                        int64_t num_experts, bool mixtral_names);

// Sets the fused views above (qkv, gate_up) wherever the tensors are adjacent in memory
// (never for fp8 weights: their block scales would have to be fused too).
void fuse_adjacent_weights(DecoderWeights& w);

class DecoderModel : public Model {
 public:
  DecoderModel(ModelConfig config, WeightStore store, DecoderWeights weights);

  const ModelConfig& config() const override { return config_; }
  KvLayout kv_layout() const override;
  Status forward(const ops::Context& ctx, const ForwardBatch& batch,
                 const std::vector<LayerKv>& kv, const TensorView& logits) override;
  Result<BatchTensors> prepare(const ops::Context& ctx, const ForwardBatch& batch) override;
  Status run(const ops::Context& ctx, const ForwardBatch& batch, const BatchTensors& t,
             const std::vector<LayerKv>& kv, const TensorView& logits) override;
  Device device() const override { return w_.embed.device; }

 private:
  Status ensure_rope_table(const ops::Context& ctx, int64_t max_position);

  ModelConfig config_;
  WeightStore store_;  // owns the mappings the views point into
  DecoderWeights w_;
  ops::RopeConfig rope_;
  HostTensor cos_sin_;  // [positions, rotary_dim]
  int64_t cos_sin_positions_ = 0;
  // Device copy of cos_sin_ when the weights live on a device.
  std::shared_ptr<void> cos_sin_device_;
  int64_t cos_sin_device_positions_ = 0;
};

}  // namespace moeopt
