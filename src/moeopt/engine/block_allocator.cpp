// Block allocator with reference counts and the prefix cache (see block_allocator.h).
#include "moeopt/engine/block_allocator.h"

#include <algorithm>
#include <cassert>

#include "moeopt/core/hash.h"

namespace moeopt {

uint64_t block_chain_hash(uint64_t parent, std::span<const int32_t> tokens) {
  // SplitMix64 over the parent hash and each token; the stored tokens and parent are
  // compared on lookup, so this only needs to spread well, not resist attacks.
  uint64_t h = splitmix64(parent ^ 0x6d6f656f70742d6bull);
  for (int32_t t : tokens) h = splitmix64(h ^ uint64_t(uint32_t(t)));
  return h == 0 ? 1 : h;  // 0 means "no parent"
}

BlockAllocator::BlockAllocator(int32_t num_blocks)
    : ref_(size_t(num_blocks), 0),
      lru_pos_(size_t(num_blocks)),
      in_lru_(size_t(num_blocks), false),
      entry_(size_t(num_blocks)) {
  for (int32_t b = 0; b < num_blocks; ++b) free_.insert(free_.end(), b);
}

void BlockAllocator::evict(int32_t b) {
  assert(in_lru_[size_t(b)]);
  lru_.erase(lru_pos_[size_t(b)]);
  in_lru_[size_t(b)] = false;
  auto& e = entry_[size_t(b)];
  if (e) {
    auto it = by_hash_.find(e->hash);
    if (it != by_hash_.end() && it->second == b) by_hash_.erase(it);
    e.reset();
  }
}

Result<std::vector<int32_t>> BlockAllocator::allocate(int32_t n) {
  if (n < 0 || n > num_free())
    return make_error(ErrorCode::kResourceExhausted, "KV cache: need {} blocks, {} free of {}", n,
                      num_free(), num_blocks());
  std::vector<int32_t> out;
  out.reserve(size_t(n));
  for (int32_t i = 0; i < n; ++i) {
    int32_t b;
    if (!free_.empty()) {
      b = *free_.begin();
      free_.erase(free_.begin());
    } else {
      b = lru_.front();
      evict(b);
    }
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
    if (--ref_[size_t(b)] != 0) continue;
    if (entry_[size_t(b)]) {
      lru_pos_[size_t(b)] = lru_.insert(lru_.end(), b);
      in_lru_[size_t(b)] = true;
    } else {
      free_.insert(b);
    }
  }
}

std::optional<int32_t> BlockAllocator::lookup(uint64_t hash, uint64_t parent,
                                              std::span<const int32_t> tokens) const {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  const auto& e = entry_[size_t(it->second)];
  if (!e || e->parent != parent || !std::equal(e->tokens.begin(), e->tokens.end(), tokens.begin(), tokens.end()))
    return std::nullopt;
  return it->second;
}

void BlockAllocator::acquire_cached(int32_t block) {
  if (ref_[size_t(block)] == 0) {
    assert(in_lru_[size_t(block)]);
    lru_.erase(lru_pos_[size_t(block)]);
    in_lru_[size_t(block)] = false;
  }
  ++ref_[size_t(block)];
}

void BlockAllocator::register_block(int32_t block, uint64_t hash, uint64_t parent,
                                    std::span<const int32_t> tokens) {
  assert(ref_[size_t(block)] > 0);
  if (entry_[size_t(block)] || by_hash_.count(hash)) return;
  entry_[size_t(block)] = CacheEntry{hash, parent, std::vector<int32_t>(tokens.begin(), tokens.end())};
  by_hash_[hash] = block;
}

}  // namespace moeopt
