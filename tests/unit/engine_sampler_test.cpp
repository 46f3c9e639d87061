// Sampler: each filter checked against distributions worked out by hand, draws checked
// statistically with a fixed seed (so the test is deterministic).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "moeopt/engine/sampler.h"

namespace moeopt {
namespace {

std::vector<float> logits_of(std::vector<double> probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(float(std::log(p)));
  return out;
}

// Draws n tokens and returns the frequency of each id.
std::vector<double> frequencies(const std::vector<float>& logits, const SamplingParams& p, int n,
                                uint64_t seed) {
  TokenHistory h;
  h.reset(int64_t(logits.size()), {});
  RequestRng rng(seed);
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < n; ++i) {
    auto row = logits;
    f[size_t(sample_token(row, p, h, rng).token)] += 1.0 / n;
  }
  return f;
}

// |f - p| within 5 standard errors of a binomial proportion.
void expect_close(const std::vector<double>& f, const std::vector<double>& p, int n) {
  ASSERT_EQ(f.size(), p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    double se = std::sqrt(std::max(p[i] * (1 - p[i]), 1e-12) / n);
    EXPECT_NEAR(f[i], p[i], 5 * se + 1e-12) << "token " << i;
  }
}

TEST(Sampler, GreedyTakesArgmaxLowestIdOnTies) {
  SamplingParams p;
  p.temperature = 0;
  TokenHistory h;
  h.reset(5, {});
  RequestRng rng(1);
  std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  EXPECT_EQ(sample_token(l, p, h, rng).token, 1);
}

TEST(Sampler, TemperatureOneFollowsSoftmax) {
  SamplingParams p;
  const int n = 40000;
  expect_close(frequencies(logits_of({0.5, 0.3, 0.2}), p, n, 7), {0.5, 0.3, 0.2}, n);
}

TEST(Sampler, TemperatureSharpens) {
  SamplingParams p;
  p.temperature = 0.5f;  // p_i^(1/T) = p_i^2, renormalised
  const int n = 40000;
  double z = 0.25 + 0.09 + 0.04;
  expect_close(frequencies(logits_of({0.5, 0.3, 0.2}), p, n, 11), {0.25 / z, 0.09 / z, 0.04 / z}, n);
}

TEST(Sampler, TopKTopPMinP) {
  const int n = 40000;
  auto l = logits_of({0.1, 0.4, 0.3, 0.2});
  SamplingParams k2;
  k2.top_k = 2;  // keeps ids 1, 2
  expect_close(frequencies(l, k2, n, 3), {0, 0.4 / 0.7, 0.3 / 0.7, 0}, n);
  SamplingParams tp;
  tp.top_p = 0.65f;  // 0.4 < 0.65 <= 0.7: keeps ids 1, 2
  expect_close(frequencies(l, tp, n, 4), {0, 0.4 / 0.7, 0.3 / 0.7, 0}, n);
  SamplingParams mp;
  mp.min_p = 0.45f;  // threshold 0.18: keeps 0.4, 0.3, 0.2
  expect_close(frequencies(l, mp, n, 5), {0, 0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9}, n);
  mp.min_p = 0.55f;  // threshold 0.22: keeps 0.4, 0.3
  expect_close(frequencies(l, mp, n, 8), {0, 0.4 / 0.7, 0.3 / 0.7, 0}, n);
  SamplingParams k1;
  k1.top_k = 1;
  k1.temperature = 1.5f;
  expect_close(frequencies(l, k1, 1000, 6), {0, 1, 0, 0}, 1000);
}

TEST(Sampler, PenaltiesFollowTheirDefinitions) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  TokenHistory h;
  std::vector<int32_t> prompt = {0, 1};
  h.reset(4, prompt);
  h.add_output(2);
  h.add_output(2);
  std::vector<float> l = {4.0f, -4.0f, 1.0f, 3.0f};
  apply_penalties(l, p, h);
  EXPECT_FLOAT_EQ(l[0], 2.0f);                          // seen in prompt, positive: /2
  EXPECT_FLOAT_EQ(l[1], -8.0f);                         // seen in prompt, negative: *2
  EXPECT_FLOAT_EQ(l[2], 1.0f / 2.0f - 0.5f - 0.25f * 2);  // output twice: both penalties
  EXPECT_FLOAT_EQ(l[3], 3.0f);                          // never seen
}

TEST(Sampler, SeedMakesDrawsReproducible) {
  SamplingParams p;
  auto l = logits_of({0.25, 0.25, 0.25, 0.25});
  TokenHistory h;
  h.reset(4, {});
  auto draw = [&](uint64_t seed) {
    RequestRng rng(seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) {
      auto row = l;
      out.push_back(sample_token(row, p, h, rng).token);
    }
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(Sampler, LogprobsComeFromTheRawDistribution) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 10.0f;  // must not change reported logprobs
  p.logprobs = 2;
  TokenHistory h;
  std::vector<int32_t> prompt = {0};
  h.reset(3, prompt);
  RequestRng rng(0);
  auto l = logits_of({0.6, 0.3, 0.1});
  auto r = sample_token(l, p, h, rng);
  EXPECT_EQ(r.token, 1);  // 0 was penalised below 1
  EXPECT_NEAR(r.logprob, std::log(0.3), 1e-5);
  ASSERT_EQ(r.top.size(), 2u);
  EXPECT_EQ(r.top[0].token, 0);
  EXPECT_NEAR(r.top[0].logprob, std::log(0.6), 1e-5);
  EXPECT_EQ(r.top[1].token, 1);
}

TEST(Sampler, ValidateNamesTheField) {
  SamplingParams p;
  p.temperature = 3;
  EXPECT_NE(p.validate(10).message().find("temperature"), std::string::npos);
  p = {};
  p.top_p = 0;
  EXPECT_NE(p.validate(10).message().find("top_p"), std::string::npos);
  p = {};
  p.max_tokens = 0;
  EXPECT_NE(p.validate(10).message().find("max_tokens"), std::string::npos);
  p = {};
  p.stop_token_ids = {10};
  EXPECT_NE(p.validate(10).message().find("stop token"), std::string::npos);
  EXPECT_TRUE(SamplingParams{}.validate(10).ok());
}

}  // namespace
}  // namespace moeopt
