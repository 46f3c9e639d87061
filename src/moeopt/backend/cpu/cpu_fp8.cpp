// CPU reference: FP8 W8A8 with 128x128 block scales (ops/fp8.h) — activation and weight
// quantisation and the W8A8 linear.
//
// linear_fp8 quantises every x row once (per-token groups of 128), then splits the work over
// output features n like the bf16 linear: each y[m, n] is the f32 sum over K groups of
// (x_s * w_s) * dot(x_q group, w_q group), in group order, so results do not depend on the
// thread count.
#include <cmath>
#include <vector>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/backend/cpu/cpu_fp8.h"
#include "moeopt/backend/cpu/cpu_util.h"
#include "moeopt/ops/fp8.h"

namespace moeopt::cpu {

using ops::kFp8BlockSize;

void fp8_quantize_rows(const ops::Context& ctx, const float* x, int64_t x_stride, int64_t m,
                       int64_t k, float* x_q, float* x_s) {
  const int64_t kb = ops::fp8_blocks(k);
  parallel_for(ctx, m, [&](int64_t rb, int64_t re) {
    std::vector<uint8_t> q(static_cast<size_t>(kFp8BlockSize));
    for (int64_t r = rb; r < re; ++r) {
      for (int64_t g = 0; g < kb; ++g) {
        const int64_t k0 = g * kFp8BlockSize, len = std::min(kFp8BlockSize, k - k0);
        x_s[r * kb + g] = ops::fp8_quantize_group(x + r * x_stride + k0, len, q.data());
        for (int64_t i = 0; i < len; ++i) x_q[r * k + k0 + i] = fp8e4m3_to_f32(q[size_t(i)]);
      }
    }
  }, 4);
}

float fp8_dot_blocks(const float* xq, const float* xs, const float* wq, const float* ws,
                     int64_t k) {
  const int64_t kb = ops::fp8_blocks(k);
  float acc = 0.0f;
  for (int64_t g = 0; g < kb; ++g) {
    const int64_t k0 = g * kFp8BlockSize, len = std::min(kFp8BlockSize, k - k0);
    acc += (xs[g] * ws[g]) * dot_f32(xq + k0, wq + k0, len);
  }
  return acc;
}

Status linear_fp8(const Context& ctx, const TensorView& x, const TensorView& weight,
                  const TensorView& weight_scale, const std::optional<TensorView>& bias,
                  const TensorView& y) {
  const int64_t m_rows = x.shape[0], k = x.shape[1], n_out = weight.shape[0];
  const int64_t kb = ops::fp8_blocks(k);
  std::vector<float> b(static_cast<size_t>(n_out), 0.0f);
  if (bias) load_f32(bias->data, bias->dtype, 0, n_out, b.data());
  std::vector<float> xq(static_cast<size_t>(m_rows * k)), xs(static_cast<size_t>(m_rows * kb));
  fp8_quantize_rows(ctx, x.ptr<float>(), ops::row_stride(x), m_rows, k, xq.data(), xs.data());
  const int64_t ys = ops::row_stride(y);
  const float* sw = weight_scale.ptr<float>();
  float* yp = y.ptr<float>();
  parallel_for(ctx, n_out, [&](int64_t nb, int64_t ne) {
    std::vector<float> w(static_cast<size_t>(k));
    for (int64_t n = nb; n < ne; ++n) {
      load_f32(weight.data, weight.dtype, n * k, k, w.data());
      const float* wsr = sw + (n / kFp8BlockSize) * kb;
      for (int64_t m = 0; m < m_rows; ++m)
        yp[m * ys + n] =
            fp8_dot_blocks(xq.data() + m * k, xs.data() + m * kb, w.data(), wsr, k) + b[n];
    }
  }, 8);
  return {};
}

Status quantize_fp8_activations(const Context& ctx, const TensorView& x, const TensorView& x_q,
                                const TensorView& x_scale) {
  const int64_t m = x.shape[0], k = x.shape[1], kb = ops::fp8_blocks(k);
  const int64_t xs = ops::row_stride(x);
  uint8_t* q = x_q.ptr<uint8_t>();
  float* s = x_scale.ptr<float>();
  parallel_for(ctx, m, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r)
      for (int64_t g = 0; g < kb; ++g) {
        const int64_t k0 = g * kFp8BlockSize, len = std::min(kFp8BlockSize, k - k0);
        s[r * kb + g] = ops::fp8_quantize_group(x.ptr<float>() + r * xs + k0, len, q + r * k + k0);
      }
  }, 4);
  return {};
}

Status quantize_fp8_weight_blocks(const Context& ctx, const TensorView& w, const TensorView& w_q,
                                  const TensorView& w_scale) {
  const int64_t n = w.shape[0], k = w.shape[1];
  const int64_t nb = ops::fp8_blocks(n), kb = ops::fp8_blocks(k);
  uint8_t* q = w_q.ptr<uint8_t>();
  const int64_t qs = ops::row_stride(w_q);
  float* s = w_scale.ptr<float>();
  // One task per block row: amax of each block, then the codes of its rows.
  parallel_for(ctx, nb, [&](int64_t bb, int64_t be) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t bi = bb; bi < be; ++bi) {
      const int64_t r0 = bi * kFp8BlockSize, r1 = std::min(n, r0 + kFp8BlockSize);
      std::vector<float> amax(static_cast<size_t>(kb), 0.0f);
      for (int64_t r = r0; r < r1; ++r) {
        load_f32(w.data, w.dtype, r * k, k, row.data());
        for (int64_t c = 0; c < k; ++c)
          amax[size_t(c / kFp8BlockSize)] =
              std::fmax(amax[size_t(c / kFp8BlockSize)], std::fabs(row[size_t(c)]));
      }
      for (int64_t g = 0; g < kb; ++g) s[bi * kb + g] = ops::fp8_scale_from_amax(amax[size_t(g)]);
      for (int64_t r = r0; r < r1; ++r) {
        load_f32(w.data, w.dtype, r * k, k, row.data());
        for (int64_t c = 0; c < k; ++c)
          q[r * qs + c] = f32_to_fp8e4m3(row[size_t(c)] / s[bi * kb + c / kFp8BlockSize]);
      }
    }
  }, 1);
  return {};
}

Status dequantize_fp8_weight_blocks(const Context& ctx, const TensorView& w_q,
                                    const TensorView& w_scale, const TensorView& w) {
  const int64_t n = w_q.shape[0], k = w_q.shape[1], kb = ops::fp8_blocks(k);
  const uint8_t* q = w_q.ptr<uint8_t>();
  const int64_t qs = ops::row_stride(w_q);
  const float* s = w_scale.ptr<float>();
  parallel_for(ctx, n, [&](int64_t rb, int64_t re) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t r = rb; r < re; ++r) {
      for (int64_t c = 0; c < k; ++c)
        row[size_t(c)] = fp8e4m3_to_f32(q[r * qs + c]) *
                         s[(r / kFp8BlockSize) * kb + c / kFp8BlockSize];
      store_f32(w.data, w.dtype, r * k, k, row.data());
    }
  }, 16);
  return {};
}

}  // namespace moeopt::cpu
