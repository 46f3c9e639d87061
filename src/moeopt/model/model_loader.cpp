// load_model: config.json -> the architecture's recipe -> a ready Model.
#include <filesystem>

#include "moeopt/model/arch/arch_recipes.h"
#include "moeopt/model/device_weights.h"
#include "moeopt/model/model.h"
#include "moeopt/model/weights.h"
#include "moeopt/ops/fp8.h"

namespace moeopt {

Result<std::unique_ptr<Model>> make_model(ModelConfig config, WeightStore store) {
  Result<DecoderWeights> (*recipe)(const WeightStore&, const ModelConfig&) = nullptr;
  switch (config.arch) {
    case Arch::kQwen3Moe:
    case Arch::kOlmoe: recipe = arch::qwen3_moe_weights; break;
    case Arch::kQwen2Moe: recipe = arch::qwen2_moe_weights; break;
    case Arch::kMixtral: recipe = arch::mixtral_weights; break;
    case Arch::kDeepseekV2:
    case Arch::kDeepseekV3: recipe = arch::deepseek_weights; break;
    case Arch::kLlama:
    case Arch::kMistral:
    case Arch::kQwen2:
    case Arch::kQwen3: break;
  }
  if (!recipe)
    return make_error(ErrorCode::kUnsupported,
                      "{}: running {} models is not implemented yet (qwen3_moe, qwen2_moe, "
                      "mixtral, olmoe, deepseek_v2 and deepseek_v3 are)", config.source,
                      arch_name(config.arch));
  if (config.clip_qkv)
    return make_error(ErrorCode::kUnsupported,
                      "{}: field 'clip_qkv' is {}: clamping q/k/v is not implemented (OLMoE "
                      "checkpoints ship null)", config.source, *config.clip_qkv);
  MOEOPT_ASSIGN_OR_RETURN(DecoderWeights weights, recipe(store, config));
  return std::unique_ptr<Model>(
      std::make_unique<DecoderModel>(std::move(config), std::move(store), std::move(weights)));
}

namespace {
// MLA (DeepSeek) has no device kernels yet: say so before any weight is uploaded.
Status check_runs_on_device(const ModelConfig& c) {
  if (c.attention_kind != AttentionKind::kMla) return {};
  return make_error(ErrorCode::kUnsupported,
                    "{}: {} (MLA attention) runs on the CPU only for now: use --device cpu",
                    c.source, arch_name(c.arch));
}

Result<ModelConfig> checkpoint_config(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    return make_error(ErrorCode::kNotFound, "{}: not a checkpoint directory", dir);
  MOEOPT_ASSIGN_OR_RETURN(ModelConfig config,
                          load_model_config((std::filesystem::path(dir) / "config.json").string()));
  if (config.fp8) {
    // config.cpp accepts any block-wise fp8 (inspect sizes them); what runs is the format of
    // ops/fp8.h: 128x128 blocks, activations quantised at run time.
    const Fp8Quantization& q = *config.fp8;
    if (q.block_n != ops::kFp8BlockSize || q.block_k != ops::kFp8BlockSize)
      return make_error(ErrorCode::kUnsupported,
                        "{}: field 'quantization_config.weight_block_size' is [{}, {}]: only "
                        "[128, 128] blocks run", config.source, q.block_n, q.block_k);
    if (q.activation_scheme != "dynamic")
      return make_error(ErrorCode::kUnsupported,
                        "{}: field 'quantization_config.activation_scheme' is '{}': only "
                        "'dynamic' (per-token groups of 128) runs", config.source,
                        q.activation_scheme);
  }
  return config;
}
}  // namespace

Result<std::unique_ptr<Model>> load_model(const std::string& dir) {
  return load_model(dir, LoadOptions{});
}

Result<std::unique_ptr<Model>> load_model(const std::string& dir, const LoadOptions& options) {
  MOEOPT_ASSIGN_OR_RETURN(ModelConfig config, checkpoint_config(dir));
  MOEOPT_ASSIGN_OR_RETURN(WeightStore store, WeightStore::open(dir, config));
  if (options.sparsity_2_4)
    MOEOPT_RETURN_IF_ERROR(store.prune_experts_2_4(options.ctx, options.sparsity_importance));
  switch (options.format) {
    case WeightFormat::kAsStored: break;
    case WeightFormat::kFp8: MOEOPT_RETURN_IF_ERROR(store.quantize_fp8(options.ctx)); break;
    case WeightFormat::kDequantized: MOEOPT_RETURN_IF_ERROR(store.dequantize_fp8(options.ctx)); break;
  }
  return make_model(std::move(config), std::move(store));
}

Result<std::unique_ptr<Model>> load_model_to_device(const std::string& dir,
                                                    const DeviceWeightsOptions& options) {
  MOEOPT_ASSIGN_OR_RETURN(ModelConfig config, checkpoint_config(dir));
  MOEOPT_RETURN_IF_ERROR(check_runs_on_device(config));
  MOEOPT_ASSIGN_OR_RETURN(WeightStore host, WeightStore::open(dir, config));
  // Pruned on the host in the stored dtype, before any quantisation (as load_model does).
  if (options.sparsity_2_4)
    MOEOPT_RETURN_IF_ERROR(host.prune_experts_2_4(options.ctx ? *options.ctx : ops::Context{},
                                                  options.sparsity_importance));
  MOEOPT_ASSIGN_OR_RETURN(WeightStore dev, upload_weights(config, host, options));
  return make_model(std::move(config), std::move(dev));
}

Result<std::unique_ptr<Model>> random_model_on_device(ModelConfig config, uint64_t seed,
                                                      const DeviceWeightsOptions& options) {
  MOEOPT_RETURN_IF_ERROR(check_runs_on_device(config));
  if (options.sparsity_2_4)
    return make_error(ErrorCode::kUnsupported,
                      "{}: 2:4 pruning at load needs a checkpoint; random weights generated on the "
                      "GPU have none", config.source);
  if (config.fp8 && (config.fp8->block_n != ops::kFp8BlockSize || config.fp8->block_k != ops::kFp8BlockSize))
    return make_error(ErrorCode::kUnsupported,
                      "{}: field 'quantization_config.weight_block_size' is [{}, {}]: only "
                      "[128, 128] blocks run", config.source, config.fp8->block_n, config.fp8->block_k);
  MOEOPT_ASSIGN_OR_RETURN(WeightStore dev, random_device_weights(config, seed, options));
  return make_model(std::move(config), std::move(dev));
}

}  // namespace moeopt
