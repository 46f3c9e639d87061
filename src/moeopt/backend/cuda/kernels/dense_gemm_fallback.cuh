// Fallback GEMM for the linear layer, used only when cuBLASLt offers no algorithm for a
// shape/alignment (cuda_linear.cpp): y[M, N] = x[M, K] W[N, K]^T (+ bias[N]), bf16 inputs,
// fp32 accumulation in k order, y f32 or bf16 (rounded once). Correct for any size, not fast.
//
// Block tile 64 (M) x 64 (N), 256 threads, each thread a 4 x 4 grid of outputs at rows
// tr + 16 i and columns tc + 16 j (tr = tid / 16, tc = tid % 16). Each K step stages a
// 64 x 16 slice of x and of W in shared memory as floats (zero outside the matrices), loaded
// with consecutive threads on consecutive k. Grid: (ceil(N / 64), ceil(M / 64)).
#pragma once

#include "moeopt/backend/cuda/kernels/dense_common.cuh"

namespace moeopt::cuda::kernels {

template <class To>
__global__ void __launch_bounds__(kGemmFallbackThreads) dense_gemm_fallback_kernel(
    GemmFallbackParams p) {
  constexpr int kT = kGemmFallbackTile, kK = kGemmFallbackK;
  static_assert(kGemmFallbackThreads == 256 && kT == 64, "4x4 outputs per thread");
  __shared__ float xs[kK][kT + 1];
  __shared__ float ws[kK][kT + 1];
  const __nv_bfloat16* x = static_cast<const __nv_bfloat16*>(p.x);
  const __nv_bfloat16* w = static_cast<const __nv_bfloat16*>(p.w);
  const int64_t m0 = int64_t(blockIdx.y) * kT, n0 = int64_t(blockIdx.x) * kT;
  const int tid = threadIdx.x, tr = tid / 16, tc = tid % 16;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < p.k; k0 += kK) {
    for (int e = tid; e < kT * kK; e += kGemmFallbackThreads) {
      const int r = e / kK, kk = e % kK;
      const int64_t gk = k0 + kk, gm = m0 + r, gn = n0 + r;
      xs[kk][r] = gm < p.m && gk < p.k ? __bfloat162float(x[gm * p.x_stride + gk]) : 0.0f;
      ws[kk][r] = gn < p.n && gk < p.k ? __bfloat162float(w[gn * p.k + gk]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][tr + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = ws[kk][tc + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
  To* y = static_cast<To*>(p.y);
  const __nv_bfloat16* bias = static_cast<const __nv_bfloat16*>(p.bias);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t gm = m0 + tr + 16 * i;
    if (gm >= p.m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gn = n0 + tc + 16 * j;
      if (gn >= p.n) continue;
      const float v = acc[i][j] + (bias != nullptr ? __bfloat162float(bias[gn]) : 0.0f);
      y[gm * p.y_stride + gn] = dense::from_float<To>(v);
    }
  }
}

}  // namespace moeopt::cuda::kernels
