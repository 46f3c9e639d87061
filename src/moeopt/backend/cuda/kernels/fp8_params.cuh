// Parameter structs of the FP8 helper kernels (kernels/fp8_quantize.cuh,
// kernels/fp8_linear_fallback.cuh): plain structs of device pointers and element strides,
// includable from host C++ (cuda_fp8_ops.cpp validates, nvcc never sees it). The number
// format is ops/fp8.h's; the fast FP8 linear is the dense mode of kernels/fp8_moe_gemm.cuh.
#pragma once

#include <cstdint>

#include "moeopt/backend/cuda/kernels/dense_params.cuh"

namespace moeopt::cuda::kernels {

inline constexpr int kFp8BlockThreads = 256;   // weight blocks: one block per 128x128 block

// 128x128 weight blocks: w [N, K] (f32 / bf16 / f16, contiguous) -> w_q [N, K] e4m3 with row
// stride q_stride (>= K: the device weight layout pads expert rows), w_scale
// [ceil(N/128), ceil(K/128)] f32 contiguous. Grid: (ceil(K/128), ceil(N/128)).
struct Fp8QuantWeightParams {
  const void* w;
  ElemDType w_dtype;
  int64_t n, k;
  unsigned char* w_q;
  int64_t q_stride;
  float* w_scale;
};

// Activation quantisation (ops/fp8.h, per row in groups of 128 along K): x [rows, K] bf16 or
// f32 with row stride x_stride elements -> x_q [rows, K] e4m3 with row stride q_stride bytes
// (multiple of 16 when a GEMM reads it), x_scale [rows, ceil(K/128)] f32 contiguous. One
// half warp per (row, group): 16 lanes x 8 elements, so K % 8 == 0 and x's rows 16-byte
// aligned (bf16) / 32-byte aligned (f32). Grid: ceil(rows * ceil(K/128) / 16) blocks of
// kFp8ActThreads (16 pairs per block). Launched with programmatic dependent launch in the
// MoE chain: it waits for its predecessor, then lets its dependent start.
inline constexpr int kFp8ActThreads = 256;
struct Fp8QuantActParams {
  const void* x;
  ElemDType x_dtype;      // kBF16 or kF32
  int64_t rows, k, x_stride;
  unsigned char* x_q;
  int64_t q_stride;
  float* x_scale;
};

// The W8A8 linear for any shape (the fast kernel needs K % 16 == 0, N % 8 == 0 and 16-byte
// rows): one block per (token row, 32 output features); the row is quantised into shared
// memory ([K] f32 codes + [ceil(K/128)] scales), then each warp takes 4 features.
inline constexpr int kFp8FallbackThreads = 256;
inline constexpr int kFp8FallbackCols = 32;
struct Fp8LinearFallbackParams {
  const void* x;          // [M, K] bf16 / f32 (x_dtype), row stride x_stride
  ElemDType x_dtype;
  const unsigned char* w; // [N, K] e4m3 contiguous
  const float* w_scale;   // [ceil(N/128), ceil(K/128)] f32
  const void* bias;       // [N] (bias_dtype) or nullptr
  ElemDType bias_dtype;
  void* y;                // [M, N] bf16 / f32 (y_dtype), row stride y_stride
  ElemDType y_dtype;
  int64_t m, n, k, x_stride, y_stride;
};

}  // namespace moeopt::cuda::kernels
