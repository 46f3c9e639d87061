// logit_bias (the OpenAI field, parsed in openai_request.cpp) in the sampler and through a
// whole engine: a bias moves the choice, -100 bans a token, +100 forces one, and the
// reported logprobs stay those of the unbiased distribution.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "moeopt/engine/engine.h"
#include "moeopt/engine/sampler.h"
#include "server_test_engine.h"

namespace moeopt {
namespace {

std::vector<float> logits_of(std::vector<double> probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(float(std::log(p)));
  return out;
}

TEST(ServerLogitBias, GreedyFollowsTheBiasedLogits) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 1;
  TokenHistory h;
  h.reset(3, {});
  RequestRng rng(0);
  auto l = logits_of({0.6, 0.3, 0.1});
  EXPECT_EQ(sample_token(l, p, h, rng).token, 0);
  p.logit_bias = {{2, 5.0f}};
  l = logits_of({0.6, 0.3, 0.1});
  SampleResult r = sample_token(l, p, h, rng);
  EXPECT_EQ(r.token, 2);
  EXPECT_NEAR(r.logprob, std::log(0.1), 1e-5);  // raw distribution
  ASSERT_EQ(r.top.size(), 1u);
  EXPECT_EQ(r.top[0].token, 0);
}

TEST(ServerLogitBias, MinusHundredBansAToken) {
  SamplingParams p;
  p.logit_bias = {{0, -100.0f}};
  TokenHistory h;
  h.reset(3, {});
  RequestRng rng(3);
  for (int i = 0; i < 2000; ++i) {
    auto l = logits_of({0.98, 0.01, 0.01});
    EXPECT_NE(sample_token(l, p, h, rng).token, 0);
  }
}

TEST(ServerLogitBias, ValidateChecksIdsAndRange) {
  SamplingParams p;
  p.logit_bias = {{9, 1.0f}};
  EXPECT_TRUE(p.validate(10).ok());
  p.logit_bias = {{10, 1.0f}};
  EXPECT_NE(p.validate(10).message().find("logit_bias token id 10"), std::string::npos);
  p.logit_bias = {{1, 101.0f}};
  EXPECT_NE(p.validate(10).message().find("[-100, 100]"), std::string::npos);
}

TEST(ServerLogitBias, EngineForcesAndBansTokens) {
  auto engine = small_engine();
  ASSERT_TRUE(engine);
  Request base;
  base.prompt = {5, 9, 13, 17};
  base.params.temperature = 0;
  base.params.max_tokens = 5;
  base.params.ignore_eos = true;
  Request forced = base;
  forced.params.logit_bias = {{42, 100.0f}};
  Request banned = base;
  auto out = run_to_completion(*engine, {base, forced});
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ((*out)[1].tokens, std::vector<int32_t>(5, 42));
  // Banning the unbiased run's first token changes the first token.
  const int32_t first = (*out)[0].tokens.at(0);
  banned.params.logit_bias = {{first, -100.0f}};
  auto out2 = run_to_completion(*engine, {banned});
  ASSERT_TRUE(out2.ok());
  for (int32_t t : (*out2)[0].tokens) EXPECT_NE(t, first);
}

TEST(ServerLogitBias, EngineOutputsCarryTheFirstScheduledTime) {
  auto engine = small_engine();
  ASSERT_TRUE(engine);
  Request r;
  r.prompt = {5, 9, 13, 17, 21, 25};
  r.params.temperature = 0;
  r.params.max_tokens = 2;
  r.params.ignore_eos = true;
  const auto before = std::chrono::steady_clock::now();
  ASSERT_TRUE(engine->add_request(r).ok());
  std::optional<std::chrono::steady_clock::time_point> seen;
  while (engine->has_unfinished()) {
    auto outs = engine->step();
    ASSERT_TRUE(outs.ok());
    for (const RequestOutput& o : *outs) {
      ASSERT_TRUE(o.first_scheduled.has_value());
      if (seen) EXPECT_EQ(*seen, *o.first_scheduled);  // set once, at the first step
      seen = o.first_scheduled;
    }
  }
  ASSERT_TRUE(seen.has_value());
  EXPECT_GE(*seen, before);
  EXPECT_LE(*seen, std::chrono::steady_clock::now());
}

}  // namespace
}  // namespace moeopt
