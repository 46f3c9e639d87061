// KvCache: the paged K/V storage of every layer, in the NHD layout the attention op reads
// (ops/attention.h): per layer, k and v are [num_blocks, block_size, kv_heads, head_dim].
// Host memory (f32) for the CPU backend; device memory (bf16, zeroed) when a device backend
// is given. Either can be FP8 instead (the `fp8_kv_cache` option): e4m3 codes plus one f32
// scale per (slot, kv head) for k and for v, [num_blocks, block_size, kv_heads] each.
// An MLA model's layout is `latent` (model.h): one pool of latent rows per layer, LayerKv::v
// empty, never FP8 (the engine refuses fp8_kv_cache for it). Which blocks a sequence uses is the BlockAllocator's business; this class only owns the
// bytes.
#pragma once

#include <memory>
#include <vector>

#include "moeopt/core/tensor.h"
#include "moeopt/model/forward_batch.h"
#include "moeopt/model/model.h"
#include "moeopt/ops/context.h"

namespace moeopt {

class KvCache {
 public:
  // Host cache: dtype kF32 or kF8E4M3 (anything else is taken as kF32).
  KvCache(const KvLayout& layout, int32_t num_blocks, int32_t block_size,
          DType dtype = DType::kF32);
  // Device cache through ctx.device_backend: dtype kBF16 or kF8E4M3.
  static Result<std::unique_ptr<KvCache>> on_device(const KvLayout& layout, int32_t num_blocks,
                                                    int32_t block_size, const ops::Context& ctx,
                                                    DType dtype = DType::kBF16);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  const std::vector<LayerKv>& layers() const { return views_; }
  // KV bytes a device can give when `free` of its `total` bytes are free now (weights already
  // placed) and the engine may use `utilization` of the card: everything free beyond the
  // (1 - utilization) share left to others, minus `reserve` for activations, scratch and
  // CUDA graphs. 0 when nothing is left.
  static size_t device_budget(size_t free, size_t total, double utilization, size_t reserve);
  // Bytes one block takes across all layers (K and V, or the latent rows) in `dtype`; kF8E4M3 includes the
  // scales (head_dim + 4 bytes per token, kv head and K or V).
  static size_t bytes_per_block(const KvLayout& layout, int32_t block_size,
                                DType dtype = DType::kF32);
  DType dtype() const { return dtype_; }

 private:
  KvCache(int32_t num_blocks, int32_t block_size, DType dtype)
      : num_blocks_(num_blocks), block_size_(block_size), dtype_(dtype) {}
  int32_t num_blocks_, block_size_;
  DType dtype_;
  std::vector<HostTensor> storage_;  // host: per layer k, v (and k_scale, v_scale for fp8)
  std::shared_ptr<void> device_;     // device: one allocation for all layers
  std::vector<LayerKv> views_;
};

}  // namespace moeopt
