// RMSNorm ops against a direct double-precision formula (per-row loops, weights read as
// doubles), driven by the op-case table; plus in-place, strided rows, thread-count
// invariance and the validation messages.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/norm.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::ops {
namespace {

// ref[r, i] = w[i] * x[r, i] / sqrt(mean_i(x[r, :]^2) + eps), all in double.
std::vector<double> ref_rms_norm(const std::vector<double>& x, const std::vector<double>& w,
                                 int64_t rows, int64_t d, double eps) {
  std::vector<double> out(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += x[r * d + i] * x[r * d + i];
    const double inv = 1.0 / std::sqrt(ss / double(d) + eps);
    for (int64_t i = 0; i < d; ++i) out[r * d + i] = w[i] * x[r * d + i] * inv;
  }
  return out;
}

class NormCase : public ::testing::TestWithParam<OpCase> {};

TEST_P(NormCase, MatchesDoubleReference) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  const float eps = 1e-6f;
  const bool per_head = c.op == OpKind::kRmsNormPerHead;
  const int64_t d = per_head ? c.head_dim : c.n;
  const int64_t rows = per_head ? c.m * c.heads : c.m;
  const Shape shape = per_head ? Shape{c.m, c.heads, c.head_dim} : Shape{c.m, c.n};
  HostTensor x = random_tensor(DType::kF32, shape, rng, 0.05, 2.0);
  HostTensor w = random_tensor(c.weight_dtype, {d}, rng, 0.5, 1.5);
  HostTensor res = random_tensor(DType::kF32, shape, rng, 0.05, 2.0);
  std::vector<double> xd = to_doubles(x), wd = to_doubles(w), rd = to_doubles(res);

  ThreadPool pool(3);
  std::vector<HostTensor> outs;
  for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
    Context ctx{.pool = p};
    HostTensor out(DType::kF32, shape);
    poison(out);
    if (c.op == OpKind::kAddRmsNorm) {
      HostTensor r = random_tensor(DType::kF32, shape, rng);  // overwritten just below
      std::memcpy(r.ptr<void>(), res.ptr<void>(), res.nbytes());
      ASSERT_TRUE(add_rms_norm(ctx, x, r, w, eps, out).ok());
      // residual += x, exactly in fp32
      for (int64_t i = 0; i < x.numel(); ++i)
        ASSERT_EQ(r.ptr<float>()[i], res.ptr<float>()[i] + x.ptr<float>()[i]) << i;
    } else if (per_head) {
      ASSERT_TRUE(rms_norm_per_head(ctx, x, w, eps, out).ok());
    } else {
      ASSERT_TRUE(rms_norm(ctx, x, w, eps, out).ok());
    }
    outs.push_back(std::move(out));
  }
  std::vector<double> in = xd;
  if (c.op == OpKind::kAddRmsNorm)
    for (size_t i = 0; i < in.size(); ++i) in[i] = double(float(xd[i] + rd[i]));
  std::vector<double> ref = ref_rms_norm(in, wd, rows, d, eps);
  Comparison cmp = compare_values(outs[0].ptr<float>(), ref.data(), outs[0].numel(), c.metric,
                                  c.tolerance);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
  EXPECT_EQ(std::memcmp(outs[0].ptr<void>(), outs[1].ptr<void>(), outs[0].nbytes()), 0)
      << "result depends on the thread count";
}

std::vector<OpCase> norm_cases() {
  std::vector<OpCase> v = op_cases_for(OpKind::kRmsNorm);
  for (auto k : {OpKind::kAddRmsNorm, OpKind::kRmsNormPerHead})
    for (const OpCase& c : op_cases_for(k)) v.push_back(c);
  return v;
}

INSTANTIATE_TEST_SUITE_P(Ops, NormCase, ::testing::ValuesIn(norm_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(OpsNorm, InPlaceOnStridedQSliceOfFusedQkv) {
  // qkv [T, (4 + 2 + 2) heads * 8]; q = the first 4 heads, normalised in place per head.
  const int64_t t = 3, hq = 4, hkv = 2, d = 8, width = (hq + 2 * hkv) * d;
  CaseRng rng("strided");
  HostTensor qkv = random_tensor(DType::kF32, {t, width}, rng);
  HostTensor orig = random_tensor(DType::kF32, {t, width}, rng);
  std::memcpy(orig.ptr<void>(), qkv.ptr<void>(), qkv.nbytes());
  HostTensor w = random_tensor(DType::kBF16, {d}, rng);
  TensorView q = TensorView::contiguous(qkv.ptr<float>(), DType::kF32, {t, hq, d});
  q.strides[0] = width;
  ASSERT_TRUE(rms_norm_per_head(Context{}, q, w, 1e-6f, q).ok());
  std::vector<double> wd = to_doubles(w);
  for (int64_t i = 0; i < t; ++i) {
    std::vector<double> row(orig.ptr<float>() + i * width, orig.ptr<float>() + i * width + hq * d);
    std::vector<double> ref = ref_rms_norm(row, wd, hq, d, 1e-6);
    for (int64_t j = 0; j < width; ++j) {
      const float got = qkv.ptr<float>()[i * width + j];
      if (j < hq * d)
        EXPECT_NEAR(got, ref[size_t(j)], 1e-5 * std::fabs(ref[size_t(j)]) + 1e-6);
      else
        EXPECT_EQ(got, orig.ptr<float>()[i * width + j]) << "k/v part must be untouched";
    }
  }
}

TEST(OpsNorm, ErrorsNameTheTensorAndShapes) {
  HostTensor x(DType::kF32, {2, 256}), out(DType::kF32, {2, 256});
  HostTensor w(DType::kBF16, {255});
  Status st = rms_norm(Context{}, x, w, 1e-6f, out);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "rms_norm: weight has shape [255], expected [256]");
  HostTensor w2(DType::kI32, {256});
  st = rms_norm(Context{}, x, w2, 1e-6f, out);
  EXPECT_EQ(st.message(), "rms_norm: weight has dtype i32, expected bf16, f16 or f32");
  HostTensor out_bad(DType::kF32, {2, 128});
  EXPECT_FALSE(rms_norm(Context{}, x, w, 1e-6f, out_bad).ok());
  // Partial overlap (out shifted by one element inside x) is rejected.
  HostTensor big(DType::kF32, {3, 256});
  TensorView a = big.view().slice0(0, 2);
  TensorView b = TensorView::contiguous(big.ptr<float>() + 1, DType::kF32, {2, 256});
  HostTensor wok(DType::kF32, {256});
  EXPECT_FALSE(rms_norm(Context{}, a, wok, 1e-6f, b).ok());
  // A CUDA tensor without a device backend is a clean kUnsupported.
  TensorView xc = x.view(), wc = wok.view(), oc = out.view();
  xc.device = wc.device = oc.device = Device::kCuda;
  EXPECT_EQ(rms_norm(Context{}, xc, wc, 1e-6f, oc).code(), ErrorCode::kUnsupported);
}

}  // namespace
}  // namespace moeopt::ops
