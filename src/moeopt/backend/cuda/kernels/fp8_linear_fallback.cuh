// The W8A8 linear of ops/fp8.h for shapes the fast kernel does not take (odd K or N,
// unaligned rows, K too long for its shared memory). One block per (token row m, 32 output
// features): the block quantises row m into shared memory (codes as f32, per-group scales,
// exactly as fp8_quantize.cuh), then each warp computes 4 features; lane l holds elements
// 4l..4l+3 of every group, accumulates (s_x * w_s) * its partial per group, and the warp sums
// the lanes at the end (the order differs from the CPU's; tests compare with a tolerance).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "moeopt/backend/cuda/kernels/fp8_quantize.cuh"

namespace moeopt::cuda::kernels {

__device__ __forceinline__ float fp8_to_f32(unsigned char c) {
  __nv_fp8_e4m3 v;
  v.__x = c;
  return float(v);
}

// Dynamic shared memory: [K] f32 codes, then [ceil(K/128)] f32 scales.
__global__ void __launch_bounds__(kFp8FallbackThreads) fp8_linear_fallback_kernel(Fp8LinearFallbackParams p) {
  extern __shared__ float xs_smem[];
  const int64_t kb = (p.k + 127) / 128;
  float* xq = xs_smem;
  float* xs = xs_smem + p.k;
  const int64_t m = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr int kWarps = kFp8FallbackThreads / 32;
  for (int64_t g = warp; g < kb; g += kWarps) {
    float v[4], amax = 0.f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t k = g * 128 + lane * 4 + i;
      v[i] = k < p.k ? fp8_load_f32(p.x, p.x_dtype, m * p.x_stride + k) : 0.f;
      amax = fmaxf(amax, fabsf(v[i]));
    }
    const float scale = fp8_scale_of(warp_max(amax));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t k = g * 128 + lane * 4 + i;
      if (k < p.k) xq[k] = fp8_to_f32(fp8_code(v[i], scale));
    }
    if (lane == 0) xs[g] = scale;
  }
  __syncthreads();
  for (int j = warp; j < kFp8FallbackCols; j += kWarps) {
    const int64_t n = int64_t(blockIdx.y) * kFp8FallbackCols + j;
    if (n >= p.n) break;
    const unsigned char* wr = p.w + n * p.k;
    const float* wsr = p.w_scale + (n / 128) * kb;
    float acc = 0.f;
    for (int64_t g = 0; g < kb; ++g) {
      float part = 0.f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t k = g * 128 + lane * 4 + i;
        if (k < p.k) part = fmaf(xq[k], fp8_to_f32(wr[k]), part);
      }
      acc = fmaf(xs[g] * wsr[g], part, acc);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane != 0) continue;
    if (p.bias) acc += fp8_load_f32(p.bias, p.bias_dtype, n);
    if (p.y_dtype == ElemDType::kBF16)
      static_cast<__nv_bfloat16*>(p.y)[m * p.y_stride + n] = __float2bfloat16(acc);
    else
      static_cast<float*>(p.y)[m * p.y_stride + n] = acc;
  }
}

}  // namespace moeopt::cuda::kernels
