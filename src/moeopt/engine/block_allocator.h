// Physical KV-cache blocks: reference counts, a free list and the prefix cache.
//
// A block is `block_size` token slots in every layer's K and V cache (docs/glossary.md).
// Sequences hold blocks through their block tables; a block shared by several sequences
// (prefix caching) has a reference count > 1.
//
// Prefix cache. A FULL block whose K/V have been computed can be registered under the hash
// of its token chain: hash(parent block's hash, this block's tokens). A later sequence whose
// prompt starts with the same tokens finds the blocks by walking its own chain and shares
// them (retain) instead of recomputing them. When the last holder releases a registered
// block it is not wiped: it goes to an "evictable" LRU list and stays findable until an
// allocation needs the space (oldest released first). So:
//   free      = never registered (or evicted): no useful content;
//   evictable = refcount 0 but still in the cache;
//   used      = refcount > 0.
// num_free() counts free + evictable (both can be handed out). A lookup checks the stored
// parent hash and tokens too, so a 64-bit hash collision can never share wrong K/V.
// Allocation takes the lowest free id first (then the least recently released cached block)
// so runs are reproducible.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <set>
#include <span>
#include <unordered_map>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt {

// Hash of a block's token chain (parent = the previous block's hash, 0 for the first block).
uint64_t block_chain_hash(uint64_t parent, std::span<const int32_t> tokens);

class BlockAllocator {
 public:
  explicit BlockAllocator(int32_t num_blocks);

  int32_t num_blocks() const { return int32_t(ref_.size()); }
  // Blocks an allocation can take: free plus evictable cached ones.
  int32_t num_free() const { return int32_t(free_.size() + lru_.size()); }
  // Blocks held by at least one sequence.
  int32_t num_used() const { return num_blocks() - num_free(); }
  // Unreferenced blocks still holding a cached prefix.
  int32_t num_cached() const { return int32_t(lru_.size()); }

  // Takes `n` blocks (refcount 1 each), evicting cached ones when the free list runs out.
  // kResourceExhausted if fewer than n are available; then nothing is taken.
  Result<std::vector<int32_t>> allocate(int32_t n);
  // Adds a holder to an allocated block.
  void retain(int32_t block);
  // Drops one holder of each block; at refcount 0 a block becomes free, or evictable when
  // it is registered in the prefix cache.
  void release(const std::vector<int32_t>& blocks);
  int32_t ref_count(int32_t block) const { return ref_[size_t(block)]; }

  // Prefix cache. Finds the block registered under `hash` whose parent hash and tokens are
  // equal to these; nullopt if none.
  std::optional<int32_t> lookup(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) const;
  // Takes a holder of a block found by lookup (it leaves the evictable list if it was there).
  void acquire_cached(int32_t block);
  // Registers a full, computed block. No-op when the hash is already registered (another
  // sequence computed the same prefix at the same time) or the block already is.
  void register_block(int32_t block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  // Registered blocks (in use or evictable).
  size_t num_registered() const { return by_hash_.size(); }

 private:
  struct CacheEntry {
    uint64_t hash = 0, parent = 0;
    std::vector<int32_t> tokens;
  };
  void evict(int32_t block);

  std::vector<int32_t> ref_;
  std::set<int32_t> free_;
  std::list<int32_t> lru_;  // evictable blocks, least recently released first
  std::vector<std::list<int32_t>::iterator> lru_pos_;
  std::vector<bool> in_lru_;
  std::vector<std::optional<CacheEntry>> entry_;  // per block, when registered
  std::unordered_map<uint64_t, int32_t> by_hash_;
};

}  // namespace moeopt
