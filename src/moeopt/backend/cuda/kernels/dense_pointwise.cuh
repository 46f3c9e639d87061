// Row-wise elementwise kernels (dense_params.cuh): silu_and_mul / silu (ops/activation.h),
// sigmoid_gated_add (ops/gated_add.h) and the linear layer's bias add. fp32 math on values
// loaded from bf16/f32, results rounded to nearest even; silu(v) = v / (1 + exp(-v)) and
// sigmoid(g) = 1 / (1 + exp(-g)) as the CPU reference writes them.
//
// Grid (rows, column blocks) with kPointwiseThreads threads, grid-striding over the columns
// in 8-element chunks (16-byte accesses) when p.vec, else element by element. Each element
// is read and written by one thread, so silu may run in place (out == x).
#pragma once

#include "moeopt/backend/cuda/kernels/dense_common.cuh"

namespace moeopt::cuda::kernels {

__device__ __forceinline__ float dense_silu(float v) { return v / (1.0f + expf(-v)); }

template <class T>
__global__ void __launch_bounds__(kPointwiseThreads) dense_silu_kernel(SiluParams p) {
  const int64_t m = blockIdx.x;
  const T* x = static_cast<const T*>(p.x) + m * p.x_stride;
  T* out = static_cast<T*>(p.out) + m * p.out_stride;
  const int64_t step = int64_t(gridDim.y) * kPointwiseThreads;
  const int64_t first = int64_t(blockIdx.y) * kPointwiseThreads + threadIdx.x;
  if (p.vec) {
    for (int64_t c = first; c < p.n / 8; c += step) {
      float g[8];
      dense::load8(x + c * 8, g);
      if (p.gated) {
        float u[8];
        dense::load8(x + p.n + c * 8, u);
#pragma unroll
        for (int i = 0; i < 8; ++i) g[i] = dense_silu(g[i]) * u[i];
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) g[i] = dense_silu(g[i]);
      }
      dense::store8(out + c * 8, g);
    }
  } else {
    for (int64_t i = first; i < p.n; i += step) {
      float v = dense_silu(dense::to_float(x[i]));
      if (p.gated) v *= dense::to_float(x[p.n + i]);
      out[i] = dense::from_float<T>(v);
    }
  }
}

__global__ void __launch_bounds__(kPointwiseThreads) dense_gated_add_kernel(GatedAddParams p) {
  const int64_t m = blockIdx.x;
  const float g = dense::load_as(p.gate, p.gate_dtype, m * p.gate_stride);
  const float s = 1.0f / (1.0f + expf(-g));
  const __nv_bfloat16* x = static_cast<const __nv_bfloat16*>(p.x) + m * p.x_stride;
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(p.out) + m * p.out_stride;
  const int64_t step = int64_t(gridDim.y) * kPointwiseThreads;
  const int64_t first = int64_t(blockIdx.y) * kPointwiseThreads + threadIdx.x;
  if (p.vec) {
    for (int64_t c = first; c < p.n / 8; c += step) {
      float xv[8], o[8];
      dense::load8(x + c * 8, xv);
      dense::load8(out + c * 8, o);
#pragma unroll
      for (int i = 0; i < 8; ++i) o[i] += s * xv[i];
      dense::store8(out + c * 8, o);
    }
  } else {
    for (int64_t i = first; i < p.n; i += step)
      out[i] = __float2bfloat16_rn(__bfloat162float(out[i]) + s * __bfloat162float(x[i]));
  }
}

template <class T>
__global__ void __launch_bounds__(kPointwiseThreads) dense_bias_add_kernel(BiasAddParams p) {
  const int64_t m = blockIdx.x;
  T* y = static_cast<T*>(p.y) + m * p.y_stride;
  const __nv_bfloat16* b = static_cast<const __nv_bfloat16*>(p.bias);
  const int64_t step = int64_t(gridDim.y) * kPointwiseThreads;
  const int64_t first = int64_t(blockIdx.y) * kPointwiseThreads + threadIdx.x;
  if (p.vec) {
    for (int64_t c = first; c < p.n / 8; c += step) {
      float v[8], bv[8];
      dense::load8(y + c * 8, v);
      dense::load8(b + c * 8, bv);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] += bv[i];
      dense::store8(y + c * 8, v);
    }
  } else {
    for (int64_t i = first; i < p.n; i += step)
      y[i] = dense::from_float<T>(dense::to_float(y[i]) + __bfloat162float(b[i]));
  }
}

}  // namespace moeopt::cuda::kernels
