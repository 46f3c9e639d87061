// MoE ops against naive double-precision references written here: routing by sorting every
// expert (not a partial top-k), group masking written out per group, the permutation as
// per-expert lists, and the MoE layer as a per-token sum over its k experts (no permutation
// at all). Plus torch.topk tie semantics, Mixtral's softmax-of-selected-logits equivalence,
// stacked vs per-expert weights, and validation errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/moe.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::ops {
namespace {

struct RefRoute {
  std::vector<int32_t> ids;     // [M, k]
  std::vector<double> weights;  // [M, k]
  std::vector<double> choice;   // [M, E] selection scores
};

// Experts ranked by (value desc, id asc).
std::vector<int32_t> ranked(const double* v, int32_t n) {
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
  return idx;
}

RefRoute ref_route(const std::vector<double>& logits, int64_t m_rows, const OpCase& c,
                   const std::vector<double>& bias) {
  const int32_t e = c.experts, k = c.top_k;
  RefRoute r;
  for (int64_t m = 0; m < m_rows; ++m) {
    const double* l = logits.data() + m * e;
    std::vector<double> s(static_cast<size_t>(e)), ch(static_cast<size_t>(e));
    if (c.scoring == RouterScoring::kSoftmax) {
      double sum = 0;
      for (int32_t i = 0; i < e; ++i) sum += std::exp(l[i]);
      for (int32_t i = 0; i < e; ++i) s[size_t(i)] = std::exp(l[i]) / sum;
    } else {
      for (int32_t i = 0; i < e; ++i) s[size_t(i)] = 1.0 / (1.0 + std::exp(-l[i]));
    }
    for (int32_t i = 0; i < e; ++i) ch[size_t(i)] = s[size_t(i)] + (bias.empty() ? 0.0 : bias[size_t(i)]);
    if (c.grouping != ExpertGrouping::kNone) {
      const int32_t gs = e / c.n_group;
      std::vector<double> gscore(static_cast<size_t>(c.n_group));
      for (int32_t g = 0; g < c.n_group; ++g) {
        std::vector<double> members(ch.begin() + g * gs, ch.begin() + (g + 1) * gs);
        std::sort(members.rbegin(), members.rend());
        gscore[size_t(g)] = c.grouping == ExpertGrouping::kMaxScore ? members[0] : members[0] + members[1];
      }
      std::vector<int32_t> gr = ranked(gscore.data(), c.n_group);
      for (int32_t g = 0; g < c.n_group; ++g) {
        const bool kept = std::find(gr.begin(), gr.begin() + c.topk_group, g) != gr.begin() + c.topk_group;
        if (!kept)
          for (int32_t i = g * gs; i < (g + 1) * gs; ++i) ch[size_t(i)] = 0.0;
      }
    }
    std::vector<int32_t> order = ranked(ch.data(), e);
    double sum = 0;
    for (int32_t j = 0; j < k; ++j) sum += s[size_t(order[size_t(j)])];
    for (int32_t j = 0; j < k; ++j) {
      r.ids.push_back(order[size_t(j)]);
      double w = s[size_t(order[size_t(j)])];
      if (c.renormalize) w /= (sum + (c.correction_bias ? 1e-20 : 0.0));
      r.weights.push_back(w * c.routed_scaling_factor);
    }
    r.choice.insert(r.choice.end(), ch.begin(), ch.end());
  }
  return r;
}

RouteParams params_for(const OpCase& c, const HostTensor& bias) {
  RouteParams p;
  p.top_k = c.top_k;
  p.scoring = c.scoring;
  p.renormalize = c.renormalize;
  p.grouping = c.grouping;
  p.n_group = c.n_group;
  p.topk_group = c.topk_group;
  p.routed_scaling_factor = c.routed_scaling_factor;
  if (c.correction_bias) {
    p.correction_bias = bias.view();
    p.renormalize_eps = 1e-20f;
  }
  return p;
}

// Weights of `got` ids looked up in the reference by id (sets already compared).
void expect_weights_match(const int32_t* ids, const float* w, const RefRoute& ref, int64_t rows, int k) {
  for (int64_t m = 0; m < rows; ++m)
    for (int j = 0; j < k; ++j) {
      const int32_t id = ids[m * k + j];
      for (int jj = 0; jj < k; ++jj)
        if (ref.ids[size_t(m * k + jj)] == id) {
          EXPECT_NEAR(w[m * k + j], ref.weights[size_t(m * k + jj)], 2e-6 * (1 + std::fabs(ref.weights[size_t(m * k + jj)])))
              << "row " << m << " expert " << id;
        }
    }
}

class RouteCase : public ::testing::TestWithParam<OpCase> {};

TEST_P(RouteCase, MatchesSortedReference) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  HostTensor logits = random_tensor(DType::kF32, {c.m, c.experts}, rng, 0.05, 4.0);
  HostTensor bias = random_tensor(DType::kF32, {c.experts}, rng, 0.01, 0.3);
  RouteParams p = params_for(c, bias);
  ThreadPool pool(3);
  HostTensor ids[2] = {HostTensor(DType::kI32, {c.m, c.top_k}), HostTensor(DType::kI32, {c.m, c.top_k})};
  HostTensor w[2] = {HostTensor(DType::kF32, {c.m, c.top_k}), HostTensor(DType::kF32, {c.m, c.top_k})};
  for (int i = 0; i < 2; ++i) {
    poison(ids[i]);
    poison(w[i]);
    Status st = moe_route(Context{.pool = i ? &pool : nullptr}, logits, p, ids[i], w[i]);
    ASSERT_TRUE(st.ok()) << st.message();
  }
  EXPECT_EQ(std::memcmp(ids[0].ptr<void>(), ids[1].ptr<void>(), ids[0].nbytes()), 0);
  EXPECT_EQ(std::memcmp(w[0].ptr<void>(), w[1].ptr<void>(), w[0].nbytes()), 0);
  RefRoute ref = ref_route(to_doubles(logits), c.m, c, c.correction_bias ? to_doubles(bias) : std::vector<double>{});
  Comparison cmp = compare_topk_sets(ids[0].ptr<int32_t>(), ref.ids.data(), ref.choice.data(), c.m,
                                     c.top_k, c.experts, c.tolerance);
  ASSERT_TRUE(cmp.ok) << cmp.detail;
  expect_weights_match(ids[0].ptr<int32_t>(), w[0].ptr<float>(), ref, c.m, c.top_k);
  // Entries come sorted by selection score, largest first.
  for (int64_t m = 0; m < c.m; ++m)
    for (int j = 1; j < c.top_k; ++j)
      EXPECT_GE(ref.choice[size_t(m * c.experts + ids[0].ptr<int32_t>()[m * c.top_k + j - 1])],
                ref.choice[size_t(m * c.experts + ids[0].ptr<int32_t>()[m * c.top_k + j])]);
}
INSTANTIATE_TEST_SUITE_P(Ops, RouteCase, ::testing::ValuesIn(op_cases_for(OpKind::kMoeRoute)),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(OpsMoe, RouteTiesGoToTheLowestExpertId) {
  // torch.topk on the CPU returns equal values lowest index first.
  HostTensor logits(DType::kF32, {3, 6});
  const float rows[3][6] = {{0, 0, 0, 0, 0, 0}, {1, 5, 5, 2, 5, 5}, {-1, 3, -1, 3, 0, 3}};
  std::memcpy(logits.ptr<void>(), rows, sizeof(rows));
  HostTensor ids(DType::kI32, {3, 3}), w(DType::kF32, {3, 3});
  RouteParams p;
  p.top_k = 3;
  ASSERT_TRUE(moe_route(Context{}, logits, p, ids, w).ok());
  const int32_t want[3][3] = {{0, 1, 2}, {1, 2, 4}, {1, 3, 5}};
  for (int m = 0; m < 3; ++m)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(ids.ptr<int32_t>()[m * 3 + j], want[m][j]) << m << "," << j;
  EXPECT_FLOAT_EQ(w.ptr<float>()[0], 1.0f / 6.0f);
  // Group ties: 4 groups of 2, all group scores equal -> groups 0 and 1 are kept.
  HostTensor flat(DType::kF32, {1, 8});
  HostTensor gi(DType::kI32, {1, 4}), gw(DType::kF32, {1, 4});
  RouteParams gp;
  gp.top_k = 4;
  gp.grouping = ExpertGrouping::kMaxScore;
  gp.n_group = 4;
  gp.topk_group = 2;
  ASSERT_TRUE(moe_route(Context{}, flat, gp, gi, gw).ok());
  for (int j = 0; j < 4; ++j) EXPECT_EQ(gi.ptr<int32_t>()[j], j);
}

// DeepSeek-V3's noaux_tc, worked by hand: 8 experts in 4 groups of 2, sigmoid scores s,
// the bias lifts expert 6. choice = s + b = [.9 .1 | .6 .6 | .7 .2 | .8 .3]; top-2 sums per
// group 1.0, 1.2, 0.9, 1.1 -> groups 1 and 3 stay, so expert 0 (the best single score) is
// out; top-2 of {2: .6, 3: .6, 6: .8, 7: .3} = 6, then 2 (tie with 3: lower id). Weights are
// the unbiased scores .3 and .6, renormalised and scaled by 2.5.
TEST(OpsMoe, RouteNoauxTcByHand) {
  const float s[8] = {0.9f, 0.1f, 0.6f, 0.6f, 0.7f, 0.2f, 0.3f, 0.3f};
  HostTensor logits(DType::kF32, {1, 8}), bias(DType::kF32, {8});
  for (int i = 0; i < 8; ++i) {
    logits.ptr<float>()[i] = std::log(s[i] / (1.0f - s[i]));  // sigmoid^-1
    bias.ptr<float>()[i] = i == 6 ? 0.5f : 0.0f;
  }
  HostTensor ids(DType::kI32, {1, 2}), w(DType::kF32, {1, 2});
  RouteParams p;
  p.top_k = 2;
  p.scoring = RouterScoring::kSigmoid;
  p.grouping = ExpertGrouping::kTop2Sum;
  p.n_group = 4;
  p.topk_group = 2;
  p.renormalize = true;
  p.renormalize_eps = 1e-20f;
  p.routed_scaling_factor = 2.5f;
  p.correction_bias = bias.view();
  ASSERT_TRUE(moe_route(Context{}, logits, p, ids, w).ok());
  EXPECT_EQ(ids.ptr<int32_t>()[0], 6);
  EXPECT_EQ(ids.ptr<int32_t>()[1], 2);
  EXPECT_NEAR(w.ptr<float>()[0], 0.3 / 0.9 * 2.5, 1e-6);
  EXPECT_NEAR(w.ptr<float>()[1], 0.6 / 0.9 * 2.5, 1e-6);
  // Without the bias group 3 sums to 0.6, so groups 1 and 0 stay: experts 0 and 2 win.
  p.correction_bias.reset();
  ASSERT_TRUE(moe_route(Context{}, logits, p, ids, w).ok());
  EXPECT_EQ(ids.ptr<int32_t>()[0], 0);
  EXPECT_EQ(ids.ptr<int32_t>()[1], 2);
  EXPECT_NEAR(w.ptr<float>()[0], 0.9 / 1.5 * 2.5, 1e-6);
}

// DeepSeek-V2's group_limited_greedy, worked by hand: softmax of log(p) is p =
// [.30 .02 | .12 .16 | .05 .05 | .20 .10]; group maxima .30, .16, .05, .20 -> groups 0 and 3;
// top-3 of {0: .30, 1: .02, 6: .20, 7: .10} = 0, 6, 7 (plain greedy would take 3 before 7);
// weights p * routed_scaling_factor 16, not renormalised.
TEST(OpsMoe, RouteGroupLimitedGreedyByHand) {
  const double pr[8] = {0.30, 0.02, 0.12, 0.16, 0.05, 0.05, 0.20, 0.10};
  HostTensor logits(DType::kF32, {1, 8});
  for (int i = 0; i < 8; ++i) logits.ptr<float>()[i] = float(std::log(pr[i]));
  HostTensor ids(DType::kI32, {1, 3}), w(DType::kF32, {1, 3});
  RouteParams p;
  p.top_k = 3;
  p.grouping = ExpertGrouping::kMaxScore;
  p.n_group = 4;
  p.topk_group = 2;
  p.routed_scaling_factor = 16.0f;
  ASSERT_TRUE(moe_route(Context{}, logits, p, ids, w).ok());
  const int32_t want[3] = {0, 6, 7};
  for (int j = 0; j < 3; ++j) {
    EXPECT_EQ(ids.ptr<int32_t>()[j], want[j]) << j;
    EXPECT_NEAR(w.ptr<float>()[j], pr[want[j]] * 16.0, 1e-5) << j;
  }
  p.grouping = ExpertGrouping::kNone;
  ASSERT_TRUE(moe_route(Context{}, logits, p, ids, w).ok());
  EXPECT_EQ(ids.ptr<int32_t>()[2], 3);
}

TEST(OpsMoe, RenormalisedSoftmaxEqualsMixtralSoftmaxOverSelectedLogits) {
  // Mixtral's original router: top-k on the logits, then softmax over those k logits.
  CaseRng rng("mixtral");
  const int64_t m = 16, e = 8;
  const int k = 2;
  HostTensor logits = random_tensor(DType::kF32, {m, e}, rng, 0.05, 3.0);
  HostTensor ids(DType::kI32, {m, k}), w(DType::kF32, {m, k});
  RouteParams p;
  p.top_k = k;
  p.renormalize = true;
  ASSERT_TRUE(moe_route(Context{}, logits, p, ids, w).ok());
  std::vector<double> l = to_doubles(logits);
  for (int64_t r = 0; r < m; ++r) {
    std::vector<int32_t> order = ranked(l.data() + r * e, int32_t(e));
    const double a = l[size_t(r * e + order[0])], b = l[size_t(r * e + order[1])];
    const double wa = 1.0 / (1.0 + std::exp(b - a));
    EXPECT_EQ(ids.ptr<int32_t>()[r * k], order[0]);
    EXPECT_EQ(ids.ptr<int32_t>()[r * k + 1], order[1]);
    EXPECT_NEAR(w.ptr<float>()[r * k], wa, 1e-6);
    EXPECT_NEAR(w.ptr<float>()[r * k + 1], 1.0 - wa, 1e-6);
  }
}

// Distinct random experts per token.
HostTensor random_ids(int64_t m, int k, int e, CaseRng& rng) {
  HostTensor ids(DType::kI32, {m, k});
  for (int64_t r = 0; r < m; ++r) {
    std::vector<int32_t> all(static_cast<size_t>(e));
    std::iota(all.begin(), all.end(), 0);
    for (int j = 0; j < k; ++j) {
      std::swap(all[size_t(j)], all[size_t(j + rng.below(e - j))]);
      ids.ptr<int32_t>()[r * k + j] = all[size_t(j)];
    }
  }
  return ids;
}

class PermuteCase : public ::testing::TestWithParam<OpCase> {};

TEST_P(PermuteCase, MatchesPerExpertLists) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  const int64_t m = c.m, e = c.experts;
  const int k = c.top_k;
  HostTensor ids = random_ids(m, k, c.experts, rng);
  HostTensor w = random_tensor(DType::kF32, {m, k}, rng);
  const int64_t cap = moe_permuted_capacity(m, k, e, c.pad_rows_to);
  HostTensor counts(DType::kI32, {e}), offsets(DType::kI32, {e + 1}), row_token(DType::kI32, {cap});
  HostTensor row_w(DType::kF32, {cap}), inv(DType::kI32, {m, k});
  for (const HostTensor* t : {&counts, &offsets, &row_token, &row_w, &inv}) poison(*t);
  MoePermutation perm{counts, offsets, row_token, row_w, inv};
  ASSERT_TRUE(moe_permute(Context{}, ids, w, e, c.pad_rows_to, perm).ok());
  // Reference: per-expert lists of (token, j) in token order.
  std::vector<std::vector<std::pair<int32_t, int>>> lists(static_cast<size_t>(e));
  for (int64_t r = 0; r < m; ++r)
    for (int j = 0; j < k; ++j) lists[size_t(ids.ptr<int32_t>()[r * k + j])].push_back({int32_t(r), j});
  int64_t off = 0;
  for (int64_t x = 0; x < e; ++x) {
    const auto& l = lists[size_t(x)];
    ASSERT_EQ(counts.ptr<int32_t>()[x], int32_t(l.size())) << "expert " << x;
    ASSERT_EQ(offsets.ptr<int32_t>()[x], off) << "expert " << x;
    const int64_t padded = (int64_t(l.size()) + c.pad_rows_to - 1) / c.pad_rows_to * c.pad_rows_to;
    for (int64_t i = 0; i < padded; ++i) {
      const int64_t row = off + i;
      if (i < int64_t(l.size())) {
        EXPECT_EQ(row_token.ptr<int32_t>()[row], l[size_t(i)].first);
        EXPECT_EQ(row_w.ptr<float>()[row], w.ptr<float>()[l[size_t(i)].first * k + l[size_t(i)].second]);
        EXPECT_EQ(inv.ptr<int32_t>()[l[size_t(i)].first * k + l[size_t(i)].second], row);
      } else {
        EXPECT_EQ(row_token.ptr<int32_t>()[row], -1);
        EXPECT_EQ(row_w.ptr<float>()[row], 0.0f);
      }
    }
    off += padded;
  }
  EXPECT_EQ(offsets.ptr<int32_t>()[e], off);
  for (int64_t row = off; row < cap; ++row) EXPECT_EQ(row_token.ptr<int32_t>()[row], -1);
}
INSTANTIATE_TEST_SUITE_P(Ops, PermuteCase, ::testing::ValuesIn(op_cases_for(OpKind::kMoePermute)),
                         [](const auto& info) { return std::string(info.param.name); });

double silu_d(double v) { return v / (1.0 + std::exp(-v)); }

class MoeForwardCase : public ::testing::TestWithParam<OpCase> {};

TEST_P(MoeForwardCase, MatchesPerTokenExpertSum) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  const int64_t m = c.m, h = c.n, inter = c.k, e = c.experts;
  const int k = c.top_k;
  HostTensor x = random_tensor(DType::kF32, {m, h}, rng);
  HostTensor logits = random_tensor(DType::kF32, {m, e}, rng, 0.05, 3.0);
  HostTensor bias = random_tensor(DType::kF32, {e}, rng, 0.01, 0.3);
  HostTensor w13 = random_tensor(c.weight_dtype, {e, 2 * inter, h}, rng, 0.01, 0.3);
  HostTensor w2 = random_tensor(c.weight_dtype, {e, h, inter}, rng, 0.01, 0.3);
  // Per-expert layout: separate tensors holding the same values.
  std::vector<HostTensor> own;
  std::vector<TensorView> g, u, dn;
  const size_t esz = dtype_size(c.weight_dtype);
  for (int64_t i = 0; i < e; ++i) {
    own.emplace_back(c.weight_dtype, Shape{inter, h});
    std::memcpy(own.back().ptr<void>(), w13.ptr<char>() + i * 2 * inter * h * esz, size_t(inter * h) * esz);
    g.push_back(own.back());
    own.emplace_back(c.weight_dtype, Shape{inter, h});
    std::memcpy(own.back().ptr<void>(), w13.ptr<char>() + (i * 2 + 1) * inter * h * esz, size_t(inter * h) * esz);
    u.push_back(own.back());
    own.emplace_back(c.weight_dtype, Shape{h, inter});
    std::memcpy(own.back().ptr<void>(), w2.ptr<char>() + i * h * inter * esz, size_t(h * inter) * esz);
    dn.push_back(own.back());
  }
  ExpertWeights stacked = ExpertWeights::stacked(w13, w2);
  ExpertWeights per = ExpertWeights::per_expert(g, u, dn);
  MoeParams params{.route = params_for(c, bias), .pad_rows_to = c.pad_rows_to};
  ThreadPool pool(3);
  HostTensor out_stacked(DType::kF32, {m, h}), out_per(DType::kF32, {m, h});
  poison(out_stacked);
  poison(out_per);
  ASSERT_TRUE(moe_forward(Context{}, x, logits, c.stacked ? stacked : per, params, out_stacked).ok());
  Status st = moe_forward(Context{.pool = &pool}, x, logits, c.stacked ? per : stacked, params, out_per);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(std::memcmp(out_stacked.ptr<void>(), out_per.ptr<void>(), out_per.nbytes()), 0)
      << "stacked and per-expert layouts (and thread counts) must agree bit for bit";

  // The same pipeline op by op, every output poisoned first: all of it must be written.
  const int64_t cap = moe_permuted_capacity(m, k, e, c.pad_rows_to);
  HostTensor ids(DType::kI32, {m, k}), rw(DType::kF32, {m, k}), counts(DType::kI32, {e});
  HostTensor offsets(DType::kI32, {e + 1}), row_token(DType::kI32, {cap}), row_w(DType::kF32, {cap});
  HostTensor inv(DType::kI32, {m, k}), rows(DType::kF32, {cap, h}), out(DType::kF32, {m, h});
  for (const HostTensor* t : {&ids, &rw, &counts, &offsets, &row_token, &row_w, &inv, &rows, &out}) poison(*t);
  ASSERT_TRUE(moe_route(Context{}, logits, params.route, ids, rw).ok());
  MoePermutation perm{counts, offsets, row_token, row_w, inv};
  ASSERT_TRUE(moe_permute(Context{}, ids, rw, e, c.pad_rows_to, perm).ok());
  ASSERT_TRUE(moe_experts(Context{}, x, stacked, perm, rows).ok());
  for (int64_t i = 0; i < rows.numel(); ++i) ASSERT_FALSE(std::isnan(rows.ptr<float>()[i])) << "row element " << i;
  for (int64_t r = 0; r < cap; ++r)
    if (row_token.ptr<int32_t>()[r] < 0) {
      for (int64_t j = 0; j < h; ++j) ASSERT_EQ(rows.ptr<float>()[r * h + j], 0.0f) << "padding row " << r;
    }
  ASSERT_TRUE(moe_combine(Context{}, rows, inv, out).ok());
  EXPECT_EQ(std::memcmp(out.ptr<void>(), out_stacked.ptr<void>(), out.nbytes()), 0);

  // Reference: route in double, then per token sum_j w_j * down(silu(gate x) * up x).
  RefRoute ref = ref_route(to_doubles(logits), m, c, c.correction_bias ? to_doubles(bias) : std::vector<double>{});
  Comparison sets = compare_topk_sets(ids.ptr<int32_t>(), ref.ids.data(), ref.choice.data(), m, k, e, 1e-6);
  ASSERT_TRUE(sets.ok) << sets.detail;
  std::vector<double> xd = to_doubles(x), w13d = to_doubles(w13), w2d = to_doubles(w2), want(static_cast<size_t>(m * h), 0.0);
  for (int64_t t = 0; t < m; ++t)
    for (int j = 0; j < k; ++j) {
      const int64_t ex = ref.ids[size_t(t * k + j)];
      std::vector<double> a(static_cast<size_t>(inter));
      for (int64_t i = 0; i < inter; ++i) {
        double gs = 0, us = 0;
        for (int64_t q = 0; q < h; ++q) {
          gs += xd[size_t(t * h + q)] * w13d[size_t((ex * 2 * inter + i) * h + q)];
          us += xd[size_t(t * h + q)] * w13d[size_t((ex * 2 * inter + inter + i) * h + q)];
        }
        a[size_t(i)] = silu_d(gs) * us;
      }
      for (int64_t q = 0; q < h; ++q) {
        double s = 0;
        for (int64_t i = 0; i < inter; ++i) s += a[size_t(i)] * w2d[size_t((ex * h + q) * inter + i)];
        want[size_t(t * h + q)] += ref.weights[size_t(t * k + j)] * s;
      }
    }
  Comparison cmp = compare_values(out_stacked.ptr<float>(), want.data(), out_stacked.numel(), c.metric, c.tolerance);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
}
INSTANTIATE_TEST_SUITE_P(Ops, MoeForwardCase, ::testing::ValuesIn(op_cases_for(OpKind::kMoeForward)),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(OpsMoe, ValidationErrors) {
  HostTensor logits(DType::kF32, {2, 600}), ids(DType::kI32, {2, 4}), w(DType::kF32, {2, 4});
  RouteParams p;
  p.top_k = 4;
  EXPECT_EQ(moe_route(Context{}, logits, p, ids, w).message(), "moe_route: 600 experts, supported 1..512");
  HostTensor l8(DType::kF32, {2, 8});
  p.top_k = 33;
  EXPECT_FALSE(moe_route(Context{}, l8, p, ids, w).ok());
  p.top_k = 4;
  p.grouping = ExpertGrouping::kTop2Sum;
  p.n_group = 3;  // does not divide 8
  EXPECT_FALSE(moe_route(Context{}, l8, p, ids, w).ok());
  HostTensor w13(DType::kBF16, {4, 6, 8}), w2bad(DType::kBF16, {4, 8, 4});
  Status st = validate_expert_weights("moe_experts", ExpertWeights::stacked(w13, w2bad));
  EXPECT_EQ(st.message(), "moe_experts: w2 has shape [4, 8, 4], expected [4, 8, 3]");
  // expert id out of range in permute
  HostTensor bad_ids(DType::kI32, {1, 1}), bw(DType::kF32, {1, 1});
  bad_ids.ptr<int32_t>()[0] = 9;
  HostTensor counts(DType::kI32, {4}), offsets(DType::kI32, {5}), rt(DType::kI32, {1}), rwt(DType::kF32, {1}), inv(DType::kI32, {1, 1});
  st = moe_permute(Context{}, bad_ids, bw, 4, 1, MoePermutation{counts, offsets, rt, rwt, inv});
  EXPECT_EQ(st.message(), "moe_permute: expert_ids[0][0] = 9 is outside [0, 4)");
}

}  // namespace
}  // namespace moeopt::ops
