// Rotary position embedding in place on bf16 q and k (ops/rope.h: rotate-half, partial
// rotary, cos_sin [max_pos, rot] f32 = cos | sin halves). For i < h = rot / 2:
//   x'[i] = x[i] cos_i - x[i + h] sin_i;   x'[i + h] = x[i + h] cos_i + x[i] sin_i
// in fp32 with explicitly rounded multiplies and adds (no FMA contraction), i.e. the CPU
// reference's float arithmetic exactly, then rounded to bf16. Dims past rot stay as they are.
//
// Grid (tokens, y): the y blocks of a token split its (head, i) pairs of q's then k's heads,
// kRopeThreads consecutive pairs a block and block-strided past gridDim.y (consecutive
// threads on consecutive i: coalesced). A decode token has (hq + hkv) * rot / 2 pairs (2,304
// for Qwen3-30B-A3B): with one block per token its threads walked them in nine dependent
// rounds of loads (6.5 us a layer at batch 1 under ncu); the launcher gives each round its own
// block. Each pair owns two distinct
// elements, so no two threads touch the same element. A position outside [0, max_pos)
// leaves the token's row unchanged (a kernel cannot return the CPU's error).
#pragma once

#include "moeopt/backend/cuda/kernels/dense_common.cuh"

namespace moeopt::cuda::kernels {

__global__ void __launch_bounds__(kRopeThreads) dense_rope_kernel(RopeParams p) {
  const int64_t t = blockIdx.x;
  const int32_t pos = p.positions[t];
  if (pos < 0 || int64_t(pos) >= p.max_pos) return;
  const int64_t half = p.rot / 2;
  const float* cs = p.cos_sin + int64_t(pos) * p.rot;
  __nv_bfloat16* q = static_cast<__nv_bfloat16*>(p.q) + t * p.q_stride;
  __nv_bfloat16* k = static_cast<__nv_bfloat16*>(p.k) + t * p.k_stride;
  const int64_t items = (p.hq + p.hkv) * half;
  for (int64_t w = int64_t(blockIdx.y) * kRopeThreads + threadIdx.x; w < items;
       w += int64_t(gridDim.y) * kRopeThreads) {
    const int64_t h = w / half, i = w % half;
    __nv_bfloat16* v = h < p.hq ? q + h * p.d : k + (h - p.hq) * p.d;
    const float a = __bfloat162float(v[i]), b = __bfloat162float(v[i + half]);
    const float c = cs[i], s = cs[half + i];
    v[i] = __float2bfloat16_rn(__fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
    v[i + half] = __float2bfloat16_rn(__fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
  }
}

}  // namespace moeopt::cuda::kernels
