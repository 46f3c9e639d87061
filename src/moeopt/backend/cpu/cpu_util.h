// Small helpers shared by the CPU reference ops: threading, dtype row conversion, dot.
//
// Weights stay in their checkpoint dtype (bf16/f16/f32); an op converts the one row it is
// about to use into a float buffer (load_f32) and does fp32 math, so no fp32 copy of a whole
// weight ever exists. Every output element is computed by one thread in a fixed order, so
// results do not depend on the thread count.
#pragma once

#include <cmath>
#include <vector>
#include <cstdint>
#include <functional>

#include "moeopt/core/dtype.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/context.h"

namespace moeopt::cpu {

// Runs fn on chunks of [0, n) on ctx.pool (or inline without a pool).
void parallel_for(const ops::Context& ctx, int64_t n,
                  const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

// dst[i] = element (offset + i) of a bf16 / f16 / f32 buffer, as float.
void load_f32(const void* base, DType t, int64_t offset, int64_t n, float* dst);
// element (offset + i) of a bf16 / f16 / f32 buffer = src[i] (rounded to nearest even).
void store_f32(void* base, DType t, int64_t offset, int64_t n, const float* src);

// sum_i a[i] * b[i] in fp32 with 8 interleaved partial sums combined in a fixed order
// (lets the compiler vectorise without -ffast-math; deterministic).
float dot_f32(const float* a, const float* b, int64_t n);

// Row r of a float view with a row layout (check.h: inner dims contiguous).
inline float* row_f32(const TensorView& t, int64_t r) {
  return t.ptr<float>() + r * ops::row_stride(t);
}

// The values of a paged batch's metadata (shapes checked by ops::expect_paged_metadata):
// query_start_loc runs from 0 to `tokens`; each sequence has 0 <= new tokens <= context <=
// max_blocks * block_size; the blocks it uses are in [0, num_blocks). Fills seq_of[t] with
// the sequence of query row t. Errors name `op`.
Status check_paged_batch(const char* op, int64_t num_blocks, int64_t block_size,
                         const TensorView& block_table, const TensorView& context_lens,
                         const TensorView& query_start_loc, int64_t tokens,
                         std::vector<int32_t>& seq_of);

inline float silu_f32(float v) { return v / (1.0f + std::exp(-v)); }

}  // namespace moeopt::cpu
