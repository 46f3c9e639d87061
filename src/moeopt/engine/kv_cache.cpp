#include "moeopt/engine/kv_cache.h"

#include <algorithm>

#include "moeopt/core/align.h"

#include "moeopt/ops/device_backend.h"

namespace moeopt {

KvCache::KvCache(const KvLayout& layout, int32_t num_blocks, int32_t block_size, DType dtype)
    : num_blocks_(num_blocks), block_size_(block_size),
      dtype_(dtype == DType::kF8E4M3 && !layout.latent ? dtype : DType::kF32) {
  const Shape s({num_blocks, block_size, layout.num_kv_heads, layout.head_dim});
  const Shape ss({num_blocks, block_size, layout.num_kv_heads});
  const bool fp8 = dtype_ == DType::kF8E4M3;
  for (int64_t l = 0; l < layout.num_layers; ++l) {
    if (layout.latent) {  // MLA: one latent pool, no V (model.h KvLayout)
      storage_.emplace_back(DType::kF32, s);
      views_.push_back({storage_.back().view(), TensorView{}});
      continue;
    }
    const size_t first = storage_.size();
    storage_.emplace_back(dtype_, s);
    storage_.emplace_back(dtype_, s);
    if (fp8) {
      storage_.emplace_back(DType::kF32, ss);
      storage_.emplace_back(DType::kF32, ss);
    }
    LayerKv lk{storage_[first].view(), storage_[first + 1].view()};
    if (fp8) {
      lk.k_scale = storage_[first + 2].view();
      lk.v_scale = storage_[first + 3].view();
    }
    views_.push_back(lk);
  }
}

Result<std::unique_ptr<KvCache>> KvCache::on_device(const KvLayout& layout, int32_t num_blocks,
                                                    int32_t block_size, const ops::Context& ctx,
                                                    DType dtype) {
  ops::DeviceBackend* be = ctx.device_backend;
  if (!be) return make_error(ErrorCode::kInvalidArgument, "KV cache: no device backend");
  if (dtype != DType::kBF16 && dtype != DType::kF8E4M3)
    return make_error(ErrorCode::kInvalidArgument, "KV cache: a device cache is bf16 or fp8_e4m3, not {}",
                      dtype_name(dtype));
  if (dtype == DType::kF8E4M3 && layout.latent)
    return make_error(ErrorCode::kUnsupported, "KV cache: the MLA latent cache has no fp8 form yet");
  const bool fp8 = dtype == DType::kF8E4M3;
  std::unique_ptr<KvCache> kv(new KvCache(num_blocks, block_size, dtype));
  const Shape s({num_blocks, block_size, layout.num_kv_heads, layout.head_dim});
  const Shape ss({num_blocks, block_size, layout.num_kv_heads});
  // Per layer: k, v, then (fp8) k_scale, v_scale, each 256-byte aligned.
  const size_t one = align_up(size_t(s.numel()) * dtype_size(dtype));
  const size_t one_scale = fp8 ? align_up(size_t(ss.numel()) * 4) : 0;
  const size_t per_layer = layout.latent ? one : 2 * one + 2 * one_scale;  // MLA: latent pool only
  const size_t total = per_layer * size_t(layout.num_layers);
  MOEOPT_ASSIGN_OR_RETURN(void* p, be->allocate(total));
  kv->device_ = std::shared_ptr<void>(p, [be](void* q) { be->release(q); });
  // Zeroed: padding rows of a captured decode batch read block 0 and must see finite values
  // (fp8: code 0 with scale 0).
  MOEOPT_RETURN_IF_ERROR(be->fill_zero(ctx, p, total));
  char* base = static_cast<char*>(p);
  for (int64_t l = 0; l < layout.num_layers; ++l) {
    char* at = base + size_t(l) * per_layer;
    if (layout.latent) {
      kv->views_.push_back({TensorView::contiguous(at, dtype, s, Device::kCuda), TensorView{}});
      continue;
    }
    LayerKv lk{TensorView::contiguous(at, dtype, s, Device::kCuda),
               TensorView::contiguous(at + one, dtype, s, Device::kCuda)};
    if (fp8) {
      lk.k_scale = TensorView::contiguous(at + 2 * one, DType::kF32, ss, Device::kCuda);
      lk.v_scale = TensorView::contiguous(at + 2 * one + one_scale, DType::kF32, ss, Device::kCuda);
    }
    kv->views_.push_back(lk);
  }
  return kv;
}

size_t KvCache::device_budget(size_t free, size_t total, double utilization, size_t reserve) {
  const double keep_free = (1.0 - std::clamp(utilization, 0.0, 1.0)) * double(total);
  const double usable = double(free) - keep_free - double(reserve);
  return usable > 0 ? size_t(usable) : 0;
}

size_t KvCache::bytes_per_block(const KvLayout& layout, int32_t block_size, DType dtype) {
  const size_t per_head = dtype == DType::kF8E4M3 ? size_t(layout.head_dim) + 4
                                                  : size_t(layout.head_dim) * dtype_size(dtype);
  return size_t(layout.latent ? 1 : 2) * size_t(layout.num_layers) * size_t(block_size) * size_t(layout.num_kv_heads) *
         per_head;
}

}  // namespace moeopt
