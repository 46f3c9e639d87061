#include "moeopt/engine/kv_cache.h"

namespace moeopt {

KvCache::KvCache(const KvLayout& layout, int32_t num_blocks, int32_t block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  Shape s({num_blocks, block_size, layout.num_kv_heads, layout.head_dim});
  for (int64_t l = 0; l < layout.num_layers; ++l) {
    storage_.emplace_back(DType::kF32, s);
    storage_.emplace_back(DType::kF32, s);
    views_.push_back({storage_[storage_.size() - 2].view(), storage_.back().view()});
  }
}

size_t KvCache::bytes_per_block(const KvLayout& layout, int32_t block_size) {
  return size_t(2) * size_t(layout.num_layers) * size_t(block_size) * size_t(layout.num_kv_heads) *
         size_t(layout.head_dim) * sizeof(float);
}

}  // namespace moeopt
