// WeightStore: a checkpoint's tensors checked against what the config says it must hold.
//
// Opening validates the whole checkpoint up front (every expected tensor present with the
// exact shape and a float dtype; no unexpected tensors besides ones known to be unused, such
// as DeepSeek-V3's MTP layers), so a model never starts with a missing or misshapen weight.
// Tensors stay in the mmap'd files (zero copy); views are read-only.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/model/config.h"
#include "moeopt/model/safetensors.h"
#include "moeopt/model/tensor_specs.h"
#include "moeopt/ops/moe.h"

namespace moeopt {

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
};

}  // namespace moeopt
