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
  // Called now and then with (bytes placed so far, total bytes).
  std::function<void(uint64_t, uint64_t)> progress;
};

// Uploads `host` (an opened checkpoint of `config`) to the device.
Result<WeightStore> upload_weights(const ModelConfig& config, const WeightStore& host,
                                   const DeviceWeightsOptions& options);
// Generates init-random weights of `config` with `seed` directly on the device.
Result<WeightStore> random_device_weights(const ModelConfig& config, uint64_t seed,
                                          const DeviceWeightsOptions& options);

// Bytes the device layout of `config` takes (what --random-weights and upload allocate).
Result<uint64_t> device_weight_bytes(const ModelConfig& config);

}  // namespace moeopt
