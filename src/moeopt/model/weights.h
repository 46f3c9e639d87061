// WeightStore: a checkpoint's tensors checked against what the config says it must hold.
//
// Opening validates the whole checkpoint up front (every expected tensor present with the
// exact shape and a float dtype; no unexpected tensors besides ones known to be unused, such
// as DeepSeek-V3's MTP layers), so a model never starts with a missing or misshapen weight.
// Tensors stay in the mmap'd files (zero copy); views are read-only.
//
// FP8 checkpoints (quantization_config fp8, ops/fp8.h): the weights checkpoint_tensors marks
// fp8_quantized must be F8_E4M3 and their "<name>_scale_inv" block scales F32, BF16 or F16;
// scales that are not F32 are converted to f32 copies at open, so fp8_scale() always gives
// f32. Any other tensor stored as F8_E4M3 is an error (it would have no scale).
#pragma once

#include <memory>
#include <optional>
#include <vector>
#include <string>
#include <string_view>
#include <unordered_map>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/model/config.h"
#include "moeopt/model/safetensors.h"
#include "moeopt/model/tensor_specs.h"
#include "moeopt/ops/context.h"
#include "moeopt/ops/moe.h"

namespace moeopt {

// A routed expert's 2-D projection (gate/up/down): what 2:4 pruning applies to.
inline bool is_prunable_expert(const TensorSpec& s) {
  return s.role == TensorRole::kRoutedExpert && s.fp8_linear && s.shape.size() == 2;
}

// Per-input-channel importance of routed expert projections, by tensor name ([K] each), for
// activation-aware 2:4 pruning (model/quality.h expert_importance).
struct ExpertImportance {
  std::unordered_map<std::string, std::vector<float>> by_tensor;
};

class WeightStore {
 public:
  // Opens `dir` (a checkpoint directory) and cross-checks it against `config`.
  static Result<WeightStore> open(const std::string& dir, const ModelConfig& config);
  // Weights that already live somewhere else (device memory laid out by
  // model/device_weights.h): `views` must hold every spec's name; `owner` keeps the memory
  // alive as long as the store (and every copy of its views' users) lives.
  static WeightStore from_views(std::vector<TensorSpec> specs,
                                std::unordered_map<std::string, TensorView> views,
                                std::shared_ptr<void> owner);

  // A tensor the config declares (kNotFound names the tensor otherwise).
  Result<TensorView> get(std::string_view name) const;
  // The f32 block scale [ceil(N/128), ceil(K/128)] of an fp8 weight, nullopt when the weight
  // is not fp8.
  std::optional<TensorView> fp8_scale(std::string_view weight_name) const;
  // True when any weight is fp8 (a pre-quantized checkpoint, or after quantize_fp8).
  bool has_fp8() const { return fp8_weights_ > 0; }
  // Online quantisation (--fp8-weights on): every fp8_linear weight still in bf16/f16/f32 is
  // replaced by an fp8 e4m3 copy with f32 128x128 block scales (ops::quantize_fp8_weight_blocks,
  // the format of the pre-quantized checkpoints). Host stores only.
  Status quantize_fp8(const ops::Context& ctx);
  // The inverse, for references: every fp8 weight becomes an f32 copy of w_q * scale.
  Status dequantize_fp8(const ops::Context& ctx);
  // 2:4 pruning along K (ops::prune_2_4) of every routed expert's projections (gate/up/down;
  // not the shared experts, attention or dense MLPs), in their stored dtype: fp8 codes keep
  // their block scales, which pruning does not change. By magnitude, or by |w| * importance
  // where `importance` names the tensor (activation-aware); host stores only.
  Status prune_experts_2_4(const ops::Context& ctx, const ExpertImportance* importance = nullptr);
  // Routed experts of one MoE block already stacked ENK (device layout, see
  // model/device_weights.h), keyed by the block's prefix ("model.layers.3.mlp"); null when
  // the store holds them per expert (checkpoints).
  const ops::ExpertWeights* stacked_experts(const std::string& moe_prefix) const;
  void add_stacked_experts(const std::string& moe_prefix, ops::ExpertWeights experts);
  const Checkpoint& checkpoint() const { return ckpt_; }
  const std::vector<TensorSpec>& specs() const { return specs_; }

 private:
  Checkpoint ckpt_;
  std::shared_ptr<void> owner_;
  std::vector<TensorSpec> specs_;
  std::unordered_map<std::string, TensorView> views_;
  std::unordered_map<std::string, ops::ExpertWeights> stacked_;
  // Host copies made at open or by quantize_fp8 (converted scales, quantised weights).
  std::shared_ptr<std::vector<HostTensor>> owned_ = std::make_shared<std::vector<HostTensor>>();
  int64_t fp8_weights_ = 0;
};

}  // namespace moeopt
