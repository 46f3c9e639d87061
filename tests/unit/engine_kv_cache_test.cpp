// KvCache: the host cache's layout and bytes per block, and the GPU KV budget `serve` takes
// from the device's free memory.
#include <gtest/gtest.h>

#include "moeopt/engine/kv_cache.h"

namespace moeopt {
namespace {

constexpr size_t kGiB = size_t(1) << 30;

TEST(KvCache, HostLayoutIsOnePagePoolPerLayerAndTensor) {
  const KvLayout layout{3, 2, 8};
  KvCache kv(layout, 5, 4);
  ASSERT_EQ(kv.layers().size(), 3u);
  for (const LayerKv& l : kv.layers()) {
    EXPECT_EQ(l.k.shape, Shape({5, 4, 2, 8}));
    EXPECT_EQ(l.v.shape, Shape({5, 4, 2, 8}));
    EXPECT_NE(l.k.data, l.v.data);
  }
  EXPECT_EQ(KvCache::bytes_per_block(layout, 4), size_t(2 * 3 * 4 * 2 * 8 * 4));
  EXPECT_EQ(KvCache::bytes_per_block(layout, 4, DType::kBF16), size_t(2 * 3 * 4 * 2 * 8 * 2));
}

TEST(KvCache, LatentLayoutIsOneLatentPoolPerLayer) {
  // MLA (DeepSeek-V3's row: kv_lora_rank 512 + qk_rope_head_dim 64): no V pool.
  const KvLayout layout{2, 1, 576, true};
  KvCache kv(layout, 3, 5);
  ASSERT_EQ(kv.layers().size(), 2u);
  for (const LayerKv& l : kv.layers()) {
    EXPECT_EQ(l.k.shape, Shape({3, 5, 1, 576}));
    EXPECT_EQ(l.v.data, nullptr);
  }
  EXPECT_NE(kv.layers()[0].k.data, kv.layers()[1].k.data);
  EXPECT_EQ(KvCache::bytes_per_block(layout, 5), size_t(2 * 5 * 576 * 4));
}

TEST(KvCache, DeviceBudgetLeavesTheUnusedShareAndTheReserve) {
  // 80 GiB card, 20 GiB free after the weights, 90 %: 8 GiB stay free, 2 GiB reserve.
  EXPECT_EQ(KvCache::device_budget(20 * kGiB, 80 * kGiB, 0.9, 2 * kGiB), 10 * kGiB);
  EXPECT_EQ(KvCache::device_budget(20 * kGiB, 80 * kGiB, 1.0, 2 * kGiB), 18 * kGiB);
  // Utilisation outside [0, 1] is clamped; nothing left answers 0, never wraps around.
  EXPECT_EQ(KvCache::device_budget(20 * kGiB, 80 * kGiB, 1.5, 2 * kGiB), 18 * kGiB);
  EXPECT_EQ(KvCache::device_budget(9 * kGiB, 80 * kGiB, 0.9, 2 * kGiB), 0u);
  EXPECT_EQ(KvCache::device_budget(0, 80 * kGiB, 0.0, 0), 0u);
}

}  // namespace
}  // namespace moeopt
