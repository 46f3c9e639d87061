// Paged attention for any head_dim up to kAttnGeneralMaxDim and any layout the tensor-core
// path does not take (odd head_dims of tiny models, unaligned q / out rows): a simple kernel
// whose job is to be obviously correct, not fast.
//
// One CTA of kAttnGeneralThreads per (query token t, q head h): grid = (T, Hq). The token's
// sequence comes from a binary search of query_start_loc. q is staged in shared memory as
// fp32 pre-multiplied by scale * log2(e); warp w walks the visible keys j = lo + w, lo + w +
// nwarps, ... in position order: lane l holds dims l, l + 32, ... (<= 8 of them), the score
// is a warp-wide sum, and each warp keeps its own running max / sum / accumulator (online
// softmax, base 2). The warps' states are merged through shared memory at the end. Rows of
// sequences that cannot be computed (attention_common.cuh) and tokens past the last sequence
// are written as zeros; keys whose page id is outside [0, num_blocks) are skipped. FP8 caches
// are read as code * scale per element.
#pragma once

#include <cuda_bf16.h>
#include <math_constants.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/attention_common.cuh"
#include "moeopt/backend/cuda/kernels/attention_params.cuh"
#include "moeopt/backend/cuda/kernels/fp8_codes.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {

// Element d of cache row `row` ((slot, kv head) pairs, D values each) as f32.
__device__ __forceinline__ float attn_cache_value(const __nv_bfloat16* bf16, const unsigned char* codes,
                                                  const float* scales, int64_t row, int D, int d) {
  if (codes != nullptr) return fp8_value(codes[row * D + d]) * scales[row];
  return __bfloat162float(bf16[row * D + d]);
}

__global__ void __launch_bounds__(kAttnGeneralThreads)
    paged_attention_general_kernel(PagedAttentionParams p) {
  constexpr int kWarps = kAttnGeneralThreads / 32;
  constexpr int kPerLane = kAttnGeneralMaxDim / 32;
  __shared__ float q_s[kAttnGeneralMaxDim];
  __shared__ float o_s[kWarps][kAttnGeneralMaxDim];
  __shared__ float m_s[kWarps], l_s[kWarps];

  const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  const int D = p.head_dim;
  __nv_bfloat16* out = p.out + int64_t(t) * p.out_stride + int64_t(h) * D;
  const int seq = attn::find_sequence(p.query_start_loc, p.num_seqs, t);
  const int q0 = p.query_start_loc[seq];
  const int n_new = p.query_start_loc[seq + 1] - q0;
  const int ctx = p.context_lens[seq];
  const int i = t - q0;
  if (i < 0 || i >= n_new || !attn::sequence_computable(n_new, ctx, p.max_context)) {
    for (int d = tid; d < D; d += kAttnGeneralThreads) out[d] = __float2bfloat16(0.f);
    return;
  }
  const int pos = ctx - n_new + i;
  const int lo = p.sliding_window > 0 ? max(0, pos - p.sliding_window + 1) : 0;
  const int group = p.num_q_heads / p.num_kv_heads, kvh = h / group;

  const __nv_bfloat16* qrow = p.q + int64_t(t) * p.q_stride + int64_t(h) * D;
  for (int d = tid; d < D; d += kAttnGeneralThreads)
    q_s[d] = __bfloat162float(qrow[d]) * p.scale_log2;
  __syncthreads();

  const int warp = tid >> 5, lane = tid & 31;
  const int32_t* bt = p.block_table + int64_t(seq) * p.max_blocks;
  float m = -CUDART_INF_F, l = 0.f, acc[kPerLane];
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) acc[k] = 0.f;
  for (int j = lo + warp; j <= pos; j += kWarps) {
    const int blk = bt[j / p.block_size];
    if (blk < 0 || blk >= p.num_blocks) continue;  // caller bug: skip the key
    const int64_t row = (int64_t(blk) * p.block_size + j % p.block_size) * p.num_kv_heads + kvh;
    float part = 0.f;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int d = lane + 32 * k;
      if (d < D)
        part = fmaf(q_s[d], attn_cache_value(p.k_cache, p.k_codes, p.k_scale, row, D, d), part);
    }
    const float sc = warp_sum(part);
    const float m_new = fmaxf(m, sc);
    const float alpha = exp2f(m - m_new);  // m = -inf on the first key: 0
    const float pj = exp2f(sc - m_new);
    l = l * alpha + pj;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int d = lane + 32 * k;
      const float v = d < D ? attn_cache_value(p.v_cache, p.v_codes, p.v_scale, row, D, d) : 0.f;
      acc[k] = fmaf(pj, v, acc[k] * alpha);
    }
    m = m_new;
  }
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int d = lane + 32 * k;
    if (d < D) o_s[warp][d] = acc[k];
  }
  if (lane == 0) {
    m_s[warp] = m;
    l_s[warp] = l;
  }
  __syncthreads();
  float mx = -CUDART_INF_F;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, m_s[w]);
  for (int d = tid; d < D; d += kAttnGeneralThreads) {
    float sum = 0.f, a = 0.f;
    if (mx != -CUDART_INF_F) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float f = exp2f(m_s[w] - mx);  // a warp that saw no key: m -inf, f 0
        sum += l_s[w] * f;
        a += o_s[w][d] * f;
      }
    }
    out[d] = __float2bfloat16(sum > 0.f ? a / sum : 0.f);
  }
}

}  // namespace moeopt::cuda::kernels
