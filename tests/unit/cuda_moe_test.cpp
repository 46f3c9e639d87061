// GPU tests of the fused CUDA MoE layer (src/moeopt/backend/cuda/moe.h) against a float64
// host reference written here: permutation (counts, offsets, stable order, tile table) and
// the expert path (permute + GEMM1 + SiLU*up + GEMM2 + combine) by normalised error, for
// every GEMM tile. Routing from logits is tested through the op in cuda_moe_ops_test.cpp.
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
  MoeTileChoice tiles;
  tiles.tile = tile;
  const Result<MoeLayerPlan> plan = moe_layer_plan(MoeDims{c.M, c.H, c.I, c.E, c.k}, tiles);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  DevBuf dx(dt.x.bits.size() * 2), d13(dt.w13.bits.size() * 2), d2(dt.w2.bits.size() * 2),
      dids(dt.ids.size() * 4), dwt(dt.wts.size() * 4), dout(size_t(c.M) * c.H * 2),
      dres(std::max<size_t>(16, dt.res.bits.size() * 2)), dws(plan->bytes);
  upload(dx, dt.x.bits);
  upload(d13, dt.w13.bits);
  upload(d2, dt.w2.bits);
  upload(dids, dt.ids);
  upload(dwt, dt.wts);
  if (c.residual) upload(dres, dt.res.bits);
  CUDA_OK(cudaMemset(dout.p, 0xff, dout.bytes));  // poison: bf16 NaN
  CUDA_OK(cudaMemset(dws.p, 0xff, dws.bytes));
  MoeLayerArgs a;
  a.x = dx.p;
  a.expert_ids = dids.as<int32_t>();
  a.expert_weights = dwt.as<float>();
  a.w13 = d13.p;
  a.w2 = d2.p;
  a.residual = c.residual ? dres.p : nullptr;
  a.out = dout.p;
  a.workspace = dws.p;
  Status st = moe_layer_run(*plan, a);
  ASSERT_TRUE(st.ok()) << st.message();
  CUDA_OK(cudaDeviceSynchronize());
  auto bits = download<uint16_t>(dout.p, size_t(c.M) * c.H);
  r->out.resize(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) r->out[i] = bf16_to_f32(bits[i]);
  const MoeLayerPlan& l = *plan;
  const size_t A = size_t(c.M) * c.k, T = size_t(l.max_tiles);
  r->tokens_per_expert = download<int32_t>(moe_region<int32_t>(dws.p, l.tokens_per_expert), c.E);
  r->expert_offsets = download<int32_t>(moe_region<int32_t>(dws.p, l.expert_offsets), c.E + 1);
  r->row_to_token = download<int32_t>(moe_region<int32_t>(dws.p, l.permuted_row_to_token), A);
  r->row_weight = download<float>(moe_region<float>(dws.p, l.permuted_row_weight), A);
  r->token_to_row = download<int32_t>(moe_region<int32_t>(dws.p, l.token_to_permuted_row), A);
  r->num_tiles = download<int32_t>(moe_region<int32_t>(dws.p, l.num_tiles), 1)[0];
  r->tile_expert = download<int32_t>(moe_region<int32_t>(dws.p, l.tile_expert), T);
  r->tile_row_begin = download<int32_t>(moe_region<int32_t>(dws.p, l.tile_row_begin), T);
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
// 0, 1..63, 64..200 rows (several token tiles), in both GEMMs.
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
    const Result<MoeLayerPlan> plan = moe_layer_plan(MoeDims{c.M, c.H, c.I, c.E, c.k});
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    // Same weights for both calls (d1's); different x, ids and routing weights.
    ExpertsData d2w = d2;
    d2w.w13 = d1.w13;
    d2w.w2 = d1.w2;
    DevBuf dx1(d1.x.bits.size() * 2), dx2(d2.x.bits.size() * 2), d13(d1.w13.bits.size() * 2),
        dw2(d1.w2.bits.size() * 2), di1(d1.ids.size() * 4), di2(d2.ids.size() * 4),
        dt1(d1.wts.size() * 4), dt2(d2.wts.size() * 4), do1(size_t(c.M) * c.H * 2),
        do2(size_t(c.M) * c.H * 2), dws(plan->bytes);
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
      MoeLayerArgs a;
      a.x = call == 0 ? dx1.p : dx2.p;
      a.expert_ids = call == 0 ? di1.as<int32_t>() : di2.as<int32_t>();
      a.expert_weights = call == 0 ? dt1.as<float>() : dt2.as<float>();
      a.w13 = d13.p;
      a.w2 = dw2.p;
      a.out = call == 0 ? do1.p : do2.p;
      a.workspace = dws.p;
      a.programmatic_dependent_launch = pdl;
      Status st = moe_layer_run(*plan, a);
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

TEST(CudaMoeExperts, PlanRejectsUnsupportedDims) {
  EXPECT_FALSE(moe_layer_plan(MoeDims{4, 64, 20, 8, 2}).ok());   // I % 8
  EXPECT_FALSE(moe_layer_plan(MoeDims{4, 60, 24, 8, 2}).ok());   // H % 8
  EXPECT_FALSE(moe_layer_plan(MoeDims{0, 64, 24, 8, 2}).ok());   // M = 0
  EXPECT_FALSE(moe_layer_plan(MoeDims{4, 64, 24, 600, 8}).ok()); // E > 512
  EXPECT_FALSE(moe_layer_plan(MoeDims{4, 64, 24, 64, 33}).ok()); // k > 32
  EXPECT_FALSE(moe_layer_plan(MoeDims{4, 64, 24, 4, 5}).ok());   // k > E
  // GEMM 2's tile must have GEMM 1's token rows.
  MoeTileChoice mismatched;
  mismatched.tile = MoeGemmTile::kBm32Bn8;
  mismatched.tile2 = MoeGemmTile::kBm64Bn16;
  EXPECT_FALSE(moe_layer_plan(MoeDims{4, 64, 24, 8, 2}, mismatched).ok());
  EXPECT_TRUE(moe_layer_plan(MoeDims{4, 64, 24, 8, 2}).ok());
}

}  // namespace
}  // namespace moeopt::cuda

#else  // !MOEOPT_HAVE_CUDA

TEST(CudaMoe, NotBuilt) { GTEST_SKIP() << "built without MOEOPT_CUDA"; }

#endif
