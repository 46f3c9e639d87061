// CPU reference: embedding (ops/embedding.h).
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

}  // namespace moeopt::cpu
