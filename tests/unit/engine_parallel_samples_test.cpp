// Parallel samples of one prompt (Engine::add_samples, the OpenAI API's `n`): the forks share
// their first sample's full prompt blocks (reference counts, not copies), compute only the
// rest of the prompt, and produce exactly the tokens of separate requests — greedy ones the
// same tokens, seeded ones those of seed + i — also under preemption and with aborts.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "moeopt/engine/engine.h"
#include "moeopt/model/model_cache.h"

namespace fs = std::filesystem;

namespace moeopt {
namespace {

std::unique_ptr<Engine> make_engine(int32_t num_kv_blocks, bool prefix_caching = false) {
  auto dir = materialize_random_checkpoint(
      (fs::path(MOEOPT_SOURCE_DIR) / "tests/reference/golden_configs/qwen3_moe_basic.json").string(), 0,
      std::nullopt, "");
  EXPECT_TRUE(dir.ok()) << dir.status().message();
  if (!dir.ok()) return nullptr;
  auto model = load_model(*dir);
  EXPECT_TRUE(model.ok()) << model.status().message();
  if (!model.ok()) return nullptr;
  EngineOptions eo;
  eo.num_threads = 2;
  eo.block_size = 4;
  eo.num_kv_blocks = num_kv_blocks;
  eo.enable_prefix_caching = prefix_caching;
  auto e = Engine::create(std::move(*model), eo);
  EXPECT_TRUE(e.ok()) << e.status().message();
  return e.ok() ? std::move(*e) : nullptr;
}

std::vector<int32_t> prompt_ids(int n) {
  std::vector<int32_t> v;
  for (int i = 0; i < n; ++i) v.push_back(int32_t((5 + i * 11) % 200 + 3));
  return v;
}

Request request(std::vector<int32_t> prompt, int max_tokens, float temperature,
                std::optional<uint64_t> seed = std::nullopt) {
  Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = temperature;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  r.params.seed = seed;
  return r;
}

struct Outcome {
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
  int finals = 0;  // outputs with finished set (must be exactly one)
};

// One engine step; its outputs are added to `out` by request id.
bool step_into(Engine& e, std::map<uint64_t, Outcome>& out) {
  auto step = e.step();
  EXPECT_TRUE(step.ok()) << step.status().message();
  if (!step.ok()) return false;
  for (const RequestOutput& o : *step) {
    Outcome& oc = out[o.id];
    oc.tokens.insert(oc.tokens.end(), o.new_tokens.begin(), o.new_tokens.end());
    if (o.finished) {
      oc.finish = o.finish_reason;
      ++oc.finals;
    }
  }
  return true;
}

// Steps the engine until nothing is left.
std::map<uint64_t, Outcome> run_all(Engine& e, std::map<uint64_t, Outcome> out = {}) {
  while (e.has_unfinished() && step_into(e, out)) {
  }
  return out;
}

TEST(ParallelSamples, ForksShareThePromptBlocksAndGreedyChoicesAreEqual) {
  auto ref = make_engine(64);
  auto eng = make_engine(64);
  ASSERT_TRUE(ref && eng);
  const std::vector<int32_t> prompt = prompt_ids(18);  // 4 full blocks of 4 + 2 tokens
  auto want = run_to_completion(*ref, {request(prompt, 6, 0)});
  ASSERT_TRUE(want.ok()) << want.status().message();

  auto ids = eng->add_samples(request(prompt, 6, 0), 3);
  ASSERT_TRUE(ids.ok()) << ids.status().message();
  ASSERT_EQ(ids->size(), 3u);
  EXPECT_EQ(eng->scheduler().num_waiting(), 3u);  // the forks count as waiting
  // Step 1 prefills the prompt once (sample 0, blocks 0..4), then forks the others: each
  // holds blocks 0..3 (the full blocks before the last prompt token), nothing is copied.
  std::map<uint64_t, Outcome> got;
  ASSERT_TRUE(step_into(*eng, got));
  EXPECT_EQ(eng->blocks().num_used(), 5);
  for (int32_t b = 0; b < 4; ++b) EXPECT_EQ(eng->blocks().ref_count(b), 3) << "block " << b;
  EXPECT_EQ(eng->blocks().ref_count(4), 1);
  EXPECT_EQ(eng->scheduler().forked_prompt_tokens(), 2 * 16);
  EXPECT_EQ(eng->scheduler().num_running(), 1u);
  EXPECT_EQ(eng->scheduler().num_waiting(), 2u);
  // Step 2: the forks compute tokens 16 and 17 into one block of their own each.
  ASSERT_TRUE(step_into(*eng, got));
  EXPECT_EQ(eng->scheduler().num_running(), 3u);
  EXPECT_EQ(eng->blocks().num_used(), 5 + 2);  // three separate requests would hold 3 * 5
  for (int32_t b = 0; b < 4; ++b) EXPECT_EQ(eng->blocks().ref_count(b), 3) << "block " << b;

  got = run_all(*eng, std::move(got));
  for (uint64_t id : *ids) {
    EXPECT_EQ(got[id].tokens, (*want)[0].tokens) << "sample " << id;
    EXPECT_EQ(got[id].finish, FinishReason::kLength);
    EXPECT_EQ(got[id].finals, 1);
  }
  EXPECT_EQ(eng->blocks().num_used(), 0);
}

TEST(ParallelSamples, SeededChoicesAreThoseOfSeedPlusIAndDiffer) {
  auto ref = make_engine(64);
  auto eng = make_engine(64);
  ASSERT_TRUE(ref && eng);
  const std::vector<int32_t> prompt = prompt_ids(9);
  const int kN = 4;
  std::vector<Request> separate;
  for (int i = 0; i < kN; ++i) separate.push_back(request(prompt, 8, 1.0f, 1000 + i));
  auto want = run_to_completion(*ref, std::move(separate));
  ASSERT_TRUE(want.ok()) << want.status().message();

  auto ids = eng->add_samples(request(prompt, 8, 1.0f, 1000), kN);
  ASSERT_TRUE(ids.ok()) << ids.status().message();
  auto got = run_all(*eng);
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(got[(*ids)[size_t(i)]].tokens, (*want)[size_t(i)].tokens) << "sample " << i;
    distinct.insert(got[(*ids)[size_t(i)]].tokens);
  }
  EXPECT_GT(distinct.size(), 1u) << "temperature 1 with seeds 1000..1003 gave identical samples";
  // n out of range is refused, nothing is queued.
  EXPECT_FALSE(eng->add_samples(request(prompt, 8, 1.0f), 0).ok());
  EXPECT_FALSE(eng->add_samples(request(prompt, 8, 1.0f), kMaxSamplesPerRequest + 1).ok());
  EXPECT_FALSE(eng->has_unfinished());
}

TEST(ParallelSamples, PreemptionAndPrefixCachingKeepTheTokens) {
  // 3 samples of 18 + 14 tokens need 8 blocks each; sharing 4 they need 16, the pool has
  // 12: samples are preempted and recomputed, and every greedy sample is still the reference.
  auto ref = make_engine(64);
  auto eng = make_engine(12, /*prefix_caching=*/true);
  ASSERT_TRUE(ref && eng);
  const std::vector<int32_t> prompt = prompt_ids(18);
  auto want = run_to_completion(*ref, {request(prompt, 14, 0)});
  ASSERT_TRUE(want.ok()) << want.status().message();
  auto ids = eng->add_samples(request(prompt, 14, 0), 3);
  ASSERT_TRUE(ids.ok()) << ids.status().message();
  auto got = run_all(*eng);
  EXPECT_GT(eng->scheduler().num_preemptions(), 0);
  for (uint64_t id : *ids) {
    EXPECT_EQ(got[id].tokens, (*want)[0].tokens) << "sample " << id;
    EXPECT_EQ(got[id].finals, 1);
  }
  EXPECT_EQ(eng->scheduler().forked_prompt_tokens(), 2 * 16);
  EXPECT_EQ(eng->blocks().num_used(), 0);
}

TEST(ParallelSamples, AbortsBeforeTheForkReportEachSampleOnce) {
  auto ref = make_engine(64);
  auto eng = make_engine(64);
  ASSERT_TRUE(ref && eng);
  const std::vector<int32_t> prompt = prompt_ids(10);
  auto want = run_to_completion(*ref, {request(prompt, 5, 0)});
  ASSERT_TRUE(want.ok());

  // Everything aborted while the forks still wait inside sample 0.
  auto ids = eng->add_samples(request(prompt, 5, 0), 3);
  ASSERT_TRUE(ids.ok());
  for (uint64_t id : *ids) EXPECT_TRUE(eng->abort(id)) << id;
  auto got = run_all(*eng);
  ASSERT_EQ(got.size(), 3u);
  for (uint64_t id : *ids) {
    EXPECT_EQ(got[id].finish, FinishReason::kAbort);
    EXPECT_EQ(got[id].finals, 1);
    EXPECT_TRUE(got[id].tokens.empty());
  }
  EXPECT_EQ(eng->blocks().num_used(), 0);

  // Only sample 0 aborted before its prompt ran: the forks go on alone and finish normally.
  ids = eng->add_samples(request(prompt, 5, 0), 3);
  ASSERT_TRUE(ids.ok());
  EXPECT_TRUE(eng->abort((*ids)[0]));
  got = run_all(*eng);
  EXPECT_EQ(got[(*ids)[0]].finish, FinishReason::kAbort);
  for (size_t i = 1; i < 3; ++i) {
    EXPECT_EQ(got[(*ids)[i]].tokens, (*want)[0].tokens) << i;
    EXPECT_EQ(got[(*ids)[i]].finish, FinishReason::kLength);
    EXPECT_EQ(got[(*ids)[i]].finals, 1);
  }
  EXPECT_EQ(eng->blocks().num_used(), 0);
}

}  // namespace
}  // namespace moeopt
