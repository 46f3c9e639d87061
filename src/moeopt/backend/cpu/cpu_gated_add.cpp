#include "moeopt/backend/cpu/cpu_gated_add.h"

#include <cmath>

#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/check.h"

namespace moeopt::cpu {

Status sigmoid_gated_add(const ops::Context& ctx, const TensorView& x, const TensorView& gate,
                         const TensorView& out) {
  const int64_t M = x.shape[0], H = x.shape[1];
  const int64_t xs = ops::row_stride(x), os = ops::row_stride(out), gs = gate.strides[0];
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      float g = gate.ptr<float>()[m * gs];
      float s = 1.0f / (1.0f + std::exp(-g));
      const float* xr = x.ptr<float>() + m * xs;
      float* orow = out.ptr<float>() + m * os;
      for (int64_t h = 0; h < H; ++h) orow[h] += s * xr[h];
    }
  };
  if (ctx.pool) ctx.pool->parallel_for(M, body);
  else body(0, M);
  return {};
}

Status add_into(const ops::Context& ctx, const TensorView& x, const TensorView& out) {
  const int64_t M = x.shape[0], H = x.shape[1];
  const int64_t xs = ops::row_stride(x), os = ops::row_stride(out);
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const float* xr = x.ptr<float>() + m * xs;
      float* orow = out.ptr<float>() + m * os;
      for (int64_t h = 0; h < H; ++h) orow[h] += xr[h];
    }
  };
  if (ctx.pool) ctx.pool->parallel_for(M, body);
  else body(0, M);
  return {};
}

}  // namespace moeopt::cpu
