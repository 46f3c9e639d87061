// Fast greedy sampling: the decode hot path when every row is greedy, no row has penalties and
// no top logprobs are wanted (ops/sampling.h, step 2).
//
// One block of kSampleGreedyThreads per row; the row is read once, with 16-byte streaming
// loads when the row allows (GreedyParams::vec4), four float4 in flight per thread. Each
// thread keeps an ArgLse (argmax + online log-sum-exp) over its elements in increasing id
// order; the block merges them in the sampler's order (larger value, then lower id). Thread 0
// writes the token and its raw logprob l[token] - lse, with lse = max + log(sum) as the CPU's
// log_softmax forms it.
//
// V = 151936 (Qwen3), R = 512: 311 MB read once, memory bound.
#pragma once

#include <cuda_runtime.h>

#include "moeopt/backend/cuda/kernels/sampling_params.cuh"
#include "moeopt/backend/cuda/kernels/sampling_reduce.cuh"

namespace moeopt::cuda::kernels {

template <int THREADS>
__global__ void __launch_bounds__(THREADS) sample_greedy_kernel(GreedyParams p) {
  __shared__ ArgLseShared<THREADS> sh;
  const int row = blockIdx.x;
  if (row >= p.rows) return;  // block-uniform
  const float* x = p.logits + size_t(row) * size_t(p.vocab);
  ArgLse st;
  if (p.vec4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const int n4 = p.vocab / 4;
    int i = threadIdx.x;
    // Four independent loads per iteration; a thread's ids still increase (i, i+T, ...).
    for (; i + 3 * THREADS < n4; i += 4 * THREADS) {
      const float4 a = __ldcs(x4 + i);
      const float4 b = __ldcs(x4 + i + THREADS);
      const float4 c = __ldcs(x4 + i + 2 * THREADS);
      const float4 d = __ldcs(x4 + i + 3 * THREADS);
      st.push4(a, 4 * i);
      st.push4(b, 4 * (i + THREADS));
      st.push4(c, 4 * (i + 2 * THREADS));
      st.push4(d, 4 * (i + 3 * THREADS));
    }
    for (; i < n4; i += THREADS) st.push4(__ldcs(x4 + i), 4 * i);
  } else {
    for (int i = threadIdx.x; i < p.vocab; i += THREADS) st.push(__ldcs(x + i), i);
  }
  const ArgLse r = block_arg_lse<THREADS>(st, sh);
  if (threadIdx.x == 0) {
    const int tok = r.idx == INT_MAX ? 0 : r.idx;
    p.tokens[row] = tok;
    // l[tok] is the maximum m; written as the CPU's l - (m + log(s)).
    p.logprob[row] = r.m - r.lse();
  }
}

}  // namespace moeopt::cuda::kernels
