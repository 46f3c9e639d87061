// GPU tests of the FP8 (W8A8, 128x128 block scales) MoE layer: ops::moe_forward on CUDA
// tensors with fp8 ExpertWeights against the CPU oracle (ops::moe_forward on CPU tensors with
// the same fp8 codes and scales, x the same bf16-rounded values in f32), through the FP8 op
// cases of the table (kMoeForwardFp8) and GPU cases: the Qwen3-30B-A3B shape (H 2048, I 768,
// E 128, k 8) at M = 1, 8, 64, 512, the TP shard I = 192 with H not a multiple of 128, odd
// shapes taking the repack path (H or I not a multiple of 16, per-expert tensors), empty
// experts and k = 1..8; and every FP8 tile forced (CudaMoeFp8Tiles).
//
// Tolerance: the GPU sums in another order, so a few e4m3 codes of the SiLU·up intermediate
// can round the other way (1/16 relative each), and its outputs are bf16: normalised MSE
// <= kFp8Nmse (seen values are printed: ~5.5e-6 on the mma.sync tiles, ~1.2e-5 when GEMM 1
// runs on wgmma, whose e4m3 sums inside a 128-group are less precise than f32 and flip a few
// more of h's codes).
// Every test skips without a GPU. Run: build/tests/test_cuda --gtest_filter='CudaMoeFp8*'
#include <gtest/gtest.h>

#if MOEOPT_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_test_support.h"
#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/moe.h"
#include "moeopt/core/dtype.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/fp8.h"
#include "moeopt/ops/moe.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::ops {
namespace {

constexpr double kFp8Nmse = 2e-4;

ThreadPool& pool() {
  static ThreadPool p(0);
  return p;
}

class DevTensor {
 public:
  explicit DevTensor(const TensorView& host) {
    const size_t bytes = std::max<size_t>(16, host.nbytes());
    if (cudaMalloc(&p_, bytes) != cudaSuccess) p_ = nullptr;
    v_ = TensorView::contiguous(p_, host.dtype, host.shape, Device::kCuda);
    if (p_ != nullptr) cudaMemcpy(p_, host.data, host.nbytes(), cudaMemcpyHostToDevice);
  }
  DevTensor(DType dtype, const Shape& shape) {
    if (cudaMalloc(&p_, std::max<size_t>(16, size_t(shape.numel()) * dtype_size(dtype))) !=
        cudaSuccess)
      p_ = nullptr;
    v_ = TensorView::contiguous(p_, dtype, shape, Device::kCuda);
  }
  ~DevTensor() { cudaFree(p_); }
  DevTensor(const DevTensor&) = delete;
  DevTensor& operator=(const DevTensor&) = delete;
  operator TensorView() const { return v_; }  // NOLINT
  const TensorView& view() const { return v_; }
  bool ok() const { return p_ != nullptr; }
  HostTensor download() const {
    HostTensor h(v_.dtype, v_.shape);
    cudaMemcpy(h.ptr<void>(), p_, v_.nbytes(), cudaMemcpyDeviceToHost);
    return h;
  }

 private:
  void* p_ = nullptr;
  TensorView v_;
};

// Fast parallel fill (the Qwen3 stack has 6e8 codes).
template <class Fn>
void parallel_fill(int64_t n, uint64_t seed, Fn fn) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  pool().parallel_for(chunks, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      CaseRng rng(seed ^ (uint64_t(c) * 0x9e3779b97f4a7c15ull));
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) fn(i, rng);
    }
  });
}

// e4m3 codes of values uniform in +-[0.05, 1] * 448 (never NaN), and block scales around
// 1/(448 sqrt(K)) so that weights are ~ 1/sqrt(K).
HostTensor random_codes(const Shape& shape, uint64_t seed) {
  HostTensor t(DType::kF8E4M3, shape);
  uint8_t* q = t.ptr<uint8_t>();
  parallel_fill(t.numel(), seed, [&](int64_t i, CaseRng& rng) {
    q[i] = f32_to_fp8e4m3(float(rng.nonzero(0.05, 1.0) * 448.0));
  });
  return t;
}
HostTensor random_scales(const Shape& shape, int64_t k, uint64_t seed) {
  HostTensor t(DType::kF32, shape);
  float* s = t.ptr<float>();
  const double base = 1.0 / (448.0 * std::sqrt(double(k)));
  parallel_fill(t.numel(), seed, [&](int64_t i, CaseRng& rng) {
    s[i] = float(base * rng.uniform(0.5, 1.5));
  });
  return t;
}
HostTensor random_f32(const Shape& shape, uint64_t seed, double lo, double hi) {
  HostTensor t(DType::kF32, shape);
  float* v = t.ptr<float>();
  parallel_fill(t.numel(), seed, [&](int64_t i, CaseRng& rng) { v[i] = float(rng.nonzero(lo, hi)); });
  return t;
}

struct Fp8Case {
  std::string name;
  int64_t m, h, inter, e;
  int k;
  bool stacked = true;
  bool renormalize = true;
  int pad_rows_to = 1;
  RouterScoring scoring = RouterScoring::kSoftmax;
  ExpertGrouping grouping = ExpertGrouping::kNone;
  int n_group = 1, topk_group = 1;
  bool correction_bias = false;
  float routed_scaling_factor = 1.0f;
  bool skew = false;  // logits favouring a few experts (many empty ones)
};

void run_case(const Fp8Case& c) {
  SCOPED_TRACE(c.name);
  const int64_t m = c.m, h = c.h, inter = c.inter, e = c.e, ib = fp8_blocks(inter),
                hb = fp8_blocks(h);
  const uint64_t seed = CaseRng(c.name).next();
  // x: bf16 values (what the GPU takes), the same values in f32 for the CPU.
  HostTensor x(DType::kF32, {m, h}), xb(DType::kBF16, {m, h});
  {
    HostTensor r = random_f32({m, h}, seed + 1, 0.01, 2.0);
    for (int64_t i = 0; i < m * h; ++i) {
      const uint16_t b = f32_to_bf16(r.ptr<float>()[i]);
      xb.ptr<uint16_t>()[i] = b;
      x.ptr<float>()[i] = bf16_to_f32(b);
    }
  }
  HostTensor logits = random_f32({m, e}, seed + 2, 0.05, 3.0);
  if (c.skew)
    for (int64_t t = 0; t < m; ++t)
      for (int64_t j = 0; j < e; ++j) logits.ptr<float>()[t * e + j] += j < 2 * c.k ? 20.f : 0.f;
  HostTensor bias = random_f32({e}, seed + 3, 0.01, 0.3);
  HostTensor w13 = random_codes({e, 2 * inter, h}, seed + 4);
  HostTensor w2 = random_codes({e, h, inter}, seed + 5);
  HostTensor w13s = random_scales({e, 2 * ib, hb}, h, seed + 6);
  HostTensor w2s = random_scales({e, hb, ib}, inter, seed + 7);

  RouteParams rp;
  rp.top_k = c.k;
  rp.scoring = c.scoring;
  rp.renormalize = c.renormalize;
  rp.grouping = c.grouping;
  rp.n_group = c.n_group;
  rp.topk_group = c.topk_group;
  rp.routed_scaling_factor = c.routed_scaling_factor;
  if (c.correction_bias) {
    rp.correction_bias = bias.view();
    rp.renormalize_eps = 1e-20f;
  }
  const MoeParams params{.route = rp, .pad_rows_to = c.pad_rows_to};
  HostTensor ref(DType::kF32, {m, h});
  Status st = moe_forward(Context{.pool = &pool()}, x, logits,
                          ExpertWeights::stacked_fp8(w13, w13s, w2, w2s), params, ref);
  ASSERT_TRUE(st.ok()) << st.message();

  DevTensor dx(xb.view()), dl(logits.view()), db(bias.view()), d13(w13.view()), d2(w2.view()),
      d13s(w13s.view()), d2s(w2s.view()), dout(DType::kBF16, {m, h});
  ASSERT_TRUE(dx.ok() && d13.ok() && d2.ok() && dout.ok());
  cudaMemset(dout.view().data, 0x7f, dout.view().nbytes());  // poison
  MoeParams gp = params;
  if (c.correction_bias) gp.route.correction_bias = db.view();
  ExpertWeights gw = ExpertWeights::stacked_fp8(d13, d13s, d2, d2s);
  if (!c.stacked) {  // per-expert views of the same device memory
    std::vector<TensorView> g, u, d, gs, us, ds;
    for (int64_t i = 0; i < e; ++i) {
      g.push_back(d13.view().select0(i).slice0(0, inter));
      u.push_back(d13.view().select0(i).slice0(inter, 2 * inter));
      d.push_back(d2.view().select0(i));
      gs.push_back(d13s.view().select0(i).slice0(0, ib));
      us.push_back(d13s.view().select0(i).slice0(ib, 2 * ib));
      ds.push_back(d2s.view().select0(i));
    }
    gw = ExpertWeights::per_expert_fp8(g, u, d, gs, us, ds);
  }
  cuda::CudaBackend backend;
  st = moe_forward(Context{.device_backend = &backend}, dx, dl, gw, gp, dout);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  HostTensor got_b = dout.download();
  std::vector<float> got(size_t(m * h));
  for (int64_t i = 0; i < m * h; ++i) got[size_t(i)] = bf16_to_f32(got_b.ptr<uint16_t>()[i]);
  std::vector<double> want = to_doubles(ref);
  const Comparison cmp =
      compare_values(got.data(), want.data(), m * h, Metric::kNormalizedMse, kFp8Nmse);
  std::printf("[ fp8 moe ] %-34s M %5lld H %5lld I %5lld E %4lld k %2d: nmse %.3e\n",
              c.name.c_str(), (long long)m, (long long)h, (long long)inter, (long long)e, c.k,
              cmp.value);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
}

// The table's FP8 MoE cases (ops/op_cases.h), each at the case's own shape and routing.
std::vector<Fp8Case> table_cases() {
  std::vector<Fp8Case> out;
  for (const OpCase& c : op_cases_for(OpKind::kMoeForwardFp8)) {
    Fp8Case f{.name = c.name, .m = c.m, .h = c.n, .inter = c.k, .e = c.experts, .k = c.top_k};
    f.stacked = c.stacked;
    f.renormalize = c.renormalize;
    f.pad_rows_to = c.pad_rows_to;
    f.scoring = c.scoring;
    f.grouping = c.grouping;
    f.n_group = c.n_group;
    f.topk_group = c.topk_group;
    f.correction_bias = c.correction_bias;
    f.routed_scaling_factor = c.routed_scaling_factor;
    out.push_back(f);
  }
  return out;
}

std::vector<Fp8Case> gpu_cases() {
  std::vector<Fp8Case> c;
  for (int64_t m : {1, 8, 64, 512})
    c.push_back({.name = "gpu_fp8_qwen3_30b_m" + std::to_string(m), .m = m, .h = 2048,
                 .inter = 768, .e = 128, .k = 8});
  // TP shard I = 768/4 = 192 (a partial 128 group), H not a multiple of 128.
  c.push_back({.name = "gpu_fp8_tp_shard_i192_h2064", .m = 37, .h = 2064, .inter = 192, .e = 128,
               .k = 8});
  c.push_back({.name = "gpu_fp8_tp_shard_i192_m1", .m = 1, .h = 2048, .inter = 192, .e = 128,
               .k = 8});
  // Empty experts: routing concentrated on 2k experts of 64.
  c.push_back({.name = "gpu_fp8_empty_experts", .m = 40, .h = 256, .inter = 144, .e = 64, .k = 4,
               .skew = true});
  // k = 1..8 on a small odd shape (tails in both GEMMs).
  for (int k = 1; k <= 8; ++k)
    c.push_back({.name = "gpu_fp8_k" + std::to_string(k), .m = 23, .h = 336, .inter = 208,
                 .e = 16, .k = k, .renormalize = k % 2 == 0});
  // Repack path: H / I not multiples of 16, per-expert tensors.
  c.push_back({.name = "gpu_fp8_odd_h200", .m = 9, .h = 200, .inter = 192, .e = 16, .k = 8});
  c.push_back({.name = "gpu_fp8_odd_i70_per_expert", .m = 5, .h = 136, .inter = 70, .e = 10,
               .k = 5, .stacked = false});
  // 16 rows per expert (the wgmma 32-token tile) with a long K.
  c.push_back({.name = "gpu_fp8_mixtral_like_m64", .m = 64, .h = 4096, .inter = 1024, .e = 8,
               .k = 2});
  // The prefill regime (choose_moe_fp8_tile: the wgmma 64-token tile): 75 and 192 rows per
  // expert, one and several token tiles per expert, with partial 128-groups in I and partial
  // tiles in every expert.
  c.push_back({.name = "gpu_fp8_prefill_bn64", .m = 300, .h = 1024, .inter = 384, .e = 16,
               .k = 4});
  c.push_back({.name = "gpu_fp8_prefill_bn128", .m = 768, .h = 1024, .inter = 464, .e = 16,
               .k = 4});
  return c;
}

class CudaMoeFp8Table : public testing::TestWithParam<Fp8Case> {};
TEST_P(CudaMoeFp8Table, MatchesCpuOracle) {
  SKIP_WITHOUT_GPU();
  run_case(GetParam());
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaMoeFp8Table, testing::ValuesIn(table_cases()),
                         [](const auto& info) { return info.param.name; });

class CudaMoeFp8Gpu : public testing::TestWithParam<Fp8Case> {};
TEST_P(CudaMoeFp8Gpu, MatchesCpuOracle) {
  SKIP_WITHOUT_GPU();
  run_case(GetParam());
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaMoeFp8Gpu, testing::ValuesIn(gpu_cases()),
                         [](const auto& info) { return info.param.name; });

// Every FP8 tile, forced through the layer's plan (cuda::moe_layer_plan's MoeTileChoice), on
// the routing of the CPU oracle: the mma.sync tiles and the sm_90a wgmma tiles, each as GEMM 1
// with its default GEMM 2, and mixed pairs of equal token rows (the chooser may pair a
// mma.sync GEMM 1 with a wgmma GEMM 2). Shapes: Qwen3-30B-A3B at M = 256 (16 rows per
// expert), tails in every dimension (H = 2064: a partial K group and a partial 256-row weight
// block in GEMM 2; I = 192: GEMM 1's second 128-column block half empty), and concentrated
// routing (empty experts, experts spanning several token tiles).
struct TileCase {
  std::string name;
  int64_t m, h, inter, e;
  int k;
  bool skew = false;
};

using TilePair = std::pair<cuda::MoeFp8Tile, cuda::MoeFp8Tile>;

// One reference per case, then every pair on the same device data.
void run_tile_case(const TileCase& c, const std::vector<TilePair>& pairs) {
  SCOPED_TRACE(c.name);
  const int64_t m = c.m, h = c.h, inter = c.inter, e = c.e, ib = fp8_blocks(inter),
                hb = fp8_blocks(h);
  const uint64_t seed = CaseRng(c.name).next();
  HostTensor x(DType::kF32, {m, h}), xb(DType::kBF16, {m, h});
  {
    HostTensor r = random_f32({m, h}, seed + 1, 0.01, 2.0);
    for (int64_t i = 0; i < m * h; ++i) {
      const uint16_t b = f32_to_bf16(r.ptr<float>()[i]);
      xb.ptr<uint16_t>()[i] = b;
      x.ptr<float>()[i] = bf16_to_f32(b);
    }
  }
  HostTensor logits = random_f32({m, e}, seed + 2, 0.05, 3.0);
  if (c.skew)
    for (int64_t t = 0; t < m; ++t)
      for (int64_t j = 0; j < e; ++j) logits.ptr<float>()[t * e + j] += j < 2 * c.k ? 20.f : 0.f;
  HostTensor w13 = random_codes({e, 2 * inter, h}, seed + 4);
  HostTensor w2 = random_codes({e, h, inter}, seed + 5);
  HostTensor w13s = random_scales({e, 2 * ib, hb}, h, seed + 6);
  HostTensor w2s = random_scales({e, hb, ib}, inter, seed + 7);
  RouteParams rp;
  rp.top_k = c.k;
  const MoeParams params{.route = rp};
  HostTensor ref(DType::kF32, {m, h});
  const Context cpu{.pool = &pool()};
  ASSERT_TRUE(moe_forward(cpu, x, logits, ExpertWeights::stacked_fp8(w13, w13s, w2, w2s), params,
                          ref)
                  .ok());
  HostTensor ids(DType::kI32, {m, c.k}), wts(DType::kF32, {m, c.k});
  ASSERT_TRUE(moe_route(cpu, logits, rp, ids, wts).ok());

  std::vector<double> want = to_doubles(ref);
  DevTensor dx(xb.view()), dids(ids.view()), dwts(wts.view()), d13(w13.view()), d2(w2.view()),
      d13s(w13s.view()), d2s(w2s.view()), dout(DType::kBF16, {m, h});
  ASSERT_TRUE(dx.ok() && d13.ok() && d2.ok() && dout.ok());
  for (const auto& [t1, t2] : pairs) {
    SCOPED_TRACE(std::string(cuda::moe_fp8_tile_name(t1)) + "/" + cuda::moe_fp8_tile_name(t2));
    cuda::MoeTileChoice tiles;
    tiles.fp8_tile = t1;
    tiles.fp8_tile2 = t2;
    const Result<cuda::MoeLayerPlan> plan =
        cuda::moe_layer_plan(cuda::MoeDims{m, h, inter, e, c.k, /*fp8=*/true}, tiles);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    DevTensor dws(DType::kU8, {int64_t(plan->bytes)});
    ASSERT_TRUE(dws.ok());
    cudaMemset(dout.view().data, 0x7f, dout.view().nbytes());  // poison
    cudaMemset(dws.view().data, 0xff, dws.view().nbytes());
    cuda::MoeLayerArgs a;
    a.x = dx.view().data;
    a.expert_ids = dids.view().ptr<const int32_t>();
    a.expert_weights = dwts.view().ptr<const float>();
    a.w13 = d13.view().data;
    a.w2 = d2.view().data;
    a.w13_scale = d13s.view().ptr<const float>();
    a.w2_scale = d2s.view().ptr<const float>();
    a.out = dout.view().data;
    a.workspace = dws.view().data;
    const Status st = cuda::moe_layer_run(*plan, a);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    HostTensor got_b = dout.download();
    std::vector<float> got(size_t(m * h));
    for (int64_t i = 0; i < m * h; ++i) got[size_t(i)] = bf16_to_f32(got_b.ptr<uint16_t>()[i]);
    const Comparison cmp =
        compare_values(got.data(), want.data(), m * h, Metric::kNormalizedMse, kFp8Nmse);
    std::printf("[ fp8 tile ] %-18s %-16s/%-16s nmse %.3e\n", c.name.c_str(),
                cuda::moe_fp8_tile_name(t1), cuda::moe_fp8_tile_name(t2), cmp.value);
    EXPECT_TRUE(cmp.ok) << cmp.detail;
  }
}

TEST(CudaMoeFp8Tiles, EveryTileMatchesCpuOracle) {
  SKIP_WITHOUT_GPU();
  using cuda::MoeFp8Tile;
  const std::vector<TileCase> cases = {
      {.name = "qwen3_30b_m256", .m = 256, .h = 2048, .inter = 768, .e = 128, .k = 8},
      {.name = "tails_h2064_i192", .m = 45, .h = 2064, .inter = 192, .e = 16, .k = 4},
      {.name = "skewed_m300", .m = 300, .h = 512, .inter = 256, .e = 32, .k = 4, .skew = true},
  };
  std::vector<TilePair> pairs;
  for (int t = 0; t < cuda::kNumMoeFp8Tiles; ++t)
    pairs.emplace_back(MoeFp8Tile(t), cuda::moe_fp8_gemm2_tile(MoeFp8Tile(t)));
  pairs.emplace_back(MoeFp8Tile::kBm64Bn16, MoeFp8Tile::kWgmma256x16);
  pairs.emplace_back(MoeFp8Tile::kWgmma256x32, MoeFp8Tile::kBm64Bn32);
  pairs.emplace_back(MoeFp8Tile::kBm128Bn64, MoeFp8Tile::kWgmma256x64);
  for (const TileCase& c : cases) run_tile_case(c, pairs);
}

// The op-by-op moe_experts has no FP8 path on CUDA: a clean kUnsupported.
TEST(CudaMoeFp8, ExpertsOpIsUnsupported) {
  SKIP_WITHOUT_GPU();
  const int64_t e = 4, h = 128, inter = 128;
  HostTensor w13(DType::kF8E4M3, {e, 2 * inter, h}), w2(DType::kF8E4M3, {e, h, inter});
  HostTensor w13s(DType::kF32, {e, 2, 1}), w2s(DType::kF32, {e, 1, 1});
  DevTensor d13(w13.view()), d2(w2.view()), d13s(w13s.view()), d2s(w2s.view());
  DevTensor x(DType::kBF16, {2, h}), rows(DType::kBF16, {4, h});
  DevTensor counts(DType::kI32, {e}), offsets(DType::kI32, {e + 1}), rt(DType::kI32, {4}),
      rw(DType::kF32, {4}), inv(DType::kI32, {2, 2});
  cuda::CudaBackend backend;
  MoePermutation perm{counts, offsets, rt, rw, inv};
  const Status st = moe_experts(Context{.device_backend = &backend}, x,
                                ExpertWeights::stacked_fp8(d13, d13s, d2, d2s), perm, rows);
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported) << st.message();
}

}  // namespace
}  // namespace moeopt::ops

#else  // !MOEOPT_HAVE_CUDA

TEST(CudaMoeFp8, NotBuilt) { GTEST_SKIP() << "built without MOEOPT_CUDA"; }

#endif
