// Batched token sampling on a device (logits never leave the GPU): the device-side twin of
// the engine's CPU sampler (engine/sampler.h), which is its reference and defines the
// semantics. Per row r of logits [R, V] f32:
//   1. repetition penalty over the row's seen tokens (prompt or output): logit / p if > 0,
//      logit * p if < 0; presence and frequency penalties over output tokens:
//      logit -= presence + frequency * count;
//   2. temperature == 0: argmax, lowest id wins ties (steps 3-4 skipped);
//   3. logits / temperature, softmax, then top-k, top-p (smallest set of highest-probability
//      tokens whose mass reaches p), min-p (drop p < min_p * p_max);
//   4. the draw: the CPU sampler's RNG stays on the host. The engine draws one uniform u in
//      [0, 1) per sampled row from the request's generator and passes it in `uniform`; the
//      device walks the surviving tokens in the sampler's fixed order (probability
//      descending, id ascending) and takes the first whose cumulative mass exceeds
//      u * (total surviving mass). Same u, same order: same token as the CPU sampler up to
//      float rounding at a boundary.
// Logprobs come from the raw distribution (log_softmax of the logits as given, before any
// penalty), as the OpenAI API reports them.
//
// All tensors are on the device; `logits` may be overwritten (scratch).
#pragma once

#include <cstdint>

#include "moeopt/core/tensor.h"

namespace moeopt::ops {

struct SamplingBatch {
  TensorView logits;              // [R, V] f32, contiguous; overwritten
  // Per-row settings, [R] each (f32 unless noted).
  TensorView temperature;
  TensorView top_k;               // [R] i32, <= 0: off
  TensorView top_p;               // 1: off
  TensorView min_p;               // 0: off
  TensorView repetition_penalty;  // 1: off
  TensorView presence_penalty;
  TensorView frequency_penalty;
  TensorView uniform;             // [R] f64 (f32 accepted): the row's draw in [0, 1)
  // Penalty history in CSR form: row r owns entries [penalty_offsets[r], penalty_offsets[r+1])
  // of penalty_tokens (each token at most once per row, any order) and penalty_counts
  // (times the token was generated; 0 for a token seen only in the prompt).
  TensorView penalty_offsets;     // [R + 1] i32
  TensorView penalty_tokens;      // [P] i32
  TensorView penalty_counts;      // [P] i32
  bool any_penalty = false;       // host hint: false skips step 1 for every row
  bool all_greedy = false;        // host hint: every temperature is 0
  int num_logprobs = 0;           // top logprobs per row wanted (0..20)
};

struct SamplingOutput {
  TensorView tokens;        // [R] i32
  TensorView logprob;       // [R] f32: the chosen token's raw logprob
  TensorView top_ids;       // [R, num_logprobs] i32 (unused when num_logprobs == 0)
  TensorView top_logprobs;  // [R, num_logprobs] f32, best first, ties by lower id
};

}  // namespace moeopt::ops
