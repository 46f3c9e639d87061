// MoE combine: out[t, :] = residual[t, :] (optional) + sum_{s < k} y[token_to_permuted_row[t*k+s], :]
// The routing weights were already applied by GEMM 2's epilogue, so this is a plain sum of
// each token's k rows, in slot order and in fp32 (deterministic: no atomics). Rows marked -1
// (invalid expert id) or past num_rows add nothing.
//
// One thread per 8 output columns (16-byte loads/stores); a block covers kCombineThreads*8
// columns of one token (grid.x = tokens, grid.y = column blocks). Bounds: hidden % 8 == 0, 16-byte aligned pointers.
// Test: tests/unit/cuda_moe_test.cpp.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/moe_params.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {


__global__ void __launch_bounds__(kCombineThreads) moe_combine_kernel(CombineParams p) {
  griddep_wait();  // y comes from GEMM 2
  griddep_launch_dependents();
  const int t = blockIdx.x;  // grid: (num_tokens, ceil(hidden / (8 * kCombineThreads)))
  const int h = (blockIdx.y * kCombineThreads + threadIdx.x) * 8;
  if (h >= p.hidden) return;
  float acc[8];
  if (p.residual != nullptr) {
    const uint4 r = *reinterpret_cast<const uint4*>(p.residual + size_t(t) * p.hidden + h);
    const __nv_bfloat162* rb = reinterpret_cast<const __nv_bfloat162*>(&r);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(rb[i]);
      acc[2 * i] = f.x;
      acc[2 * i + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = 0.f;
  }
  // Slots in groups of 8: first all row indices, then all row loads, so a token's k rows
  // cost two memory latencies per group instead of two per slot (at M = 1 the dependent
  // chain index -> row made this kernel 5.8 us on an H200). Sums stay in slot order.
  constexpr int kGroup = 8;
  for (int s0 = 0; s0 < p.top_k; s0 += kGroup) {
    int rows[kGroup];
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      const int r = s0 + i < p.top_k ? p.token_to_permuted_row[size_t(t) * p.top_k + s0 + i] : -1;
      rows[i] = r >= 0 && r < p.num_rows ? r : -1;
    }
    uint4 v[kGroup];
#pragma unroll
    for (int i = 0; i < kGroup; ++i)
      v[i] = rows[i] >= 0 ? *reinterpret_cast<const uint4*>(p.y + size_t(rows[i]) * p.hidden + h)
                          : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      if (rows[i] < 0) continue;
      const __nv_bfloat162* vb = reinterpret_cast<const __nv_bfloat162*>(&v[i]);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = __bfloat1622float2(vb[j]);
        acc[2 * j] += f.x;
        acc[2 * j + 1] += f.y;
      }
    }
  }
  uint4 o;
  __nv_bfloat162* ob = reinterpret_cast<__nv_bfloat162*>(&o);
#pragma unroll
  for (int i = 0; i < 4; ++i) ob[i] = __floats2bfloat162_rn(acc[2 * i], acc[2 * i + 1]);
  *reinterpret_cast<uint4*>(p.out + size_t(t) * p.hidden + h) = o;
}

}  // namespace moeopt::cuda::kernels
