// Scheduler policy without a model: token budget, max_num_seqs, chunked prefill on/off,
// admission by KV capacity, preemption of the newest sequence, aborts.
#include <gtest/gtest.h>

#include <memory>

#include "moeopt/engine/scheduler.h"

namespace moeopt {
namespace {

std::unique_ptr<Sequence> seq(uint64_t id, int prompt_len) {
  std::vector<int32_t> p;
  for (int i = 0; i < prompt_len; ++i) p.push_back(int32_t(10 + i));
  SamplingParams sp;
  return std::make_unique<Sequence>(id, std::move(p), sp, 1000);
}

// Marks the scheduled tokens computed and, for sequences that reached the end, appends a
// generated token (what Engine::step does around the model).
void run_step(const std::vector<ScheduledSeq>& work) {
  for (const auto& w : work) {
    w.seq->num_computed += w.num_new_tokens;
    if (w.seq->num_computed == w.seq->num_tokens()) w.seq->tokens.push_back(7);
  }
}

TEST(Scheduler, TokenBudgetSplitsLongPromptsIntoChunks) {
  BlockAllocator blocks(64);
  Scheduler s({/*max_num_seqs=*/8, /*max_num_batched_tokens=*/10, /*block_size=*/4}, &blocks);
  s.add(seq(1, 25));
  s.add(seq(2, 3));
  auto w = s.schedule();
  ASSERT_EQ(w.size(), 1u);  // the first chunk takes the whole budget
  EXPECT_EQ(w[0].num_new_tokens, 10);
  run_step(w);
  w = s.schedule();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].num_new_tokens, 10);
  run_step(w);
  w = s.schedule();
  ASSERT_EQ(w.size(), 2u);  // 5 left of the long prompt, then the short one fits
  EXPECT_EQ(w[0].num_new_tokens, 5);
  EXPECT_EQ(w[1].seq->id, 2u);
  EXPECT_EQ(w[1].num_new_tokens, 3);
  run_step(w);
  w = s.schedule();  // both decode: one token each
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0].num_new_tokens + w[1].num_new_tokens, 2);
}

TEST(Scheduler, WithoutChunkedPrefillAPromptWaitsForRoomForAllOfIt) {
  BlockAllocator blocks(64);
  SchedulerOptions o{8, 10, 4};
  o.enable_chunked_prefill = false;
  Scheduler s(o, &blocks);
  s.add(seq(1, 6));
  s.add(seq(2, 6));  // 6 + 6 > 10: must wait for the next step
  auto w = s.schedule();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].num_new_tokens, 6);
  EXPECT_EQ(s.num_waiting(), 1u);
  run_step(w);
  w = s.schedule();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[1].num_new_tokens, 6);  // whole prompt in one step
}

TEST(Scheduler, MaxNumSeqsCapsTheRunningBatch) {
  BlockAllocator blocks(64);
  Scheduler s({2, 100, 4}, &blocks);
  for (uint64_t i = 1; i <= 4; ++i) s.add(seq(i, 3));
  auto w = s.schedule();
  EXPECT_EQ(w.size(), 2u);
  EXPECT_EQ(s.num_running(), 2u);
  EXPECT_EQ(s.num_waiting(), 2u);
}

TEST(Scheduler, AdmissionWaitsForBlocksAndPreemptsTheNewest) {
  BlockAllocator blocks(4);  // 16 token slots
  Scheduler s({8, 100, 4}, &blocks);
  s.add(seq(1, 7));  // 2 blocks
  s.add(seq(2, 7));  // 2 blocks
  s.add(seq(3, 3));  // 1 block: no room, waits (no preemption to admit)
  auto w = s.schedule();
  EXPECT_EQ(w.size(), 2u);
  EXPECT_EQ(blocks.num_free(), 0);
  EXPECT_EQ(s.num_waiting(), 1u);
  run_step(w);  // 8 tokens each, 7 computed: position 7 still fits the second block
  w = s.schedule();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(s.num_preemptions(), 0);
  run_step(w);  // 9 tokens, 8 computed: position 8 needs a third block each
  w = s.schedule();
  // Sequence 1 (oldest) gets a block by preempting sequence 2 (newest), whose blocks free.
  ASSERT_GE(w.size(), 1u);
  EXPECT_EQ(w[0].seq->id, 1u);
  EXPECT_EQ(s.num_preemptions(), 1);
  EXPECT_EQ(s.num_running(), 1u + (w.size() - 1));
}

TEST(Scheduler, AbortedSequencesReleaseTheirBlocks) {
  BlockAllocator blocks(8);
  Scheduler s({8, 100, 4}, &blocks);
  s.add(seq(1, 9));
  s.add(seq(2, 2));
  run_step(s.schedule());
  EXPECT_GT(blocks.num_used(), 0);
  EXPECT_TRUE(s.abort(1));
  EXPECT_TRUE(s.abort(2));
  EXPECT_FALSE(s.abort(3));
  auto done = s.take_finished();
  EXPECT_EQ(done.size(), 2u);
  EXPECT_EQ(blocks.num_used(), 0);
  EXPECT_TRUE(s.empty());
}

TEST(Scheduler, PrefillFirstHoldsDecodesWhilePromptsCanBeAdmitted) {
  BlockAllocator blocks(64);
  SchedulerOptions o{8, 10, 4};
  o.prefill_first = true;
  Scheduler s(o, &blocks);
  s.add(seq(1, 6));
  auto w = s.schedule();
  ASSERT_EQ(w.size(), 1u);
  run_step(w);  // 1 decodes from now on
  s.add(seq(2, 15));
  s.add(seq(3, 4));
  // 2's first chunk (10) fills the budget: 1 waits although one token would fit nowhere else.
  w = s.schedule();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].seq->id, 2u);
  EXPECT_EQ(w[0].num_new_tokens, 10);
  run_step(w);
  // 2's last 5 tokens (a running sequence inside its prompt), then 3 is admitted; 1 waits.
  w = s.schedule();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0].seq->id, 2u);
  EXPECT_EQ(w[0].num_new_tokens, 5);
  EXPECT_EQ(w[1].seq->id, 3u);
  EXPECT_EQ(w[1].num_new_tokens, 4);
  run_step(w);
  // No prompt work left: the usual step, all three decode together.
  w = s.schedule();
  ASSERT_EQ(w.size(), 3u);
  for (const auto& x : w) EXPECT_EQ(x.num_new_tokens, 1);
}

TEST(Scheduler, PrefillFirstDecodesWhenTheWaitingPromptDoesNotFit) {
  BlockAllocator blocks(4);  // 16 slots of 4 tokens
  SchedulerOptions o{8, 32, 4};
  o.prefill_first = true;
  Scheduler s(o, &blocks);
  s.add(seq(1, 7));
  auto w = s.schedule();
  ASSERT_EQ(w.size(), 1u);
  run_step(w);  // 1 holds 2 blocks
  s.add(seq(2, 12));  // needs 3 blocks, 2 are free: cannot be admitted
  w = s.schedule();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].seq->id, 1u);  // so 1 decodes instead of the step running nothing
  EXPECT_EQ(w[0].num_new_tokens, 1);
}

}  // namespace
}  // namespace moeopt
