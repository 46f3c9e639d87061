// Parameter structs of the dense kernels (dense_*.cuh): embedding, the RMSNorm family, RoPE,
// kv_cache_write, the activations, the sigmoid-gated add, the row reductions (argmax,
// log_softmax) and the linear layer's helpers (bias add, small-M GEMV, fallback GEMM). Plain structs of raw
// device pointers, element strides and dtype tags, includable from host C++ (no device code),
// so the ops' validation code (cuda_dense_ops.cpp, cuda_linear.cpp) does not need nvcc.
//
// Conventions shared by every struct:
//   - strides are in elements; "row stride" is the distance between dim-0 rows (ops/check.h:
//     the inner dims are contiguous, rows may be strided);
//   - `vec` asks for the 16-byte path: the launcher's caller sets it only when every pointer
//     the kernel moves in 8-element chunks is 16-byte aligned and every row length and row
//     stride involved is a multiple of 8 elements (then each 8-element chunk starts on a
//     16-byte boundary, 32 bytes for f32, which two 16-byte accesses cover). Otherwise the
//     kernels go element by element (odd sizes such as D = 12, 20, 37).
//   - sizes are int64_t where they multiply into offsets; kernels index with 64-bit offsets.
#pragma once

#include <cstdint>

#include "moeopt/backend/cuda/kernels/elem_dtype.cuh"

namespace moeopt::cuda::kernels {


// dense_embedding.cuh: out[t, :] = table[ids[t], :]; ids outside [0, vocab) give a zero row.
struct EmbeddingParams {
  const void* table;  // [vocab, hidden] contiguous
  const int32_t* ids; // [tokens]
  void* out;          // [tokens, hidden], rows strided
  int64_t tokens, vocab, hidden;
  int64_t out_stride;
  bool vec;
};

// dense_norm.cuh: one "vector" of length d is normalised by one warp (d small) or one block.
// vector i of x is at x + (i / heads) * x_stride + (i % heads) * d (heads = 1 for 2-D views);
// the same for out and (add_rms_norm, heads = 1) residual.
//   add == false: out = rms_norm(x) * w
//   add == true : residual += x (f32); out = rms_norm(residual) * w
inline constexpr int kNormBlockThreads = 256;  // block-per-vector variant
inline constexpr int kNormWarpsPerBlock = 8;   // warp-per-vector variant
inline constexpr int64_t kNormWarpMaxD = 1024; // <= this: one warp per vector

struct NormParams {
  const void* x;       // f32 / bf16 (x_dtype)
  float* residual;     // add_rms_norm only: f32, [vectors, d], rows strided
  const void* weight;  // [d] f32 / bf16 / f16 (w_dtype), contiguous
  void* out;           // f32 / bf16 (out_dtype); may equal x (in place)
  int64_t vectors;     // rows * heads
  int64_t heads;       // 1 for [rows, D]
  int64_t d;
  int64_t x_stride, res_stride, out_stride;  // dim-0 strides
  float eps;
  ElemDType w_dtype;
  bool vec;
};

// dense_rope.cuh: rotate-half RoPE in place on q [T, hq, d] and k [T, hkv, d] (bf16), one
// block per token; a position outside [0, max_pos) leaves the token unchanged.
inline constexpr int kRopeThreads = 256;

struct RopeParams {
  void* q;                    // bf16
  void* k;                    // bf16
  const int32_t* positions;   // [T]
  const float* cos_sin;       // [max_pos, rot] f32: cos | sin halves
  int64_t tokens, hq, hkv, d, rot, max_pos;
  int64_t q_stride, k_stride; // token-row strides
};

// dense_kv_write.cuh: cache row `slot` (viewed [blocks * block_size, hkv * d]) = k/v row t.
inline constexpr int kKvWriteThreads = 128;

struct KvWriteParams {
  const void* k;              // bf16 [T, hkv, d], token rows strided
  const void* v;
  const int32_t* slots;       // [T]; < 0 or >= num_slots: skipped
  void* k_cache;              // bf16 [num_slots, row], or e4m3 codes when k_scale is set
  void* v_cache;
  float* k_scale;             // fp8 caches: [num_slots, hkv] f32; else null
  float* v_scale;
  int64_t tokens, row, num_slots;  // row = hkv * d
  int64_t k_stride, v_stride;
  int head_dim;               // d (fp8: <= kKvWriteFp8MaxDim)
  bool vec;
};
inline constexpr int kKvWriteFp8MaxDim = 256;

// dense_pointwise.cuh: silu_and_mul (gated), silu, sigmoid_gated_add, bias add.
inline constexpr int kPointwiseThreads = 256;

// gated: out[m, i] = silu(x[m, i]) * x[m, n + i] (x bf16 [M, 2n] -> out bf16 [M, n]);
// else  : out[m, i] = silu(x[m, i])           (x and out [M, n], both x_dtype, in place ok).
struct SiluParams {
  const void* x;
  void* out;
  int64_t rows, n;
  int64_t x_stride, out_stride;
  ElemDType dtype;  // f32 or bf16 (x and out alike); gated: bf16
  bool gated;
  bool vec;
};

// out[m, :] += sigmoid(gate[m * gate_stride]) * x[m, :]   (x, out bf16; gate f32 or bf16)
struct GatedAddParams {
  const void* x;
  const void* gate;
  void* out;
  int64_t rows, n;
  int64_t x_stride, gate_stride, out_stride;
  ElemDType gate_dtype;
  bool vec;
};

// y[m, :] += bias[:]   (y f32 or bf16, rows strided; bias bf16 [n])
struct BiasAddParams {
  void* y;
  const void* bias;
  int64_t rows, n, y_stride;
  ElemDType y_dtype;
  bool vec;
};

// Fallback GEMM for shapes cuBLASLt refuses: y[M, N] = x[M, K] W[N, K]^T (+ bias), bf16 in,
// fp32 accumulate, y f32 or bf16. Tiled 64x64 over (M, N) with a 16-deep K step through
// shared memory; correct for every size, not fast.
inline constexpr int kGemmFallbackTile = 64;
inline constexpr int kGemmFallbackK = 16;
inline constexpr int kGemmFallbackThreads = 256;

struct GemmFallbackParams {
  const void* x;      // bf16 [M, K], rows strided
  const void* w;      // bf16 [N, K] contiguous
  const void* bias;   // bf16 [N] or nullptr
  void* y;            // [M, N], rows strided
  int64_t m, n, k;
  int64_t x_stride, y_stride;
  ElemDType y_dtype;
};

// dense_gemv.cuh: the linear layer at M <= kGemvMaxRows (decode), a weight stream:
// y[M, N] = x[M, K] W[N, K]^T (+ bias), bf16 in, fp32 accumulate, y f32 or bf16. vec (the
// vector paths): x and W 16-byte aligned, K and x_stride multiples of 8.
inline constexpr int64_t kGemvMaxRows = 16;
inline constexpr int kGemvUnroll = 4;       // 32-wide K steps of W in flight per warp
inline constexpr int64_t kGemvSimtMaxRows = 2;  // vector path: up to here the SIMT kernel
inline constexpr int kGemvThreads = 128;    // SIMT kernel: 4 warps, 2 columns a warp
inline constexpr int kGemvRowsPerWarp = 2;

struct GemvParams : GemmFallbackParams {  // the same operands
  bool vec;
  int split_k;  // tensor-core path: 4 or 8 warps split K (dense_gemv.cuh)
};


// dense_reduce.cuh: one block per row of logits [rows, v] f32.
inline constexpr int kReduceThreads = 1024;

// argmax: the largest value, lowest index on ties; NaN is skipped (never wins); a row with
// no number (all NaN) answers 0.
struct ArgmaxParams {
  const float* x;
  int32_t* out;
  int64_t rows, v, x_stride;
  bool vec;  // here: x 16-byte aligned, v and x_stride multiples of 4 (float4 loads)
};

// log_softmax: out = x - max - log(sum(exp(x - max))), fp32; out may equal x.
struct LogSoftmaxParams {
  const float* x;
  float* out;
  int64_t rows, v, x_stride, out_stride;
  bool vec;  // float4 path, as for argmax (x and out)
};

}  // namespace moeopt::cuda::kernels
