// Expert placement (parallel/expert_placement.h): hand-worked layers, the invariants of a
// placement on random skewed loads, and the /metrics parser's errors.
#include "moeopt/parallel/expert_placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <cstdio>
#include <set>

namespace moeopt::parallel {
namespace {

// Every expert has its copies, each on a different GPU, no GPU over its slots, and the GPU
// loads add up to the layer's tokens.
void expect_valid(const LayerPlacement& p, const std::vector<int64_t>& loads, const PlacementOptions& o) {
  const int64_t e = int64_t(loads.size()), slots = (e + o.gpus - 1) / o.gpus + o.redundant;
  ASSERT_EQ(int64_t(p.gpu_experts.size()), o.gpus);
  std::vector<int32_t> seen(size_t(e), 0);
  for (const auto& v : p.gpu_experts) {
    EXPECT_LE(int64_t(v.size()), slots);
    EXPECT_EQ(std::set<int32_t>(v.begin(), v.end()).size(), v.size()) << "an expert twice on one GPU";
    for (int32_t x : v) ++seen[size_t(x)];
  }
  for (int64_t x = 0; x < e; ++x) {
    EXPECT_GE(seen[size_t(x)], 1) << "expert " << x << " placed nowhere";
    EXPECT_EQ(seen[size_t(x)], p.copies[size_t(x)]) << "expert " << x;
  }
  const double total = double(std::accumulate(loads.begin(), loads.end(), int64_t(0)));
  EXPECT_NEAR(std::accumulate(p.gpu_load.begin(), p.gpu_load.end(), 0.0), total, 1e-6 * (1 + total));
}

TEST(ExpertPlacement, UniformLoadIsBalancedEitherWay) {
  const std::vector<int64_t> loads(16, 100);
  const PlacementOptions o{.gpus = 4};
  auto b = baseline_placement(loads, o);
  auto p = balanced_placement(loads, o);
  ASSERT_TRUE(b.ok() && p.ok());
  EXPECT_DOUBLE_EQ(b->imbalance, 1.0);
  EXPECT_DOUBLE_EQ(p->imbalance, 1.0);
  expect_valid(*p, loads, o);
}

TEST(ExpertPlacement, HandWorkedSkewedLayer) {
  // 8 experts on 2 GPUs; the baseline puts experts 0-3 (1000 + 3 x 10) on GPU 0 and 4-7 (4 x
  // 10) on GPU 1: loads 1030 and 40, imbalance 1030 / 535.
  const std::vector<int64_t> loads{1000, 10, 10, 10, 10, 10, 10, 10};
  auto b = baseline_placement(loads, {.gpus = 2});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->gpu_experts[0], (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_DOUBLE_EQ(b->gpu_load[0], 1030.0);
  EXPECT_DOUBLE_EQ(b->imbalance, 1030.0 / 535.0);
  // Without redundant slots nothing can be replicated: the hot expert alone on one GPU with
  // three cold ones is the best packing (1030 vs 40 again).
  auto p0 = balanced_placement(loads, {.gpus = 2});
  ASSERT_TRUE(p0.ok());
  EXPECT_DOUBLE_EQ(p0->imbalance, 1030.0 / 535.0);
  // One redundant slot per GPU: 2 extra slots; expert 0 gets a second copy (500 each), then
  // the next largest load per copy is 500 again but it already has a copy on every GPU, so
  // the last slot goes to expert 1 (10 -> 5 + 5). Packing longest first: 500 | 500, then
  // the 5s and 10s alternate to the lighter GPU: 535 | 535.
  const PlacementOptions o{.gpus = 2, .redundant = 1};
  auto p = balanced_placement(loads, o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->copies[0], 2);
  EXPECT_EQ(p->copies[1], 2);
  EXPECT_DOUBLE_EQ(p->gpu_load[0], 535.0);
  EXPECT_DOUBLE_EQ(p->gpu_load[1], 535.0);
  EXPECT_DOUBLE_EQ(p->imbalance, 1.0);
  expect_valid(*p, loads, o);
}

// On 200 seeded skewed layers (loads ~ 1/rank, a third of the experts idle): every placement
// valid, the balanced one never worse than the baseline (it falls back to it), and on average
// much better.
TEST(ExpertPlacement, RandomZipfLoadsStayValidAndNeverWorse) {
  std::mt19937_64 rng(7);
  double sum_base = 0, sum_bal = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t g = int64_t(1) << (rng() % 4), e = g * (1 + int64_t(rng() % 16)) + int64_t(rng() % 3);
    std::vector<int64_t> loads(static_cast<size_t>(e), 0);
    for (int64_t x = 0; x < e; ++x) loads[size_t(x)] = int64_t(10000.0 / double(1 + (rng() % e))) * int64_t(rng() % 3);
    const PlacementOptions o{.gpus = g, .redundant = int64_t(rng() % 3)};
    SCOPED_TRACE(testing::Message() << "trial " << trial << ": E " << e << " G " << g << " R " << o.redundant);
    auto b = baseline_placement(loads, o);
    auto p = balanced_placement(loads, o);
    ASSERT_TRUE(b.ok()) << b.status().message();
    ASSERT_TRUE(p.ok()) << p.status().message();
    expect_valid(*b, loads, {.gpus = g});
    expect_valid(*p, loads, o);
    EXPECT_LE(p->imbalance, b->imbalance + 1e-9);
    sum_base += b->imbalance;
    sum_bal += p->imbalance;
  }
  std::printf("[ placement ] mean imbalance over 200 layers: baseline %.3f, balanced %.3f\n",
              sum_base / 200, sum_bal / 200);
  EXPECT_LT(sum_bal - 200, 0.5 * (sum_base - 200)) << "less than half of the excess over 1 removed";
}

TEST(ExpertPlacement, BadOptionsAreErrors) {
  EXPECT_FALSE(balanced_placement({1, 2, 3}, {.gpus = 4}).ok());       // fewer experts than GPUs
  EXPECT_FALSE(balanced_placement({1, 2, 3}, {.gpus = 0}).ok());
  EXPECT_FALSE(balanced_placement({1, 2}, {.gpus = 1, .redundant = -1}).ok());
  EXPECT_FALSE(baseline_placement({1, -2}, {.gpus = 1}).ok());
}

TEST(ExpertLoadMetrics, ParsesTheServersLinesAndSkipsTheRest) {
  const std::string text =
      "# HELP moeopt_expert_tokens_total Tokens routed to each expert of each MoE layer.\n"
      "# TYPE moeopt_expert_tokens_total counter\n"
      "moeopt_expert_tokens_total{layer=\"0\",expert=\"0\"} 5\n"
      "moeopt_expert_tokens_total{layer=\"1\",expert=\"2\"} 17\r\n"
      "moeopt_requests_total 3\n";
  auto l = parse_expert_load_metrics(text, 2, 3);
  ASSERT_TRUE(l.ok()) << l.status().message();
  EXPECT_EQ(l->tokens, (std::vector<int64_t>{5, 0, 0, 0, 0, 17}));
}

TEST(ExpertLoadMetrics, BadSamplesNameTheLine) {
  auto msg = [](const std::string& t) {
    auto r = parse_expert_load_metrics(t, 2, 3);
    return r.ok() ? std::string("ok") : r.status().message();
  };
  EXPECT_NE(msg("moeopt_expert_tokens_total{layer=\"0\",expert=\"x\"} 5\n").find("line 1"), std::string::npos);
  EXPECT_NE(msg("\nmoeopt_expert_tokens_total{layer=\"2\",expert=\"0\"} 5\n").find("line 2: layer 2 expert 0 is outside"),
            std::string::npos);
  EXPECT_NE(msg("moeopt_expert_tokens_total{layer=\"0\",expert=\"0\"} -5\n").find("line 1"), std::string::npos);
  EXPECT_NE(msg("moeopt_expert_tokens_total{layer=\"0\",expert=\"0\"} 5\n"
                "moeopt_expert_tokens_total{layer=\"0\",expert=\"0\"} 6\n").find("given twice"),
            std::string::npos);
  EXPECT_NE(msg("moeopt_expert_tokens_total{layer=\"0\",expert=\"0\"} 5 junk\n").find("line 1"), std::string::npos);
  EXPECT_NE(msg("moeopt_requests_total 3\n").find("no moeopt_expert_tokens_total samples"), std::string::npos);
}

}  // namespace
}  // namespace moeopt::parallel
