// Sequence: one request's state inside the engine.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moeopt/engine/sampler.h"

namespace moeopt {

enum class FinishReason { kNone, kStop, kLength, kAbort };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "abort", ""

struct Sequence {
  uint64_t id = 0;
  std::vector<int32_t> tokens;   // prompt, then generated tokens
  int32_t prompt_len = 0;
  int32_t num_computed = 0;      // tokens whose K/V are in the cache
  std::vector<int32_t> blocks;   // block table (physical ids)
  SamplingParams params;
  TokenHistory history;
  RequestRng rng;
  bool want_prompt_logits = false;
  std::vector<float> prompt_logits_last;  // logits at the last prompt position, if wanted
  bool want_step_logits = false;
  std::vector<float> step_logits;         // device runner: this step's row, if wanted
  FinishReason finish = FinishReason::kNone;
  int32_t num_preemptions = 0;
  // Prefix cache: chain hashes of the full blocks whose K/V are computed (or were found in
  // the cache), parallel to blocks[0, block_hashes.size()).
  std::vector<uint64_t> block_hashes;
  int32_t cached_prompt_tokens = 0;  // prompt tokens found in the prefix cache at admission
  // When a step first ran any of its tokens (the end of its queue time; for metrics).
  std::optional<std::chrono::steady_clock::time_point> first_scheduled;
  // Parallel samples of the same prompt (Engine::add_samples) that wait for this sequence's
  // prompt K/V: once it is computed, the scheduler forks them off (Scheduler::release_forks)
  // and they share its full prompt blocks.
  std::vector<std::unique_ptr<Sequence>> forks;

  Sequence(uint64_t id_, std::vector<int32_t> prompt, SamplingParams p, int64_t vocab)
      : id(id_), tokens(std::move(prompt)), prompt_len(int32_t(tokens.size())), params(std::move(p)),
        rng(params.seed) {
    history.reset(vocab, std::span<const int32_t>(tokens.data(), tokens.size()));
  }

  int32_t num_tokens() const { return int32_t(tokens.size()); }
  int32_t num_generated() const { return num_tokens() - prompt_len; }
  bool finished() const { return finish != FinishReason::kNone; }
};

}  // namespace moeopt
