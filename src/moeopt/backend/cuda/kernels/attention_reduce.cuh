// Split-KV merge (flash-decoding's second kernel): out[t, h] = sum_z w_z o_z / sum_z w_z with
// w_z = exp2(lse_z - max lse), over the splits z whose key chunk [z * split_keys,
// (z + 1) * split_keys) intersects the row's visible range [lo, pos]. Exactly those splits
// had a CTA that saw at least one key of the row (attention_mma.cuh), so chunks a CTA skipped
// (or never wrote, in a grid sized for an upper bound) are never read.
//
// One CTA of kAttnReduceThreads per (token, q head): grid = (T, Hq); the split weights go to
// shared memory once, then threads stride over D. num_splits <= kAttnMaxSplits.
// Rows of sequences that cannot be computed and tokens past the last sequence get zeros, as
// in the main kernels.
#pragma once

#include <cuda_bf16.h>
#include <math_constants.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/attention_common.cuh"
#include "moeopt/backend/cuda/kernels/attention_params.cuh"

namespace moeopt::cuda::kernels {

__global__ void __launch_bounds__(kAttnReduceThreads)
    paged_attention_reduce_kernel(PagedAttentionParams p) {
  const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  const int D = p.head_dim;
  __nv_bfloat16* out = p.out + int64_t(t) * p.out_stride + int64_t(h) * D;
  const int seq = attn::find_sequence(p.query_start_loc, p.num_seqs, t);
  const int q0 = p.query_start_loc[seq];
  const int n_new = p.query_start_loc[seq + 1] - q0;
  const int ctx = p.context_lens[seq];
  const int i = t - q0;
  if (i < 0 || i >= n_new || !attn::sequence_computable(n_new, ctx, p.max_context)) {
    for (int d = tid; d < D; d += kAttnReduceThreads) out[d] = __float2bfloat16(0.f);
    return;
  }
  const int pos = ctx - n_new + i;
  const int lo = p.sliding_window > 0 ? max(0, pos - p.sliding_window + 1) : 0;
  const int z0 = lo / p.split_keys;
  const int z1 = min(p.num_splits - 1, pos / p.split_keys);
  const int64_t stride = int64_t(p.num_tokens) * p.num_q_heads;  // rows per split
  const int64_t row = int64_t(t) * p.num_q_heads + h;
  __shared__ float w_s[kAttnMaxSplits];
  float mx = -CUDART_INF_F;
  for (int z = z0; z <= z1; ++z) mx = fmaxf(mx, p.lse_part[z * stride + row]);
  if (tid <= z1 - z0)
    w_s[tid] = mx == -CUDART_INF_F ? 0.f : exp2f(p.lse_part[(z0 + tid) * stride + row] - mx);
  __syncthreads();
  float sum = 0.f;
  for (int z = z0; z <= z1; ++z) sum += w_s[z - z0];
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  for (int d = tid; d < D; d += kAttnReduceThreads) {
    float acc = 0.f;
    for (int z = z0; z <= z1; ++z) acc += w_s[z - z0] * p.o_part[(z * stride + row) * D + d];
    out[d] = __float2bfloat16(acc * inv);
  }
}

}  // namespace moeopt::cuda::kernels
