// CPU reference: rms_norm, add_rms_norm (norm.h). One row (or one head vector) per work
// item; mean(x^2) is summed in double and the rest is fp32, matching HF RMSNorm in fp32.
#include <cmath>
#include <vector>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/backend/cpu/cpu_util.h"

namespace moeopt::cpu {
namespace {

// Vector `i` of a [rows, D] or [tokens, heads, D] row-layout view (dim 1 of a 3-D view is
// contiguous, see check.h).
float* vec_ptr(const TensorView& t, int64_t i) {
  if (t.ndim() == 3) {
    int64_t heads = t.shape[1];
    return t.ptr<float>() + (i / heads) * ops::row_stride(t) + (i % heads) * t.shape[2];
  }
  return t.ptr<float>() + i * ops::row_stride(t);
}

int64_t num_vectors(const TensorView& t) { return t.ndim() == 3 ? t.shape[0] * t.shape[1] : t.shape[0]; }

void normalize_into(const float* src, const float* w, int64_t d, float eps, float* dst) {
  double ss = 0.0;
  for (int64_t i = 0; i < d; ++i) ss += double(src[i]) * double(src[i]);
  float var = float(ss / double(d));
  float inv = 1.0f / std::sqrt(var + eps);
  for (int64_t i = 0; i < d; ++i) dst[i] = w[i] * (src[i] * inv);
}

}  // namespace

Status rms_norm(const Context& ctx, const TensorView& x, const TensorView& weight, float eps,
                const TensorView& out) {
  const int64_t d = x.shape[-1];
  std::vector<float> w(static_cast<size_t>(d));
  load_f32(weight.data, weight.dtype, 0, d, w.data());
  parallel_for(ctx, num_vectors(x), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) normalize_into(vec_ptr(x, i), w.data(), d, eps, vec_ptr(out, i));
  }, 4);
  return {};
}

Status add_rms_norm(const Context& ctx, const TensorView& x, const TensorView& residual,
                    const TensorView& weight, float eps, const TensorView& out) {
  const int64_t d = x.shape[-1];
  std::vector<float> w(static_cast<size_t>(d));
  load_f32(weight.data, weight.dtype, 0, d, w.data());
  parallel_for(ctx, x.shape[0], [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = row_f32(x, r);
      float* rr = row_f32(residual, r);
      for (int64_t i = 0; i < d; ++i) rr[i] += xr[i];
      normalize_into(rr, w.data(), d, eps, row_f32(out, r));
    }
  }, 4);
  return {};
}

}  // namespace moeopt::cpu
