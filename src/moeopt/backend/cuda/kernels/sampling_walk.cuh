// General sampling path, kernel 3 of 3: one block of kSampleWalkThreads per sampled row of a
// chunk, after the segmented sort left the row's penalised logits in descending order with
// their ids ascending among equal keys. Descending logit is descending probability, so this
// is the CPU sampler's fixed order (probability descending, id ascending); probabilities are
// recomputed from the sorted keys exactly as engine/sampler.cpp forms them:
//   p_i = exp((double(l_i) - max) / T) / sum            (max, sum from the prepare kernel)
// and the CPU's cuts are prefixes of that order:
//   keep  = top_k if 0 < top_k < V else V
//   top-p: kept = sum_{i<keep} p_i; n = 1 + first i with sum_{j<=i} p_j / kept >= top_p
//   min-p: n = first i in [1, n) with p_i < min_p * p_0 (if any)
//   draw:  total = sum_{i<n} p_i; token = first i < n with sum_{j<=i} p_j > u * total,
//          else the last survivor.
// Running sums are block scans in double over ITEMS consecutive entries per thread (the CPU
// sums sequentially: the difference is ~1e-16 relative, it only matters where a boundary is
// hit within that). Each "first i" walk stops at the chunk of entries where it is found, so
// a draw near the top of the distribution reads a few thousand entries, not V.
// The chosen token's logprob is its raw logit (raw_logit(): the sorted key unless the row
// was penalised at that token) minus the raw log-sum-exp.
#pragma once

#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <climits>
#include <cstdint>

#include "moeopt/backend/cuda/kernels/sampling_params.cuh"
#include "moeopt/backend/cuda/kernels/sampling_prepare.cuh"
#include "moeopt/backend/cuda/kernels/sampling_reduce.cuh"

namespace moeopt::cuda::kernels {

struct MinIndex {
  __device__ __forceinline__ int operator()(int a, int b) const { return a < b ? a : b; }
};

template <int THREADS, int ITEMS>
struct WalkShared {
  typename cub::BlockScan<double, THREADS>::TempStorage scan;
  typename cub::BlockReduce<int, THREADS>::TempStorage reduce;
  SumShared<THREADS> sum;
  int found;
  float value;
};

// First index i in [0, end) with pred(i, v_i, sum_{j<=i} v_j), v_i = value(i); -1 if none.
// pred must be monotone along i (false ... false true ... true).
template <int THREADS, int ITEMS, class Value, class Pred>
__device__ int walk_first(int end, Value value, Pred pred, WalkShared<THREADS, ITEMS>& sh) {
  double carry = 0.0;
  for (int base = 0; base < end; base += THREADS * ITEMS) {
    const int first = base + threadIdx.x * ITEMS;
    double v[ITEMS];
    double local = 0.0;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      v[j] = first + j < end ? value(first + j) : 0.0;
      local += v[j];
    }
    double excl, aggregate;
    cub::BlockScan<double, THREADS>(sh.scan).ExclusiveSum(local, excl, aggregate);
    int hit = INT_MAX;
    double run = carry + excl;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      if (first + j < end) {
        run += v[j];
        if (hit == INT_MAX && pred(first + j, v[j], run)) hit = first + j;
      }
    }
    hit = cub::BlockReduce<int, THREADS>(sh.reduce).Reduce(hit, MinIndex());
    if (threadIdx.x == 0) sh.found = hit;
    __syncthreads();
    hit = sh.found;
    __syncthreads();  // sh.found / temp storage reused by the next round
    if (hit != INT_MAX) return hit;
    carry += aggregate;
  }
  return -1;
}

// sum_{i<end} value(i), any order.
template <int THREADS, int ITEMS, class Value>
__device__ double walk_sum(int end, Value value, WalkShared<THREADS, ITEMS>& sh) {
  double s = 0.0;
  for (int i = threadIdx.x; i < end; i += THREADS) s += value(i);
  return block_sum<THREADS>(s, sh.sum);
}

template <int THREADS, int ITEMS>
__global__ void __launch_bounds__(THREADS) sample_walk_kernel(SampleParams p) {
  __shared__ WalkShared<THREADS, ITEMS> sh;
  const int local = blockIdx.x, row = p.chunk_begin + local;
  if (row >= p.rows || sample_row_greedy(p, row)) return;  // block-uniform
  const int vocab = p.vocab;
  const float* keys = p.sorted_keys + size_t(local) * size_t(vocab);
  const int32_t* ids = p.sorted_ids + size_t(local) * size_t(vocab);
  const double mx = double(p.row_max[row]), sum = p.row_sum[row];
  const double t = double(p.temperature[row]);
  auto prob = [&](int i) { return exp((double(keys[i]) - mx) / t) / sum; };

  const int k = p.top_k[row];
  const int keep = k > 0 && k < vocab ? k : vocab;
  int n = keep;
  const float top_p = p.top_p[row], min_p = p.min_p[row];
  if (top_p < 1.f) {
    const double kept = walk_sum<THREADS, ITEMS>(keep, prob, sh);
    const double target = double(top_p);
    const int cut = walk_first<THREADS, ITEMS>(
        keep, [&](int i) { return prob(i) / kept; },
        [&](int, double, double acc) { return acc >= target; }, sh);
    if (cut >= 0) n = cut + 1;
  }
  if (min_p > 0.f && n > 1) {
    const double threshold = double(min_p) * prob(0);
    const int cut = walk_first<THREADS, ITEMS>(
        n, prob, [&](int i, double v, double) { return i >= 1 && v < threshold; }, sh);
    if (cut >= 1) n = cut;
  }
  const double total = walk_sum<THREADS, ITEMS>(n, prob, sh);
  double u = p.uniform_f64 != nullptr ? p.uniform_f64[row] : double(p.uniform_f32[row]);
  u = u < 0.0 ? 0.0 : u;
  const double target = u * total;
  int pos = walk_first<THREADS, ITEMS>(
      n, prob, [&](int, double, double acc) { return target < acc; }, sh);
  if (pos < 0) pos = n - 1;
  const int tok = ids[pos];
  const float r = raw_logit(p, row, sample_row_penalised(p, row), tok, keys[pos], &sh.value);
  if (threadIdx.x == 0) {
    p.tokens[row] = tok;
    p.logprob[row] = r - p.raw_lse[row];
  }
}

}  // namespace moeopt::cuda::kernels
