// Weights on a device: a checkpoint uploaded, or synthetic weights generated in place.
//
// Every weight becomes bf16 in one device allocation (f32 / f16 checkpoints are converted on
// the way). The layout groups tensors so the fast kernels read them without copies:
//   - a layer's q, k and v projections (and their biases) are adjacent rows of one
//     [(Hq + 2 Hkv) D, H] block: one GEMM computes all three (the decoder notices adjacency);
//   - a dense or shared MLP's gate and up projections are adjacent: one [2W, H] GEMM;
//   - a MoE block's routed experts are stacked ENK: w13 [E, 2I', H] (expert e's gate rows then
//     its up rows) and w2 [E, H, I'], with I' = I rounded up to a multiple of 8 (the grouped
//     GEMMs move 16-byte rows). Padding rows and columns are zero, which changes nothing:
//     silu(0) * 0 = 0 and zero columns of w2 add 0. The store hands the stacks to the recipes
//     through WeightStore::stacked_experts.
// Synthetic weights (`--random-weights`) use ops/random_fill.h, the values init-random writes
// for the same seed, so a GPU model made this way equals the CPU checkpoint bit for bit.
//
// FP8 (ops/fp8.h): weights that are fp8 e4m3 in the checkpoint (fp8_quantized specs) are
// placed as they are, one byte each, with their block scales in f32 (the host store already
// converted BF16/F16 scales). With DeviceWeightsOptions::fp8 every other fp8_linear weight is
// quantised on the device at load (online quantisation: the weight is staged in its
// checkpoint dtype, then ops::quantize_fp8_weight_blocks, bit-equal to the CPU's), and random
// weights of an fp8 config, or with fp8 set, are generated in bf16 and quantised the same way
// (what init-random --fp8 writes for the seed, with f32 scales). FP8 expert stacks round I up
// to a multiple of 16 (16-byte e4m3 rows) and carry w13_scale [E, 2*IB, HB] and w2_scale
// [E, HB, IB] (ops/moe.h); q/k/v and gate/up stay adjacent but the decoder does not fuse
// fp8 projections (each has its own scale).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "moeopt/core/status.h"
#include "moeopt/model/config.h"
#include "moeopt/model/weights.h"
#include "moeopt/ops/context.h"

namespace moeopt {

struct DeviceWeightsOptions {
  const ops::Context* ctx = nullptr;  // device_backend and stream to use (required)
  // Quantise every fp8_linear weight that is not fp8 yet (--fp8-weights on).
  bool fp8 = false;
  // 2:4 pruning of the routed experts on the host before the upload (LoadOptions::
  // sparsity_2_4; by magnitude, or activation-aware with `sparsity_importance`), so the device
  // runs the pruned dense weights the CPU reference runs. load_model_to_device only (a
  // checkpoint to prune); random_model_on_device refuses it.
  bool sparsity_2_4 = false;
  const ExpertImportance* sparsity_importance = nullptr;
  // Called now and then with (bytes placed so far, total bytes).
  std::function<void(uint64_t, uint64_t)> progress;
};

// Uploads `host` (an opened checkpoint of `config`) to the device.
Result<WeightStore> upload_weights(const ModelConfig& config, const WeightStore& host,
                                   const DeviceWeightsOptions& options);
// Generates init-random weights of `config` with `seed` directly on the device.
Result<WeightStore> random_device_weights(const ModelConfig& config, uint64_t seed,
                                          const DeviceWeightsOptions& options);

// Bytes the device layout of `config` takes (what --random-weights and upload allocate);
// `fp8`: with online quantisation.
Result<uint64_t> device_weight_bytes(const ModelConfig& config, bool fp8 = false);

}  // namespace moeopt
