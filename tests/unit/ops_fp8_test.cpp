// FP8 W8A8 ops (ops/fp8.h) against references written here: e4m3 rounding by an exhaustive
// nearest-even search over all 126 positive codes in double, block and group amax in double,
// the W8A8 products as sums in double over the dequantised operands. Driven by the op-case
// table (linear_fp8, moe_forward_fp8); plus the quantisers, the scale contract of
// ExpertWeights and LinearWeight, and validation errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/fp8.h"
#include "moeopt/ops/linear.h"
#include "moeopt/ops/moe.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::ops {
namespace {

// ---- the reference's own e4m3 ----------------------------------------------------------

double e4m3_value(int code) {  // code 0..0x7e, positive
  const int e = (code >> 3) & 0xf, mant = code & 7;
  return e == 0 ? std::ldexp(double(mant), -9) : std::ldexp(1.0 + mant / 8.0, e - 7);
}

// Nearest e4m3 value of v (saturating at 448), ties to the even code.
double e4m3_round(double v) {
  const double a = std::fabs(v);
  int best = 0;
  for (int c = 1; c <= 0x7e; ++c) {
    const double d = std::fabs(e4m3_value(c) - a), bd = std::fabs(e4m3_value(best) - a);
    if (d < bd || (d == bd && (c & 1) == 0)) best = c;
  }
  return std::copysign(e4m3_value(best), v);
}

// Per-token-group quantisation of one row, as fp8.h specifies: scale = f32(max(amax,
// 1e-10)) / 448 in f32, q = round(f32(x / scale)). Returns the dequantised row.
std::vector<double> ref_quantize_row(const std::vector<float>& x, std::vector<float>* scales) {
  const int64_t k = int64_t(x.size());
  std::vector<double> out(x.size());
  for (int64_t k0 = 0; k0 < k; k0 += 128) {
    const int64_t k1 = std::min(k, k0 + 128);
    double amax = 0;
    for (int64_t i = k0; i < k1; ++i) amax = std::max(amax, std::fabs(double(x[size_t(i)])));
    const float s = std::max(float(amax), 1e-10f) / 448.0f;
    if (scales) scales->push_back(s);
    for (int64_t i = k0; i < k1; ++i) out[size_t(i)] = e4m3_round(double(x[size_t(i)] / s)) * s;
  }
  return out;
}

// An fp8 weight built directly from random codes and random block scales (independent of
// the quantiser under test), and its dequantised values in double.
struct Fp8Weight {
  HostTensor q, scale;
  std::vector<double> value;  // [N, K]
};

Fp8Weight random_fp8_weight(int64_t n, int64_t k, CaseRng& rng, double scale_lo = 1e-3,
                            double scale_hi = 4e-3) {
  Fp8Weight w{HostTensor(DType::kF8E4M3, {n, k}), HostTensor(DType::kF32, fp8_scale_shape(n, k)), {}};
  for (int64_t i = 0; i < w.scale.numel(); ++i)
    w.scale.ptr<float>()[i] = float(rng.uniform(scale_lo, scale_hi));
  const int64_t kb = fp8_blocks(k);
  w.value.resize(size_t(n * k));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      int code = int(rng.below(0x7e)) + 1;             // 1..0x7e: finite, non-zero
      if (rng.next() & 1) code |= 0x80;
      w.q.ptr<uint8_t>()[r * k + c] = uint8_t(code);
      const double v = e4m3_value(code & 0x7f) * ((code & 0x80) ? -1.0 : 1.0);
      w.value[size_t(r * k + c)] = v * w.scale.ptr<float>()[(r / 128) * kb + c / 128];
    }
  return w;
}

std::vector<float> row_of(const HostTensor& x, int64_t r) {
  const int64_t k = x.shape()[1];
  return {x.ptr<float>() + r * k, x.ptr<float>() + (r + 1) * k};
}

HostTensor run_twice(const Shape& shape, const std::function<Status(const Context&, const TensorView&)>& op) {
  ThreadPool pool(3);
  HostTensor a(DType::kF32, shape), b(DType::kF32, shape);
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

// ---- linear -------------------------------------------------------------------------------

class LinearFp8Case : public ::testing::TestWithParam<OpCase> {};

TEST_P(LinearFp8Case, MatchesDoubleReference) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  HostTensor x = random_tensor(DType::kF32, {c.m, c.k}, rng, 0.01, 3.0);
  Fp8Weight w = random_fp8_weight(c.n, c.k, rng);
  HostTensor b = random_tensor(DType::kBF16, {c.n}, rng);
  std::optional<TensorView> bias;
  if (c.bias) bias = b.view();
  HostTensor y = run_twice({c.m, c.n}, [&](const Context& ctx, const TensorView& out) {
    return linear(ctx, x, LinearWeight(w.q, w.scale.view()), bias, out);
  });
  std::vector<double> bd = to_doubles(b), ref;
  for (int64_t m = 0; m < c.m; ++m) {
    const std::vector<double> xq = ref_quantize_row(row_of(x, m), nullptr);
    for (int64_t n = 0; n < c.n; ++n) {
      double s = c.bias ? bd[size_t(n)] : 0.0;
      for (int64_t k = 0; k < c.k; ++k) s += xq[size_t(k)] * w.value[size_t(n * c.k + k)];
      ref.push_back(s);
    }
  }
  Comparison cmp = compare_values(y.ptr<float>(), ref.data(), y.numel(), c.metric, c.tolerance);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
  // The W8A8 product is close to the unquantised one (the activation rounding only):
  // e4m3 has a 3-bit mantissa, so each x is off by <= 1/16 relative.
  double err = 0, norm = 0;
  std::vector<double> xd = to_doubles(x);
  for (int64_t m = 0; m < c.m; ++m)
    for (int64_t n = 0; n < c.n; ++n) {
      double s = c.bias ? bd[size_t(n)] : 0.0;
      for (int64_t k = 0; k < c.k; ++k) s += xd[size_t(m * c.k + k)] * w.value[size_t(n * c.k + k)];
      err += (s - ref[size_t(m * c.n + n)]) * (s - ref[size_t(m * c.n + n)]);
      norm += s * s;
    }
  EXPECT_LT(err / norm, 2e-3);
}
INSTANTIATE_TEST_SUITE_P(Ops, LinearFp8Case, ::testing::ValuesIn(op_cases_for(OpKind::kLinearFp8)),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- MoE ----------------------------------------------------------------------------------

double silu_d(double v) { return v / (1.0 + std::exp(-v)); }

class MoeFp8Case : public ::testing::TestWithParam<OpCase> {};

TEST_P(MoeFp8Case, MatchesPerTokenExpertSum) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  const int64_t m = c.m, h = c.n, inter = c.k, e = c.experts, ib = fp8_blocks(inter);
  const int k = c.top_k;
  HostTensor x = random_tensor(DType::kF32, {m, h}, rng, 0.01, 2.0);
  HostTensor logits = random_tensor(DType::kF32, {m, e}, rng, 0.05, 3.0);
  HostTensor bias = random_tensor(DType::kF32, {e}, rng, 0.01, 0.3);
  // Per-expert fp8 weights; the stacked layout holds the same codes and scales.
  std::vector<Fp8Weight> gw, uw, dw;
  for (int64_t i = 0; i < e; ++i) {
    gw.push_back(random_fp8_weight(inter, h, rng, 2e-3, 6e-3));
    uw.push_back(random_fp8_weight(inter, h, rng, 2e-3, 6e-3));
    dw.push_back(random_fp8_weight(h, inter, rng, 2e-3, 6e-3));
  }
  HostTensor w13(DType::kF8E4M3, {e, 2 * inter, h}), w2(DType::kF8E4M3, {e, h, inter});
  HostTensor w13s(DType::kF32, {e, 2 * ib, fp8_blocks(h)}), w2s(DType::kF32, {e, fp8_blocks(h), ib});
  std::vector<TensorView> g, u, d, gs, us, ds;
  const int64_t gsz = inter * h, ssz = ib * fp8_blocks(h);
  for (int64_t i = 0; i < e; ++i) {
    std::memcpy(w13.ptr<uint8_t>() + i * 2 * gsz, gw[size_t(i)].q.ptr<void>(), size_t(gsz));
    std::memcpy(w13.ptr<uint8_t>() + i * 2 * gsz + gsz, uw[size_t(i)].q.ptr<void>(), size_t(gsz));
    std::memcpy(w2.ptr<uint8_t>() + i * gsz, dw[size_t(i)].q.ptr<void>(), size_t(gsz));
    std::memcpy(w13s.ptr<float>() + i * 2 * ssz, gw[size_t(i)].scale.ptr<void>(), size_t(ssz) * 4);
    std::memcpy(w13s.ptr<float>() + i * 2 * ssz + ssz, uw[size_t(i)].scale.ptr<void>(), size_t(ssz) * 4);
    std::memcpy(w2s.ptr<float>() + i * ssz, dw[size_t(i)].scale.ptr<void>(), size_t(ssz) * 4);
    g.push_back(gw[size_t(i)].q);
    u.push_back(uw[size_t(i)].q);
    d.push_back(dw[size_t(i)].q);
    gs.push_back(gw[size_t(i)].scale);
    us.push_back(uw[size_t(i)].scale);
    ds.push_back(dw[size_t(i)].scale);
  }
  ExpertWeights stacked = ExpertWeights::stacked_fp8(w13, w13s, w2, w2s);
  ExpertWeights per = ExpertWeights::per_expert_fp8(g, u, d, gs, us, ds);
  ASSERT_TRUE(validate_expert_weights("t", stacked).ok());
  ASSERT_TRUE(validate_expert_weights("t", per).ok());
  RouteParams rp;
  rp.top_k = k;
  rp.scoring = c.scoring;
  rp.renormalize = c.renormalize;
  rp.renormalize_eps = c.correction_bias ? 1e-20f : 0.0f;
  rp.grouping = c.grouping;
  rp.n_group = c.n_group;
  rp.topk_group = c.topk_group;
  rp.routed_scaling_factor = c.routed_scaling_factor;
  if (c.correction_bias) rp.correction_bias = bias.view();
  MoeParams params{.route = rp, .pad_rows_to = c.pad_rows_to};
  ThreadPool pool(3);
  HostTensor out_a(DType::kF32, {m, h}), out_b(DType::kF32, {m, h});
  poison(out_a);
  poison(out_b);
  Status st = moe_forward(Context{}, x, logits, c.stacked ? stacked : per, params, out_a);
  ASSERT_TRUE(st.ok()) << st.message();
  st = moe_forward(Context{.pool = &pool}, x, logits, c.stacked ? per : stacked, params, out_b);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(std::memcmp(out_a.ptr<void>(), out_b.ptr<void>(), out_a.nbytes()), 0)
      << "stacked and per-expert layouts (and thread counts) must agree bit for bit";

  // Reference: the routing the op chose (routing itself is covered by ops_moe_test), then per
  // token sum_j w_j * down_q(quant(silu(gate_q quant(x)) * up_q quant(x))).
  HostTensor ids(DType::kI32, {m, k}), rw(DType::kF32, {m, k});
  ASSERT_TRUE(moe_route(Context{}, logits, rp, ids, rw).ok());
  std::vector<double> want(size_t(m * h), 0.0);
  for (int64_t t = 0; t < m; ++t) {
    const std::vector<double> xq = ref_quantize_row(row_of(x, t), nullptr);
    for (int j = 0; j < k; ++j) {
      const size_t ex = size_t(ids.ptr<int32_t>()[t * k + j]);
      std::vector<float> a(static_cast<size_t>(inter));
      for (int64_t i = 0; i < inter; ++i) {
        double gsum = 0, usum = 0;
        for (int64_t q = 0; q < h; ++q) {
          gsum += xq[size_t(q)] * gw[ex].value[size_t(i * h + q)];
          usum += xq[size_t(q)] * uw[ex].value[size_t(i * h + q)];
        }
        a[size_t(i)] = float(silu_d(gsum) * usum);
      }
      const std::vector<double> aq = ref_quantize_row(a, nullptr);
      for (int64_t q = 0; q < h; ++q) {
        double s = 0;
        for (int64_t i = 0; i < inter; ++i) s += aq[size_t(i)] * dw[ex].value[size_t(q * inter + i)];
        want[size_t(t * h + q)] += double(rw.ptr<float>()[t * k + j]) * s;
      }
    }
  }
  Comparison cmp = compare_values(out_a.ptr<float>(), want.data(), out_a.numel(), c.metric, c.tolerance);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
}
INSTANTIATE_TEST_SUITE_P(Ops, MoeFp8Case, ::testing::ValuesIn(op_cases_for(OpKind::kMoeForwardFp8)),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- quantisers ---------------------------------------------------------------------------

TEST(OpsFp8, ActivationQuantisationFollowsTheContract) {
  // K = 300: groups of 128, 128 and 44; row 1 has an all-zero group (scale from the floor).
  CaseRng rng("fp8_act");
  HostTensor x = random_tensor(DType::kF32, {3, 300}, rng, 0.001, 50.0);
  for (int64_t i = 128; i < 256; ++i) x.ptr<float>()[300 + i] = 0.0f;
  x.ptr<float>()[2 * 300 + 299] = -1e6f;  // a large value lands exactly on -448
  HostTensor q(DType::kF8E4M3, {3, 300}), s(DType::kF32, {3, 3});
  ThreadPool pool(2);
  ASSERT_TRUE(quantize_fp8_activations(Context{.pool = &pool}, x, q, s).ok());
  for (int64_t r = 0; r < 3; ++r) {
    std::vector<float> scales;
    const std::vector<double> deq = ref_quantize_row(row_of(x, r), &scales);
    for (int64_t g = 0; g < 3; ++g) EXPECT_EQ(s.ptr<float>()[r * 3 + g], scales[size_t(g)]) << r << "," << g;
    for (int64_t i = 0; i < 300; ++i)
      ASSERT_EQ(double(fp8e4m3_to_f32(q.ptr<uint8_t>()[r * 300 + i])) * scales[size_t(i / 128)], deq[size_t(i)])
          << "row " << r << " element " << i;
  }
  EXPECT_EQ(s.ptr<float>()[1 * 3 + 1], 1e-10f / 448.0f);
  EXPECT_EQ(q.ptr<uint8_t>()[2 * 300 + 299], 0xfe);  // -448
}

TEST(OpsFp8, WeightBlockQuantisationFollowsTheContract) {
  // N = 200, K = 130: partial last blocks in both dims; bf16 input.
  CaseRng rng("fp8_weight");
  HostTensor w = random_tensor(DType::kBF16, {200, 130}, rng, 0.001, 0.5);
  HostTensor q(DType::kF8E4M3, {200, 130}), s(DType::kF32, {2, 2});
  ThreadPool pool(3);
  ASSERT_TRUE(quantize_fp8_weight_blocks(Context{.pool = &pool}, w, q, s).ok());
  std::vector<double> wd = to_doubles(w);
  for (int64_t bi = 0; bi < 2; ++bi)
    for (int64_t bj = 0; bj < 2; ++bj) {
      double amax = 0;
      for (int64_t r = bi * 128; r < std::min<int64_t>(200, bi * 128 + 128); ++r)
        for (int64_t c = bj * 128; c < std::min<int64_t>(130, bj * 128 + 128); ++c)
          amax = std::max(amax, std::fabs(wd[size_t(r * 130 + c)]));
      const float want = float(amax) / 448.0f;
      ASSERT_EQ(s.ptr<float>()[bi * 2 + bj], want);
      for (int64_t r = bi * 128; r < std::min<int64_t>(200, bi * 128 + 128); ++r)
        for (int64_t c = bj * 128; c < std::min<int64_t>(130, bj * 128 + 128); ++c)
          ASSERT_EQ(double(fp8e4m3_to_f32(q.ptr<uint8_t>()[r * 130 + c])),
                    e4m3_round(double(float(wd[size_t(r * 130 + c)]) / want)))
              << r << "," << c;
    }
  // Round trip: the dequantised weight is within half an e4m3 step (1/16 relative) of w.
  HostTensor back(DType::kF32, {200, 130});
  ASSERT_TRUE(dequantize_fp8_weight_blocks(Context{}, q, s, back).ok());
  for (int64_t i = 0; i < back.numel(); ++i) {
    const double blk = s.ptr<float>()[(i / 130 / 128) * 2 + (i % 130) / 128];
    EXPECT_LE(std::fabs(back.ptr<float>()[i] - wd[size_t(i)]),
              std::max(std::fabs(wd[size_t(i)]) / 16.0, blk * std::ldexp(1.0, -10)) * 1.0001)
        << i;
  }
}

// ---- contract checks ----------------------------------------------------------------------

TEST(OpsFp8, ExpertScaleAccessorsFollowTheStackedLayout) {
  // I = 192 (two blocks), H = 200 (two blocks): gate blocks first, then up blocks.
  const int64_t e = 2, inter = 192, h = 200;
  HostTensor w13(DType::kF8E4M3, {e, 2 * inter, h}), w2(DType::kF8E4M3, {e, h, inter});
  HostTensor s13(DType::kF32, {e, 4, 2}), s2(DType::kF32, {e, 2, 2});
  for (int64_t i = 0; i < s13.numel(); ++i) s13.ptr<float>()[i] = float(i);
  for (int64_t i = 0; i < s2.numel(); ++i) s2.ptr<float>()[i] = float(100 + i);
  ExpertWeights w = ExpertWeights::stacked_fp8(w13, s13, w2, s2);
  ASSERT_TRUE(validate_expert_weights("t", w).ok());
  EXPECT_TRUE(w.is_fp8());
  EXPECT_EQ(w.gate_scale(1).shape, Shape({2, 2}));
  EXPECT_EQ(w.gate_scale(1).ptr<float>()[0], 8.0f);   // expert 1, block row 0
  EXPECT_EQ(w.up_scale(1).ptr<float>()[0], 12.0f);    // expert 1, block row IB = 2
  EXPECT_EQ(w.up_scale(0).ptr<float>()[3], 7.0f);
  EXPECT_EQ(w.down_scale(1).ptr<float>()[1], 105.0f);
}

TEST(OpsFp8, ValidationErrors) {
  HostTensor w13(DType::kF8E4M3, {2, 384, 200}), w2(DType::kF8E4M3, {2, 200, 192});
  HostTensor s13(DType::kF32, {2, 4, 2}), s2(DType::kF32, {2, 2, 2});
  HostTensor s13_bad(DType::kF32, {2, 3, 2}), s2_bf16(DType::kBF16, {2, 2, 2});
  EXPECT_EQ(validate_expert_weights("moe_experts", ExpertWeights::stacked(w13, w2)).message(),
            "moe_experts: w13_scale is missing");
  EXPECT_EQ(validate_expert_weights("moe_experts", ExpertWeights::stacked_fp8(w13, s13_bad, w2, s2)).message(),
            "moe_experts: w13_scale has shape [2, 3, 2], expected [2, 4, 2]");
  EXPECT_EQ(validate_expert_weights("moe_experts", ExpertWeights::stacked_fp8(w13, s13, w2, s2_bf16)).message(),
            "moe_experts: w2_scale has dtype bf16, expected f32");
  HostTensor b13(DType::kBF16, {2, 384, 200}), b2(DType::kBF16, {2, 200, 192});
  EXPECT_EQ(validate_expert_weights("moe_experts", ExpertWeights::stacked_fp8(b13, s13, b2, s2)).message(),
            "moe_experts: w13_scale / w2_scale given for bf16 (not fp8) expert weights");
  EXPECT_EQ(validate_expert_weights("moe_experts", ExpertWeights::stacked(w13, b2)).message(),
            "moe_experts: w13 is fp8_e4m3 but w2 is bf16 (all or none are fp8)");
  // Per expert: one scale of the wrong shape names the expert's tensor.
  HostTensor g(DType::kF8E4M3, {192, 200}), u(DType::kF8E4M3, {192, 200}), d(DType::kF8E4M3, {200, 192});
  HostTensor gs(DType::kF32, {2, 2}), ds(DType::kF32, {2, 3});
  EXPECT_EQ(validate_expert_weights("moe_experts",
                                    ExpertWeights::per_expert_fp8({g}, {u}, {d}, {gs}, {gs}, {ds}))
                .message(),
            "moe_experts: experts.0.down_proj.weight_scale_inv has shape [2, 3], expected [2, 2]");
  // linear
  HostTensor x(DType::kF32, {2, 200}), wq(DType::kF8E4M3, {192, 200}), y(DType::kF32, {2, 192});
  HostTensor ws(DType::kF32, {2, 2}), ws_bad(DType::kF32, {1, 2}), wb(DType::kBF16, {192, 200});
  EXPECT_EQ(linear(Context{}, x, wq, std::nullopt, y).message(),
            "linear: fp8 weight [192, 200] has no block scale (weight_scale_inv)");
  EXPECT_EQ(linear(Context{}, x, LinearWeight(wq, ws_bad.view()), std::nullopt, y).message(),
            "linear: weight_scale has shape [1, 2], expected [2, 2]");
  EXPECT_EQ(linear(Context{}, x, LinearWeight(wb, ws.view()), std::nullopt, y).message(),
            "linear: a block scale was given for a bf16 (not fp8) weight");
  EXPECT_TRUE(linear(Context{}, x, LinearWeight(wq, ws.view()), std::nullopt, y).ok());
}

}  // namespace
}  // namespace moeopt::ops
