// FP8 W8A8 with 128x128 block scales: the number format every FP8 op of moeopt implements
// (the DeepSeek-V3 / Qwen3-FP8 checkpoint format, activations quantised dynamically).
//
// This header is a contract. The CPU reference (backend/cpu) follows it exactly and is the
// oracle of every FP8 GPU kernel (op cases in ops/op_cases.h: kLinearFp8, kMoeFp8).
//
// ---- Weights (static, from the checkpoint or quantised at load) ----------------------------
//   w_q    [N, K]                        fp8 e4m3 ("e4m3fn", max 448, no infinities)
//   w_s    [ceil(N/128), ceil(K/128)]    f32, HF's `weight_scale_inv`
//   value  w[n, k] = float(w_q[n, k]) * w_s[n / 128, k / 128]
// The last block row/column is partial when N or K is not a multiple of 128 (TP shards such
// as I = 768/4 = 192). Checkpoints store w_s in F32 (DeepSeek-V3), BF16 (Qwen) or F16; the
// loader converts it to f32, so every op sees f32 scales.
// Quantising a weight (init-random --fp8, online quantisation --fp8-weights on):
//   amax   = max |w| over the block (NaN-free inputs)
//   w_s    = max(amax, kFp8MinAmax) / 448
//   w_q    = e4m3(w / w_s)   (f32 division, round to nearest even, saturating to +-448)
//
// ---- Activations (dynamic, per token, groups of 128 along K) -------------------------------
//   For each row m and group g = [128 g, min(128 (g + 1), K)) (the last group is partial):
//   amax       = max |x[m, k]| over the group
//   x_s[m, g]  = max(amax, kFp8MinAmax) / 448                    f32, [M, ceil(K/128)]
//   x_q[m, k]  = e4m3(x[m, k] / x_s[m, g])                        RNE, saturating
//
// ---- The W8A8 product (linear with an FP8 weight, both MoE GEMMs) --------------------------
//   y[m, n] = sum over g = 0 .. ceil(K/128)-1, in order, of
//             (x_s[m, g] * w_s[n / 128, g]) * p(m, n, g),
//   p(m, n, g) = sum over k in group g of float(x_q[m, k]) * float(w_q[n, k]),
//   all in f32 (the products of two e4m3 values are exact in f32; the CPU sums p in a fixed
//   order, cpu_util.h dot_f32); the bias, if any, is added to the finished sum. A GPU kernel reorders these sums freely: its results are
//   compared by a tolerance against this reference, not bit for bit.
//
// ---- The MoE layer with FP8 experts (ops/moe.h) --------------------------------------------
//   x[t] is quantised as above (K = H), GEMM 1 gives gate and up in f32, the intermediate
//   a = silu(gate) * up (f32, [I]) is quantised the same way (K = I, groups of 128 along I),
//   GEMM 2 gives d (f32, [H]), and the row written is routing_weight * d.
#pragma once

#include <cstdint>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

constexpr int64_t kFp8BlockSize = 128;    // weight blocks 128x128, activation groups 128
constexpr float kFp8E4M3Max = 448.0f;     // largest finite e4m3fn value
constexpr float kFp8MinAmax = 1e-10f;     // amax floor, so an all-zero group has scale > 0

// Number of 128-blocks covering n elements: ceil(n / 128).
constexpr int64_t fp8_blocks(int64_t n) { return (n + kFp8BlockSize - 1) / kFp8BlockSize; }

// Shape of the block scale of an [n, k] FP8 weight: [ceil(n/128), ceil(k/128)].
inline Shape fp8_scale_shape(int64_t n, int64_t k) { return {fp8_blocks(n), fp8_blocks(k)}; }

// Scale of a group or block whose largest magnitude is amax.
inline float fp8_scale_from_amax(float amax) {
  return (amax > kFp8MinAmax ? amax : kFp8MinAmax) / kFp8E4M3Max;
}

// Quantises one group of n floats (n <= 128 for an activation group) to e4m3 codes with
// the scale of its amax; writes n codes to q and returns the scale. Host code.
float fp8_quantize_group(const float* x, int64_t n, uint8_t* q);

// Checks that `scale` is the f32 block scale of the FP8 weight `weight` ([N, K] fp8 e4m3,
// scale [ceil(N/128), ceil(K/128)] f32, contiguous, same device); names `name` on error.
Status expect_fp8_block_scale(const char* op, const char* name, const TensorView& weight,
                              const TensorView& scale);

// Per-token-group activation quantisation (the scheme above); CPU and CUDA give the same bits
// (the CUDA kernel is the one the FP8 linear and MoE GEMMs run on their inputs; it needs
// K % 8 == 0 there).
//   x        [M, K]            f32 (rows may be strided)
//   x_q      [M, K]            fp8 e4m3, contiguous
//   x_scale  [M, ceil(K/128)]  f32, contiguous
// Tests: tests/unit/ops_fp8_test.cpp, tests/unit/cuda_fp8_test.cpp.
Status quantize_fp8_activations(const Context& ctx, const TensorView& x, const TensorView& x_q,
                                const TensorView& x_scale);

// Block quantisation of a weight (the scheme above); CPU and CUDA give the same bits.
//   w        [N, K]                        bf16 / f16 / f32, contiguous
//   w_q      [N, K]                        fp8 e4m3, rows may be strided (padded device rows)
//   w_scale  [ceil(N/128), ceil(K/128)]    f32, contiguous
// Deterministic and thread-count independent. Test: tests/unit/ops_fp8_test.cpp.
Status quantize_fp8_weight_blocks(const Context& ctx, const TensorView& w, const TensorView& w_q,
                                  const TensorView& w_scale);

// Block dequantisation (CPU): w [N, K] f32 = w_q * w_scale (used by tests and the quality report).
Status dequantize_fp8_weight_blocks(const Context& ctx, const TensorView& w_q,
                                    const TensorView& w_scale, const TensorView& w);

}  // namespace moeopt::ops
