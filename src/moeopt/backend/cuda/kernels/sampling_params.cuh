// Parameter structs and launch constants of the sampling kernels (sampling_greedy.cuh,
// sampling_prepare.cuh, sampling_walk.cuh). Plain structs of raw device pointers, includable
// from host C++ (no device code), so cuda_sampling.cpp validates and lays out the workspace
// without nvcc. The semantics are ops/sampling.h's; the CPU reference is engine/sampler.cpp.
//
// A row is greedy when !(temperature > 0) (0 as documented; negative or NaN temperatures are
// made harmless the same way instead of producing garbage).
#pragma once

#include <cstdint>

namespace moeopt::cuda::kernels {

inline constexpr int kSampleGreedyThreads = 512;   // fast greedy path: one block per row
inline constexpr int kSamplePrepareThreads = 512;  // general path, pass over the raw row
inline constexpr int kSampleWalkThreads = 256;     // general path, walk of the sorted row
inline constexpr int kSampleWalkItems = 4;         // consecutive sorted entries per thread
inline constexpr int kSampleInitThreads = 256;
inline constexpr int kSampleMaxLogprobs = 20;

// Fast path (all rows greedy, no penalties, no top logprobs): argmax (lowest id on ties) and
// its raw logprob in one read of the row.
struct GreedyParams {
  const float* logits;  // [rows, vocab]
  int32_t* tokens;      // [rows]
  float* logprob;       // [rows]
  int rows;
  int vocab;
  bool vec4;            // vocab % 4 == 0 and logits 16-byte aligned: float4 loads
};

// General path. Per-row settings are [rows] device arrays (ops::SamplingBatch).
struct SampleParams {
  float* logits;  // [rows, vocab]: raw in, penalised after the prepare kernel; also the
                  // first key buffer of the sort (the chunk's rows come back sorted in
                  // `sorted_keys`, which may be logits itself)
  int rows;
  int vocab;
  const float* temperature;
  const int32_t* top_k;
  const float* top_p;
  const float* min_p;
  const float* repetition_penalty;
  const float* presence_penalty;
  const float* frequency_penalty;
  const float* uniform_f32;   // one of the two is set
  const double* uniform_f64;
  const int32_t* penalty_offsets;  // [rows + 1]; nullptr: no penalties at all
  const int32_t* penalty_tokens;   // [P]
  const int32_t* penalty_counts;   // [P]
  int num_penalty_entries;         // P: offsets are clamped to [0, P] on the device
  int num_logprobs;                // 0..kSampleMaxLogprobs
  bool all_greedy;                 // the host hint: every row greedy, whatever temperature says
  int32_t* tokens;                 // [rows]
  float* logprob;                  // [rows]
  int32_t* top_ids;                // [rows, num_logprobs]
  float* top_logprobs;             // [rows, num_logprobs]
  // Workspace.
  float* raw_lse;     // [rows] log-sum-exp of the raw row
  float* row_max;     // [rows] max of the penalised row (sampled rows)
  double* row_sum;    // [rows] sum of exp((l - max) / T) in double (sampled rows)
  float* raw_pen;     // [P] raw logit of each penalised entry, saved before the penalty
  int32_t* seg_begin; // [rows] sort segment of the row inside its chunk (elements)
  int32_t* seg_end;   // [rows] == seg_begin for greedy rows (nothing to sort)
  int chunk_rows;     // rows sorted per chunk
  // Walk kernel: the chunk [chunk_begin, chunk_begin + chunk_rows) after the sort.
  int chunk_begin;
  const float* sorted_keys;  // [chunk_rows, vocab] penalised logits, descending
  int32_t* sorted_ids;       // [chunk_rows, vocab] their ids (ascending among equal keys)
  int32_t* init_ids;         // [chunk_rows, vocab] ids to fill before the sort
};

}  // namespace moeopt::cuda::kernels
