// FP8 quantisers of ops/fp8.h on the GPU, bit for bit the CPU reference's (cpu_fp8.cpp):
// scale = max(amax, 1e-10) / 448 in f32, code = e4m3(value / scale) with an IEEE f32
// division, round to nearest even, saturating to +-448 (cvt ... satfinite). The tests compare
// codes and scales exactly (tests/unit/cuda_fp8_test.cpp). Activations are quantised inside
// the GEMMs (fp8_moe_gemm.cuh, fp8_linear_fallback.cuh) with the same helpers.
//   fp8_quantize_weight_kernel: one block per 128x128 weight block; amax by a block
//                               reduction, then every element of the block once more.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "moeopt/backend/cuda/kernels/fp8_params.cuh"

namespace moeopt::cuda::kernels {

__device__ __forceinline__ float fp8_load_f32(const void* p, ElemDType t, int64_t i) {
  switch (t) {
    case ElemDType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ElemDType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    case ElemDType::kF32: break;
  }
  return static_cast<const float*>(p)[i];
}

__device__ __forceinline__ unsigned char fp8_code(float v, float scale) {
  return static_cast<unsigned char>(
      __nv_cvt_float_to_fp8(__fdiv_rn(v, scale), __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ float fp8_scale_of(float amax) { return fmaxf(amax, 1e-10f) / 448.0f; }

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
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

}  // namespace moeopt::cuda::kernels
