// BlockAllocator: reference counts, the free list and the prefix cache's evictable blocks.
#include <gtest/gtest.h>

#include <vector>

#include "moeopt/engine/block_allocator.h"

namespace moeopt {
namespace {

TEST(BlockAllocator, AllocatesLowestIdsAndRefusesOverdraw) {
  BlockAllocator a(4);
  auto b = a.allocate(3);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(a.num_free(), 1);
  EXPECT_EQ(a.num_used(), 3);
  auto too_many = a.allocate(2);
  EXPECT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(a.num_free(), 1);  // nothing taken by the failed call
}

TEST(BlockAllocator, SharedBlockFreedByLastHolder) {
  BlockAllocator a(2);
  auto b = a.allocate(1);
  ASSERT_TRUE(b.ok());
  a.retain((*b)[0]);
  EXPECT_EQ(a.ref_count((*b)[0]), 2);
  a.release(*b);
  EXPECT_EQ(a.num_free(), 1);
  a.release(*b);
  EXPECT_EQ(a.num_free(), 2);
}

TEST(BlockAllocator, RegisteredBlockStaysFindableUntilEvicted) {
  BlockAllocator a(2);
  std::vector<int32_t> toks = {5, 6, 7, 8};
  uint64_t h = block_chain_hash(0, toks);
  auto b = a.allocate(1);
  ASSERT_TRUE(b.ok());
  a.register_block((*b)[0], h, 0, toks);
  a.release(*b);
  // Free for allocation, but still cached.
  EXPECT_EQ(a.num_free(), 2);
  EXPECT_EQ(a.num_used(), 0);
  EXPECT_EQ(a.num_cached(), 1);
  auto hit = a.lookup(h, 0, toks);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(*hit, (*b)[0]);
  // Same hash but other tokens or another parent: no hit (collision safety).
  std::vector<int32_t> other = {5, 6, 7, 9};
  EXPECT_FALSE(a.lookup(h, 0, other).has_value());
  EXPECT_FALSE(a.lookup(h, 42, toks).has_value());
  a.acquire_cached(*hit);
  EXPECT_EQ(a.num_cached(), 0);
  EXPECT_EQ(a.num_used(), 1);
  a.release({*hit});
  // Allocating everything takes the never-used block first, then evicts the cached one.
  auto all = a.allocate(2);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ((*all)[0], 1);
  EXPECT_EQ((*all)[1], 0);
  EXPECT_FALSE(a.lookup(h, 0, toks).has_value());
  EXPECT_EQ(a.num_registered(), 0u);
}

TEST(BlockAllocator, ChainHashDependsOnParentAndOrder) {
  std::vector<int32_t> x = {1, 2, 3}, y = {3, 2, 1};
  EXPECT_NE(block_chain_hash(0, x), block_chain_hash(0, y));
  EXPECT_NE(block_chain_hash(0, x), block_chain_hash(block_chain_hash(0, y), x));
  EXPECT_EQ(block_chain_hash(7, x), block_chain_hash(7, x));
}

TEST(BlockAllocator, FirstRegistrationOfAHashWins) {
  BlockAllocator a(3);
  std::vector<int32_t> toks = {1, 2};
  uint64_t h = block_chain_hash(0, toks);
  auto b = a.allocate(2);
  ASSERT_TRUE(b.ok());
  a.register_block((*b)[0], h, 0, toks);
  a.register_block((*b)[1], h, 0, toks);  // same prefix computed twice at once
  EXPECT_EQ(a.num_registered(), 1u);
  a.release(*b);
  EXPECT_EQ(a.num_cached(), 1);  // only the registered one is kept
  EXPECT_EQ(*a.lookup(h, 0, toks), (*b)[0]);
}

}  // namespace
}  // namespace moeopt
