// Device helpers shared by the dense kernels (dense_*.cuh): scalar conversions between the
// storage types (f32, bf16, f16) and fp32, 8-element chunk loads/stores (one 16-byte access
// for 16-bit types, two for f32: the caller guarantees the alignment, dense_params.cuh), a
// runtime-dtype load for tensors whose dtype is not a template parameter (norm weights,
// gates), and warp/block reductions. Framework-free: CUDA headers only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/dense_params.cuh"

namespace moeopt::cuda::kernels::dense {

template <class T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }

// Round to nearest even (as the CPU's store_from_f32).
template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// 8 consecutive elements at p (16-byte aligned) as floats.
template <class T>
__device__ __forceinline__ void load8(const T* p, float (&f)[8]);
template <>
__device__ __forceinline__ void load8<float>(const float* p, float (&f)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
  f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}
template <>
__device__ __forceinline__ void load8<__nv_bfloat16>(const __nv_bfloat16* p, float (&f)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __bfloat1622float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}
template <>
__device__ __forceinline__ void load8<__half>(const __half* p, float (&f)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __half22float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

// 8 floats to p (16-byte aligned), rounded to T.
template <class T>
__device__ __forceinline__ void store8(T* p, const float (&f)[8]);
template <>
__device__ __forceinline__ void store8<float>(float* p, const float (&f)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}
template <>
__device__ __forceinline__ void store8<__nv_bfloat16>(__nv_bfloat16* p, const float (&f)[8]) {
  uint4 u;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = u;
}

// Element i of a buffer whose dtype is known only at run time (a uniform branch).
__device__ __forceinline__ float load_as(const void* p, ElemDType t, int64_t i) {
  switch (t) {
    case ElemDType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ElemDType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    case ElemDType::kF32: break;
  }
  return static_cast<const float*>(p)[i];
}

// Elements [i, i + 8) of such a buffer; i is a multiple of 8 and p 16-byte aligned.
__device__ __forceinline__ void load8_as(const void* p, ElemDType t, int64_t i, float (&f)[8]) {
  switch (t) {
    case ElemDType::kBF16: load8(static_cast<const __nv_bfloat16*>(p) + i, f); break;
    case ElemDType::kF16: load8(static_cast<const __half*>(p) + i, f); break;
    case ElemDType::kF32: load8(static_cast<const float*>(p) + i, f); break;
  }
}

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum / max over a block of kThreads threads (a multiple of 32, <= 1024); every thread gets
// the result. `smem` holds kThreads / 32 floats; the leading barrier lets a block call these
// back to back with the same buffer.
template <int kThreads>
__device__ __forceinline__ float block_sum(float v, float* smem) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size");
  constexpr int kWarps = kThreads / 32;
  v = warp_sum(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) smem[threadIdx.x / 32] = v;
  __syncthreads();
  const int lane = threadIdx.x % 32;
  return warp_sum(lane < kWarps ? smem[lane] : 0.0f);
}

template <int kThreads>
__device__ __forceinline__ float block_max(float v, float* smem) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size");
  constexpr int kWarps = kThreads / 32;
  v = warp_max(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) smem[threadIdx.x / 32] = v;
  __syncthreads();
  const int lane = threadIdx.x % 32;
  return warp_max(lane < kWarps ? smem[lane] : neg_inf());
}

}  // namespace moeopt::cuda::kernels::dense
