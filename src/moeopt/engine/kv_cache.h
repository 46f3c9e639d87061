// KvCache: the paged K/V storage of every layer, in the NHD layout the attention op reads
// (ops/attention.h): per layer, k and v are [num_blocks, block_size, kv_heads, head_dim].
// Host memory (f32) for the CPU backend; device memory (bf16, zeroed) when a device backend
// is given. An MLA model's layout is `latent` (model.h): one pool of latent rows per layer,
// LayerKv::v empty. Which blocks a sequence uses is the BlockAllocator's business; this class only
// owns the bytes.
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
  // Host cache.
  KvCache(const KvLayout& layout, int32_t num_blocks, int32_t block_size);
  // Device cache through ctx.device_backend.
  static Result<std::unique_ptr<KvCache>> on_device(const KvLayout& layout, int32_t num_blocks,
                                                    int32_t block_size, const ops::Context& ctx);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  const std::vector<LayerKv>& layers() const { return views_; }
  // KV bytes a device can give when `free` of its `total` bytes are free now (weights already
  // placed) and the engine may use `utilization` of the card: everything free beyond the
  // (1 - utilization) share left to others, minus `reserve` for activations, scratch and
  // CUDA graphs. 0 when nothing is left.
  static size_t device_budget(size_t free, size_t total, double utilization, size_t reserve);
  // Bytes one block takes across all layers (K and V, or the latent rows) in `dtype`.
  static size_t bytes_per_block(const KvLayout& layout, int32_t block_size,
                                DType dtype = DType::kF32);

 private:
  KvCache(int32_t num_blocks, int32_t block_size) : num_blocks_(num_blocks), block_size_(block_size) {}
  int32_t num_blocks_, block_size_;
  std::vector<HostTensor> storage_;  // host: 2 per layer (k, v)
  std::shared_ptr<void> device_;     // device: one allocation for all layers
  std::vector<LayerKv> views_;
};

}  // namespace moeopt
