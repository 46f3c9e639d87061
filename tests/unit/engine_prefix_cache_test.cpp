// Prefix caching and cancellation in the engine: shared prefixes are found, reused, and do
// not change a single greedy token (the reference is the same engine with caching off,
// which engine_golden_test ties to transformers); aborts free every block.
#include <gtest/gtest.h>

#include <filesystem>

#include "moeopt/engine/engine.h"
#include "moeopt/model/config.h"
#include "moeopt/model/model_cache.h"

namespace fs = std::filesystem;

namespace moeopt {
namespace {

const fs::path kSource = MOEOPT_SOURCE_DIR;

// Written once into the test cache (MOEOPT_CACHE, set by CTest) through a temporary
// directory renamed into place, so tests running in parallel processes never share a
// half-written checkpoint.
fs::path checkpoint() {
  auto dir = materialize_random_checkpoint(
      (kSource / "tests/reference/golden_configs/qwen3_moe_basic.json").string(), 0, std::nullopt, "");
  EXPECT_TRUE(dir.ok()) << dir.status().message();
  return dir.ok() ? fs::path(*dir) : fs::path();
}

std::unique_ptr<Engine> make_engine(EngineOptions eo) {
  auto model = load_model(checkpoint().string());
  EXPECT_TRUE(model.ok()) << model.status().message();
  if (!model.ok()) return nullptr;
  eo.num_threads = 2;
  auto e = Engine::create(std::move(*model), eo);
  EXPECT_TRUE(e.ok()) << e.status().message();
  return e.ok() ? std::move(*e) : nullptr;
}

Request greedy(std::vector<int32_t> prompt, int max_tokens = 6) {
  Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  return r;
}

std::vector<int32_t> ids(int n, int start, int mul = 7) {
  std::vector<int32_t> v;
  for (int i = 0; i < n; ++i) v.push_back(int32_t((start + i * mul) % 200 + 3));
  return v;
}

TEST(PrefixCache, RepeatedAndSharedPrefixesHitAndKeepTokens) {
  EngineOptions base;
  base.block_size = 4;
  base.num_kv_blocks = 64;
  EngineOptions cached = base;
  cached.enable_prefix_caching = true;
  auto ref = make_engine(base);
  auto eng = make_engine(cached);
  ASSERT_TRUE(ref && eng);

  std::vector<int32_t> a = ids(18, 1);             // 4 full blocks + 2 tokens
  std::vector<int32_t> b = ids(9, 1);              // a's first 2 blocks + 1 token of a
  std::vector<int32_t> c = a;
  c.resize(12);
  c.push_back(99);                                 // a's first 3 blocks, then differs
  std::vector<int32_t> d = ids(16, 1);             // exactly a's first 4 blocks

  auto want = run_to_completion(*ref, {greedy(a), greedy(b), greedy(c), greedy(d)});
  ASSERT_TRUE(want.ok()) << want.status().message();

  auto first = run_to_completion(*eng, {greedy(a)});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ((*first)[0].tokens, (*want)[0].tokens);
  EXPECT_EQ(eng->scheduler().prefix_hit_tokens(), 0);
  EXPECT_EQ(eng->blocks().num_used(), 0);
  EXPECT_GT(eng->blocks().num_cached(), 0);

  // Run each follow-up alone so the hits are predictable.
  struct Case {
    std::vector<int32_t> prompt;
    size_t ref_index;
    int32_t hit_tokens;
  };
  std::vector<Case> cases = {
      {a, 0, 16},  // all 4 full blocks of the prompt were registered
      {b, 1, 8},   // 2 shared blocks
      {c, 2, 12},  // 3 shared blocks
      {d, 3, 12},  // fully cached prompt: the last block is recomputed for its logits
  };
  for (const Case& k : cases) {
    int64_t before = eng->scheduler().prefix_hit_tokens();
    uint64_t id = *eng->add_request(greedy(k.prompt));
    std::vector<int32_t> got;
    int32_t cached_tokens = -1;
    while (eng->has_unfinished()) {
      auto outs = eng->step();
      ASSERT_TRUE(outs.ok()) << outs.status().message();
      for (auto& o : *outs) {
        if (o.id != id) continue;
        got.insert(got.end(), o.new_tokens.begin(), o.new_tokens.end());
        cached_tokens = o.cached_prompt_tokens;
      }
    }
    EXPECT_EQ(got, (*want)[k.ref_index].tokens) << "prompt of " << k.prompt.size() << " tokens";
    EXPECT_EQ(eng->scheduler().prefix_hit_tokens() - before, k.hit_tokens);
    EXPECT_EQ(cached_tokens, k.hit_tokens);
    EXPECT_EQ(eng->blocks().num_used(), 0);
  }
}

TEST(PrefixCache, BatchedSharersAndPreemptionKeepTokens) {
  // Many sequences with a common prefix in a pool so small that they are preempted: with
  // caching on, tokens equal those of the uncached engine with a roomy pool.
  std::vector<Request> reqs;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> p = ids(10, 5);
    auto tail = ids(3 + i, 50 + i, 3);
    p.insert(p.end(), tail.begin(), tail.end());
    reqs.push_back(greedy(p, 8));
  }
  EngineOptions roomy;
  roomy.block_size = 4;
  roomy.num_kv_blocks = 128;
  auto ref = make_engine(roomy);
  ASSERT_TRUE(ref);
  auto want = run_to_completion(*ref, reqs);
  ASSERT_TRUE(want.ok());

  EngineOptions tight = roomy;
  tight.num_kv_blocks = 12;
  tight.max_num_batched_tokens = 9;
  tight.enable_prefix_caching = true;
  auto eng = make_engine(tight);
  ASSERT_TRUE(eng);
  auto got = run_to_completion(*eng, reqs);
  ASSERT_TRUE(got.ok()) << got.status().message();
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ((*got)[i].tokens, (*want)[i].tokens) << "request " << i;
  EXPECT_GT(eng->scheduler().num_preemptions(), 0);
  EXPECT_GT(eng->scheduler().prefix_hit_tokens(), 0);
  EXPECT_EQ(eng->blocks().num_used(), 0);
}

TEST(EngineAbort, AbortFreesBlocksAndReportsOnce) {
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_kv_blocks = 32;
  auto eng = make_engine(eo);
  ASSERT_TRUE(eng);
  uint64_t keep = *eng->add_request(greedy(ids(10, 2), 5));
  uint64_t gone = *eng->add_request(greedy(ids(10, 9), 50));
  ASSERT_TRUE(eng->step().ok());
  EXPECT_GT(eng->blocks().num_used(), 0);
  EXPECT_TRUE(eng->abort(gone));
  int aborted_reports = 0, keep_tokens = 0;
  while (eng->has_unfinished()) {
    auto outs = eng->step();
    ASSERT_TRUE(outs.ok());
    for (auto& o : *outs) {
      if (o.id == gone) {
        EXPECT_TRUE(o.finished);
        EXPECT_EQ(o.finish_reason, FinishReason::kAbort);
        ++aborted_reports;
      }
      if (o.id == keep) keep_tokens += int(o.new_tokens.size());
    }
  }
  EXPECT_EQ(aborted_reports, 1);
  EXPECT_EQ(keep_tokens, 4);  // the first of its 5 came from the first step
  EXPECT_EQ(eng->blocks().num_used(), 0);
  EXPECT_FALSE(eng->abort(gone));
}

TEST(EngineAbort, RejectsRequestsThatCanNeverFitThePool) {
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_kv_blocks = 4;  // 16 tokens in all
  auto eng = make_engine(eo);
  ASSERT_TRUE(eng);
  auto r = eng->add_request(greedy(ids(10, 1), 10));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(eng->add_request(greedy(ids(10, 1), 6)).ok());
}

}  // namespace
}  // namespace moeopt
