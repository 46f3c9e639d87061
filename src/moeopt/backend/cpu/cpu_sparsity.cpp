// CPU: prune_2_4 (ops/sparsity.h). Rows in parallel; within a row, each group of 4 along K
// is ranked on its own, so the result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/backend/cpu/cpu_util.h"
#include "moeopt/ops/sparsity.h"

namespace moeopt::cpu {

Status prune_2_4(const Context& ctx, const TensorView& w, const TensorView& out,
                 const float* importance) {
  const int64_t n = w.shape[0], k = w.shape[1];
  const size_t es = dtype_size(w.dtype);
  if (out.data != w.data) std::memcpy(out.data, w.data, w.nbytes());
  parallel_for(ctx, n, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      for (int64_t g0 = 0; g0 < k; g0 += ops::kSparseGroup) {
        const int64_t len = std::min<int64_t>(ops::kSparseGroup, k - g0);
        if (len <= ops::kSparseKeep) continue;
        float score[ops::kSparseGroup];
        for (int64_t i = 0; i < len; ++i) {
          const float v = load_as_f32(w.data, w.dtype, r * k + g0 + i);
          score[i] = std::fabs(v) * (importance ? importance[g0 + i] : 1.0f);
        }
        // Element i survives when fewer than kSparseKeep others outrank it (a larger score,
        // or an equal one at a lower k).
        for (int64_t i = 0; i < len; ++i) {
          int above = 0;
          for (int64_t j = 0; j < len; ++j)
            above += score[j] > score[i] || (score[j] == score[i] && j < i);
          if (above >= ops::kSparseKeep)
            std::memset(static_cast<char*>(out.data) + size_t(r * k + g0 + i) * es, 0, es);
        }
      }
    }
  }, 16);
  return {};
}

}  // namespace moeopt::cpu
