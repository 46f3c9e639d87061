// CPU reference: argmax and log_softmax over logits rows (reduce.h).
#include <cmath>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/backend/cpu/cpu_util.h"

namespace moeopt::cpu {

Status argmax(const Context& ctx, const TensorView& logits, const TensorView& out) {
  const int64_t v = logits.shape[1];
  int32_t* o = out.ptr<int32_t>();
  parallel_for(ctx, logits.shape[0], [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const float* x = row_f32(logits, m);
      int64_t best = 0;
      for (int64_t i = 1; i < v; ++i) {
        if (std::isnan(x[best])) break;  // the first NaN wins, as torch.argmax
        if (std::isnan(x[i]) || x[i] > x[best]) best = i;  // strict: ties keep the lowest
      }
      o[m] = int32_t(best);
    }
  });
  return {};
}

Status log_softmax(const Context& ctx, const TensorView& x, const TensorView& out) {
  const int64_t v = x.shape[1];
  parallel_for(ctx, x.shape[0], [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const float* xr = row_f32(x, m);
      float* o = row_f32(out, m);
      float mx = -INFINITY;
      for (int64_t i = 0; i < v; ++i) mx = std::fmax(mx, xr[i]);
      double sum = 0.0;
      for (int64_t i = 0; i < v; ++i) sum += std::exp(double(xr[i]) - double(mx));
      const double lse = double(mx) + std::log(sum);
      for (int64_t i = 0; i < v; ++i) o[i] = float(double(xr[i]) - lse);
    }
  });
  return {};
}

}  // namespace moeopt::cpu
