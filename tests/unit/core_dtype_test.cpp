// dtype conversions against values worked out by hand from the IEEE / OCP formats.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "moeopt/core/dtype.h"
#include "moeopt/core/tensor.h"
#include "moeopt/core/thread_pool.h"

namespace moeopt {

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly half-way between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  // 1 + 3*2^-8 is half-way between 1.0078125 (odd) and 1.015625 (even): up.
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
  EXPECT_EQ(bf16_to_f32(0xc040), -3.0f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
}

TEST(DType, F16RoundTripAndSubnormals) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.5f), 0xc100);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);                // overflow -> inf
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie -> even (0)
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp -> 2
  for (uint32_t h = 0; h < 0x7c00; ++h) {              // every finite positive f16
    EXPECT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << h;
  }
}

TEST(DType, Fp8E4M3) {
  EXPECT_EQ(fp8e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(fp8e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(fp8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(fp8e4m3_to_f32(0x7f)));
  EXPECT_EQ(f32_to_fp8e4m3(1000.0f), 0x7e);   // saturates
  EXPECT_EQ(f32_to_fp8e4m3(-1000.0f), 0xfe);
  for (int c = 0; c < 0x7f; ++c) EXPECT_EQ(f32_to_fp8e4m3(fp8e4m3_to_f32(uint8_t(c))), c);
  // 1.0625 is half-way between 1.0 (0x38, even) and 1.125 (0x39): ties to even.
  EXPECT_EQ(f32_to_fp8e4m3(1.0625f), 0x38);
}

// The bit-level f32 -> e4m3 rounding against a nearest-even search over all codes, on
// every f32 below 464 whose low 12 mantissa bits are a pattern that exercises the rounding
// (exact, just below, at and just above each half-way point), both signs, NaN and overflow.
TEST(DType, Fp8E4M3RoundingMatchesExhaustiveSearch) {
  auto search = [](float f) -> uint8_t {
    const uint8_t sign = std::signbit(f) ? 0x80 : 0;
    const double a = std::fabs(double(f));
    if (a >= 448.0) return sign | 0x7e;
    uint8_t best = 0;
    for (uint8_t c = 1; c <= 0x7e; ++c) {
      const double d = std::fabs(double(fp8e4m3_to_f32(c)) - a);
      const double bd = std::fabs(double(fp8e4m3_to_f32(best)) - a);
      if (d < bd || (d == bd && (c & 1) == 0)) best = c;
    }
    return sign | best;
  };
  int64_t checked = 0;
  for (uint32_t hi = 0; hi < (0x43e80000u >> 12); ++hi) {   // up to 464.0
    for (uint32_t lo : {0x000u, 0x001u, 0x7ffu, 0x800u, 0x801u, 0xfffu}) {
      const uint32_t u = (hi << 12) | lo;
      float f;
      std::memcpy(&f, &u, 4);
      // Below 2^-10 every value rounds to 0 or the smallest subnormal: sample sparsely.
      if (f < 0.0009765625f && (hi & 0xfff) != 0) continue;
      ASSERT_EQ(f32_to_fp8e4m3(f), search(f)) << f;
      ASSERT_EQ(f32_to_fp8e4m3(-f), search(-f)) << -f;
      ++checked;
    }
  }
  EXPECT_GT(checked, 100000);
  EXPECT_EQ(f32_to_fp8e4m3(std::nanf("")), 0x7f);
  EXPECT_EQ(f32_to_fp8e4m3(INFINITY), 0x7e);
  EXPECT_EQ(f32_to_fp8e4m3(-INFINITY), 0xfe);
  EXPECT_EQ(f32_to_fp8e4m3(0.0f), 0x00);
  EXPECT_EQ(f32_to_fp8e4m3(-0.0f), 0x80);
}

TEST(Tensor, ViewsSliceAndSelect) {
  HostTensor t(DType::kF32, {2, 3, 4});
  for (int i = 0; i < 24; ++i) t.ptr<float>()[i] = float(i);
  TensorView v = t.view();
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.select0(1).ptr<float>()[0], 12.0f);
  EXPECT_EQ(v.select0(1).shape, Shape({3, 4}));
  EXPECT_EQ(v.slice0(1, 2).numel(), 12);
  EXPECT_EQ(v.reshaped({6, 4}).select0(5).ptr<float>()[3], 23.0f);
}

TEST(ThreadPool, CoversRangeExactlyOnce) {
  ThreadPool pool(4);
  for (int64_t n : {1, 3, 4, 5, 1000}) {
    std::vector<int> hits(n, 0);
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ++hits[i];
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n=" << n << " i=" << i;
  }
}

}  // namespace moeopt
