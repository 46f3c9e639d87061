// General sampling path, kernel 1 of 3 (then the CUB segmented sort, then sampling_walk.cuh):
// everything that needs the row in id order. One block of kSamplePrepareThreads per row:
//   1. pass over the raw row: ArgLse (argmax, log-sum-exp -> raw_lse) and, when top logprobs
//      are wanted, each thread's best num_logprobs (value desc, id asc; local arrays) merged
//      by num_logprobs rounds of a block-wide best -> top_ids / top_logprobs = l - lse;
//   2. penalties (ops/sampling.h step 1) over the row's CSR entries, one thread per entry
//      (each token appears once per row, so no two threads write one logit): the raw value is
//      saved in raw_pen[j] first (the chosen token's logprob is reported from the raw row).
//      Rounding as the CPU: repetition l / p or l * p, then l - (presence + frequency * count)
//      with explicitly rounded operations (no FMA contraction), so penalised logits are
//      bit-identical to engine/sampler.cpp's;
//   3. greedy rows: argmax of the penalised row (lowest id on ties) and the raw logprob of
//      the token; the row's sort segment is empty;
//      sampled rows: max of the penalised row and sum of exp((l - max) / T) in double, exactly
//      the CPU's formula (the normaliser of the softmax), for the walk kernel; the row's sort
//      segment is its place in the chunk.
// A raw logit of a token is looked up with raw_logit(): raw_pen of its CSR entry if the row
// was penalised and the token has one, else the value passed in (unchanged by penalties).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cstdint>

#include "moeopt/backend/cuda/kernels/sampling_params.cuh"
#include "moeopt/backend/cuda/kernels/sampling_reduce.cuh"

namespace moeopt::cuda::kernels {

__device__ __forceinline__ bool sample_row_greedy(const SampleParams& p, int row) {
  return p.all_greedy || !(p.temperature[row] > 0.f);
}

// The row's CSR entries [*b, *e), clamped to [0, P] (bad offsets are made harmless).
__device__ __forceinline__ void penalty_range(const SampleParams& p, int row, int* b, int* e) {
  *b = min(max(p.penalty_offsets[row], 0), p.num_penalty_entries);
  *e = min(max(p.penalty_offsets[row + 1], *b), p.num_penalty_entries);
}

// Whether step 2 changes anything in this row (same test in every kernel).
__device__ __forceinline__ bool sample_row_penalised(const SampleParams& p, int row) {
  if (p.penalty_offsets == nullptr) return false;
  int b, e;
  penalty_range(p, row, &b, &e);
  return e > b && (p.repetition_penalty[row] != 1.f || p.presence_penalty[row] != 0.f ||
                   p.frequency_penalty[row] != 0.f);
}

// The raw logit of token `tok` whose current (possibly penalised) value is `current`.
// Block-wide; every thread gets the result.
__device__ __forceinline__ float raw_logit(const SampleParams& p, int row, bool penalised,
                                           int tok, float current, float* sh_value) {
  __syncthreads();
  if (threadIdx.x == 0) *sh_value = current;
  __syncthreads();
  if (penalised) {
    int b, e;
    penalty_range(p, row, &b, &e);
    for (int j = b + threadIdx.x; j < e; j += blockDim.x)
      if (p.penalty_tokens[j] == tok) *sh_value = p.raw_pen[j];  // at most one entry matches
  }
  __syncthreads();
  return *sh_value;
}

// A thread's best n (<= kSampleMaxLogprobs) of the row, best first; id INT_MAX: empty slot.
struct TopList {
  float v[kSampleMaxLogprobs];
  int id[kSampleMaxLogprobs];

  __device__ __forceinline__ void init(int n) {
    for (int k = 0; k < n; ++k) {
      v[k] = -INFINITY;
      id[k] = INT_MAX;
    }
  }
  __device__ __forceinline__ void push(float x, int i, int n) {
    if (x != x) return;  // NaN never ranks
    if (id[n - 1] != INT_MAX && !sample_better(x, i, v[n - 1], id[n - 1])) return;
    int pos = n - 1;
    while (pos > 0 && (id[pos - 1] == INT_MAX || sample_better(x, i, v[pos - 1], id[pos - 1]))) {
      v[pos] = v[pos - 1];
      id[pos] = id[pos - 1];
      --pos;
    }
    v[pos] = x;
    id[pos] = i;
  }
};

template <int THREADS>
__global__ void __launch_bounds__(THREADS) sample_prepare_kernel(SampleParams p) {
  __shared__ ArgLseShared<THREADS> sh_lse;
  __shared__ BestShared<THREADS> sh_best;
  __shared__ SumShared<THREADS> sh_sum;
  __shared__ float sh_value;
  const int row = blockIdx.x;
  if (row >= p.rows) return;  // block-uniform
  const int vocab = p.vocab, n_top = p.num_logprobs;
  float* x = p.logits + size_t(row) * size_t(vocab);
  const bool greedy = sample_row_greedy(p, row);
  const bool penalised = sample_row_penalised(p, row);

  // 1. Raw row: argmax, log-sum-exp, top logprobs.
  ArgLse st;
  TopList top;
  if (n_top > 0) {
    top.init(n_top);
    for (int i = threadIdx.x; i < vocab; i += THREADS) {
      const float v = x[i];
      st.push(v, i);
      top.push(v, i, n_top);
    }
  } else {
    for (int i = threadIdx.x; i < vocab; i += THREADS) st.push(x[i], i);
  }
  const ArgLse raw = block_arg_lse<THREADS>(st, sh_lse);
  const float lse = raw.lse();
  if (n_top > 0) {
    int head = 0;
    for (int k = 0; k < n_top; ++k) {
      float bv = head < n_top ? top.v[head] : -INFINITY;
      int bi = head < n_top ? top.id[head] : INT_MAX;
      const int mine = bi;
      block_best<THREADS>(bv, bi, sh_best);
      if (bi != INT_MAX && mine == bi) ++head;  // ids are unique: one thread advances
      if (threadIdx.x == 0) {
        const size_t o = size_t(row) * size_t(n_top) + size_t(k);
        // Fewer than n_top tokens (vocab < n_top): the tail is id -1, logprob -inf.
        p.top_ids[o] = bi == INT_MAX ? -1 : bi;
        p.top_logprobs[o] = bi == INT_MAX ? -INFINITY : bv - lse;
      }
    }
  }

  // 2. Penalties. Every read of pass 1 is done (block_arg_lse synchronised).
  if (penalised) {
    int b, e;
    penalty_range(p, row, &b, &e);
    const float rep = p.repetition_penalty[row];
    const float pres = p.presence_penalty[row], freq = p.frequency_penalty[row];
    for (int j = b + threadIdx.x; j < e; j += THREADS) {
      const int tok = p.penalty_tokens[j];
      if (tok < 0 || tok >= vocab) continue;
      const float r = x[tok];
      p.raw_pen[j] = r;
      float v = r;
      if (rep != 1.f) v = v > 0.f ? __fdiv_rn(v, rep) : __fmul_rn(v, rep);
      const int count = p.penalty_counts[j];
      if (count > 0 && (pres != 0.f || freq != 0.f))
        v = __fsub_rn(v, __fadd_rn(pres, __fmul_rn(freq, float(count))));
      x[tok] = v;
    }
  }
  __syncthreads();

  // 3. Greedy: argmax of the penalised row. Sampled: its max and the softmax normaliser.
  ArgLse pen = raw;
  if (penalised) {
    ArgLse s2;
    for (int i = threadIdx.x; i < vocab; i += THREADS) s2.push(x[i], i);
    pen = block_arg_lse<THREADS>(s2, sh_lse);
  }
  if (greedy) {
    const int tok = pen.idx == INT_MAX ? 0 : pen.idx;
    const float r = raw_logit(p, row, penalised, tok, x[tok], &sh_value);
    if (threadIdx.x == 0) {
      p.tokens[row] = tok;
      p.logprob[row] = r - lse;
      p.seg_begin[row] = (row % p.chunk_rows) * vocab;
      p.seg_end[row] = (row % p.chunk_rows) * vocab;
    }
    return;
  }
  const double mx = double(pen.m), t = double(p.temperature[row]);
  double sum = 0.0;
  for (int i = threadIdx.x; i < vocab; i += THREADS) sum += exp((double(x[i]) - mx) / t);
  sum = block_sum<THREADS>(sum, sh_sum);
  if (threadIdx.x == 0) {
    p.raw_lse[row] = lse;
    p.row_max[row] = pen.m;
    p.row_sum[row] = sum;
    p.seg_begin[row] = (row % p.chunk_rows) * vocab;
    p.seg_end[row] = (row % p.chunk_rows) * vocab + vocab;
  }
}

// Fills the chunk's id buffer with 0..vocab-1 per sampled row (the sort's values).
// grid (ceil(vocab / kSampleInitThreads) capped, chunk rows).
__global__ void __launch_bounds__(kSampleInitThreads) sample_init_ids_kernel(SampleParams p) {
  const int local = blockIdx.y, row = p.chunk_begin + local;
  if (row >= p.rows || sample_row_greedy(p, row)) return;
  int32_t* ids = p.init_ids + size_t(local) * size_t(p.vocab);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.vocab; i += gridDim.x * blockDim.x)
    ids[i] = i;
}

}  // namespace moeopt::cuda::kernels
