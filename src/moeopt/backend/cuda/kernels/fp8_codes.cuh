// The e4m3 rounding every FP8 quantiser on the GPU shares (fp8_quantize.cuh for weights and
// activations, dense_kv_write.cuh for the FP8 KV cache), bit for bit the CPU's (ops/fp8.h):
// scale = max(amax, 1e-10) / 448 in f32, code = e4m3(value / scale) with an IEEE f32
// division, round to nearest even, saturating to +-448.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace moeopt::cuda::kernels {

__device__ __forceinline__ unsigned char fp8_code(float v, float scale) {
  return static_cast<unsigned char>(
      __nv_cvt_float_to_fp8(__fdiv_rn(v, scale), __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ float fp8_scale_of(float amax) { return fmaxf(amax, 1e-10f) / 448.0f; }

// e4m3 code -> its value (exact: e4m3 is a subset of f16 and of f32).
__device__ __forceinline__ float fp8_value(unsigned char code) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(code, __NV_E4M3);
  return __half2float(__half(h));
}

// Two e4m3 codes (the low byte first) -> two bf16 in one register, the low byte's in the low
// half. Exact: e4m3's 3 mantissa bits and exponent range fit bf16.
__device__ __forceinline__ uint32_t fp8x2_to_bf16x2(uint16_t codes) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(codes, __NV_E4M3);
  const float2 f = __half22float2(__half2(h));
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
  return *reinterpret_cast<const uint32_t*>(&b);
}

}  // namespace moeopt::cuda::kernels
