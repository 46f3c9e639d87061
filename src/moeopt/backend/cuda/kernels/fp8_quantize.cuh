// FP8 quantisers of ops/fp8.h on the GPU, bit for bit the CPU reference's (cpu_fp8.cpp):
// scale = max(amax, 1e-10) / 448 in f32, code = e4m3(value / scale) with an IEEE f32
// division, round to nearest even, saturating to +-448 (cvt ... satfinite). The tests compare
// codes and scales exactly (tests/unit/cuda_fp8_test.cpp).
//   fp8_quantize_weight_kernel: one block per 128x128 weight block; amax by a block
//                               reduction, then every element of the block once more.
//   fp8_quantize_act_kernel:    activations per row in groups of 128, once per layer input,
//                               before the FP8 GEMMs (fp8_moe_gemm.cuh) stream the codes;
//                               one half warp per (row, group), 8 elements per lane.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "moeopt/backend/cuda/kernels/fp8_codes.cuh"
#include "moeopt/backend/cuda/kernels/fp8_params.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {

__device__ __forceinline__ float fp8_load_f32(const void* p, ElemDType t, int64_t i) {
  switch (t) {
    case ElemDType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ElemDType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    case ElemDType::kF32: break;
  }
  return static_cast<const float*>(p)[i];
}



__global__ void __launch_bounds__(kFp8BlockThreads) fp8_quantize_weight_kernel(Fp8QuantWeightParams p) {
  __shared__ float red[kFp8BlockThreads / 32];
  const int64_t c0 = int64_t(blockIdx.x) * 128, r0 = int64_t(blockIdx.y) * 128;
  const int64_t cols = min(int64_t(128), p.k - c0), rows = min(int64_t(128), p.n - r0);
  const int64_t count = rows * cols;
  float amax = 0.f;
  for (int64_t i = threadIdx.x; i < count; i += kFp8BlockThreads)
    amax = fmaxf(amax, fabsf(fp8_load_f32(p.w, p.w_dtype, (r0 + i / cols) * p.k + c0 + i % cols)));
  amax = warp_max(amax);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = amax;
  __syncthreads();
  float block_amax = 0.f;
#pragma unroll
  for (int w = 0; w < kFp8BlockThreads / 32; ++w) block_amax = fmaxf(block_amax, red[w]);
  const float scale = fp8_scale_of(block_amax);
  if (threadIdx.x == 0) p.w_scale[blockIdx.y * ((p.k + 127) / 128) + blockIdx.x] = scale;
  for (int64_t i = threadIdx.x; i < count; i += kFp8BlockThreads) {
    const int64_t r = r0 + i / cols, c = c0 + i % cols;
    p.w_q[r * p.q_stride + c] = fp8_code(fp8_load_f32(p.w, p.w_dtype, r * p.k + c), scale);
  }
}

// Eight values -> eight e4m3 codes with one scale (fp8_code's rounding), low byte first.
__device__ __forceinline__ uint2 fp8_codes8(const float (&v)[8], float scale) {
  uint32_t w[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    uint32_t packed = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) packed |= uint32_t(fp8_code(v[h * 4 + i], scale)) << (8 * i);
    w[h] = packed;
  }
  return make_uint2(w[0], w[1]);
}

__global__ void __launch_bounds__(kFp8ActThreads) fp8_quantize_act_kernel(Fp8QuantActParams p) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t groups = (p.k + 127) / 128;
  const int64_t pair = (int64_t(blockIdx.x) * kFp8ActThreads + threadIdx.x) / 16;
  const int hl = threadIdx.x % 16;
  // Both halves of a warp take part in the shuffles; a half past the end computes zeros.
  const bool live = pair < p.rows * groups;
  const int64_t row = live ? pair / groups : 0, g = live ? pair % groups : 0;
  const int64_t k = g * 128 + hl * 8;
  const bool in = live && k < p.k;
  float v[8];
  if (in && p.x_dtype == ElemDType::kBF16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(
        static_cast<const __nv_bfloat16*>(p.x) + row * p.x_stride + k);
    const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(b[i]);
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
  } else if (in) {
    const float4* src = reinterpret_cast<const float4*>(static_cast<const float*>(p.x) +
                                                        row * p.x_stride + k);
    const float4 a = src[0], b = src[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = 0.f;
  }
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(v[i]));
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if (!in) return;
  const float scale = fp8_scale_of(amax);
  *reinterpret_cast<uint2*>(p.x_q + row * p.q_stride + k) = fp8_codes8(v, scale);
  if (hl == 0) p.x_scale[row * groups + g] = scale;
}

}  // namespace moeopt::cuda::kernels
