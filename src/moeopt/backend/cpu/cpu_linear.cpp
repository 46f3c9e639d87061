// CPU reference: linear (linear.h). y[m, n] = dot(x[m, :], W[n, :]) + bias[n].
//
// Work is split over output features n: each thread converts one weight row to fp32 (the
// only copy ever made, K floats) and applies it to every input row. Each y[m, n] is a single
// dot_f32 over K, so the partition never changes a result bit.
#include <vector>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/backend/cpu/cpu_util.h"

namespace moeopt::cpu {

Status linear(const Context& ctx, const TensorView& x, const TensorView& weight,
              const std::optional<TensorView>& bias, const TensorView& y) {
  const int64_t m_rows = x.shape[0], k = x.shape[1], n_out = weight.shape[0];
  std::vector<float> b(static_cast<size_t>(n_out), 0.0f);
  if (bias) load_f32(bias->data, bias->dtype, 0, n_out, b.data());
  const int64_t ys = ops::row_stride(y), xs = ops::row_stride(x);
  const float* xp = x.ptr<float>();
  float* yp = y.ptr<float>();
  parallel_for(ctx, n_out, [&](int64_t nb, int64_t ne) {
    std::vector<float> w(static_cast<size_t>(k));
    for (int64_t n = nb; n < ne; ++n) {
      load_f32(weight.data, weight.dtype, n * k, k, w.data());
      for (int64_t m = 0; m < m_rows; ++m) yp[m * ys + n] = dot_f32(xp + m * xs, w.data(), k) + b[n];
    }
  }, 8);
  return {};
}

}  // namespace moeopt::cpu
