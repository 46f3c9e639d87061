// Token sampling on the CPU: penalties, temperature, top-k, top-p, min-p, seeded draws.
//
// Order of operations (as vLLM and HF apply them):
//   0. logit_bias: bias added to the listed tokens' logits,
//   1. repetition penalty over tokens seen in prompt or output (logit / p if > 0, * p if < 0),
//   2. presence and frequency penalties over output tokens (logit -= presence + freq * count),
//   3. greedy: argmax (lowest id wins ties) — steps 4-6 are skipped,
//   4. temperature: logits / T, then softmax,
//   5. top-k, then top-p (smallest set of highest-probability tokens whose mass reaches p),
//      then min-p (drop tokens with p < min_p * p_max),
//   6. one uniform draw from the request's RNG over the surviving tokens in a fixed order
//      (probability descending, id ascending), so a seeded request is reproducible.
// Logprobs are reported from the model's raw distribution (log_softmax of the unmodified
// logits), as the OpenAI API does.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "moeopt/engine/sampling_params.h"

namespace moeopt {

// Token counts a request has seen, kept incrementally by the sequence.
struct TokenHistory {
  std::unordered_map<int32_t, int32_t> output_counts;  // token -> times generated
  std::vector<uint8_t> seen;                           // [vocab] 1 if in prompt or output

  void reset(int64_t vocab_size, std::span<const int32_t> prompt);
  void add_output(int32_t token);
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;               // of the chosen token, raw distribution
  std::vector<TokenLogprob> top;      // params.logprobs best tokens, raw distribution
};

class RequestRng {
 public:
  explicit RequestRng(std::optional<uint64_t> seed);
  double uniform();  // [0, 1)
 private:
  std::mt19937_64 gen_;
};

// Samples one token from `logits` (one row, modified in place as scratch).
SampleResult sample_token(std::span<float> logits, const SamplingParams& params,
                          const TokenHistory& history, RequestRng& rng);

// Sets r.logprob (of r.token) and r.top (num_top best) from the unmodified logits row.
void fill_logprobs(std::span<const float> raw_logits, int32_t num_top, SampleResult& r);

// Applies step 0 (logit_bias) in place.
void apply_logit_bias(std::span<float> logits, const SamplingParams& params);

// Applies steps 1-2 (penalties) in place. Exposed for tests.
void apply_penalties(std::span<float> logits, const SamplingParams& params,
                     const TokenHistory& history);

}  // namespace moeopt
