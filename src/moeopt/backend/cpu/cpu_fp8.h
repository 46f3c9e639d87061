// Building blocks of the CPU FP8 W8A8 reference (ops/fp8.h), shared by linear and the MoE.
#pragma once

#include <cstdint>

#include "moeopt/ops/context.h"

namespace moeopt::cpu {

// Quantises m rows of k floats (row stride x_stride) per token in groups of 128:
// x_q [m, k] receives the e4m3 values as floats, x_s [m, ceil(k/128)] the group scales.
void fp8_quantize_rows(const ops::Context& ctx, const float* x, int64_t x_stride, int64_t m,
                       int64_t k, float* x_q, float* x_s);

// One W8A8 output: sum over the ceil(k/128) groups, in order, of
// (xs[g] * ws[g]) * dot(xq group g, wq group g). xq / wq hold e4m3 values as floats; ws is
// the weight row's row of block scales.
float fp8_dot_blocks(const float* xq, const float* xs, const float* wq, const float* ws,
                     int64_t k);

}  // namespace moeopt::cpu
