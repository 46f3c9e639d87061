// GPU tests of the CUDA MoE layer (src/moeopt/backend/cuda/moe.h) against a float64 host
// reference written here: router top-k (compared as sets, ties allowed only where the
// reference values tie), permutation (counts, offsets, stable order, tile table) and the
// expert path (permute + GEMM1 + SiLU*up + GEMM2 + combine) by normalised error.
// Every test skips when no CUDA device is present (CI compiles this file but has no GPU).
// Run: build/tests/test_cuda --gtest_filter='CudaMoe*'
#include <gtest/gtest.h>

#if MOEOPT_HAVE_CUDA

#include <cuda_runtime.h>

#include "cuda_test_support.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <set>
#include <vector>

#include "moeopt/backend/cuda/moe.h"
#include "moeopt/core/dtype.h"

namespace moeopt::cuda {
namespace {

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr << ": " << cudaGetErrorString(expr)

// Deterministic fast random numbers (xorshift64*), uniform in [-1, 1).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  float uniform() { return float(int64_t(next() >> 40) - (int64_t(1) << 23)) / float(1 << 23); }
  int below(int n) { return int((next() >> 33) % uint64_t(n)); }
};

// bf16 host buffer plus its exact float values.
struct Bf16Host {
  std::vector<uint16_t> bits;
  std::vector<float> f;
};
Bf16Host random_bf16(size_t n, Rng& rng, float scale) {
  Bf16Host h;
  h.bits.resize(n);
  h.f.resize(n);
  for (size_t i = 0; i < n; ++i) {
    h.bits[i] = f32_to_bf16(rng.uniform() * scale);
    h.f[i] = bf16_to_f32(h.bits[i]);
  }
  return h;
}

// Owning device buffer.
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t n) : bytes(n) {
    if (cudaMalloc(&p, n) != cudaSuccess) p = nullptr;
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p); }
};
template <class T>
void upload(DevBuf& d, const std::vector<T>& v) {
  ASSERT_NE(d.p, nullptr);
  ASSERT_EQ(cudaMemcpy(d.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
}
template <class T>
std::vector<T> download(const void* p, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

// ---------------------------------------------------------------- router

struct RouterRef {
  std::vector<double> logits;  // [M, E]
};
RouterRef ref_logits(const std::vector<float>& x, const std::vector<float>& wr, int M, int H,
                     int E) {
  RouterRef r;
  r.logits.resize(size_t(M) * E);
  for (int t = 0; t < M; ++t)
    for (int e = 0; e < E; ++e) {
      double s = 0;
      for (int h = 0; h < H; ++h) s += double(x[size_t(t) * H + h]) * wr[size_t(e) * H + h];
      r.logits[size_t(t) * E + e] = s;
    }
  return r;
}

struct RouterCase {
  int M, H, E, k;
  bool renorm;
};

void run_router_case(const RouterCase& c, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "M=" << c.M << " H=" << c.H << " E=" << c.E << " k=" << c.k);
  Rng rng(seed);
  Bf16Host x = random_bf16(size_t(c.M) * c.H, rng, 1.0f);
  Bf16Host wr = random_bf16(size_t(c.E) * c.H, rng, 0.1f);
  DevBuf dx(x.bits.size() * 2), dw(wr.bits.size() * 2), dids(size_t(c.M) * c.k * 4),
      dwt(size_t(c.M) * c.k * 4), dlog(size_t(c.M) * c.E * 4);
  upload(dx, x.bits);
  upload(dw, wr.bits);
  CUDA_OK(cudaMemset(dids.p, 0xff, dids.bytes));
  CUDA_OK(cudaMemset(dwt.p, 0xff, dwt.bytes));
  MoeDims d{c.M, c.H, 8, c.E, c.k};
  MoeRouteArgs a;
  a.x = dx.p;
  a.router_w = dw.p;
  a.renormalize = c.renorm;
  a.expert_ids = dids.as<int32_t>();
  a.expert_weights = dwt.as<float>();
  a.logits = dlog.as<float>();
  Status st = moe_route_topk(d, a);
  ASSERT_TRUE(st.ok()) << st.message();
  CUDA_OK(cudaDeviceSynchronize());
  auto ids = download<int32_t>(dids.p, size_t(c.M) * c.k);
  auto wts = download<float>(dwt.p, size_t(c.M) * c.k);
  auto logits = download<float>(dlog.p, size_t(c.M) * c.E);
  RouterRef ref = ref_logits(x.f, wr.f, c.M, c.H, c.E);

  for (int t = 0; t < c.M; ++t) {
    const double* lr = &ref.logits[size_t(t) * c.E];
    for (int e = 0; e < c.E; ++e)
      ASSERT_NEAR(logits[size_t(t) * c.E + e], lr[e], 1e-4 * (1 + std::fabs(lr[e])));
    // Reference top-k: sort by value desc, id asc.
    std::vector<int> order(c.E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a1, int b1) { return lr[a1] > lr[b1]; });
    const double kth = lr[order[c.k - 1]];
    std::set<int> got;
    for (int s = 0; s < c.k; ++s) {
      const int id = ids[size_t(t) * c.k + s];
      ASSERT_GE(id, 0);
      ASSERT_LT(id, c.E);
      ASSERT_TRUE(got.insert(id).second) << "duplicate expert " << id << " for token " << t;
      // Any selected id must be at least as large as the k-th reference value, up to the
      // fp32-vs-fp64 rounding of a logit (ties may then go either way).
      EXPECT_GE(lr[id], kth - 1e-4 * (1 + std::fabs(kth))) << "token " << t << " slot " << s;
      if (s > 0) {  // descending order
        const int prev = ids[size_t(t) * c.k + s - 1];
        EXPECT_GE(lr[prev], lr[id] - 1e-4 * (1 + std::fabs(lr[id])));
      }
    }
    // Weights: softmax over all E of the reference logits at the selected ids.
    double mx = lr[order[0]], den = 0, picked = 0;
    for (int e = 0; e < c.E; ++e) den += std::exp(lr[e] - mx);
    for (int s = 0; s < c.k; ++s) picked += std::exp(lr[ids[size_t(t) * c.k + s]] - mx) / den;
    for (int s = 0; s < c.k; ++s) {
      double w = std::exp(lr[ids[size_t(t) * c.k + s]] - mx) / den;
      if (c.renorm) w /= picked;
      EXPECT_NEAR(wts[size_t(t) * c.k + s], w, 2e-4 * (w + 1e-3)) << "token " << t;
    }
  }
}

TEST(CudaMoeRouter, TopkMatchesReferenceAsSets) {
  SKIP_WITHOUT_GPU();
  const RouterCase cases[] = {
      {1, 2048, 128, 8, true},  {37, 2048, 128, 1, true}, {37, 2048, 128, 2, false},
      {37, 2048, 128, 5, true}, {37, 2048, 128, 8, true}, {37, 2048, 128, 32, true},
      {5, 64, 8, 2, true},      {9, 7168, 256, 8, true},  {3, 24, 512, 32, false},
      {19, 40, 3, 3, true},     {2200, 256, 64, 6, true},  // 2200 tokens: fused path
  };
  uint64_t seed = 11;
  for (const auto& c : cases) run_router_case(c, seed++);
}

// Identical router rows give exactly equal logits: the lowest ids must win, in order.
// Without a logits buffer the fused kernel runs; with one, small M takes the split path.
TEST(CudaMoeRouter, TiesGoToLowestExpertId) {
  SKIP_WITHOUT_GPU();
  for (bool with_logits : {false, true}) {
  SCOPED_TRACE(with_logits ? "split path" : "fused path");
  const int M = 4, H = 64, E = 40, k = 5;
  Rng rng(3);
  Bf16Host x = random_bf16(size_t(M) * H, rng, 1.0f);
  Bf16Host row = random_bf16(H, rng, 0.1f);
  std::vector<uint16_t> wr(size_t(E) * H);
  for (int e = 0; e < E; ++e) std::memcpy(&wr[size_t(e) * H], row.bits.data(), H * 2);
  DevBuf dx(x.bits.size() * 2), dw(wr.size() * 2), dids(M * k * 4), dwt(M * k * 4);
  upload(dx, x.bits);
  upload(dw, wr);
  MoeRouteArgs a;
  a.x = dx.p;
  a.router_w = dw.p;
  a.expert_ids = dids.as<int32_t>();
  a.expert_weights = dwt.as<float>();
  DevBuf dlog(size_t(M) * E * 4);
  a.logits = with_logits ? dlog.as<float>() : nullptr;
  ASSERT_TRUE(moe_route_topk(MoeDims{M, H, 8, E, k}, a).ok());
  CUDA_OK(cudaDeviceSynchronize());
  auto ids = download<int32_t>(dids.p, M * k);
  auto wts = download<float>(dwt.p, M * k);
  for (int t = 0; t < M; ++t)
    for (int s = 0; s < k; ++s) {
      EXPECT_EQ(ids[t * k + s], s) << "token " << t;
      EXPECT_NEAR(wts[t * k + s], 1.0f / k, 1e-6);
    }
  }
}

TEST(CudaMoeRouter, RejectsUnsupportedDims) {
  MoeRouteArgs a;
  EXPECT_FALSE(moe_route_topk(MoeDims{4, 64, 8, 600, 8}, a).ok());   // E > 512
  EXPECT_FALSE(moe_route_topk(MoeDims{4, 64, 8, 64, 33}, a).ok());   // k > 32
  EXPECT_FALSE(moe_route_topk(MoeDims{4, 60, 8, 64, 8}, a).ok());    // H % 8
  EXPECT_FALSE(moe_route_topk(MoeDims{4, 64, 8, 64, 8}, a).ok());    // null pointers
}

// ---------------------------------------------------------------- experts

// Random routing with distinct experts per token, drawn from a subset so that some experts
// receive no tokens; `skew` concentrates on low ids (Zipf-like).
std::vector<int32_t> random_ids(int M, int k, int E, Rng& rng, bool skew) {
  std::vector<int32_t> ids(size_t(M) * k);
  const int usable = std::max(k, E - E / 4);  // the top quarter of ids never used
  for (int t = 0; t < M; ++t) {
    std::set<int> seen;
    for (int s = 0; s < k; ++s) {
      int e;
      do {
        if (skew) {
          const int r = rng.below(usable * usable);
          e = int(std::sqrt(double(r)));
          e = usable - 1 - e;  // low ids more likely
        } else {
          e = rng.below(usable);
        }
      } while (!seen.insert(e).second);
      ids[size_t(t) * k + s] = e;
    }
  }
  return ids;
}

struct ExpertsCase {
  int M, H, I, E, k;
  bool skew;
  bool residual;
};

struct ExpertsData {
  Bf16Host x, w13, w2, res;
  std::vector<int32_t> ids;
  std::vector<float> wts;
};

ExpertsData make_experts_data(const ExpertsCase& c, uint64_t seed) {
  Rng rng(seed);
  ExpertsData dt;
  dt.x = random_bf16(size_t(c.M) * c.H, rng, 1.0f);
  dt.w13 = random_bf16(size_t(c.E) * 2 * c.I * c.H, rng, 1.0f / std::sqrt(float(c.H)));
  dt.w2 = random_bf16(size_t(c.E) * c.H * c.I, rng, 1.0f / std::sqrt(float(c.I)));
  if (c.residual) dt.res = random_bf16(size_t(c.M) * c.H, rng, 0.05f);
  dt.ids = random_ids(c.M, c.k, c.E, rng, c.skew);
  dt.wts.resize(dt.ids.size());
  for (auto& w : dt.wts) w = 0.05f + 0.5f * (rng.uniform() + 1.0f);
  return dt;
}

// float64 reference of the expert path (no intermediate rounding) for token t: out_row[H].
void ref_expert_token(const ExpertsCase& c, const ExpertsData& dt, int t, double* out_row,
                      std::vector<double>& h) {
  h.resize(c.I);
  const float* xt = &dt.x.f[size_t(t) * c.H];
  for (int j = 0; j < c.H; ++j) out_row[j] = c.residual ? dt.res.f[size_t(t) * c.H + j] : 0.0;
  for (int s = 0; s < c.k; ++s) {
    const int e = dt.ids[size_t(t) * c.k + s];
    const double w = dt.wts[size_t(t) * c.k + s];
    const float* w13 = &dt.w13.f[size_t(e) * 2 * c.I * c.H];
    for (int n = 0; n < c.I; ++n) {
      double g = 0, u = 0;
      const float* gr = w13 + size_t(n) * c.H;
      const float* ur = w13 + size_t(c.I + n) * c.H;
      for (int j = 0; j < c.H; ++j) {
        g += double(xt[j]) * gr[j];
        u += double(xt[j]) * ur[j];
      }
      h[n] = g / (1.0 + std::exp(-g)) * u;
    }
    const float* w2 = &dt.w2.f[size_t(e) * c.H * c.I];
    for (int j = 0; j < c.H; ++j) {
      double y = 0;
      const float* wr = w2 + size_t(j) * c.I;
      for (int n = 0; n < c.I; ++n) y += h[n] * wr[n];
      out_row[j] += w * y;
    }
  }
}

std::vector<double> ref_experts(const ExpertsCase& c, const ExpertsData& dt) {
  std::vector<double> out(size_t(c.M) * c.H, 0.0), h(c.I);
  for (int t = 0; t < c.M; ++t) ref_expert_token(c, dt, t, &out[size_t(t) * c.H], h);
  return out;
}

// Runs the GPU expert path; returns the bf16 output as floats (and the workspace when asked).
struct GpuExpertsResult {
  std::vector<float> out;
  std::vector<int32_t> tokens_per_expert, expert_offsets, row_to_token, token_to_row;
  std::vector<int32_t> tile_expert, tile_row_begin;
  std::vector<float> row_weight;
  int num_tiles = 0;
};

void run_gpu_experts(const ExpertsCase& c, const ExpertsData& dt, std::optional<MoeGemmTile> tile,
                     GpuExpertsResult* r) {
  const MoeDims d{c.M, c.H, c.I, c.E, c.k};
  DevBuf dx(dt.x.bits.size() * 2), d13(dt.w13.bits.size() * 2), d2(dt.w2.bits.size() * 2),
      dids(dt.ids.size() * 4), dwt(dt.wts.size() * 4), dout(size_t(c.M) * c.H * 2),
      dres(std::max<size_t>(16, dt.res.bits.size() * 2)), dws(moe_workspace_bytes(d));
  upload(dx, dt.x.bits);
  upload(d13, dt.w13.bits);
  upload(d2, dt.w2.bits);
  upload(dids, dt.ids);
  upload(dwt, dt.wts);
  if (c.residual) upload(dres, dt.res.bits);
  CUDA_OK(cudaMemset(dout.p, 0xff, dout.bytes));  // poison: bf16 NaN
  CUDA_OK(cudaMemset(dws.p, 0xff, dws.bytes));
  MoeExpertsArgs a;
  a.x = dx.p;
  a.expert_ids = dids.as<int32_t>();
  a.expert_weights = dwt.as<float>();
  a.w13 = d13.p;
  a.w2 = d2.p;
  a.residual = c.residual ? dres.p : nullptr;
  a.out = dout.p;
  a.workspace = dws.p;
  a.workspace_bytes = dws.bytes;
  a.tile = tile;
  Status st = moe_experts_forward(d, a);
  ASSERT_TRUE(st.ok()) << st.message();
  CUDA_OK(cudaDeviceSynchronize());
  auto bits = download<uint16_t>(dout.p, size_t(c.M) * c.H);
  r->out.resize(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) r->out[i] = bf16_to_f32(bits[i]);
  const MoeWorkspaceView v = moe_workspace_view(d, dws.p);
  const size_t A = size_t(c.M) * c.k;
  r->tokens_per_expert = download<int32_t>(v.tokens_per_expert, c.E);
  r->expert_offsets = download<int32_t>(v.expert_offsets, c.E + 1);
  r->row_to_token = download<int32_t>(v.permuted_row_to_token, A);
  r->row_weight = download<float>(v.permuted_row_weight, A);
  r->token_to_row = download<int32_t>(v.token_to_permuted_row, A);
  r->num_tiles = download<int32_t>(v.num_tiles, 1)[0];
  r->tile_expert = download<int32_t>(v.tile_expert, A);
  r->tile_row_begin = download<int32_t>(v.tile_row_begin, A);
}

double normalised_error(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

void check_permutation(const ExpertsCase& c, const ExpertsData& dt, const GpuExpertsResult& r,
                       int tile_rows) {
  const int A = c.M * c.k;
  std::vector<int> count(c.E, 0);
  for (int a = 0; a < A; ++a) ++count[dt.ids[a]];
  int off = 0, tiles = 0;
  for (int e = 0; e < c.E; ++e) {
    ASSERT_EQ(r.tokens_per_expert[e], count[e]) << "expert " << e;
    ASSERT_EQ(r.expert_offsets[e], off) << "expert " << e;
    // Rows of e: its assignments in ascending (token, slot) order.
    int row = off;
    for (int a = 0; a < A; ++a)
      if (dt.ids[a] == e) {
        ASSERT_EQ(r.row_to_token[row], a / c.k) << "row " << row;
        ASSERT_EQ(r.token_to_row[a], row) << "assignment " << a;
        ASSERT_EQ(r.row_weight[row], dt.wts[a]);
        ++row;
      }
    for (int t = 0; t * tile_rows < count[e]; ++t, ++tiles) {
      ASSERT_EQ(r.tile_expert[tiles], e);
      ASSERT_EQ(r.tile_row_begin[tiles], off + t * tile_rows);
    }
    off += count[e];
  }
  ASSERT_EQ(r.expert_offsets[c.E], A);
  ASSERT_EQ(r.num_tiles, tiles);
}

void run_experts_case(const ExpertsCase& c, uint64_t seed, bool all_tiles) {
  SCOPED_TRACE(testing::Message() << "M=" << c.M << " H=" << c.H << " I=" << c.I << " E=" << c.E
                                  << " k=" << c.k << (c.skew ? " skew" : "")
                                  << (c.residual ? " residual" : ""));
  const ExpertsData dt = make_experts_data(c, seed);
  const std::vector<double> ref = ref_experts(c, dt);
  std::vector<std::optional<MoeGemmTile>> tiles = {std::nullopt};
  if (all_tiles)
    for (int t = 0; t < kNumMoeGemmTiles; ++t) tiles.push_back(MoeGemmTile(t));
  for (const auto& tile : tiles) {
    const MoeGemmTile used = tile ? *tile : choose_moe_gemm_tile(c.M, c.k, c.E);
    SCOPED_TRACE(moe_gemm_tile_name(used));
    GpuExpertsResult r;
    run_gpu_experts(c, dt, tile, &r);
    if (testing::Test::HasFatalFailure()) return;
    check_permutation(c, dt, r, moe_gemm_tile_rows(used));
    const double err = normalised_error(r.out, ref);
    EXPECT_LT(err, 1e-2) << "normalised error " << err;
  }
}

TEST(CudaMoeExperts, SmallOddShapesAllTiles) {
  SKIP_WITHOUT_GPU();
  const ExpertsCase cases[] = {
      {1, 40, 24, 7, 1, false, false},    {13, 40, 24, 7, 2, false, true},
      {13, 136, 88, 33, 5, true, false},  {300, 136, 88, 33, 5, true, true},
      {64, 72, 40, 40, 32, false, false}, {130, 264, 200, 9, 2, true, false},
      {2, 1032, 520, 16, 8, false, false},
  };
  uint64_t seed = 100;
  for (const auto& c : cases) run_experts_case(c, seed++, /*all_tiles=*/true);
}

TEST(CudaMoeExperts, Qwen3_30B_A3B_Shape) {
  SKIP_WITHOUT_GPU();
  // H 2048, I 768, E 128, k 8; M = 1 (decode) and M = 40 (a few experts get two tiles).
  run_experts_case({1, 2048, 768, 128, 8, false, false}, 7, /*all_tiles=*/true);
  run_experts_case({40, 2048, 768, 128, 8, true, true}, 8, /*all_tiles=*/false);
}

// The sm_90a wgmma tiles at prefill sizes. A float64 reference of every token is too slow
// here (M = 8192 at the Qwen3 shape is 3e11 multiply-adds), so: the reference on a spread
// sample of tokens, and every token against the mma.sync 128x128 tile (an independent
// kernel) — both by normalised error.
void run_prefill_case(const ExpertsCase& c, uint64_t seed, int sampled) {
  SCOPED_TRACE(testing::Message() << "M=" << c.M << " H=" << c.H << " I=" << c.I << " E=" << c.E
                                  << " k=" << c.k << (c.skew ? " skew" : ""));
  const ExpertsData dt = make_experts_data(c, seed);
  std::vector<int> tokens;
  for (int i = 0; i < sampled && i < c.M; ++i)
    tokens.push_back(int((int64_t(i) * c.M) / std::min(sampled, c.M) + (i * 7) % 5) % c.M);
  std::vector<double> ref(tokens.size() * c.H), h;
  for (size_t i = 0; i < tokens.size(); ++i) ref_expert_token(c, dt, tokens[i], &ref[i * c.H], h);
  auto sample = [&](const std::vector<float>& out) {
    std::vector<float> v(tokens.size() * c.H);
    for (size_t i = 0; i < tokens.size(); ++i)
      std::memcpy(&v[i * c.H], &out[size_t(tokens[i]) * c.H], size_t(c.H) * sizeof(float));
    return v;
  };
  GpuExpertsResult base;
  run_gpu_experts(c, dt, MoeGemmTile::kBm128Bn128, &base);
  if (testing::Test::HasFatalFailure()) return;
  const double base_err = normalised_error(sample(base.out), ref);
  EXPECT_LT(base_err, 1e-2) << "bm128_bn128 normalised error " << base_err;
  const std::vector<double> base_all(base.out.begin(), base.out.end());
  for (std::optional<MoeGemmTile> tile :
       {std::optional<MoeGemmTile>(MoeGemmTile::kWgmma256x64),
        std::optional<MoeGemmTile>(MoeGemmTile::kWgmma256x128), std::optional<MoeGemmTile>()}) {
    const MoeGemmTile used = tile ? *tile : choose_moe_gemm_tile(c.M, c.k, c.E);
    SCOPED_TRACE(moe_gemm_tile_name(used));
    GpuExpertsResult r;
    run_gpu_experts(c, dt, tile, &r);
    if (testing::Test::HasFatalFailure()) return;
    check_permutation(c, dt, r, moe_gemm_tile_rows(used));
    const double err = normalised_error(sample(r.out), ref);
    EXPECT_LT(err, 1e-2) << "normalised error against the reference " << err;
    const double diff = normalised_error(r.out, base_all);
    EXPECT_LT(diff, 1e-2) << "normalised difference to bm128_bn128 over all tokens " << diff;
  }
}

TEST(CudaMoeExperts, WgmmaPrefillQwen3_30B_A3B) {
  SKIP_WITHOUT_GPU();
  // H 2048, I 768, E 128, k 8: 32, 128 and 512 rows per expert on average (a quarter of the
  // experts get none); M = 2048 with skewed routing (some experts many tiles).
  run_prefill_case({512, 2048, 768, 128, 8, false, false}, 41, 64);
  run_prefill_case({2048, 2048, 768, 128, 8, true, true}, 42, 64);
  run_prefill_case({8192, 2048, 768, 128, 8, false, false}, 43, 48);
}

TEST(CudaMoeExperts, WgmmaPrefillMixtral) {
  SKIP_WITHOUT_GPU();
  // Mixtral-8x7B: H 4096, I 14336, E 8, k 2 (experts 6 and 7 get no tokens).
  run_prefill_case({1024, 4096, 14336, 8, 2, false, false}, 44, 12);
}

// Odd shapes for the wgmma tiles: K and N tails (H, I multiples of 8, not of 64), experts of
// 0, 1..63, 64..200 rows (several token tiles), in both GEMMs. M > 16 throughout so that the
// layer takes the tiled path, not the small-M one.
TEST(CudaMoeExperts, WgmmaOddShapes) {
  SKIP_WITHOUT_GPU();
  const ExpertsCase cases[] = {
      {700, 136, 88, 9, 2, true, false},   {333, 264, 200, 12, 3, false, true},
      {257, 1032, 520, 16, 8, true, false}, {96, 72, 40, 40, 32, false, false},
      {17, 40, 24, 7, 1, false, false},     {20, 136, 88, 33, 5, true, true},
  };
  uint64_t seed = 300;
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::Message() << "M=" << c.M << " H=" << c.H << " I=" << c.I << " E="
                                    << c.E << " k=" << c.k);
    const ExpertsData dt = make_experts_data(c, seed++);
    const std::vector<double> ref = ref_experts(c, dt);
    for (MoeGemmTile tile : {MoeGemmTile::kWgmma256x64, MoeGemmTile::kWgmma256x128}) {
      SCOPED_TRACE(moe_gemm_tile_name(tile));
      GpuExpertsResult r;
      run_gpu_experts(c, dt, tile, &r);
      if (testing::Test::HasFatalFailure()) return;
      check_permutation(c, dt, r, moe_gemm_tile_rows(tile));
      const double err = normalised_error(r.out, ref);
      EXPECT_LT(err, 1e-2) << "normalised error " << err;
    }
  }
}

// Two forward calls on one workspace with no synchronisation between them (as a model's
// layers run): with programmatic dependent launch on, the second call's permutation must not
// overwrite the workspace while the first call's kernels still read it. Both outputs are
// checked against the reference; also with PDL off.
TEST(CudaMoeExperts, BackToBackCallsShareWorkspace) {
  SKIP_WITHOUT_GPU();
  for (bool pdl : {true, false}) {
    SCOPED_TRACE(pdl ? "pdl" : "no pdl");
    const ExpertsCase c{48, 264, 136, 24, 4, false, false};
    const ExpertsCase c2{48, 264, 136, 24, 4, true, false};
    const ExpertsData d1 = make_experts_data(c, 501), d2 = make_experts_data(c2, 502);
    const MoeDims d{c.M, c.H, c.I, c.E, c.k};
    // Same weights for both calls (d1's); different x, ids and routing weights.
    ExpertsData d2w = d2;
    d2w.w13 = d1.w13;
    d2w.w2 = d1.w2;
    DevBuf dx1(d1.x.bits.size() * 2), dx2(d2.x.bits.size() * 2), d13(d1.w13.bits.size() * 2),
        dw2(d1.w2.bits.size() * 2), di1(d1.ids.size() * 4), di2(d2.ids.size() * 4),
        dt1(d1.wts.size() * 4), dt2(d2.wts.size() * 4), do1(size_t(c.M) * c.H * 2),
        do2(size_t(c.M) * c.H * 2), dws(moe_workspace_bytes(d));
    upload(dx1, d1.x.bits);
    upload(dx2, d2.x.bits);
    upload(d13, d1.w13.bits);
    upload(dw2, d1.w2.bits);
    upload(di1, d1.ids);
    upload(di2, d2.ids);
    upload(dt1, d1.wts);
    upload(dt2, d2.wts);
    CUDA_OK(cudaMemset(do1.p, 0xff, do1.bytes));
    CUDA_OK(cudaMemset(do2.p, 0xff, do2.bytes));
    for (int call = 0; call < 2; ++call) {
      MoeExpertsArgs a;
      a.x = call == 0 ? dx1.p : dx2.p;
      a.expert_ids = call == 0 ? di1.as<int32_t>() : di2.as<int32_t>();
      a.expert_weights = call == 0 ? dt1.as<float>() : dt2.as<float>();
      a.w13 = d13.p;
      a.w2 = dw2.p;
      a.out = call == 0 ? do1.p : do2.p;
      a.workspace = dws.p;
      a.workspace_bytes = dws.bytes;
      a.programmatic_dependent_launch = pdl;
      Status st = moe_experts_forward(d, a);
      ASSERT_TRUE(st.ok()) << st.message();
    }
    CUDA_OK(cudaDeviceSynchronize());
    for (int call = 0; call < 2; ++call) {
      auto bits = download<uint16_t>(call == 0 ? do1.p : do2.p, size_t(c.M) * c.H);
      std::vector<float> out(bits.size());
      for (size_t i = 0; i < bits.size(); ++i) out[i] = bf16_to_f32(bits[i]);
      const auto ref = ref_experts(call == 0 ? c : c2, call == 0 ? d1 : d2w);
      const double err = normalised_error(out, ref);
      EXPECT_LT(err, 1e-2) << "call " << call << " normalised error " << err;
    }
  }
}

TEST(CudaMoeExperts, RejectsBadArguments) {
  MoeExpertsArgs a;
  EXPECT_FALSE(moe_experts_forward(MoeDims{4, 64, 20, 8, 2}, a).ok());  // I % 8
  EXPECT_FALSE(moe_experts_forward(MoeDims{4, 64, 24, 8, 2}, a).ok());  // null pointers
  EXPECT_FALSE(moe_experts_forward(MoeDims{0, 64, 24, 8, 2}, a).ok());  // M = 0
}

}  // namespace
}  // namespace moeopt::cuda

#else  // !MOEOPT_HAVE_CUDA

TEST(CudaMoe, NotBuilt) { GTEST_SKIP() << "built without MOEOPT_CUDA"; }

#endif

// ---------------------------------------------------------------- persistent small-M path
// The one-kernel expert path (moe_persistent.h), forced on (MoeExpertsArgs::persistent), at
// the shapes against a float64 reference: only the experts that the routing uses get
// random weights (the others stay zero on the device and are never read), so the
// Qwen3-235B and Mixtral shapes stay cheap to set up. Also: bit-identical repeats, the
// multi-kernel path on the same data, back-to-back calls on one poisoned workspace (the
// counters must be reset by each call) and a captured CUDA graph replayed with new inputs.
#if MOEOPT_HAVE_CUDA
#include <cstdio>
#include <string>
#include <thread>

namespace moeopt::cuda {
namespace {

struct PkCase {
  int M, H, I, E, k;
  bool residual;
  bool skew;
};

struct PkData {
  PkCase c;
  std::vector<uint16_t> x, res;
  std::vector<int32_t> ids;
  std::vector<float> wts;
  std::vector<int> used;            // expert ids with weights, ascending
  std::vector<int> slot;            // [E] -> index into used, -1 = never routed to
  std::vector<uint16_t> w13, w2;    // [used, 2I, H], [used, H, I]
};

std::vector<uint16_t> pk_random_bits(size_t n, Rng& rng, float scale) {
  std::vector<uint16_t> v(n);
  for (auto& b : v) b = f32_to_bf16(rng.uniform() * scale);
  return v;
}

PkData pk_make(const PkCase& c, uint64_t seed) {
  Rng rng(seed);
  PkData d;
  d.c = c;
  d.x = pk_random_bits(size_t(c.M) * c.H, rng, 1.0f);
  if (c.residual) d.res = pk_random_bits(size_t(c.M) * c.H, rng, 0.05f);
  d.ids = random_ids(c.M, c.k, c.E, rng, c.skew);
  d.wts.resize(d.ids.size());
  for (auto& w : d.wts) w = 0.05f + 0.5f * (rng.uniform() + 1.0f);
  d.slot.assign(c.E, -1);
  for (int32_t e : d.ids) d.slot[e] = 0;
  for (int e = 0; e < c.E; ++e)
    if (d.slot[e] == 0) {
      d.slot[e] = int(d.used.size());
      d.used.push_back(e);
    }
  const size_t n13 = size_t(2) * c.I * c.H, n2 = size_t(c.H) * c.I;
  d.w13 = pk_random_bits(d.used.size() * n13, rng, 1.0f / std::sqrt(float(c.H)));
  d.w2 = pk_random_bits(d.used.size() * n2, rng, 1.0f / std::sqrt(float(c.I)));
  return d;
}

// float64 reference, no intermediate rounding; pairs in parallel, summed in a fixed order.
std::vector<double> pk_reference(const PkData& d) {
  const PkCase& c = d.c;
  const int A = c.M * c.k;
  std::vector<std::vector<double>> y(A, std::vector<double>(c.H, 0.0));
  auto pair_fn = [&](int a) {
    const int t = a / c.k, s = d.slot[d.ids[a]];
    std::vector<double> xt(c.H), h(c.I);
    for (int j = 0; j < c.H; ++j) xt[j] = bf16_to_f32(d.x[size_t(t) * c.H + j]);
    const uint16_t* w13 = &d.w13[size_t(s) * 2 * c.I * c.H];
    for (int n = 0; n < c.I; ++n) {
      double g = 0, u = 0;
      const uint16_t* gr = w13 + size_t(n) * c.H;
      const uint16_t* ur = w13 + size_t(c.I + n) * c.H;
      for (int j = 0; j < c.H; ++j) {
        g += xt[j] * bf16_to_f32(gr[j]);
        u += xt[j] * bf16_to_f32(ur[j]);
      }
      h[n] = g / (1.0 + std::exp(-g)) * u;
    }
    const uint16_t* w2 = &d.w2[size_t(s) * c.H * c.I];
    for (int j = 0; j < c.H; ++j) {
      double acc = 0;
      const uint16_t* wr = w2 + size_t(j) * c.I;
      for (int n = 0; n < c.I; ++n) acc += h[n] * bf16_to_f32(wr[n]);
      y[a][j] = double(d.wts[a]) * acc;
    }
  };
  const int nthreads = int(std::max(1u, std::min(16u, std::thread::hardware_concurrency())));
  std::vector<std::thread> pool;
  for (int w = 0; w < nthreads; ++w)
    pool.emplace_back([&, w] {
      for (int a = w; a < A; a += nthreads) pair_fn(a);
    });
  for (auto& th : pool) th.join();
  std::vector<double> out(size_t(c.M) * c.H, 0.0);
  for (int t = 0; t < c.M; ++t)
    for (int j = 0; j < c.H; ++j) {
      double acc = c.residual ? bf16_to_f32(d.res[size_t(t) * c.H + j]) : 0.0;
      for (int s = 0; s < c.k; ++s) acc += y[size_t(t) * c.k + s][j];
      out[size_t(t) * c.H + j] = acc;
    }
  return out;
}

// Device copies of one case (weights of unused experts zero) and a workspace.
struct PkDevice {
  PkCase c;
  DevBuf x, w13, w2, ids, wts, res, out, ws;
  explicit PkDevice(const PkCase& cc)
      : c(cc),
        x(size_t(cc.M) * cc.H * 2),
        w13(size_t(cc.E) * 2 * cc.I * cc.H * 2),
        w2(size_t(cc.E) * cc.H * cc.I * 2),
        ids(size_t(cc.M) * cc.k * 4),
        wts(size_t(cc.M) * cc.k * 4),
        res(size_t(cc.M) * cc.H * 2),
        out(size_t(cc.M) * cc.H * 2),
        ws(moe_workspace_bytes(MoeDims{cc.M, cc.H, cc.I, cc.E, cc.k})) {}
  MoeDims dims() const { return MoeDims{c.M, c.H, c.I, c.E, c.k}; }
  MoeExpertsArgs args(std::optional<bool> persistent, cudaStream_t stream = nullptr) const {
    MoeExpertsArgs a;
    a.x = x.p;
    a.expert_ids = ids.as<int32_t>();
    a.expert_weights = wts.as<float>();
    a.w13 = w13.p;
    a.w2 = w2.p;
    a.residual = c.residual ? res.p : nullptr;
    a.out = out.p;
    a.workspace = ws.p;
    a.workspace_bytes = ws.bytes;
    a.stream = stream;
    a.persistent = persistent;
    return a;
  }
};

// Uploads inputs (and, with weights, the used experts' weights; the rest zeroed).
void pk_upload(PkDevice& dev, const PkData& d, bool weights) {
  const PkCase& c = d.c;
  ASSERT_NE(dev.ws.p, nullptr);
  upload(dev.x, d.x);
  upload(dev.ids, d.ids);
  upload(dev.wts, d.wts);
  if (c.residual) upload(dev.res, d.res);
  if (!weights) return;
  ASSERT_NE(dev.w13.p, nullptr);
  ASSERT_NE(dev.w2.p, nullptr);
  CUDA_OK(cudaMemset(dev.w13.p, 0, dev.w13.bytes));
  CUDA_OK(cudaMemset(dev.w2.p, 0, dev.w2.bytes));
  const size_t n13 = size_t(2) * c.I * c.H, n2 = size_t(c.H) * c.I;
  for (size_t s = 0; s < d.used.size(); ++s) {
    const int e = d.used[s];
    CUDA_OK(cudaMemcpy(dev.w13.as<uint16_t>() + size_t(e) * n13, &d.w13[s * n13], n13 * 2,
                       cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dev.w2.as<uint16_t>() + size_t(e) * n2, &d.w2[s * n2], n2 * 2,
                       cudaMemcpyHostToDevice));
  }
}

std::vector<uint16_t> pk_out_bits(const PkDevice& dev) {
  return download<uint16_t>(dev.out.p, size_t(dev.c.M) * dev.c.H);
}

std::vector<float> pk_to_float(const std::vector<uint16_t>& bits) {
  std::vector<float> f(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) f[i] = bf16_to_f32(bits[i]);
  return f;
}

// One forward call (workspace and out poisoned first); returns the bf16 output bits.
std::vector<uint16_t> pk_forward(PkDevice& dev, std::optional<bool> persistent) {
  EXPECT_EQ(cudaMemset(dev.out.p, 0xff, dev.out.bytes), cudaSuccess);
  EXPECT_EQ(cudaMemset(dev.ws.p, 0xff, dev.ws.bytes), cudaSuccess);
  Status st = moe_experts_forward(dev.dims(), dev.args(persistent));
  EXPECT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return pk_out_bits(dev);
}

std::string pk_name(const PkCase& c) {
  return "M=" + std::to_string(c.M) + " H=" + std::to_string(c.H) + " I=" + std::to_string(c.I) +
         " E=" + std::to_string(c.E) + " k=" + std::to_string(c.k) +
         (c.residual ? " residual" : "") + (c.skew ? " skew" : "");
}

// Persistent path (twice: bit-identical) and multi-kernel path against the reference.
void pk_check_case(const PkCase& c, uint64_t seed) {
  SCOPED_TRACE(pk_name(c));
  const PkData d = pk_make(c, seed);
  const std::vector<double> ref = pk_reference(d);
  PkDevice dev(c);
  pk_upload(dev, d, /*weights=*/true);
  if (testing::Test::HasFatalFailure()) return;
  const auto p1 = pk_forward(dev, true);
  const auto p2 = pk_forward(dev, true);
  const auto mk = pk_forward(dev, false);
  const double err_p = normalised_error(pk_to_float(p1), ref);
  const double err_m = normalised_error(pk_to_float(mk), ref);
  EXPECT_LT(err_p, 1e-2) << "persistent: normalised error " << err_p;
  EXPECT_LT(err_m, 1e-2) << "multi-kernel: normalised error " << err_m;
  EXPECT_TRUE(p1 == p2) << "persistent path is not bit-identical from run to run";
  // Per-element check too: no row may be missing or doubled (e.g. a row block reduced twice
  // or never), which a norm over the whole output could hide at large H.
  double max_rel = 0;
  for (int t = 0; t < c.M; ++t) {
    double num = 0, den = 0;
    for (int j = 0; j < c.H; ++j) {
      const double r = ref[size_t(t) * c.H + j], g = bf16_to_f32(p1[size_t(t) * c.H + j]);
      num += (g - r) * (g - r);
      den += r * r;
    }
    max_rel = std::max(max_rel, std::sqrt(num / std::max(den, 1e-30)));
  }
  EXPECT_LT(max_rel, 1.5e-2) << "worst token's normalised error " << max_rel;
  std::printf("    [persistent] %s: err %.2e (multi-kernel %.2e), worst token %.2e\n",
              pk_name(c).c_str(), err_p, err_m, max_rel);
}

TEST(CudaMoePersistent, Qwen3_30B_A3B_SmallM) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 900;
  for (int M : {1, 2, 5, 8, 16}) {
    pk_check_case({M, 2048, 768, 128, 8, M % 2 == 0, false}, seed++);
    if (M == 8) pk_check_case({M, 2048, 768, 128, 8, false, true}, seed++);
  }
}

TEST(CudaMoePersistent, Qwen3_235B_A22B_Shape) {
  SKIP_WITHOUT_GPU();
  pk_check_case({1, 4096, 1536, 128, 8, true, false}, 920);
  pk_check_case({8, 4096, 1536, 128, 8, false, true}, 921);
}

TEST(CudaMoePersistent, Mixtral_Shape) {
  SKIP_WITHOUT_GPU();
  pk_check_case({1, 4096, 14336, 8, 2, true, false}, 930);
}

// Odd sizes (H, I multiples of 8 but not of 256: partial vectors per lane), k in {1, 2, 8},
// all tokens on one expert (k = 1, E = 1: 16 pairs on one expert, two GEMM-1 passes),
// E > 256 (rank over several mask words), M*k at the 256-pair limit.
TEST(CudaMoePersistent, SmallOddShapes) {
  SKIP_WITHOUT_GPU();
  const PkCase cases[] = {
      {1, 40, 24, 7, 1, false, false},   {3, 40, 24, 7, 2, true, false},
      {5, 136, 88, 33, 8, false, true},  {16, 264, 200, 9, 2, true, true},
      {16, 72, 40, 1, 1, true, false},   {9, 1032, 520, 16, 8, false, false},
      {7, 96, 56, 300, 8, true, false},  {32, 128, 64, 64, 8, false, true},
      {13, 8, 8, 5, 1, true, false},
  };
  uint64_t seed = 940;
  for (const auto& c : cases) pk_check_case(c, seed++);
}

// Two calls on one workspace (poisoned before the first), no synchronisation in between,
// different routing: the counters of the first must not leak into the second.
TEST(CudaMoePersistent, BackToBackCallsResetCounters) {
  SKIP_WITHOUT_GPU();
  for (bool pdl : {true, false}) {
    SCOPED_TRACE(pdl ? "pdl" : "no pdl");
    const PkCase c{8, 264, 136, 24, 4, true, false};
    const PkData d1 = pk_make(c, 960);
    PkData d2 = pk_make({8, 264, 136, 24, 4, true, true}, 961);
    // Same weights (d1's experts) for both calls: route d2 over d1's used experts only.
    for (auto& e : d2.ids) e = d1.used[size_t(e) % d1.used.size()];
    for (int t = 0; t < c.M; ++t) {  // keep each token's experts distinct
      std::set<int> seen;
      for (int s = 0; s < c.k; ++s) {
        int32_t& e = d2.ids[size_t(t) * c.k + s];
        size_t i = 0;
        while (!seen.insert(e).second) e = d1.used[(i++) % d1.used.size()];
      }
    }
    d2.used = d1.used;
    d2.slot = d1.slot;
    d2.w13 = d1.w13;
    d2.w2 = d1.w2;
    PkDevice dev1(c), dev2(c);
    pk_upload(dev1, d1, true);
    pk_upload(dev2, d2, false);
    if (testing::Test::HasFatalFailure()) return;
    CUDA_OK(cudaMemset(dev1.ws.p, 0xff, dev1.ws.bytes));
    CUDA_OK(cudaMemset(dev1.out.p, 0xff, dev1.out.bytes));
    CUDA_OK(cudaMemset(dev2.out.p, 0xff, dev2.out.bytes));
    MoeExpertsArgs a1 = dev1.args(true), a2 = dev1.args(true);
    a2.x = dev2.x.p;
    a2.expert_ids = dev2.ids.as<int32_t>();
    a2.expert_weights = dev2.wts.as<float>();
    a2.residual = dev2.res.p;
    a2.out = dev2.out.p;
    a1.programmatic_dependent_launch = a2.programmatic_dependent_launch = pdl;
    for (int rep = 0; rep < 3; ++rep) {
      ASSERT_TRUE(moe_experts_forward(dev1.dims(), a1).ok());
      ASSERT_TRUE(moe_experts_forward(dev1.dims(), a2).ok());
    }
    CUDA_OK(cudaDeviceSynchronize());
    const double e1 = normalised_error(pk_to_float(pk_out_bits(dev1)), pk_reference(d1));
    const double e2 = normalised_error(pk_to_float(pk_out_bits(dev2)), pk_reference(d2));
    EXPECT_LT(e1, 1e-2) << "call 1 normalised error " << e1;
    EXPECT_LT(e2, 1e-2) << "call 2 normalised error " << e2;
  }
}

// A captured graph of the persistent path, replayed twice with new inputs written into the
// same buffers in between (routing too: the kernel reads it on the device).
TEST(CudaMoePersistent, CudaGraphReplay) {
  SKIP_WITHOUT_GPU();
  const PkCase c{5, 2048, 768, 128, 8, true, false};
  const PkData d1 = pk_make(c, 970);
  PkData d2 = pk_make(c, 971);
  // Weights: the union of both cases' experts (d1's values where both use one).
  PkData w = d1;
  for (int e : d2.used)
    if (w.slot[e] < 0) {
      const size_t n13 = size_t(2) * c.I * c.H, n2 = size_t(c.H) * c.I;
      const size_t s2 = size_t(d2.slot[e]);
      w.slot[e] = int(w.used.size());
      w.used.push_back(e);
      w.w13.insert(w.w13.end(), d2.w13.begin() + s2 * n13, d2.w13.begin() + (s2 + 1) * n13);
      w.w2.insert(w.w2.end(), d2.w2.begin() + s2 * n2, d2.w2.begin() + (s2 + 1) * n2);
    }
  d2.used = w.used;
  d2.slot = w.slot;
  d2.w13 = w.w13;
  d2.w2 = w.w2;
  PkDevice dev(c);
  pk_upload(dev, w, true);
  if (testing::Test::HasFatalFailure()) return;
  CUDA_OK(cudaMemset(dev.ws.p, 0xff, dev.ws.bytes));
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  const Status st = moe_experts_forward(dev.dims(), dev.args(true, s));
  CUDA_OK(cudaStreamEndCapture(s, &graph));
  ASSERT_TRUE(st.ok()) << st.message();
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    const PkData& d = replay == 0 ? d1 : d2;
    pk_upload(dev, d, false);
    CUDA_OK(cudaMemset(dev.out.p, 0xff, dev.out.bytes));
    CUDA_OK(cudaGraphLaunch(exec, s));
    CUDA_OK(cudaStreamSynchronize(s));
    const double err = normalised_error(pk_to_float(pk_out_bits(dev)), pk_reference(d));
    EXPECT_LT(err, 1e-2) << "replay " << replay << " normalised error " << err;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

TEST(CudaMoePersistent, RejectsTooManyPairs) {
  SKIP_WITHOUT_GPU();
  const PkCase c{40, 64, 24, 16, 8, false, false};  // 320 pairs > 256
  PkDevice dev(c);
  MoeExpertsArgs a = dev.args(true);
  const Status st = moe_experts_forward(dev.dims(), a);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
}

}  // namespace
}  // namespace moeopt::cuda

#endif  // MOEOPT_HAVE_CUDA
