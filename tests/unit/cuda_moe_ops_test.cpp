// The CUDA MoE ops (backend/cuda/cuda_backend.h) against the CPU op oracle (backend/cpu via
// ops/moe.h): the op-case table's MoE cases (ops/op_cases.h) plus GPU cases at the shapes of
// the fused-MoE issue: Qwen3-30B-A3B (H 2048, I 768, E 128, k 8), Qwen3-235B (4096, 1536,
// 128, 8), Mixtral (4096, 14336, 8, 2), DeepSeek-V3 routed experts (7168, 2048, 256, 8, with
// its sigmoid + bias + grouped routing) and small odd shapes, k in {1, 2, 5, 8, 32}, M = 1 and
// experts that get no tokens.
//
// How each op is judged:
//   moe_route   ids compared as sets with the CPU (ties within 1e-6 of the k-th selection
//               score may swap, duplicates fail), order by selection score, weights within
//               1e-5 of the CPU's for the same expert;
//   moe_permute bit-exact against the CPU for every output element (poisoned first);
//   moe_experts / moe_combine / moe_forward: normalised MSE against the CPU oracle run on the
//               same bf16-rounded inputs (kBf16Nmse: the GPU keeps h and the rows in bf16),
//               padding and tail rows exactly zero.
// Cases the grouped GEMMs do not take (per-expert tensors, f16/f32 weights, H or I not a
// multiple of 8) run moe_forward through its repacking path and must match the CPU too;
// moe_experts answers them with a clean kUnsupported.
// Every test skips without a CUDA device. Run: build/tests/test_cuda --gtest_filter='CudaMoeOps*'
#include <gtest/gtest.h>

#if MOEOPT_HAVE_CUDA

#include <cuda_runtime.h>

#include "cuda_test_support.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/moe.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::ops {
namespace {

// bf16 rounding of h and of the rows: ~2^-9 relative per element, NMSE ~1e-6; 20x margin.
constexpr double kBf16Nmse = 2e-5;

ThreadPool& pool() {
  static ThreadPool p(0);
  return p;
}

// Owning device tensor.
class DevTensor {
 public:
  DevTensor(DType dtype, const Shape& shape) {
    const size_t bytes = std::max<size_t>(16, size_t(shape.numel()) * dtype_size(dtype));
    if (cudaMalloc(&p_, bytes) != cudaSuccess) p_ = nullptr;
    v_ = TensorView::contiguous(p_, dtype, shape, Device::kCuda);
  }
  explicit DevTensor(const TensorView& host) : DevTensor(host.dtype, host.shape) {
    if (p_ != nullptr) cudaMemcpy(p_, host.data, host.nbytes(), cudaMemcpyHostToDevice);
  }
  ~DevTensor() { cudaFree(p_); }
  DevTensor(const DevTensor&) = delete;
  DevTensor& operator=(const DevTensor&) = delete;
  operator TensorView() const { return v_; }  // NOLINT
  const TensorView& view() const { return v_; }
  bool ok() const { return p_ != nullptr; }
  void poison() { cudaMemset(p_, 0x7f, v_.nbytes()); }  // ints 0x7f7f7f7f, floats 3.4e38
  HostTensor download() const {
    HostTensor h(v_.dtype, v_.shape);
    cudaMemcpy(h.ptr<void>(), p_, v_.nbytes(), cudaMemcpyDeviceToHost);
    return h;
  }

 private:
  void* p_ = nullptr;
  TensorView v_;
};

// Random tensor in +-[lo, hi] filled in parallel (the shapes have up to 11e9 weights).
HostTensor random_fast(DType dtype, const Shape& shape, const std::string& seed, double lo,
                       double hi) {
  HostTensor t(dtype, shape);
  const uint64_t base = CaseRng(seed).next();
  constexpr int64_t kChunk = 1 << 16;
  const int64_t n = t.numel(), chunks = (n + kChunk - 1) / kChunk;
  pool().parallel_for(chunks, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      CaseRng rng(base ^ (uint64_t(c) * 0x9e3779b97f4a7c15ull));
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i)
        store_from_f32(t.ptr<void>(), dtype, i, float(rng.nonzero(lo, hi)));
    }
  });
  return t;
}

// A copy of a host tensor in another float dtype.
HostTensor converted(const HostTensor& src, DType dtype) {
  HostTensor t(dtype, src.shape());
  for (int64_t i = 0; i < src.numel(); ++i)
    store_from_f32(t.ptr<void>(), dtype, i, load_as_f32(src.ptr<void>(), src.dtype(), i));
  return t;
}

RouteParams route_params(const OpCase& c, const TensorView* bias) {
  RouteParams p;
  p.top_k = c.top_k;
  p.scoring = c.scoring;
  p.renormalize = c.renormalize;
  p.grouping = c.grouping;
  p.n_group = c.n_group;
  p.topk_group = c.topk_group;
  p.routed_scaling_factor = c.routed_scaling_factor;
  if (c.correction_bias && bias != nullptr) {
    p.correction_bias = *bias;
    p.renormalize_eps = 1e-20f;
  }
  return p;
}

// Selection scores in double (scores + bias, group masking) for compare_topk_sets.
std::vector<double> choice_scores(const HostTensor& logits, const HostTensor& bias,
                                  const OpCase& c) {
  const int64_t m = logits.shape()[0], e = c.experts;
  std::vector<double> l = to_doubles(logits), b = to_doubles(bias), out(size_t(m * e));
  for (int64_t r = 0; r < m; ++r) {
    double* ch = out.data() + r * e;
    const double* lr = l.data() + r * e;
    const double mx = *std::max_element(lr, lr + e);
    double sum = 0;
    for (int64_t i = 0; i < e; ++i) sum += std::exp(lr[i] - mx);
    for (int64_t i = 0; i < e; ++i) {
      const double s = c.scoring == RouterScoring::kSoftmax ? std::exp(lr[i] - mx) / sum
                                                             : 1.0 / (1.0 + std::exp(-lr[i]));
      ch[i] = s + (c.correction_bias ? b[size_t(i)] : 0.0);
    }
    if (c.grouping == ExpertGrouping::kNone) continue;
    const int64_t gs = e / c.n_group;
    std::vector<std::pair<double, int>> gscore;
    for (int g = 0; g < c.n_group; ++g) {
      std::vector<double> mem(ch + g * gs, ch + (g + 1) * gs);
      std::sort(mem.rbegin(), mem.rend());
      gscore.push_back({-(c.grouping == ExpertGrouping::kMaxScore ? mem[0] : mem[0] + mem[1]), g});
    }
    std::sort(gscore.begin(), gscore.end());  // best first, ties lowest group id
    std::vector<char> keep(size_t(c.n_group), 0);
    for (int t = 0; t < c.topk_group; ++t) keep[size_t(gscore[size_t(t)].second)] = 1;
    for (int64_t i = 0; i < e; ++i)
      if (!keep[size_t(i / gs)]) ch[i] = 0.0;
  }
  return out;
}

// ---------------------------------------------------------------- cases

std::vector<OpCase> route_cases() {
  std::vector<OpCase> c = op_cases_for(OpKind::kMoeRoute);
  using S = RouterScoring;
  using G = ExpertGrouping;
  auto add = [&](OpCase x) {
    x.op = OpKind::kMoeRoute;
    x.metric = Metric::kTopkSet;
    x.tolerance = 1e-6;
    c.push_back(x);
  };
  add({.name = "gpu_route_qwen3_30b_m1", .m = 1, .experts = 128, .top_k = 8, .renormalize = true});
  add({.name = "gpu_route_qwen3_k1_m333", .m = 333, .experts = 128, .top_k = 1});
  add({.name = "gpu_route_mixtral_k2", .m = 70, .experts = 8, .top_k = 2, .renormalize = true});
  add({.name = "gpu_route_k5_e33", .m = 41, .experts = 33, .top_k = 5});
  add({.name = "gpu_route_k32_e256_m3000", .m = 3000, .experts = 256, .top_k = 32,
       .renormalize = true});
  add({.name = "gpu_route_deepseek_v3_e256", .m = 97, .experts = 256, .top_k = 8,
       .scoring = S::kSigmoid, .grouping = G::kTop2Sum, .n_group = 8, .topk_group = 4,
       .renormalize = true, .correction_bias = true, .routed_scaling_factor = 2.5f});
  add({.name = "gpu_route_deepseek_v2_e160", .m = 17, .experts = 160, .top_k = 6,
       .grouping = G::kMaxScore, .n_group = 8, .topk_group = 3, .routed_scaling_factor = 16.f});
  add({.name = "gpu_route_groups_of_one_e512", .m = 5, .experts = 512, .top_k = 32,
       .scoring = S::kSigmoid, .grouping = G::kMaxScore, .n_group = 512, .topk_group = 40,
       .correction_bias = true});
  return c;
}

std::vector<OpCase> permute_cases() {
  std::vector<OpCase> c = op_cases_for(OpKind::kMoePermute);
  auto add = [&](OpCase x) {
    x.op = OpKind::kMoePermute;
    x.metric = Metric::kExact;
    x.tolerance = 0;
    c.push_back(x);
  };
  add({.name = "gpu_permute_qwen3_m1", .m = 1, .experts = 128, .top_k = 8});
  add({.name = "gpu_permute_qwen3_m4096_pad64", .m = 4096, .experts = 128, .top_k = 8,
       .pad_rows_to = 64});
  add({.name = "gpu_permute_k5_odd_pad8", .m = 300, .experts = 33, .top_k = 5, .pad_rows_to = 8});
  add({.name = "gpu_permute_k32_e1000", .m = 70, .experts = 1000, .top_k = 32, .pad_rows_to = 3});
  add({.name = "gpu_permute_deepseek_e256", .m = 513, .experts = 256, .top_k = 8});
  return c;
}

// moe_forward / op-by-op cases: n = H, k = I.
std::vector<OpCase> forward_cases() {
  std::vector<OpCase> c = op_cases_for(OpKind::kMoeForward);
  using S = RouterScoring;
  using G = ExpertGrouping;
  auto add = [&](OpCase x) {
    x.op = OpKind::kMoeForward;
    x.metric = Metric::kNormalizedMse;
    x.tolerance = kBf16Nmse;
    c.push_back(x);
  };
  add({.name = "gpu_moe_qwen3_30b_m1", .m = 1, .n = 2048, .k = 768, .experts = 128, .top_k = 8,
       .renormalize = true});
  add({.name = "gpu_moe_qwen3_30b_m37_pad16", .m = 37, .n = 2048, .k = 768, .experts = 128,
       .top_k = 8, .pad_rows_to = 16, .renormalize = true});
  add({.name = "gpu_moe_qwen3_30b_k1_m64", .m = 64, .n = 2048, .k = 768, .experts = 128,
       .top_k = 1});
  add({.name = "gpu_moe_qwen3_235b_m9", .m = 9, .n = 4096, .k = 1536, .experts = 128, .top_k = 8,
       .renormalize = true});
  add({.name = "gpu_moe_mixtral_m3", .m = 3, .n = 4096, .k = 14336, .experts = 8, .top_k = 2,
       .renormalize = true});
  add({.name = "gpu_moe_deepseek_v3_m4", .m = 4, .n = 7168, .k = 2048, .experts = 256, .top_k = 8,
       .scoring = S::kSigmoid, .grouping = G::kTop2Sum, .n_group = 8, .topk_group = 4,
       .renormalize = true, .correction_bias = true, .routed_scaling_factor = 2.5f});
  add({.name = "gpu_moe_odd_k5_pad8", .m = 300, .n = 136, .k = 88, .experts = 33, .top_k = 5,
       .pad_rows_to = 8});
  add({.name = "gpu_moe_k32_e64", .m = 9, .n = 264, .k = 200, .experts = 64, .top_k = 32,
       .renormalize = true});
  add({.name = "gpu_moe_k2_m1_e7", .m = 1, .n = 40, .k = 24, .experts = 7, .top_k = 2});
  return c;
}

std::string case_name(const testing::TestParamInfo<OpCase>& info) { return info.param.name; }

// ---------------------------------------------------------------- route

class CudaMoeOpsRoute : public testing::TestWithParam<OpCase> {};

TEST_P(CudaMoeOpsRoute, MatchesCpuAsSets) {
  SKIP_WITHOUT_GPU();
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  HostTensor logits = random_tensor(DType::kF32, {c.m, c.experts}, rng, 0.05, 4.0);
  HostTensor bias = random_tensor(DType::kF32, {c.experts}, rng, 0.01, 0.3);
  HostTensor ids(DType::kI32, {c.m, c.top_k}), w(DType::kF32, {c.m, c.top_k});
  cuda::CudaBackend backend;
  // The bias travels as bf16 on the GPU side of one case family, to cover that dtype too;
  // the CPU then gets the same rounded values.
  const bool bf16_bias = c.grouping == ExpertGrouping::kMaxScore;
  HostTensor bias_used = bf16_bias ? converted(bias, DType::kBF16) : converted(bias, DType::kF32);
  HostTensor bias_f32 = converted(bias_used, DType::kF32);
  const TensorView hb2 = bias_f32.view();
  ASSERT_TRUE(moe_route(Context{.pool = &pool()}, logits, route_params(c, &hb2), ids, w).ok());
  DevTensor dl(logits), db(bias_used), di(DType::kI32, {c.m, c.top_k}), dw(DType::kF32, {c.m, c.top_k});
  di.poison();
  dw.poison();
  const TensorView dbv = db.view();
  Status st = moe_route(Context{.device_backend = &backend}, dl, route_params(c, &dbv), di, dw);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  HostTensor gi = di.download(), gw = dw.download();

  const std::vector<double> choice = choice_scores(logits, bias_f32, c);
  Comparison cmp = compare_topk_sets(gi.ptr<int32_t>(), ids.ptr<int32_t>(), choice.data(), c.m,
                                     c.top_k, c.experts, c.tolerance);
  ASSERT_TRUE(cmp.ok) << cmp.detail;
  int64_t exact_rows = 0;
  for (int64_t m = 0; m < c.m; ++m) {
    const int32_t* g = gi.ptr<int32_t>() + m * c.top_k;
    const int32_t* r = ids.ptr<int32_t>() + m * c.top_k;
    exact_rows += std::equal(g, g + c.top_k, r);
    for (int j = 0; j < c.top_k; ++j) {
      if (j > 0)  // best first
        EXPECT_GE(choice[size_t(m * c.experts + g[j - 1])], choice[size_t(m * c.experts + g[j])] - 1e-6)
            << "row " << m << " slot " << j;
      for (int jj = 0; jj < c.top_k; ++jj)
        if (r[jj] == g[j]) {
          const float want = w.ptr<float>()[m * c.top_k + jj];
          EXPECT_NEAR(gw.ptr<float>()[m * c.top_k + j], want, 1e-5 * (1.0 + std::fabs(want)))
              << "row " << m << " expert " << g[j];
        }
    }
  }
  // Random logits have no near-ties: the GPU must pick exactly the CPU's ids in its order.
  EXPECT_EQ(exact_rows, c.m);
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaMoeOpsRoute, testing::ValuesIn(route_cases()), case_name);

// Exact ties: equal logits must go to the lowest expert ids, in order (torch.topk on CPU).
TEST(CudaMoeOps, RouteTiesGoToTheLowestExpertId) {
  SKIP_WITHOUT_GPU();
  HostTensor logits(DType::kF32, {3, 6});
  const float rows[3][6] = {{0, 0, 0, 0, 0, 0}, {1, 5, 5, 2, 5, 5}, {-1, 3, -1, 3, 0, 3}};
  std::memcpy(logits.ptr<void>(), rows, sizeof(rows));
  cuda::CudaBackend backend;
  DevTensor dl(logits), di(DType::kI32, {3, 3}), dw(DType::kF32, {3, 3});
  RouteParams p;
  p.top_k = 3;
  ASSERT_TRUE(moe_route(Context{.device_backend = &backend}, dl, p, di, dw).ok());
  HostTensor gi = di.download();
  const int32_t want[3][3] = {{0, 1, 2}, {1, 2, 4}, {1, 3, 5}};
  for (int m = 0; m < 3; ++m)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(gi.ptr<int32_t>()[m * 3 + j], want[m][j]) << m << "," << j;
  // Group ties: all group scores equal -> groups 0 and 1 kept.
  HostTensor flat(DType::kF32, {1, 8});
  DevTensor df(flat), gi2(DType::kI32, {1, 4}), gw2(DType::kF32, {1, 4});
  RouteParams gp;
  gp.top_k = 4;
  gp.grouping = ExpertGrouping::kMaxScore;
  gp.n_group = 4;
  gp.topk_group = 2;
  ASSERT_TRUE(moe_route(Context{.device_backend = &backend}, df, gp, gi2, gw2).ok());
  HostTensor g2 = gi2.download();
  for (int j = 0; j < 4; ++j) EXPECT_EQ(g2.ptr<int32_t>()[j], j);
}

// ---------------------------------------------------------------- permute

// Distinct random experts per token (k <= E).
HostTensor random_ids(int64_t m, int k, int e, CaseRng& rng) {
  HostTensor ids(DType::kI32, {m, k});
  std::vector<int32_t> all(static_cast<size_t>(e));
  for (int64_t r = 0; r < m; ++r) {
    std::iota(all.begin(), all.end(), 0);
    for (int j = 0; j < k; ++j) {
      std::swap(all[size_t(j)], all[size_t(j + rng.below(e - j))]);
      ids.ptr<int32_t>()[r * k + j] = all[size_t(j)];
    }
  }
  return ids;
}

void expect_same_bits(const HostTensor& got, const HostTensor& want, const char* what) {
  ASSERT_EQ(got.nbytes(), want.nbytes()) << what;
  const int64_t n = got.numel();
  const size_t es = dtype_size(got.dtype());
  for (int64_t i = 0; i < n; ++i)
    if (std::memcmp(got.ptr<char>() + i * es, want.ptr<char>() + i * es, es) != 0) {
      ADD_FAILURE() << what << " differs at element " << i << ": got "
                    << load_as_f32(got.ptr<void>(), got.dtype(), i) << " want "
                    << load_as_f32(want.ptr<void>(), want.dtype(), i);
      return;
    }
}

struct DevPerm {
  DevTensor counts, offsets, row_token, row_weight, inverse;
  DevPerm(int64_t m, int k, int64_t e, int64_t cap)
      : counts(DType::kI32, {e}), offsets(DType::kI32, {e + 1}), row_token(DType::kI32, {cap}),
        row_weight(DType::kF32, {cap}), inverse(DType::kI32, {m, k}) {
    for (DevTensor* t : {&counts, &offsets, &row_token, &row_weight, &inverse}) t->poison();
  }
  MoePermutation view() const { return {counts, offsets, row_token, row_weight, inverse}; }
};

struct HostPerm {
  HostTensor counts, offsets, row_token, row_weight, inverse;
  HostPerm(int64_t m, int k, int64_t e, int64_t cap)
      : counts(DType::kI32, {e}), offsets(DType::kI32, {e + 1}), row_token(DType::kI32, {cap}),
        row_weight(DType::kF32, {cap}), inverse(DType::kI32, {m, k}) {}
  MoePermutation view() const { return {counts, offsets, row_token, row_weight, inverse}; }
};

void expect_same_perm(const DevPerm& g, const HostPerm& c) {
  expect_same_bits(g.counts.download(), c.counts, "tokens_per_expert");
  expect_same_bits(g.offsets.download(), c.offsets, "expert_offsets");
  expect_same_bits(g.row_token.download(), c.row_token, "permuted_row_to_token");
  expect_same_bits(g.row_weight.download(), c.row_weight, "permuted_row_weight");
  expect_same_bits(g.inverse.download(), c.inverse, "token_to_permuted_row");
}

class CudaMoeOpsPermute : public testing::TestWithParam<OpCase> {};

TEST_P(CudaMoeOpsPermute, BitExactAgainstCpu) {
  SKIP_WITHOUT_GPU();
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  HostTensor ids = random_ids(c.m, c.top_k, c.experts, rng);
  HostTensor w = random_tensor(DType::kF32, {c.m, c.top_k}, rng);
  const int64_t cap = moe_permuted_capacity(c.m, c.top_k, c.experts, c.pad_rows_to);
  HostPerm cpu(c.m, c.top_k, c.experts, cap);
  ASSERT_TRUE(moe_permute(Context{}, ids, w, c.experts, c.pad_rows_to, cpu.view()).ok());
  cuda::CudaBackend backend;
  DevTensor di(ids), dw(w);
  DevPerm gpu(c.m, c.top_k, c.experts, cap);
  Status st = moe_permute(Context{.device_backend = &backend}, di, dw, c.experts, c.pad_rows_to,
                          gpu.view());
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  expect_same_perm(gpu, cpu);
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaMoeOpsPermute, testing::ValuesIn(permute_cases()), case_name);

// ---------------------------------------------------------------- experts, combine, forward

bool cuda_takes(const OpCase& c) {
  return c.stacked && c.weight_dtype == DType::kBF16 && c.n % 8 == 0 && c.k % 8 == 0;
}

Comparison compare_bf16(const HostTensor& got_bf16, const HostTensor& want_f32, Metric metric,
                        double tol) {
  HostTensor got = converted(got_bf16, DType::kF32);
  std::vector<double> want = to_doubles(want_f32);
  return compare_values(got.ptr<float>(), want.data(), got.numel(), metric, tol);
}

class CudaMoeOpsForward : public testing::TestWithParam<OpCase> {};

TEST_P(CudaMoeOpsForward, MatchesCpuOracle) {
  SKIP_WITHOUT_GPU();
  const OpCase& c = GetParam();
  const int64_t m = c.m, h = c.n, inter = c.k, e = c.experts;
  const int k = c.top_k;
  const std::string seed = c.name;
  // Inputs: x and weights in bf16 (what the GPU takes); the CPU oracle gets the same values.
  const double ws = 1.0 / std::sqrt(double(h)), ws2 = 1.0 / std::sqrt(double(inter));
  HostTensor x_bf16 = random_fast(DType::kBF16, {m, h}, seed + "x", 0.05, 1.0);
  HostTensor x = converted(x_bf16, DType::kF32);
  HostTensor logits = random_fast(DType::kF32, {m, e}, seed + "logits", 0.05, 3.0);
  HostTensor bias = random_fast(DType::kF32, {e}, seed + "bias", 0.01, 0.3);
  HostTensor w13 = random_fast(c.weight_dtype, {e, 2 * inter, h}, seed + "w13", 0.1 * ws, 1.7 * ws);
  HostTensor w2 = random_fast(c.weight_dtype, {e, h, inter}, seed + "w2", 0.1 * ws2, 1.7 * ws2);
  const TensorView hb = bias.view();
  MoeParams params{.route = route_params(c, &hb), .pad_rows_to = c.pad_rows_to};
  cuda::CudaBackend backend;
  const Context gctx{.device_backend = &backend};

  if (!cuda_takes(c)) {
    // Outside what the grouped GEMMs take (per-expert tensors, f16/f32 weights, H or I not a
    // multiple of 8): moe_forward repacks into a padded bf16 stack and must still match the
    // CPU; the op-by-op moe_experts answers a clean kUnsupported.
    DevTensor dx(x_bf16), dl(logits), d13(w13), d2(w2), dout(DType::kBF16, {m, h});
    DevTensor db(bias);
    dout.poison();
    const TensorView dbv = db.view();
    MoeParams gp{.route = route_params(c, &dbv), .pad_rows_to = c.pad_rows_to};
    ExpertWeights gw = ExpertWeights::stacked(d13, d2);
    if (!c.stacked) {  // per-expert views of the same device memory
      std::vector<TensorView> g, u, dn;
      for (int64_t i = 0; i < e; ++i) {
        g.push_back(d13.view().select0(i).slice0(0, inter));
        u.push_back(d13.view().select0(i).slice0(inter, 2 * inter));
        dn.push_back(d2.view().select0(i));
      }
      gw = ExpertWeights::per_expert(g, u, dn);
    }
    Status st = moe_forward(gctx, dx, dl, gw, gp, dout);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    // The GPU computes with bf16 weights (the repack rounds f16/f32 to nearest bf16): the
    // oracle gets the same rounded weights, so the bound stays the bf16-activation one.
    HostTensor ref(DType::kF32, {m, h});
    const Context cctx{.pool = &pool()};
    HostTensor w13r = converted(w13, DType::kBF16), w2r = converted(w2, DType::kBF16);
    ASSERT_TRUE(moe_forward(cctx, x, logits, ExpertWeights::stacked(w13r, w2r), params, ref).ok());
    Comparison f = compare_bf16(dout.download(), ref, Metric::kNormalizedMse, kBf16Nmse);
    EXPECT_TRUE(f.ok) << "moe_forward (repacked) out: " << f.detail;
    DevPerm gperm(m, k, e, moe_permuted_capacity(m, k, e, c.pad_rows_to));
    DevTensor grows(DType::kBF16, {moe_permuted_capacity(m, k, e, c.pad_rows_to), h});
    EXPECT_EQ(moe_experts(gctx, dx, gw, gperm.view(), grows).code(), ErrorCode::kUnsupported);
    return;
  }

  // CPU oracle, op by op (the same route/permute/experts/combine the CPU moe_forward runs).
  const int64_t cap = moe_permuted_capacity(m, k, e, c.pad_rows_to);
  HostTensor ids(DType::kI32, {m, k}), rw(DType::kF32, {m, k});
  HostPerm cpu(m, k, e, cap);
  HostTensor rows(DType::kF32, {cap, h}), out(DType::kF32, {m, h});
  const Context cctx{.pool = &pool()};
  ExpertWeights stacked = ExpertWeights::stacked(w13, w2);
  ASSERT_TRUE(moe_route(cctx, logits, params.route, ids, rw).ok());
  ASSERT_TRUE(moe_permute(cctx, ids, rw, e, c.pad_rows_to, cpu.view()).ok());
  ASSERT_TRUE(moe_experts(cctx, x, stacked, cpu.view(), rows).ok());
  ASSERT_TRUE(moe_combine(cctx, rows, cpu.inverse, out).ok());

  // GPU op by op, on the GPU's own routing.
  DevTensor dx(x_bf16), dl(logits), db(bias), d13(w13), d2(w2);
  ASSERT_TRUE(dx.ok() && d13.ok() && d2.ok());
  const TensorView dbv = db.view();
  MoeParams gparams{.route = route_params(c, &dbv), .pad_rows_to = c.pad_rows_to};
  ExpertWeights gw = ExpertWeights::stacked(d13, d2);
  DevTensor gids(DType::kI32, {m, k}), grw(DType::kF32, {m, k});
  DevPerm gperm(m, k, e, cap);
  DevTensor grows(DType::kBF16, {cap, h}), gout(DType::kBF16, {m, h}), gfwd(DType::kBF16, {m, h});
  for (DevTensor* t : {&grows, &gout, &gfwd}) t->poison();
  Status st = moe_route(gctx, dl, gparams.route, gids, grw);
  ASSERT_TRUE(st.ok()) << st.message();
  st = moe_permute(gctx, gids, grw, e, c.pad_rows_to, gperm.view());
  ASSERT_TRUE(st.ok()) << st.message();
  st = moe_experts(gctx, dx, gw, gperm.view(), grows);
  ASSERT_TRUE(st.ok()) << st.message();
  st = moe_combine(gctx, grows, gperm.inverse, gout);
  ASSERT_TRUE(st.ok()) << st.message();
  // The fused path, with a caller-provided workspace (the capturable way to call it).
  const size_t ws_bytes = cuda::CudaBackend::moe_forward_workspace_bytes(m, h, inter, e, k);
  DevTensor wsbuf(DType::kU8, {int64_t(ws_bytes)});
  Context fctx = gctx;
  fctx.workspace = Workspace{wsbuf.view().data, ws_bytes};
  st = moe_forward(fctx, dx, dl, gw, gparams, gfwd);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  // Same routing and permutation as the CPU (random logits: no near-ties).
  expect_same_bits(gids.download(), ids, "expert_ids");
  expect_same_perm(gperm, cpu);
  if (HasFailure()) return;
  HostTensor rows_got = grows.download();
  Comparison r = compare_bf16(rows_got, rows, Metric::kNormalizedMse, kBf16Nmse);
  EXPECT_TRUE(r.ok) << "moe_experts rows: " << r.detail;
  // Padding rows and the tail past expert_offsets[E] are exact zeros.
  HostTensor rt = gperm.row_token.download();
  for (int64_t row = 0; row < cap; ++row)
    if (rt.ptr<int32_t>()[row] < 0)
      for (int64_t j = 0; j < h; ++j)
        ASSERT_EQ(load_as_f32(rows_got.ptr<void>(), DType::kBF16, row * h + j), 0.0f)
            << "padding row " << row;
  Comparison o = compare_bf16(gout.download(), out, Metric::kNormalizedMse, kBf16Nmse);
  EXPECT_TRUE(o.ok) << "moe_combine out: " << o.detail;
  Comparison f = compare_bf16(gfwd.download(), out, Metric::kNormalizedMse, kBf16Nmse);
  EXPECT_TRUE(f.ok) << "moe_forward out: " << f.detail;
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaMoeOpsForward, testing::ValuesIn(forward_cases()), case_name);

// Ids outside [0, E) get no row on the GPU (the CPU reports them): token_to_permuted_row -1,
// and combine adds nothing for them.
TEST(CudaMoeOps, InvalidIdsAreHarmless) {
  SKIP_WITHOUT_GPU();
  HostTensor ids(DType::kI32, {2, 2}), w(DType::kF32, {2, 2});
  const int32_t v[4] = {1, 9, -3, 0};
  std::memcpy(ids.ptr<void>(), v, sizeof(v));
  for (int i = 0; i < 4; ++i) w.ptr<float>()[i] = 0.5f;
  cuda::CudaBackend backend;
  DevTensor di(ids), dw(w);
  DevPerm gp(2, 2, 4, 4);
  ASSERT_TRUE(moe_permute(Context{.device_backend = &backend}, di, dw, 4, 1, gp.view()).ok());
  HostTensor inv = gp.inverse.download(), counts = gp.counts.download();
  EXPECT_EQ(inv.ptr<int32_t>()[1], -1);
  EXPECT_EQ(inv.ptr<int32_t>()[2], -1);
  EXPECT_EQ(counts.ptr<int32_t>()[0], 1);
  EXPECT_EQ(counts.ptr<int32_t>()[1], 1);
  HostTensor rows(DType::kBF16, {4, 8});
  for (int i = 0; i < 32; ++i) store_from_f32(rows.ptr<void>(), DType::kBF16, i, float(i));
  DevTensor dr(rows), dout(DType::kBF16, {2, 8});
  ASSERT_TRUE(moe_combine(Context{.device_backend = &backend}, dr, gp.inverse, dout).ok());
  HostTensor out = dout.download();
  const int32_t* in = inv.ptr<int32_t>();
  for (int t = 0; t < 2; ++t)
    for (int j = 0; j < 8; ++j) {
      float want = 0;
      for (int s = 0; s < 2; ++s)
        if (in[t * 2 + s] >= 0) want += float(in[t * 2 + s] * 8 + j);
      EXPECT_EQ(load_as_f32(out.ptr<void>(), DType::kBF16, t * 8 + j), want);
    }
}

TEST(CudaMoeOps, UnsupportedInputsAreCleanErrors) {
  SKIP_WITHOUT_GPU();
  cuda::CudaBackend backend;
  const Context ctx{.device_backend = &backend};
  DevTensor x32(DType::kF32, {2, 16}), logits(DType::kF32, {2, 4}), out(DType::kBF16, {2, 16});
  DevTensor w13(DType::kBF16, {4, 16, 16}), w2(DType::kBF16, {4, 16, 8});
  MoeParams p;
  p.route.top_k = 2;
  Status st = moe_forward(ctx, x32, logits, ExpertWeights::stacked(w13, w2), p, out);
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_EQ(st.message(), "moe_forward: x is f32, the CUDA backend takes bf16");
}

}  // namespace
}  // namespace moeopt::ops

#else  // !MOEOPT_HAVE_CUDA

TEST(CudaMoeOps, NotBuilt) { GTEST_SKIP() << "built without MOEOPT_CUDA"; }

#endif
