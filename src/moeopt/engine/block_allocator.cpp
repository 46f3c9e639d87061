#include "moeopt/engine/block_allocator.h"

#include <cassert>

namespace moeopt {

BlockAllocator::BlockAllocator(int32_t num_blocks) : ref_(size_t(num_blocks), 0) {
  for (int32_t b = 0; b < num_blocks; ++b) free_.insert(free_.end(), b);
}

Result<std::vector<int32_t>> BlockAllocator::allocate(int32_t n) {
  if (n < 0 || n > num_free())
    return make_error(ErrorCode::kResourceExhausted, "KV cache: need {} blocks, {} free of {}", n,
                      num_free(), num_blocks());
  std::vector<int32_t> out;
  out.reserve(size_t(n));
  for (int32_t i = 0; i < n; ++i) {
    int32_t b = *free_.begin();
    free_.erase(free_.begin());
    ref_[size_t(b)] = 1;
    out.push_back(b);
  }
  return out;
}

void BlockAllocator::retain(int32_t block) {
  assert(ref_[size_t(block)] > 0);
  ++ref_[size_t(block)];
}

void BlockAllocator::release(const std::vector<int32_t>& blocks) {
  for (int32_t b : blocks) {
    assert(ref_[size_t(b)] > 0);
    if (--ref_[size_t(b)] == 0) free_.insert(b);
  }
}

}  // namespace moeopt
