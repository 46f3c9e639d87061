// Device twin of ops::random_fill_value (src/moeopt/ops/random_fill.cpp), operation for
// operation. Every f32 step uses an explicitly rounded intrinsic (__fmul_rn, __fadd_rn,
// __fdiv_rn, __fsqrt_rn) so nvcc cannot contract it into a fused multiply-add: the CPU build
// rounds after each operation, and the values must agree bit for bit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace moeopt::cuda::kernels {

__device__ __forceinline__ uint64_t splitmix64_dev(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__device__ __forceinline__ float random_fill_value_dev(uint64_t key, uint64_t index, int rule,
                                                       float fan_in_f) {
  const uint64_t h = splitmix64_dev(key + index);
  const float scaled = __fmul_rn(float(h >> 40), 0x1.0p-24f);
  const float u = __fadd_rn(__fmul_rn(scaled, 2.0f), -1.0f);
  switch (rule) {
    case 0: return __fdiv_rn(u, __fsqrt_rn(fan_in_f));
    case 1: return __fmul_rn(u, __fsqrt_rn(3.0f));
    case 2: return __fadd_rn(1.0f, __fmul_rn(0.2f, u));
    case 3: return __fmul_rn(0.1f, u);
  }
  return 0.0f;
}

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__global__ void random_fill_kernel(T* dst, int64_t n, uint64_t key, int rule, float fan_in_f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = from_f32<T>(random_fill_value_dev(key, uint64_t(i), rule, fan_in_f));
}

template <typename S, typename D>
__global__ void convert_kernel(const S* src, D* dst, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = from_f32<D>(to_f32<S>(src[i]));
}

}  // namespace moeopt::cuda::kernels
