// CPU reference: embedding (embedding.h), silu and silu_and_mul (activation.h).
#include <vector>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/backend/cpu/cpu_util.h"

namespace moeopt::cpu {

Status embedding(const Context& ctx, const TensorView& table, const TensorView& ids,
                 const TensorView& out) {
  const int64_t vocab = table.shape[0], hidden = table.shape[1], n = ids.shape[0];
  const int32_t* id = ids.ptr<int32_t>();
  for (int64_t t = 0; t < n; ++t)
    if (id[t] < 0 || id[t] >= vocab)
      return make_error(ErrorCode::kInvalidArgument,
                        "embedding: token id {} at position {} is out of range [0, {})", id[t],
                        t, vocab);
  parallel_for(ctx, n, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      load_f32(table.data, table.dtype, int64_t(id[t]) * hidden, hidden, row_f32(out, t));
  }, 16);
  return {};
}

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
