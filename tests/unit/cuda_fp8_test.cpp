// The CUDA FP8 ops (backend/cuda/cuda_fp8_ops.cpp) against the CPU reference of ops/fp8.h:
//   - the weight block quantiser gives the CPU's codes and scales bit for bit (bf16, f16 and
//     f32 weights, partial blocks, row-strided codes);
//   - the activation quantiser (per row, groups of 128) gives the CPU's codes and scales bit
//     for bit (partial groups, strided rows);
//   - the W8A8 linear (fast kernel and fallback) on the op-case table's kLinearFp8 cases and
//     on Qwen3-30B-A3B projection shapes (H 2048, q 4096, kv 512, fused qkv 5120) for M in
//     {1, 8, 64, 300, 1024} (every tile of choose_fp8_linear_tile), bf16 and f32 outputs,
//     bias, strided rows; and every tile of the dense GEMM forced (DenseLinearEveryTile:
//     the mma.sync and the sm_90a wgmma tiles) on shapes with tails in M, N and K.
// Method: x and w are drawn and rounded to bf16; the CPU quantises w (the codes and scales
// then go to the GPU as they are) and runs linear on the f32 copy of x; the GPU gets x in
// bf16 (exact). Both quantise x from the same values, so the only difference is the order
// of the f32 sums: kF32Nmse for f32 outputs, kBf16Nmse (one bf16 rounding) for bf16.
// Every test skips without a CUDA device. Run: build/tests/test_cuda --gtest_filter='CudaFp8*'
#include <gtest/gtest.h>

#if MOEOPT_HAVE_CUDA

#include <cuda_runtime.h>

#include "cuda_test_support.h"

#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/fp8_launch.h"
#include "moeopt/backend/cuda/kernels/dense_params.cuh"
#include "moeopt/backend/cuda/moe_heuristics.h"
#include "moeopt/backend/cuda/moe_launch.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/fp8.h"
#include "moeopt/ops/linear.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::ops {
namespace {

constexpr double kBf16Nmse = 1e-5;
constexpr double kF32Nmse = 1e-9;
// The sm_90a wgmma tiles: the tensor cores sum a 128-group of e4m3 products in less than f32
// precision before the kernel adds the group in f32 (the DeepSeek-V3 report puts it near 14
// mantissa bits; hence one promotion per 128-group). Measured on an H200: normalised MSE
// 1.0e-8 for f32 outputs (rms relative error ~1e-4); the mma.sync tiles stay within kF32Nmse.
constexpr double kF32WgmmaNmse = 1e-7;

ThreadPool& pool() {
  static ThreadPool p(0);
  return p;
}
Context cpu_ctx() { return Context{.pool = &pool()}; }

// Values in +-[lo, hi] (sign and magnitude from the seed), rounded to bf16, as f32.
HostTensor bf16_values(const Shape& shape, const std::string& seed, double lo, double hi) {
  HostTensor t(DType::kF32, shape);
  CaseRng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = round_to_bf16(float(rng.nonzero(lo, hi)));
  return t;
}

HostTensor converted(const HostTensor& src, DType dtype) {
  HostTensor out(dtype, src.shape());
  for (int64_t i = 0; i < src.numel(); ++i)
    store_from_f32(out.ptr<void>(), dtype, i, load_as_f32(src.ptr<void>(), src.dtype(), i));
  return out;
}

// A device buffer of rows x stride elements, filled with a byte pattern.
struct Dev {
  DType dtype;
  int64_t rows, stride;
  void* p = nullptr;
  Dev(DType d, int64_t r, int64_t s) : dtype(d), rows(r), stride(s) {
    const size_t bytes = std::max<size_t>(1, size_t(r * s) * dtype_size(d));
    EXPECT_EQ(cudaMalloc(&p, bytes), cudaSuccess);
    EXPECT_EQ(cudaMemset(p, 0x5a, bytes), cudaSuccess);
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  // [rows, cols] starting at element `off`, rows `stride` apart.
  TensorView view(int64_t cols, int64_t off = 0) const {
    TensorView v = TensorView::contiguous(static_cast<char*>(p) + off * dtype_size(dtype), dtype,
                                          {rows, cols}, Device::kCuda);
    v.strides[0] = stride;
    return v;
  }
};

void put(const TensorView& dev, const HostTensor& host) {  // host contiguous, dev's dtype
  const size_t es = dtype_size(dev.dtype), row = size_t(dev.shape[1]) * es;
  ASSERT_EQ(host.dtype(), dev.dtype);
  if (dev.shape[0] == 0 || row == 0) return;
  ASSERT_EQ(cudaMemcpy2D(dev.data, size_t(row_stride(dev)) * es, host.ptr<void>(), row, row,
                         size_t(dev.shape[0]), cudaMemcpyHostToDevice),
            cudaSuccess);
}

HostTensor get(const TensorView& dev) {
  HostTensor h(dev.dtype, dev.shape);
  const size_t es = dtype_size(dev.dtype), row = size_t(dev.shape[1]) * es;
  if (dev.shape[0] > 0 && row > 0)
    EXPECT_EQ(cudaMemcpy2D(h.ptr<void>(), row, dev.data, size_t(row_stride(dev)) * es, row,
                           size_t(dev.shape[0]), cudaMemcpyDeviceToHost),
              cudaSuccess);
  return h;
}

// ---------------------------------------------------------------- weight quantiser

void check_quantiser(cuda::CudaBackend& be, int64_t n, int64_t k, DType dtype, int64_t q_pad) {
  SCOPED_TRACE(fmt::format("{}x{} {} pad {}", n, k, dtype_name(dtype), q_pad));
  // Magnitudes over 2^-12 .. 2: some blocks reach e4m3 subnormals, ties and the saturation edge.
  HostTensor w = converted(bf16_values({n, k}, fmt::format("q{}x{}", n, k), 1.0 / 4096, 2.0), dtype);
  for (int64_t i = 0; i < n * k; i += 97) store_from_f32(w.ptr<void>(), dtype, i, 0.0f);
  HostTensor q(DType::kF8E4M3, {n, k}), s(DType::kF32, fp8_scale_shape(n, k));
  ASSERT_TRUE(quantize_fp8_weight_blocks(cpu_ctx(), w, q, s).ok());
  Dev dw(dtype, n, k), dq(DType::kF8E4M3, n, k + q_pad), ds(DType::kF32, fp8_blocks(n), fp8_blocks(k));
  put(dw.view(k), w);
  const Status st = quantize_fp8_weight_blocks(Context{.device_backend = &be}, dw.view(k),
                                               dq.view(k), ds.view(fp8_blocks(k)));
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  HostTensor gq = get(dq.view(k)), gs = get(ds.view(fp8_blocks(k)));
  EXPECT_EQ(std::memcmp(gs.ptr<void>(), s.ptr<void>(), size_t(s.numel()) * 4), 0) << "scales differ";
  int64_t bad = 0;
  for (int64_t i = 0; i < n * k; ++i) bad += gq.ptr<uint8_t>()[i] != q.ptr<uint8_t>()[i];
  EXPECT_EQ(bad, 0) << "codes differ";
  if (q_pad > 0) {  // the padding columns keep their bytes
    std::vector<uint8_t> all(size_t(n * (k + q_pad)));
    ASSERT_EQ(cudaMemcpy(all.data(), dq.p, all.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = k; c < k + q_pad; ++c) ASSERT_EQ(all[size_t(r * (k + q_pad) + c)], 0x5a);
  }
}

TEST(CudaFp8, WeightQuantiserEqualsTheCpuBitForBit) {
  SKIP_WITHOUT_GPU();
  cuda::CudaBackend be;
  check_quantiser(be, 256, 384, DType::kBF16, 0);
  check_quantiser(be, 200, 300, DType::kBF16, 0);  // partial blocks on both dims
  check_quantiser(be, 130, 77, DType::kF32, 0);
  check_quantiser(be, 5, 17, DType::kF16, 0);
  check_quantiser(be, 192, 136, DType::kBF16, 8);  // row-strided codes (padded expert rows)
}

// ---------------------------------------------------------------- W8A8 linear

struct Fp8LinearShape {
  std::string name;
  int64_t m, n, k;
  bool bias = false;
  DType y = DType::kBF16;
  int64_t x_pad = 0, y_pad = 0;  // extra elements per row (strided views)
  // Forced tile: the GPU side quantises x with the device quantiser and launches the dense GEMM of
  // this tile directly (launch_fp8_dense_linear), bypassing choose_fp8_linear_tile.
  std::optional<cuda::MoeFp8Tile> tile = std::nullopt;
};

void check_linear(cuda::CudaBackend& be, const Fp8LinearShape& s) {
  SCOPED_TRACE(s.name);
  HostTensor x = bf16_values({s.m, s.k}, s.name + "/x", 0.01, 2.0);
  HostTensor w = bf16_values({s.n, s.k}, s.name + "/w", 0.001, 0.1);
  HostTensor b = bf16_values({s.n}, s.name + "/b", 0.0, 1.0);
  HostTensor q(DType::kF8E4M3, {s.n, s.k}), sc(DType::kF32, fp8_scale_shape(s.n, s.k));
  ASSERT_TRUE(quantize_fp8_weight_blocks(cpu_ctx(), w, q, sc).ok());
  HostTensor ref(DType::kF32, {s.m, s.n});
  const std::optional<TensorView> hb = s.bias ? std::optional<TensorView>(b.view()) : std::nullopt;
  ASSERT_TRUE(linear(cpu_ctx(), x, LinearWeight(q.view(), sc.view()), hb, ref).ok());

  Dev dx(DType::kBF16, s.m, s.k + s.x_pad), dq(DType::kF8E4M3, s.n, s.k),
      ds(DType::kF32, fp8_blocks(s.n), fp8_blocks(s.k)), db(DType::kBF16, 1, s.n),
      dy(s.y, s.m, s.n + s.y_pad);
  put(dx.view(s.k), converted(x, DType::kBF16));
  put(dq.view(s.k), q);
  put(ds.view(fp8_blocks(s.k)), sc);
  HostTensor b16 = converted(b, DType::kBF16);
  ASSERT_EQ(cudaMemcpy(db.p, b16.ptr<void>(), size_t(s.n) * 2, cudaMemcpyHostToDevice), cudaSuccess);
  TensorView bias_v = TensorView::contiguous(db.p, DType::kBF16, {s.n}, Device::kCuda);
  const std::optional<TensorView> dbias = s.bias ? std::optional<TensorView>(bias_v) : std::nullopt;
  if (s.tile) {
    Dev dxq(DType::kF8E4M3, s.m, s.k), dxs(DType::kF32, s.m, fp8_blocks(s.k));
    cuda::kernels::Fp8QuantActParams qp{};
    qp.x = dx.p;
    qp.x_dtype = cuda::kernels::ElemDType::kBF16;
    qp.rows = s.m;
    qp.k = s.k;
    qp.x_stride = s.k + s.x_pad;
    qp.x_q = static_cast<unsigned char*>(dxq.p);
    qp.q_stride = s.k;
    qp.x_scale = static_cast<float*>(dxs.p);
    ASSERT_EQ(cuda::detail::launch_fp8_quantize_act(qp, false, nullptr), cudaSuccess);
    cuda::kernels::Fp8GroupedGemmParams p{};
    p.act_q = static_cast<const unsigned char*>(dxq.p);
    p.act_scale = static_cast<const float*>(dxs.p);
    p.ld_act = int(s.k);
    p.weight = static_cast<const unsigned char*>(dq.p);
    p.weight_scale = static_cast<const float*>(ds.p);
    p.K = int(s.k);
    p.N_out = int(s.n);
    p.num_tokens = p.num_rows = int(s.m);
    p.dense = 1;
    p.ld_out = int(s.n + s.y_pad);
    p.bias = s.bias ? static_cast<const __nv_bfloat16*>(db.p) : nullptr;
    if (s.y == DType::kF32) p.out_f32 = static_cast<float*>(dy.p);
    else p.out_bf16 = static_cast<__nv_bfloat16*>(dy.p);
    ASSERT_EQ(cuda::detail::launch_fp8_dense_linear(*s.tile, p, false, nullptr), cudaSuccess);
  } else {
    const Status st = linear(Context{.device_backend = &be}, dx.view(s.k),
                             LinearWeight(dq.view(s.k), ds.view(fp8_blocks(s.k))), dbias,
                             dy.view(s.n));
    ASSERT_TRUE(st.ok()) << st.message();
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  HostTensor got = converted(get(dy.view(s.n)), DType::kF32);
  int dev = 0, sms = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), cudaSuccess);
  const bool wgmma = cuda::is_fp8_wgmma_tile(
      s.tile ? *s.tile : cuda::choose_fp8_linear_tile(s.m, s.n, sms, /*allow_wgmma=*/true));
  const double tol = s.y == DType::kF32 ? (wgmma ? kF32WgmmaNmse : kF32Nmse) : kBf16Nmse;
  std::vector<double> want(size_t(ref.numel()));
  for (int64_t i = 0; i < ref.numel(); ++i) want[size_t(i)] = ref.ptr<float>()[i];
  const Comparison c = compare_values(got.ptr<float>(), want.data(), ref.numel(), Metric::kNormalizedMse, tol);
  EXPECT_TRUE(c.ok) << "against the CPU W8A8 reference: normalised MSE " << c.value << " > " << tol
                    << "; " << c.detail;
}

std::string case_name(const testing::TestParamInfo<OpCase>& info) { return info.param.name; }

// ---------------------------------------------------------------- activation quantiser

void check_act_quantiser(cuda::CudaBackend& be, int64_t m, int64_t k, int64_t x_pad) {
  SCOPED_TRACE(fmt::format("act {}x{} pad {}", m, k, x_pad));
  // Rows of very different magnitudes (2^-20 .. 64), zeros sprinkled in, one all-zero row.
  HostTensor x(DType::kF32, {m, k});
  CaseRng rng(fmt::format("act{}x{}", m, k));
  for (int64_t r = 0; r < m; ++r) {
    const double mag = std::ldexp(1.0, int(rng.uniform(-20, 6)));
    for (int64_t c = 0; c < k; ++c)
      x.ptr<float>()[r * k + c] = r == 1 || c % 53 == 0 ? 0.f : float(rng.nonzero(0.0, mag));
  }
  HostTensor q(DType::kF8E4M3, {m, k}), s(DType::kF32, {m, fp8_blocks(k)});
  ASSERT_TRUE(quantize_fp8_activations(cpu_ctx(), x, q, s).ok());
  Dev dx(DType::kF32, m, k + x_pad), dq(DType::kF8E4M3, m, k), ds(DType::kF32, m, fp8_blocks(k));
  put(dx.view(k), x);
  const Status st = quantize_fp8_activations(Context{.device_backend = &be}, dx.view(k),
                                             dq.view(k), ds.view(fp8_blocks(k)));
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  HostTensor gq = get(dq.view(k)), gs = get(ds.view(fp8_blocks(k)));
  EXPECT_EQ(std::memcmp(gs.ptr<void>(), s.ptr<void>(), size_t(s.numel()) * 4), 0) << "scales differ";
  int64_t bad = 0;
  for (int64_t i = 0; i < m * k; ++i) bad += gq.ptr<uint8_t>()[i] != q.ptr<uint8_t>()[i];
  EXPECT_EQ(bad, 0) << "codes differ";
}

TEST(CudaFp8, ActivationQuantiserEqualsTheCpuBitForBit) {
  SKIP_WITHOUT_GPU();
  cuda::CudaBackend be;
  check_act_quantiser(be, 1, 2048, 0);
  check_act_quantiser(be, 37, 200, 0);    // partial last group
  check_act_quantiser(be, 300, 768, 8);   // strided rows
  check_act_quantiser(be, 5, 8, 0);       // a group of 8
}

class CudaFp8Linear : public testing::TestWithParam<OpCase> {};

TEST_P(CudaFp8Linear, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const OpCase& c = GetParam();
  cuda::CudaBackend be;
  check_linear(be, {.name = c.name, .m = c.m, .n = c.n, .k = c.k, .bias = c.bias});
  check_linear(be, {.name = c.name + std::string("/f32"), .m = c.m, .n = c.n, .k = c.k,
                    .bias = c.bias, .y = DType::kF32});
  check_linear(be, {.name = c.name + std::string("/strided"), .m = c.m, .n = c.n, .k = c.k,
                    .bias = c.bias, .x_pad = 8, .y_pad = 3});
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaFp8Linear, testing::ValuesIn(op_cases_for(OpKind::kLinearFp8)),
                         case_name);

TEST(CudaFp8, LinearRealWidth) {
  SKIP_WITHOUT_GPU();
  cuda::CudaBackend be;
  for (int64_t m : {1, 8, 64, 300, 1024}) {
    const std::string t = fmt::format("_m{}", m);
    check_linear(be, {.name = "q" + t, .m = m, .n = 4096, .k = 2048});
    check_linear(be, {.name = "qkv" + t, .m = m, .n = 5120, .k = 2048});
    check_linear(be, {.name = "kv" + t, .m = m, .n = 512, .k = 2048, .x_pad = 0, .y_pad = 4096});
    check_linear(be, {.name = "o_f32" + t, .m = m, .n = 2048, .k = 4096, .y = DType::kF32});
    check_linear(be, {.name = "bias" + t, .m = m, .n = 1024, .k = 2048, .bias = true});
  }
  // Long K (16384: the weight scales of a tile grow with K, the stages do not).
  check_linear(be, {.name = "long_k", .m = 40, .n = 256, .k = 16384, .y = DType::kF32});
  // Unaligned x rows: the fallback kernel.
  check_linear(be, {.name = "unaligned", .m = 9, .n = 256, .k = 512, .x_pad = 3});
}

// The FP8 GEMV (kernels/fp8_gemv.cuh, M <= kGemvMaxRows) at every row count, and the first
// past it: both K splits (qkv has two blocks per SM on a 132-SM card, o does not), a partial
// 128-group of K (2064), N = 1000 (a partial 16-column block and a partial scale block),
// bias, f32 and bf16 y, padded rows.
TEST(CudaFp8, LinearSmallMEveryRowCount) {
  SKIP_WITHOUT_GPU();
  cuda::CudaBackend be;
  for (int64_t m = 1; m <= cuda::kernels::kGemvMaxRows + 1; ++m) {
    const std::string t = fmt::format("_m{}", m);
    check_linear(be, {.name = "qkv" + t, .m = m, .n = 5120, .k = 2048});
    check_linear(be, {.name = "o_f32" + t, .m = m, .n = 2048, .k = 4096, .y = DType::kF32});
    check_linear(be, {.name = "tails" + t, .m = m, .n = 1000, .k = 2064, .bias = true,
                      .x_pad = 8, .y_pad = 3});
    check_linear(be, {.name = "tails_f32" + t, .m = m, .n = 1000, .k = 2064, .bias = true,
                      .y = DType::kF32});
  }
}

// Every tile of the dense FP8 GEMM, forced, on shapes with tails in every dimension: M not a
// multiple of any token tile, K = 2064 (a partial 128-group), N = 1000 (a partial 256-row
// weight block), bf16 and f32 y with padded rows, bias; and the fused qkv width.
TEST(CudaFp8, DenseLinearEveryTile) {
  SKIP_WITHOUT_GPU();
  cuda::CudaBackend be;
  for (int t = 0; t < cuda::kNumMoeFp8Tiles; ++t) {
    const auto tile = cuda::MoeFp8Tile(t);
    const std::string n = cuda::moe_fp8_tile_name(tile);
    check_linear(be, {.name = n + "_qkv", .m = 300, .n = 5120, .k = 2048, .tile = tile});
    check_linear(be, {.name = n + "_tails_bias", .m = 77, .n = 1000, .k = 2064, .bias = true,
                      .y_pad = 8, .tile = tile});
    check_linear(be, {.name = n + "_tails_f32", .m = 45, .n = 1000, .k = 2064, .bias = true,
                      .y = DType::kF32, .y_pad = 3, .tile = tile});
  }
}

}  // namespace
}  // namespace moeopt::ops

#endif  // MOEOPT_HAVE_CUDA
