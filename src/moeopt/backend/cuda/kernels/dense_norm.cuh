// RMSNorm family (ops/norm.h): rms_norm, rms_norm_per_head (a 3-D x) and add_rms_norm, in
// fp32 as the CPU reference: var = mean(v^2); out = w * (v * (1 / sqrt(var + eps))) with v = x,
// or v = residual + x (written back to the f32 residual first) for add_rms_norm.
//
// One vector (a row, or one head of a token) per warp when d <= kNormWarpMaxD (the per-head
// norms: d = 128 in Qwen3), else one block of kNormBlockThreads per vector (hidden 2048+).
// Two passes over the vector: sum of squares, then the scaled write. Every element is read
// and written by the same thread in both passes, so out may be the very same view as x (in
// place) and the residual needs no barrier between its write and its re-read.
// Grid: warp variant ceil(vectors / kNormWarpsPerBlock) blocks of 32 * kNormWarpsPerBlock
// threads; block variant `vectors` blocks of kNormBlockThreads.
#pragma once

#include "moeopt/backend/cuda/kernels/dense_common.cuh"

namespace moeopt::cuda::kernels {

template <class Tx, class To, bool kAdd, bool kBlock>
__global__ void __launch_bounds__(kBlock ? kNormBlockThreads : 32 * kNormWarpsPerBlock)
    dense_norm_kernel(NormParams p) {
  __shared__ float red[kNormBlockThreads / 32];
  int64_t vec_id;
  int lane, nthreads;
  if constexpr (kBlock) {
    vec_id = blockIdx.x;
    lane = threadIdx.x;
    nthreads = kNormBlockThreads;
  } else {
    vec_id = int64_t(blockIdx.x) * kNormWarpsPerBlock + threadIdx.x / 32;
    lane = threadIdx.x % 32;
    nthreads = 32;
    if (vec_id >= p.vectors) return;  // the whole warp: no block barrier in this variant
  }
  const int64_t row = vec_id / p.heads, head = vec_id % p.heads;
  const Tx* x = static_cast<const Tx*>(p.x) + row * p.x_stride + head * p.d;
  To* out = static_cast<To*>(p.out) + row * p.out_stride + head * p.d;
  float* res = kAdd ? p.residual + row * p.res_stride : nullptr;

  float ss = 0.0f;
  if (p.vec) {
    for (int64_t c = lane; c < p.d / 8; c += nthreads) {
      float f[8];
      dense::load8(x + c * 8, f);
      if constexpr (kAdd) {
        float r[8];
        dense::load8(res + c * 8, r);
#pragma unroll
        for (int i = 0; i < 8; ++i) f[i] += r[i];
        dense::store8(res + c * 8, f);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) ss += f[i] * f[i];
    }
  } else {
    for (int64_t i = lane; i < p.d; i += nthreads) {
      float v = dense::to_float(x[i]);
      if constexpr (kAdd) {
        v += res[i];
        res[i] = v;
      }
      ss += v * v;
    }
  }
  if constexpr (kBlock) {
    ss = dense::block_sum<kNormBlockThreads>(ss, red);
  } else {
    ss = dense::warp_sum(ss);
  }
  const float inv = 1.0f / sqrtf(ss / float(p.d) + p.eps);

  if (p.vec) {
    for (int64_t c = lane; c < p.d / 8; c += nthreads) {
      float f[8], w[8];
      if constexpr (kAdd) {
        dense::load8(static_cast<const float*>(res) + c * 8, f);
      } else {
        dense::load8(x + c * 8, f);
      }
      dense::load8_as(p.weight, p.w_dtype, c * 8, w);
#pragma unroll
      for (int i = 0; i < 8; ++i) f[i] = w[i] * (f[i] * inv);
      dense::store8(out + c * 8, f);
    }
  } else {
    for (int64_t i = lane; i < p.d; i += nthreads) {
      const float v = kAdd ? res[i] : dense::to_float(x[i]);
      out[i] = dense::from_float<To>(dense::load_as(p.weight, p.w_dtype, i) * (v * inv));
    }
  }
}

}  // namespace moeopt::cuda::kernels
