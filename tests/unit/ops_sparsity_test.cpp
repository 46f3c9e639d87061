// 2:4 pruning (ops/sparsity.h) against a reference written here: per group of 4 along K, the
// kept set is the two largest |w| * importance by a sort with the lower index winning ties;
// plus every dtype bit for bit, in place, thread-count independence and validation errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/op_cases.h"
#include "moeopt/ops/sparsity.h"

namespace moeopt::ops {
namespace {

// The kept mask of one row by sorting each group (the reference).
std::vector<bool> reference_keep(const std::vector<float>& row, const float* importance) {
  const int64_t k = int64_t(row.size());
  std::vector<bool> keep(row.size(), true);
  for (int64_t g0 = 0; g0 < k; g0 += 4) {
    const int64_t len = std::min<int64_t>(4, k - g0);
    if (len <= 2) continue;
    std::vector<int64_t> idx(static_cast<size_t>(len));
    std::iota(idx.begin(), idx.end(), g0);
    auto score = [&](int64_t i) {
      return double(std::fabs(row[size_t(i)])) * (importance ? importance[i] : 1.0);
    };
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return score(a) > score(b); });
    for (size_t j = 2; j < idx.size(); ++j) keep[size_t(idx[j])] = false;
  }
  return keep;
}

TEST(Prune24, KeepsTheTwoLargestOfEveryGroupOfFour) {
  // groups: {1, -3, 2, 0.5} {5, 5, 1, 5} and a tail {7, 1} of two (kept whole)
  std::vector<float> w = {1, -3, 2, 0.5f, 5, 5, 1, 5, 7, 1};
  HostTensor t(DType::kF32, {1, 10});
  std::memcpy(t.ptr<float>(), w.data(), w.size() * 4);
  ASSERT_TRUE(prune_2_4(Context{}, t, t).ok());
  const std::vector<float> want = {0, -3, 2, 0, 5, 5, 0, 0, 7, 1};
  EXPECT_EQ(std::vector<float>(t.ptr<float>(), t.ptr<float>() + 10), want);
}

TEST(Prune24, ImportanceReordersTheGroup) {
  HostTensor w(DType::kF32, {1, 4}), out(DType::kF32, {1, 4});
  const float v[4] = {1, 2, 3, 4}, imp[4] = {10, 1, 1, 0.1f};  // scores 10, 2, 3, 0.4
  std::memcpy(w.ptr<float>(), v, sizeof v);
  ASSERT_TRUE(prune_2_4(Context{}, w, out, imp).ok());
  const std::vector<float> want = {1, 0, 3, 0};
  EXPECT_EQ(std::vector<float>(out.ptr<float>(), out.ptr<float>() + 4), want);
}

TEST(Prune24, EveryDtypeMatchesTheReferenceBitForBit) {
  ThreadPool pool(3);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3}) {
    for (int64_t k : {4, 7, 130, 2048}) {
      const int64_t n = 37;
      CaseRng rng("prune24_" + std::string(dtype_name(dt)) + std::to_string(k));
      HostTensor w(dt, {n, k});
      for (int64_t i = 0; i < n * k; ++i) {
        // some exact ties and zeros, to exercise the tie rule
        const double u = rng.uniform(-2.0, 2.0);
        store_from_f32(w.view().data, dt, i, i % 11 == 0 ? 0.0f : i % 7 == 0 ? 0.5f : float(u));
      }
      std::vector<float> imp(static_cast<size_t>(k));
      for (auto& x : imp) x = float(rng.uniform(0.1, 3.0));
      for (const float* importance : {static_cast<const float*>(nullptr), static_cast<const float*>(imp.data())}) {
        HostTensor a(dt, {n, k}), b(dt, {n, k});
        ASSERT_TRUE(prune_2_4(Context{.pool = &pool}, w, a, importance).ok());
        std::memcpy(b.view().data, w.view().data, w.nbytes());
        ASSERT_TRUE(prune_2_4(Context{}, b, b, importance).ok());  // in place, one thread
        ASSERT_EQ(std::memcmp(a.view().data, b.view().data, a.nbytes()), 0) << dtype_name(dt) << " k " << k;
        const size_t es = dtype_size(dt);
        for (int64_t r = 0; r < n; ++r) {
          std::vector<float> row(static_cast<size_t>(k));
          for (int64_t i = 0; i < k; ++i) row[size_t(i)] = load_as_f32(w.view().data, dt, r * k + i);
          const std::vector<bool> keep = reference_keep(row, importance);
          for (int64_t i = 0; i < k; ++i) {
            const char* got = static_cast<const char*>(a.view().data) + size_t(r * k + i) * es;
            const char* src = static_cast<const char*>(w.view().data) + size_t(r * k + i) * es;
            if (keep[size_t(i)]) {
              ASSERT_EQ(std::memcmp(got, src, es), 0) << dtype_name(dt) << " row " << r << " k " << i;
            } else {
              for (size_t byte = 0; byte < es; ++byte) ASSERT_EQ(got[byte], 0) << dtype_name(dt);
            }
          }
        }
      }
    }
  }
}

TEST(Prune24, RejectsBadArguments) {
  HostTensor w(DType::kF32, {2, 8}), v1(DType::kF32, {16}), other(DType::kBF16, {2, 8}),
      wrong(DType::kF32, {2, 4}), ints(DType::kI32, {2, 8});
  EXPECT_FALSE(prune_2_4(Context{}, v1, v1).ok());
  EXPECT_FALSE(prune_2_4(Context{}, w, other).ok());
  EXPECT_FALSE(prune_2_4(Context{}, w, wrong).ok());
  EXPECT_FALSE(prune_2_4(Context{}, ints, ints).ok());
  const Status st = prune_2_4(Context{}, w, other);
  EXPECT_NE(st.message().find("prune_2_4"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace moeopt::ops
