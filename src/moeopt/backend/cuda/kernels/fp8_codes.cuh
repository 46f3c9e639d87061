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

// Four e4m3 codes (byte 0 first) -> four bf16: lo = (byte 0, byte 1), hi = (byte 2, byte 3),
// the lower byte in the lower half. Integer moves instead of cvt (the tensor-core attention
// converts every fp8 K/V element, and F2F conversions issue at a quarter of the ALU rate):
// each code goes to the top byte of a 16-bit lane (byte_perm), its exponent and mantissa
// shift right by 4 under the sign, which is the bf16 of value * 2^-120 (e4m3's exponent bias
// is 7, bf16's 127; e4m3 subnormals land on bf16 subnormals, zero on zero), and one bf16x2
// multiply by 2^120 restores the value. Exact for every finite code: the multiply is by a
// power of two with no overflow (|value| <= 448), and bf16 arithmetic keeps subnormal inputs
// (PTX mul.bf16x2 has no flush-to-zero). The NaN codes (0x7f, 0xff) become +-480, not NaN:
// quantisers saturate, so a cache never holds them. Test: the fp8_all_codes specs of
// tests/unit/cuda_attention_test.cpp (every finite code through the attention).
__device__ __forceinline__ void fp8x4_to_bf16x4(uint32_t codes, uint32_t& lo, uint32_t& hi) {
  const uint32_t a = __byte_perm(codes, 0u, 0x1404u);  // [b1 0 b0 0]
  const uint32_t b = __byte_perm(codes, 0u, 0x3424u);  // [b3 0 b2 0]
  const uint32_t ra = (a & 0x80008000u) | ((a & 0x7f007f00u) >> 4);
  const uint32_t rb = (b & 0x80008000u) | ((b & 0x7f007f00u) >> 4);
  const __nv_bfloat162 k2p120 = __halves2bfloat162(__ushort_as_bfloat16(0x7b80u),
                                                   __ushort_as_bfloat16(0x7b80u));  // 2^120
  const __nv_bfloat162 x = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&ra), k2p120);
  const __nv_bfloat162 y = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&rb), k2p120);
  lo = *reinterpret_cast<const uint32_t*>(&x);
  hi = *reinterpret_cast<const uint32_t*>(&y);
}

}  // namespace moeopt::cuda::kernels
