#include "moeopt/engine/scheduler.h"

#include <algorithm>

namespace moeopt {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
  }
  return "";
}

Scheduler::Scheduler(SchedulerOptions options, BlockAllocator* blocks)
    : opt_(options), blocks_(blocks) {}

void Scheduler::add(std::unique_ptr<Sequence> seq) { waiting_.push_back(std::move(seq)); }

int32_t Scheduler::blocks_needed(const Sequence& s, int32_t new_tokens) const {
  int32_t total = s.num_computed + new_tokens;
  int32_t need = (total + opt_.block_size - 1) / opt_.block_size;
  return std::max(0, need - int32_t(s.blocks.size()));
}

void Scheduler::preempt(Sequence& s) {
  blocks_->release(s.blocks);
  s.blocks.clear();
  s.block_hashes.clear();
  s.num_computed = 0;
  ++s.num_preemptions;
  ++preemptions_;
}

namespace {
// A running sequence still computing its prompt: the first token not yet sampled, or more
// than the one pending token left to compute (recomputing after a preemption).
bool in_prompt(const Sequence& s) {
  return s.num_generated() == 0 || s.num_computed + 1 < s.num_tokens();
}
}  // namespace

std::vector<ScheduledSeq> Scheduler::schedule() {
  std::vector<ScheduledSeq> out;
  int32_t budget = opt_.max_num_batched_tokens;
  if (opt_.prefill_first) {
    schedule_running(out, budget, /*prompts_only=*/true);
    admit_waiting(out, budget);
    if (!out.empty()) return out;
  }
  schedule_running(out, budget, /*prompts_only=*/false);
  admit_waiting(out, budget);
  return out;
}

void Scheduler::schedule_running(std::vector<ScheduledSeq>& out, int32_t& budget,
                                 bool prompts_only) {
  // Oldest first; preempt the newest when blocks run out.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence& s = *running_[i];
    if (prompts_only && !in_prompt(s)) {
      ++i;
      continue;
    }
    int32_t n = std::min(s.num_tokens() - s.num_computed, budget);
    int32_t need = blocks_needed(s, n);
    while (need > blocks_->num_free() && running_.size() - 1 > i) {
      // Preempt the most recently admitted sequence (not yet scheduled this step: those
      // after i have not been looked at).
      std::unique_ptr<Sequence> victim = std::move(running_.back());
      running_.pop_back();
      preempt(*victim);
      waiting_.push_front(std::move(victim));
    }
    if (need > blocks_->num_free()) {
      // Even alone it does not fit: preempt it too and stop (it retries when blocks free up).
      std::unique_ptr<Sequence> self = std::move(running_[i]);
      running_.erase(running_.begin() + long(i));
      preempt(*self);
      waiting_.push_front(std::move(self));
      break;
    }
    auto got = blocks_->allocate(need);
    s.blocks.insert(s.blocks.end(), got->begin(), got->end());
    out.push_back({&s, n});
    budget -= n;
    ++i;
  }
}

void Scheduler::admit_waiting(std::vector<ScheduledSeq>& out, int32_t& budget) {
  // In order, without preempting anything.
  while (!waiting_.empty() && budget > 0 && int32_t(running_.size()) < opt_.max_num_seqs) {
    Sequence& s = *waiting_.front();
    if (s.finished()) break;  // aborted while waiting: collected by take_finished
    // A released fork arrives holding its first sample's prompt blocks: no cache lookup.
    const bool fresh = s.num_computed == 0 && s.blocks.empty();
    int32_t taken = fresh ? take_cached_prefix(s) : 0;
    int32_t remaining = s.num_tokens() - s.num_computed;
    int32_t n = std::min(remaining, budget);
    int32_t need = blocks_needed(s, n);
    if (need > blocks_->num_free() || (!opt_.enable_chunked_prefill && n < remaining)) {
      drop_cached_prefix(s, taken);
      break;
    }
    if (opt_.enable_prefix_caching && fresh) {
      prefix_queried_ += s.num_tokens();
      prefix_hits_ += int64_t(taken) * opt_.block_size;
      if (s.num_generated() == 0 && s.num_preemptions == 0) s.cached_prompt_tokens = taken * opt_.block_size;
    }
    auto got = blocks_->allocate(need);
    s.blocks.insert(s.blocks.end(), got->begin(), got->end());
    out.push_back({&s, n});
    budget -= n;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

std::vector<std::unique_ptr<Sequence>> Scheduler::take_finished() {
  std::vector<std::unique_ptr<Sequence>> done;
  // Forks of a first sample that ended (aborted) before its prompt was computed: the
  // aborted ones end with it, the others wait on their own (nothing to share).
  std::vector<std::unique_ptr<Sequence>> orphans;
  auto collect = [&](auto& container) {
    for (auto it = container.begin(); it != container.end();) {
      if ((*it)->finished()) {
        blocks_->release((*it)->blocks);
        (*it)->blocks.clear();
        for (auto& f : (*it)->forks) (f->finished() ? done : orphans).push_back(std::move(f));
        (*it)->forks.clear();
        done.push_back(std::move(*it));
        it = container.erase(it);
      } else {
        ++it;
      }
    }
  };
  collect(running_);
  collect(waiting_);
  waiting_.insert(waiting_.begin(), std::make_move_iterator(orphans.begin()),
                  std::make_move_iterator(orphans.end()));
  return done;
}

void Scheduler::release_forks(Sequence& s) {
  if (s.forks.empty() || s.num_computed < s.prompt_len) return;
  const int32_t bs = opt_.block_size;
  // Full blocks before the last prompt token: a fork must compute that token itself (its
  // first sample needs the logits there), and it never writes into a shared block.
  const int32_t shared = std::min<int32_t>((s.prompt_len - 1) / bs, int32_t(s.blocks.size()));
  for (auto& f : s.forks) {
    if (f->finished()) continue;  // aborted while pending: collected without blocks
    f->blocks.assign(s.blocks.begin(), s.blocks.begin() + shared);
    for (int32_t b : f->blocks) blocks_->retain(b);
    const size_t hashes = std::min(size_t(shared), s.block_hashes.size());
    f->block_hashes.assign(s.block_hashes.begin(), s.block_hashes.begin() + long(hashes));
    f->num_computed = shared * bs;
    f->cached_prompt_tokens = s.cached_prompt_tokens;
    forked_tokens_ += int64_t(shared) * bs;
  }
  waiting_.insert(waiting_.begin(), std::make_move_iterator(s.forks.begin()),
                  std::make_move_iterator(s.forks.end()));
  s.forks.clear();
}

size_t Scheduler::num_waiting() const {
  size_t n = waiting_.size();
  for (const auto& s : running_) n += s->forks.size();
  for (const auto& s : waiting_) n += s->forks.size();
  return n;
}

int32_t Scheduler::take_cached_prefix(Sequence& s) {
  if (!opt_.enable_prefix_caching) return 0;
  const int32_t bs = opt_.block_size;
  // Full blocks only, and never all tokens: the last position must be computed.
  int32_t max_blocks = (s.num_tokens() - 1) / bs;
  uint64_t parent = 0;
  int32_t taken = 0;
  for (; taken < max_blocks; ++taken) {
    std::span<const int32_t> toks(s.tokens.data() + size_t(taken) * size_t(bs), size_t(bs));
    uint64_t h = block_chain_hash(parent, toks);
    auto b = blocks_->lookup(h, parent, toks);
    if (!b) break;
    blocks_->acquire_cached(*b);
    s.blocks.push_back(*b);
    s.block_hashes.push_back(h);
    parent = h;
  }
  s.num_computed = taken * bs;
  return taken;
}

void Scheduler::drop_cached_prefix(Sequence& s, int32_t taken) {
  if (taken <= 0) return;
  blocks_->release(s.blocks);
  s.blocks.clear();
  s.block_hashes.clear();
  s.num_computed = 0;
}

void Scheduler::register_computed_blocks(Sequence& s) {
  if (!opt_.enable_prefix_caching) return;
  const int32_t bs = opt_.block_size;
  int32_t full = std::min<int32_t>(s.num_computed / bs, int32_t(s.blocks.size()));
  for (int32_t k = int32_t(s.block_hashes.size()); k < full; ++k) {
    uint64_t parent = k == 0 ? 0 : s.block_hashes[size_t(k - 1)];
    std::span<const int32_t> toks(s.tokens.data() + size_t(k) * size_t(bs), size_t(bs));
    uint64_t h = block_chain_hash(parent, toks);
    blocks_->register_block(s.blocks[size_t(k)], h, parent, toks);
    s.block_hashes.push_back(h);
  }
}

bool Scheduler::abort(uint64_t id) {
  auto mark = [&](auto& container) {
    for (auto& s : container) {
      if (s->id == id) { s->finish = FinishReason::kAbort; return true; }
      for (auto& f : s->forks)
        if (f->id == id) { f->finish = FinishReason::kAbort; return true; }
    }
    return false;
  };
  return mark(running_) || mark(waiting_);
}

}  // namespace moeopt
