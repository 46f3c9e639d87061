#include "moeopt/engine/kv_cache.h"

#include <algorithm>

#include "moeopt/ops/device_backend.h"

namespace moeopt {

KvCache::KvCache(const KvLayout& layout, int32_t num_blocks, int32_t block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  Shape s({num_blocks, block_size, layout.num_kv_heads, layout.head_dim});
  for (int64_t l = 0; l < layout.num_layers; ++l) {
    if (layout.latent) {  // MLA: one latent pool, no V (model.h KvLayout)
      storage_.emplace_back(DType::kF32, s);
      views_.push_back({storage_.back().view(), TensorView{}});
      continue;
    }
    storage_.emplace_back(DType::kF32, s);
    storage_.emplace_back(DType::kF32, s);
    views_.push_back({storage_[storage_.size() - 2].view(), storage_.back().view()});
  }
}

Result<std::unique_ptr<KvCache>> KvCache::on_device(const KvLayout& layout, int32_t num_blocks,
                                                    int32_t block_size, const ops::Context& ctx) {
  ops::DeviceBackend* be = ctx.device_backend;
  if (!be) return make_error(ErrorCode::kInvalidArgument, "KV cache: no device backend");
  std::unique_ptr<KvCache> kv(new KvCache(num_blocks, block_size));
  const Shape s({num_blocks, block_size, layout.num_kv_heads, layout.head_dim});
  const size_t one = size_t(s.numel()) * dtype_size(DType::kBF16);
  const size_t pools = layout.latent ? 1 : 2;  // MLA: the latent pool only
  const size_t total = one * pools * size_t(layout.num_layers);
  MOEOPT_ASSIGN_OR_RETURN(void* p, be->allocate(total));
  kv->device_ = std::shared_ptr<void>(p, [be](void* q) { be->release(q); });
  // Zeroed: padding rows of a captured decode batch read block 0 and must see finite values.
  MOEOPT_RETURN_IF_ERROR(be->fill_zero(ctx, p, total));
  char* base = static_cast<char*>(p);
  for (int64_t l = 0; l < layout.num_layers; ++l) {
    if (layout.latent) {
      kv->views_.push_back({TensorView::contiguous(base + l * one, DType::kBF16, s, Device::kCuda), TensorView{}});
      continue;
    }
    TensorView k = TensorView::contiguous(base + (2 * l) * one, DType::kBF16, s, Device::kCuda);
    TensorView v = TensorView::contiguous(base + (2 * l + 1) * one, DType::kBF16, s, Device::kCuda);
    kv->views_.push_back({k, v});
  }
  return kv;
}

size_t KvCache::device_budget(size_t free, size_t total, double utilization, size_t reserve) {
  const double keep_free = (1.0 - std::clamp(utilization, 0.0, 1.0)) * double(total);
  const double usable = double(free) - keep_free - double(reserve);
  return usable > 0 ? size_t(usable) : 0;
}

size_t KvCache::bytes_per_block(const KvLayout& layout, int32_t block_size, DType dtype) {
  return size_t(layout.latent ? 1 : 2) * size_t(layout.num_layers) * size_t(block_size) * size_t(layout.num_kv_heads) *
         size_t(layout.head_dim) * dtype_size(dtype);
}

}  // namespace moeopt
