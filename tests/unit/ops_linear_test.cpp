// linear, activations, embedding and the logits reductions against direct double-precision
// formulas, driven by the op-case table; plus strided outputs, ties/NaN semantics of argmax
// (torch.argmax's documented behaviour) and validation errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/activation.h"
#include "moeopt/ops/embedding.h"
#include "moeopt/ops/gated_add.h"
#include "moeopt/ops/linear.h"
#include "moeopt/ops/op_cases.h"
#include "moeopt/ops/reduce.h"

namespace moeopt::ops {
namespace {

double silu_d(double v) { return v / (1.0 + std::exp(-v)); }

// Runs `op` with no pool and with a 3-thread pool on freshly poisoned outputs of `shape` and
// `dtype`; returns the first result and checks both are bit-identical.
HostTensor run_twice(const Shape& shape, DType dtype,
                     const std::function<Status(const Context&, const TensorView&)>& op) {
  ThreadPool pool(3);
  HostTensor a(dtype, shape), b(dtype, shape);
  poison(a);
  poison(b);
  Status s1 = op(Context{}, a);
  EXPECT_TRUE(s1.ok()) << s1.message();
  Status s2 = op(Context{.pool = &pool}, b);
  EXPECT_TRUE(s2.ok()) << s2.message();
  EXPECT_EQ(std::memcmp(a.ptr<void>(), b.ptr<void>(), a.nbytes()), 0)
      << "result depends on the thread count";
  return a;
}

class LinearCase : public ::testing::TestWithParam<OpCase> {};

TEST_P(LinearCase, MatchesDoubleReference) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  HostTensor x = random_tensor(DType::kF32, {c.m, c.k}, rng);
  HostTensor w = random_tensor(c.weight_dtype, {c.n, c.k}, rng);
  HostTensor b = random_tensor(c.weight_dtype, {c.n}, rng);
  std::optional<TensorView> bias;
  if (c.bias) bias = b.view();
  HostTensor y = run_twice({c.m, c.n}, DType::kF32, [&](const Context& ctx, const TensorView& out) {
    return linear(ctx, x, w, bias, out);
  });
  std::vector<double> xd = to_doubles(x), wd = to_doubles(w), bd = to_doubles(b);
  std::vector<double> ref(static_cast<size_t>(c.m * c.n));
  for (int64_t m = 0; m < c.m; ++m)
    for (int64_t n = 0; n < c.n; ++n) {
      double s = c.bias ? bd[size_t(n)] : 0.0;
      for (int64_t k = 0; k < c.k; ++k) s += xd[size_t(m * c.k + k)] * wd[size_t(n * c.k + k)];
      ref[size_t(m * c.n + n)] = s;
    }
  Comparison cmp = compare_values(y.ptr<float>(), ref.data(), y.numel(), c.metric, c.tolerance);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
}
INSTANTIATE_TEST_SUITE_P(Ops, LinearCase, ::testing::ValuesIn(op_cases_for(OpKind::kLinear)),
                         [](const auto& info) { return std::string(info.param.name); });

class PointwiseCase : public ::testing::TestWithParam<OpCase> {};

TEST_P(PointwiseCase, MatchesDoubleReference) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  std::vector<double> ref;
  HostTensor got;
  switch (c.op) {
    case OpKind::kEmbedding: {
      HostTensor table = random_tensor(c.weight_dtype, {c.k, c.n}, rng);
      HostTensor ids(DType::kI32, {c.m});
      for (int64_t t = 0; t < c.m; ++t) ids.ptr<int32_t>()[t] = int32_t(rng.below(c.k));
      ids.ptr<int32_t>()[0] = int32_t(c.k - 1);  // the last row too
      got = run_twice({c.m, c.n}, DType::kF32, [&](const Context& ctx, const TensorView& out) {
        return embedding(ctx, table, ids, out);
      });
      std::vector<double> td = to_doubles(table);
      for (int64_t t = 0; t < c.m; ++t)
        for (int64_t h = 0; h < c.n; ++h)
          ref.push_back(td[size_t(ids.ptr<int32_t>()[t] * c.n + h)]);
      break;
    }
    case OpKind::kSiluAndMul: {
      HostTensor x = random_tensor(DType::kF32, {c.m, 2 * c.n}, rng, 0.05, 4.0);
      got = run_twice({c.m, c.n}, DType::kF32, [&](const Context& ctx, const TensorView& out) {
        return silu_and_mul(ctx, x, out);
      });
      std::vector<double> xd = to_doubles(x);
      for (int64_t m = 0; m < c.m; ++m)
        for (int64_t i = 0; i < c.n; ++i)
          ref.push_back(silu_d(xd[size_t(m * 2 * c.n + i)]) * xd[size_t(m * 2 * c.n + c.n + i)]);
      break;
    }
    case OpKind::kSilu: {
      HostTensor x = random_tensor(DType::kF32, {c.m, c.n}, rng, 0.05, 6.0);
      got = run_twice({c.m, c.n}, DType::kF32, [&](const Context& ctx, const TensorView& out) {
        return silu(ctx, x, out);
      });
      for (double v : to_doubles(x)) ref.push_back(silu_d(v));
      break;
    }
    case OpKind::kLogSoftmax: {
      HostTensor x = random_tensor(DType::kF32, {c.m, c.n}, rng, 0.05, 8.0);
      got = run_twice({c.m, c.n}, DType::kF32, [&](const Context& ctx, const TensorView& out) {
        return log_softmax(ctx, x, out);
      });
      std::vector<double> xd = to_doubles(x);
      for (int64_t m = 0; m < c.m; ++m) {
        double s = 0;  // no max shift needed for |x| <= 8
        for (int64_t i = 0; i < c.n; ++i) s += std::exp(xd[size_t(m * c.n + i)]);
        for (int64_t i = 0; i < c.n; ++i) ref.push_back(xd[size_t(m * c.n + i)] - std::log(s));
      }
      break;
    }
    case OpKind::kArgmax: {
      HostTensor x = random_tensor(DType::kF32, {c.m, c.n}, rng, 0.05, 8.0);
      HostTensor ids = run_twice({c.m}, DType::kI32, [&](const Context& ctx, const TensorView& out) {
        return argmax(ctx, x, out);
      });
      std::vector<double> xd = to_doubles(x);
      got = HostTensor(DType::kF32, {c.m});
      for (int64_t m = 0; m < c.m; ++m) {
        int64_t best = 0;
        for (int64_t i = 0; i < c.n; ++i)
          if (xd[size_t(m * c.n + i)] > xd[size_t(m * c.n + best)]) best = i;
        ref.push_back(double(best));
        got.ptr<float>()[m] = float(ids.ptr<int32_t>()[m]);
      }
      break;
    }
    default:
      FAIL() << "unexpected op";
  }
  ASSERT_EQ(int64_t(ref.size()), got.numel());
  Comparison cmp = compare_values(got.ptr<float>(), ref.data(), got.numel(), c.metric, c.tolerance);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
}

std::vector<OpCase> pointwise_cases() {
  std::vector<OpCase> v;
  for (auto k : {OpKind::kEmbedding, OpKind::kSiluAndMul, OpKind::kSilu, OpKind::kLogSoftmax,
                 OpKind::kArgmax})
    for (const OpCase& c : op_cases_for(k)) v.push_back(c);
  return v;
}
INSTANTIATE_TEST_SUITE_P(Ops, PointwiseCase, ::testing::ValuesIn(pointwise_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(OpsLinear, WritesIntoStridedHalvesOfAGateUpBuffer) {
  // gate and up projections written into the two halves of one [M, 2I] buffer, then
  // silu_and_mul: the layout the recipes use for per-tensor gate/up checkpoints.
  const int64_t m = 3, h = 16, inter = 5;
  CaseRng rng("gate_up");
  HostTensor x = random_tensor(DType::kF32, {m, h}, rng);
  HostTensor wg = random_tensor(DType::kBF16, {inter, h}, rng);
  HostTensor wu = random_tensor(DType::kBF16, {inter, h}, rng);
  HostTensor buf(DType::kF32, {m, 2 * inter});
  poison(buf);
  TensorView g = TensorView::contiguous(buf.ptr<float>(), DType::kF32, {m, inter});
  TensorView u = TensorView::contiguous(buf.ptr<float>() + inter, DType::kF32, {m, inter});
  g.strides[0] = u.strides[0] = 2 * inter;
  ASSERT_TRUE(linear(Context{}, x, wg, std::nullopt, g).ok());
  ASSERT_TRUE(linear(Context{}, x, wu, std::nullopt, u).ok());
  HostTensor act(DType::kF32, {m, inter});
  ASSERT_TRUE(silu_and_mul(Context{}, buf, act).ok());
  std::vector<double> xd = to_doubles(x), gd = to_doubles(wg), ud = to_doubles(wu);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t i = 0; i < inter; ++i) {
      double a = 0, b = 0;
      for (int64_t k = 0; k < h; ++k) {
        a += xd[size_t(r * h + k)] * gd[size_t(i * h + k)];
        b += xd[size_t(r * h + k)] * ud[size_t(i * h + k)];
      }
      const double want = silu_d(a) * b;
      EXPECT_NEAR(act.ptr<float>()[r * inter + i], want, 1e-5 * (1 + std::fabs(want)));
    }
}

TEST(OpsLinear, ValidationErrors) {
  HostTensor x(DType::kF32, {2, 8}), w(DType::kBF16, {4, 9}), y(DType::kF32, {2, 4});
  Status st = linear(Context{}, x, w, std::nullopt, y);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.message().find("linear: weight has shape [4, 9]"), std::string::npos) << st.message();
  HostTensor w2(DType::kBF16, {4, 8}), b(DType::kBF16, {5});
  st = linear(Context{}, x, w2, b.view(), y);
  EXPECT_EQ(st.message(), "linear: bias has shape [5], expected [4]");
  HostTensor xb(DType::kBF16, {2, 8});
  st = linear(Context{}, xb, w2, std::nullopt, y);
  EXPECT_EQ(st.message(), "linear: x has dtype bf16, expected f32");
}

TEST(OpsGatedAdd, AddsSigmoidGatedRows) {
  // Qwen2-MoE shared expert: out += sigmoid(gate) * x, per row.
  const int64_t m = 5, h = 19;
  CaseRng rng("gated_add");
  HostTensor x = random_tensor(DType::kF32, {m, h}, rng);
  HostTensor gate = random_tensor(DType::kF32, {m, 1}, rng, 0.05, 4.0);
  HostTensor out = random_tensor(DType::kF32, {m, h}, rng);
  std::vector<double> o0 = to_doubles(out), xd = to_doubles(x), gd = to_doubles(gate);
  ThreadPool pool(2);
  ASSERT_TRUE(sigmoid_gated_add(Context{.pool = &pool}, x, gate, out).ok());
  std::vector<double> ref(o0.size());
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < h; ++j)
      ref[size_t(r * h + j)] = o0[size_t(r * h + j)] + xd[size_t(r * h + j)] / (1 + std::exp(-gd[size_t(r)]));
  Comparison cmp = compare_values(out.ptr<float>(), ref.data(), out.numel(), Metric::kMaxRelError, 1e-6);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
  HostTensor bad_gate(DType::kF32, {m, 2});
  EXPECT_EQ(sigmoid_gated_add(Context{}, x, bad_gate, out).message(),
            "sigmoid_gated_add: gate has shape [5, 2], expected [5, 1]");
}

TEST(OpsReduce, ArgmaxTiesAndNanFollowTorch) {
  // torch.argmax returns the first maximal index and treats NaN as the maximum.
  HostTensor x(DType::kF32, {3, 5});
  const float rows[3][5] = {{1, 3, 3, 2, 3}, {-1, -1, -1, -1, -1}, {1, NAN, 9, NAN, 2}};
  std::memcpy(x.ptr<void>(), rows, sizeof(rows));
  HostTensor out(DType::kI32, {3});
  ASSERT_TRUE(argmax(Context{}, x, out).ok());
  EXPECT_EQ(out.ptr<int32_t>()[0], 1);
  EXPECT_EQ(out.ptr<int32_t>()[1], 0);
  EXPECT_EQ(out.ptr<int32_t>()[2], 1);
}

TEST(OpsEmbedding, RejectsOutOfRangeIds) {
  HostTensor table(DType::kBF16, {10, 4}), ids(DType::kI32, {2}), out(DType::kF32, {2, 4});
  ids.ptr<int32_t>()[0] = 3;
  ids.ptr<int32_t>()[1] = 10;
  Status st = embedding(Context{}, table, ids, out);
  EXPECT_EQ(st.message(), "embedding: token id 10 at position 1 is out of range [0, 10)");
}

}  // namespace
}  // namespace moeopt::ops
