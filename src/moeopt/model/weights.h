// WeightStore: a checkpoint's tensors checked against what the config says it must hold.
//
// Opening validates the whole checkpoint up front (every expected tensor present with the
// exact shape and a float dtype; no unexpected tensors besides ones known to be unused, such
// as DeepSeek-V3's MTP layers), so a model never starts with a missing or misshapen weight.
// Tensors stay in the mmap'd files (zero copy); views are read-only.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/model/config.h"
#include "moeopt/model/safetensors.h"
#include "moeopt/model/tensor_specs.h"

namespace moeopt {

class WeightStore {
 public:
  // Opens `dir` (a checkpoint directory) and cross-checks it against `config`.
  static Result<WeightStore> open(const std::string& dir, const ModelConfig& config);

  // A tensor the config declares (kNotFound names the tensor otherwise).
  Result<TensorView> get(std::string_view name) const;
  const Checkpoint& checkpoint() const { return ckpt_; }
  const std::vector<TensorSpec>& specs() const { return specs_; }

 private:
  Checkpoint ckpt_;
  std::vector<TensorSpec> specs_;
  std::unordered_map<std::string, TensorView> views_;
};

}  // namespace moeopt
