// Where `generate`, `bench` and `serve` get their model: the --model / --layers / --device /
// --random-weights / --seed flags, the device backend, and the tokenizer directory.
//
//   --device cpu     the CPU reference backend (the default)
//   --device cuda    the GPU: a checkpoint is uploaded (bf16, progress with GB/s on stderr),
//                    or with --random-weights the config's init-random weights are generated
//                    on the GPU directly (no checkpoint is written: a 61 GB model fits a GPU
//                    whose disk could not hold it). Same seed, same values as init-random.
// --random-weights on the CPU materialises the random checkpoint in the cache (as a catalog
// name always does there).
// fp8_weights (generate's --fp8-weights on, the profile's fp8_weights for serve): BF16
// checkpoints are quantised at load to FP8 with 128x128 block scales and run W8A8, on the CPU
// (host quantisation) or the GPU (quantised on the device, model/device_weights.h). FP8
// checkpoints run as FP8 whatever it says.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "moeopt/core/status.h"
#include "moeopt/engine/engine.h"
#include "moeopt/model/model.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::cli {

struct ModelArgs {
  std::string model;
  int64_t layers = 0;
  std::string device = "cpu";
  bool random_weights = false;
  uint64_t seed = 0;
  bool fp8_weights = false;
  bool fp8_kv_cache = false;  // FP8 (e4m3 + per token-head scales) KV cache, lossy
};

void add_model_flags(CLI::App* sub, ModelArgs* a);
// --fp8-weights on|off (ModelArgs::fp8_weights; serve takes it from its profile instead).
void add_fp8_weights_flag(CLI::App* sub, ModelArgs* a);
// --fp8-kv-cache on|off (ModelArgs::fp8_kv_cache; serve takes it from its profile instead).
void add_fp8_kv_cache_flag(CLI::App* sub, ModelArgs* a);

struct LoadedModel {
  // Declared first so it is destroyed last: the model's and engine's device memory is
  // released through it.
  std::unique_ptr<ops::DeviceBackend> backend;
  std::unique_ptr<Model> model;
  std::string source;         // checkpoint directory, or "random:<config>"
  std::string tokenizer_dir;  // where tokenizer.json lives ("" if none)
  bool fp8_kv_cache = false;  // ModelArgs::fp8_kv_cache, for the engine options
};

Result<LoadedModel> load_model_for(const ModelArgs& a, const char* cmd);
// The CUDA backend for --device cuda, after checking that a GPU is there: kUnsupported (exit
// 2, one line) in a build without CUDA or on a machine whose driver reports no GPU.
Result<std::unique_ptr<ops::DeviceBackend>> make_gpu_backend();
// Puts the device backend (none on the CPU) and the KV cache format into the engine options.
void use_device(const LoadedModel& m, EngineOptions& eo);

}  // namespace moeopt::cli
