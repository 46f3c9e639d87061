// Scheduler: which sequences run in the next step, and how many of their tokens.
//
// Policy (vLLM-style, first come first served):
//   1. Running sequences first, in admission order. Each needs its remaining tokens (1 when
//      decoding; the rest of its prompt when a chunked prefill is under way), capped by the
//      step's token budget (max_num_batched_tokens), and the KV blocks to hold them. When
//      blocks run out, the most recently admitted running sequence is preempted: its blocks
//      are freed and it goes back to the front of the waiting queue, to be recomputed later
//      (its tokens so far, prompt and output, are prefilled again).
//   2. Then waiting sequences, in order, while fewer than max_num_seqs run, budget remains
//      and their first chunk's blocks fit (no preemption to admit new work). A prompt larger
//      than the remaining budget is prefilled in chunks over several steps (unless chunked
//      prefill is off: then it waits for a step with budget for all of it).
//      With prefix caching, a sequence admitted with nothing computed first takes the cached
//      blocks of its longest cached prefix of full blocks (block_allocator.h) and starts
//      computing after them. At least one token is always computed (the last position's
//      logits are needed), so a fully cached prompt recomputes its last block.
//   Parallel samples (Engine::add_samples): sample 0 is queued with the others inside it
//   (Sequence::forks). When its prompt's K/V are computed, release_forks() gives every fork
//   a reference to each full prompt block before the last prompt token (the blocks a cached
//   prefix would give) and puts the forks at the front of the waiting queue, where they are
//   admitted like any waiting sequence and compute only the rest of the prompt (fewer than
//   block_size + 1 tokens). A fork that is preempted later recomputes like any sequence.
// Every scheduled sequence gets at least one token; a sequence is never split within a step.
//
// With prefill_first (vLLM's pre-chunked-prefill default, a throughput policy; `bench decode`
// uses it so that its decode phase is a steady batch): while prompt work exists — a running
// sequence still inside its prompt, or a waiting one that can be admitted now — a step runs
// only prompt work (1. restricted to sequences in their prompt, then 2.); decoding sequences
// wait. Once nothing waiting fits, steps are the usual running-first ones.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "moeopt/engine/block_allocator.h"
#include "moeopt/engine/sequence.h"

namespace moeopt {

struct SchedulerOptions {
  int32_t max_num_seqs = 64;
  int32_t max_num_batched_tokens = 2048;
  int32_t block_size = 16;
  bool enable_prefix_caching = false;
  bool enable_chunked_prefill = true;
  bool prefill_first = false;  // see the file comment
};

struct ScheduledSeq {
  Sequence* seq = nullptr;
  int32_t num_new_tokens = 0;  // tokens [num_computed, num_computed + n) run this step
};

class Scheduler {
 public:
  Scheduler(SchedulerOptions options, BlockAllocator* blocks);

  void add(std::unique_ptr<Sequence> seq);
  // Picks this step's work (may preempt running sequences, see the file comment).
  std::vector<ScheduledSeq> schedule();
  // Releases finished sequences' blocks and hands them back to the caller.
  std::vector<std::unique_ptr<Sequence>> take_finished();
  // Marks a sequence aborted (running or waiting); false if unknown.
  bool abort(uint64_t id);
  // After a step computed tokens of `s`: registers its newly full blocks in the prefix
  // cache (no-op when prefix caching is off).
  void register_computed_blocks(Sequence& s);
  // After a step computed tokens of `s`: once its whole prompt is computed, moves its forks
  // (parallel samples) to the front of the waiting queue sharing its full prompt blocks (see
  // the file comment). No-op without forks or before the prompt is done.
  void release_forks(Sequence& s);

  size_t num_running() const { return running_.size(); }
  // Waiting sequences, forks not yet released by their first sample included.
  size_t num_waiting() const;
  bool empty() const { return running_.empty() && waiting_.empty(); }
  int64_t num_preemptions() const { return preemptions_; }
  // Prefix-cache statistics over admissions: tokens looked up and tokens found.
  int64_t prefix_queried_tokens() const { return prefix_queried_; }
  int64_t prefix_hit_tokens() const { return prefix_hits_; }
  // Prompt tokens forks took from their first sample's blocks instead of computing them.
  int64_t forked_prompt_tokens() const { return forked_tokens_; }

 private:
  int32_t blocks_needed(const Sequence& s, int32_t new_tokens) const;
  // Policy steps 1 and 2 of the file comment; step 1 only over sequences `in_prompt` when
  // prompts_only.
  void schedule_running(std::vector<ScheduledSeq>& out, int32_t& budget, bool prompts_only);
  void admit_waiting(std::vector<ScheduledSeq>& out, int32_t& budget);
  void preempt(Sequence& s);
  // Shares the cached blocks of s's longest cached prefix; returns how many it took.
  int32_t take_cached_prefix(Sequence& s);
  void drop_cached_prefix(Sequence& s, int32_t taken);

  SchedulerOptions opt_;
  BlockAllocator* blocks_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;  // admission order
  int64_t preemptions_ = 0;
  int64_t prefix_queried_ = 0, prefix_hits_ = 0;
  int64_t forked_tokens_ = 0;
};

}  // namespace moeopt
