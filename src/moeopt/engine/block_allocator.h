// Physical KV-cache blocks: a free list with reference counts.
//
// A block is `block_size` token slots in every layer's K and V cache (docs/glossary.md).
// Sequences hold blocks through their block tables; a block shared by several sequences
// (prefix caching, later) has a reference count > 1 and returns to the free list when the
// last holder releases it. Allocation takes the lowest free id first so runs are
// reproducible.
#pragma once

#include <cstdint>
#include <set>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt {

class BlockAllocator {
 public:
  explicit BlockAllocator(int32_t num_blocks);

  int32_t num_blocks() const { return int32_t(ref_.size()); }
  int32_t num_free() const { return int32_t(free_.size()); }
  int32_t num_used() const { return num_blocks() - num_free(); }

  // Takes `n` free blocks (refcount 1 each). kResourceExhausted if fewer are free; then
  // nothing is taken.
  Result<std::vector<int32_t>> allocate(int32_t n);
  // Adds a holder to an allocated block.
  void retain(int32_t block);
  // Drops one holder of each block; blocks whose count reaches 0 become free.
  void release(const std::vector<int32_t>& blocks);
  int32_t ref_count(int32_t block) const { return ref_[size_t(block)]; }

 private:
  std::vector<int32_t> ref_;
  std::set<int32_t> free_;
};

}  // namespace moeopt
