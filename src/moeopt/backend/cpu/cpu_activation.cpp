// CPU reference: silu and silu_and_mul (ops/activation.h).
#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/backend/cpu/cpu_util.h"

namespace moeopt::cpu {

Status silu_and_mul(const Context& ctx, const TensorView& x, const TensorView& out) {
  const int64_t inter = out.shape[1];
  parallel_for(ctx, x.shape[0], [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const float* xr = row_f32(x, m);
      float* o = row_f32(out, m);
      for (int64_t i = 0; i < inter; ++i) o[i] = silu_f32(xr[i]) * xr[inter + i];
    }
  }, 4);
  return {};
}

Status silu(const Context& ctx, const TensorView& x, const TensorView& out) {
  const int64_t n = x.shape[1];
  parallel_for(ctx, x.shape[0], [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const float* xr = row_f32(x, m);
      float* o = row_f32(out, m);
      for (int64_t i = 0; i < n; ++i) o[i] = silu_f32(xr[i]);
    }
  }, 4);
  return {};
}

}  // namespace moeopt::cpu
