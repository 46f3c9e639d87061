// Per-request sampling settings, as the OpenAI API and `moeopt generate` expose them.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt {

struct SamplingParams {
  float temperature = 1.0f;         // 0: greedy (argmax, lowest id wins ties)
  int32_t top_k = 0;                // <= 0: off
  float top_p = 1.0f;               // (0, 1]; 1: off
  float min_p = 0.0f;               // [0, 1]; 0: off. Keeps p >= min_p * p_max.
  float repetition_penalty = 1.0f;  // > 0; 1: off. HF/CTRL style over prompt + output tokens
  float presence_penalty = 0.0f;    // [-2, 2], OpenAI style over output tokens
  float frequency_penalty = 0.0f;   // [-2, 2], OpenAI style over output tokens
  std::optional<uint64_t> seed;     // fixed seed: reproducible sampling for this request
  int32_t max_tokens = 16;          // > 0
  std::vector<int32_t> stop_token_ids;  // stop after emitting any of these (included in output)
  bool ignore_eos = false;          // keep going past the model's EOS ids
  int32_t logprobs = -1;            // -1: none; 0..20: chosen token's logprob + that many top ones
  // OpenAI logit_bias: added to these tokens' logits before penalties (ids ascending, each
  // once, bias in [-100, 100]). Logprobs stay those of the unbiased distribution.
  std::vector<std::pair<int32_t, float>> logit_bias;

  bool greedy() const { return temperature == 0.0f; }
  // Range checks; messages name the field ("temperature must be in [0, 2], got 3").
  Status validate(int64_t vocab_size) const;
};

}  // namespace moeopt
