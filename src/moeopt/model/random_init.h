// init-random: a complete, deterministic Hugging Face checkpoint of any config, with
// synthetic weights — config.json, safetensors shards (<= 5 GB each, with an index when
// there are several) under exactly the hub's tensor names (tensor_specs.h), and the
// family's tokenizer files when the vocabulary matches one we ship.
//
// Values follow torch's default module initialisation so activations stay O(1) at any width
// and routing is non-trivial (HF's initializer_range=0.02 would make every layer nearly an
// identity, which tests little):
//   nn.Linear weight / bias   U(-1/sqrt(fan_in), 1/sqrt(fan_in))   (fan_in = in_features)
//   embedding                 U(-sqrt(3), sqrt(3))                 (std 1, like N(0, 1))
//   RMSNorm weights           1 + U(-0.2, 0.2)                     (not all ones, so the
//                                                                   scale is exercised)
//   e_score_correction_bias   U(-0.1, 0.1)
// Each element is a pure function of (seed, tensor name, element index) — a counter-based
// hash — so output is identical whatever the thread count, shard size or write order, and
// memory stays constant while streaming a full-size checkpoint.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "moeopt/core/dtype.h"
#include "moeopt/core/status.h"
#include "moeopt/model/config.h"
#include "moeopt/model/tensor_specs.h"
#include "moeopt/ops/random_fill.h"

namespace moeopt {

struct RandomInitOptions {
  uint64_t seed = 0;
  DType dtype = DType::kBF16;
  // FP8 checkpoint in hub layout (as Qwen/Qwen3-30B-A3B-FP8): config.json gets an fp8
  // quantization_config (e4m3, dynamic, [128, 128], modules_to_not_convert = lm_head, the
  // routers and the norms, as Qwen lists them), every FP8-eligible linear weight is written as
  // F8_E4M3 plus "<name>_scale_inv" in fp8_scale_dtype. The values quantised are the same
  // init-random values, rounded to `dtype` first, block-wise as ops/fp8.h defines
  // (scale = max(amax, 1e-10) / 448 per 128x128 block). So with f32 scales the result equals
  // the online quantisation (--fp8-weights on) of the `dtype` checkpoint of the same seed.
  // A config that already has an fp8 quantization_config is always written this way.
  bool fp8 = false;
  DType fp8_scale_dtype = DType::kF32;  // f32 (DeepSeek-V3), bf16 (Qwen) or f16
  uint64_t max_shard_bytes = 5'000'000'000ull;
  std::string tokenizer_root;  // models/tokenizers (empty: write no tokenizer files)
  int threads = 0;             // 0: all hardware threads
  // Called after each tensor with (bytes written so far, total bytes).
  std::function<void(uint64_t, uint64_t)> progress;
};

struct RandomInitResult {
  uint64_t total_bytes = 0;
  size_t num_tensors = 0;
  size_t num_shards = 0;
  std::string tokenizer;  // family whose tokenizer files were written, or empty
};

// The fp8 quantization_config init-random writes (see RandomInitOptions::fp8).
Fp8Quantization hub_fp8_quantization(const ModelConfig& config);

// Writes the checkpoint of `config` into `out_dir` (created if needed).
Result<RandomInitResult> write_random_checkpoint(const ModelConfig& config, const std::string& out_dir,
                                                 const RandomInitOptions& options);

// The value of element `index` of tensor `name` (before rounding to the storage dtype),
// given the tensor's init rule. Exposed for tests.
using InitRule = ops::RandomFillRule;
float random_init_value(uint64_t seed, const std::string& name, uint64_t index, InitRule rule,
                        int64_t fan_in);

// The fill of one tensor (ops/random_fill.h): what write_random_checkpoint stores and what a
// device backend generates for `--random-weights`.
ops::RandomFill random_fill_for(uint64_t seed, const std::string& name, InitRule rule,
                                int64_t fan_in);
InitRule init_rule_for(const TensorSpec& spec);
// The shipped tokenizer (models/tokenizers/<family>) a config's family uses, or "".
std::string tokenizer_family(const ModelConfig& config);
int64_t init_fan_in_for(const TensorSpec& spec, const ModelConfig& config);

}  // namespace moeopt
