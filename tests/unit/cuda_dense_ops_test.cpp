// The CUDA dense ops (backend/cuda/cuda_dense_ops.cpp, cuda_linear.cpp) against the CPU op
// oracle (backend/cpu through the ops:: functions): embedding, rms_norm, add_rms_norm,
// rms_norm_per_head, linear, silu_and_mul, silu, rope_apply, kv_cache_write,
// sigmoid_gated_add, argmax and log_softmax. For each: the op-case table's cases
// (ops/op_cases.h), real-width cases (Qwen3-30B-A3B: H 2048, Hq 32, Hkv 4, D 128, V 151936;
// M in {1, 7, 128, 2048}), strided views (q/k/v column slices of a fused [T, (Hq + 2 Hkv) D]
// buffer, halves of gate|up rows), in-place use and odd sizes (D = 12, 20, 37, 56...).
//
// Method: inputs are drawn, rounded to bf16 and kept as f32 host tensors; the CPU op runs on
// those f32 tensors, the CUDA op on device copies in the GPU's dtypes (bf16 copies of the
// same values are exact). Device buffers are filled with a byte pattern first, and strided
// outputs must leave every byte outside their view untouched.
// Tolerances (ops::compare_values):
//   kBf16Nmse = 1e-5 for bf16 outputs: one rounding to bf16 is a relative error <= 2^-9 per
//     element, about 2^-18 / 3 = 1.3e-6 in normalised MSE; 1e-5 leaves an 8x margin while
//     any indexing or synchronisation bug gives O(1);
//   kF32Nmse = 1e-9 for f32 outputs of reductions and GEMMs: fp32 sums in another order
//     (tree vs sequential, the CPU's double sums) differ by ~sqrt(K) 2^-24 relative, < 1e-11
//     in normalised MSE for K <= 4096;
//   exact for embedding (copies), kv_cache_write (copies), argmax (ids) and the residual of
//     add_rms_norm (the same single f32 addition on both sides).
// Every test that launches skips without a CUDA device; the dtype test runs everywhere (it
// never reaches a kernel). Run: build/tests/test_cuda --gtest_filter='CudaDense*'
#include <gtest/gtest.h>

#if MOEOPT_HAVE_CUDA

#include <cuda_runtime.h>

#include "cuda_test_support.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/dense_launch.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/activation.h"
#include "moeopt/ops/attention.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/embedding.h"
#include "moeopt/ops/gated_add.h"
#include "moeopt/ops/linear.h"
#include "moeopt/ops/norm.h"
#include "moeopt/ops/op_cases.h"
#include "moeopt/ops/reduce.h"
#include "moeopt/ops/rope.h"

namespace moeopt::ops {
namespace {

constexpr double kBf16Nmse = 1e-5;
constexpr double kF32Nmse = 1e-9;
constexpr unsigned char kFill = 0x5a;  // device buffers start as this byte pattern

// Qwen3-30B-A3B widths.
constexpr int64_t kH = 2048, kHq = 32, kHkv = 4, kD = 128, kV = 151936;
const int64_t kRealM[] = {1, 7, 128, 2048};

ThreadPool& pool() {
  static ThreadPool p(0);
  return p;
}

Context cpu_ctx() { return Context{.pool = &pool()}; }

// ---------------------------------------------------------------- host values

// Values in +-[lo, hi] rounded to bf16, stored as f32 (exact in bf16 on the device side).
// Filled in parallel: the embedding table at real width has 3e8 elements.
HostTensor bf16_values(const Shape& shape, const std::string& seed, double lo = 0.05,
                       double hi = 1.0) {
  HostTensor t(DType::kF32, shape);
  const uint64_t base = CaseRng(seed).next();
  constexpr int64_t kChunk = 1 << 16;
  const int64_t n = t.numel(), chunks = (n + kChunk - 1) / kChunk;
  pool().parallel_for(chunks, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      CaseRng rng(base ^ (uint64_t(c) * 0x9e3779b97f4a7c15ull));
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i)
        t.ptr<float>()[i] = round_to_bf16(float(rng.nonzero(lo, hi)));
    }
  });
  return t;
}

HostTensor converted(const HostTensor& src, DType dtype) {
  HostTensor t(dtype, src.shape());
  if (dtype == src.dtype()) {  // a plain copy (int32 ids must not go through float)
    std::memcpy(t.ptr<void>(), src.ptr<void>(), src.nbytes());
    return t;
  }
  const int64_t n = src.numel();
  pool().parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      store_from_f32(t.ptr<void>(), dtype, i, load_as_f32(src.ptr<void>(), src.dtype(), i));
  });
  return t;
}

HostTensor copy_of(const HostTensor& src) { return converted(src, src.dtype()); }

HostTensor i32_tensor(const std::vector<int32_t>& v) {
  HostTensor t(DType::kI32, {int64_t(v.size())});
  if (!v.empty()) std::memcpy(t.ptr<void>(), v.data(), v.size() * 4);
  return t;
}

// ---------------------------------------------------------------- device buffers

// Device memory of `rows` rows of `stride` elements, filled with kFill. view() places a tensor
// at element `offset` of each row, with dim 0 strided by `stride` (the inner dims contiguous).
class DevBuf {
 public:
  DevBuf(DType dtype, int64_t rows, int64_t stride) : dtype_(dtype), rows_(rows), stride_(stride) {
    bytes_ = std::max<size_t>(16, size_t(rows * stride) * dtype_size(dtype));
    if (cudaMalloc(&p_, bytes_) != cudaSuccess) p_ = nullptr;
    if (p_ != nullptr) cudaMemset(p_, kFill, bytes_);
  }
  ~DevBuf() { cudaFree(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  bool ok() const { return p_ != nullptr; }

  TensorView view(int64_t offset, const Shape& shape) const {
    TensorView v = TensorView::contiguous(static_cast<char*>(p_) + offset * dtype_size(dtype_),
                                          dtype_, shape, Device::kCuda);
    if (shape.ndim >= 2) v.strides[0] = stride_;
    return v;
  }
  // The whole buffer as [rows, stride] bytes, for the untouched-outside checks.
  std::vector<unsigned char> bytes() const {
    std::vector<unsigned char> b(bytes_);
    cudaMemcpy(b.data(), p_, bytes_, cudaMemcpyDeviceToHost);
    return b;
  }
  // Every byte outside the given views still holds kFill.
  bool untouched_outside(std::initializer_list<TensorView> views) const {
    const std::vector<unsigned char> b = bytes();
    std::vector<char> inside(b.size(), 0);
    for (const TensorView& v : views) {
      const size_t es = dtype_size(v.dtype);
      const size_t off = size_t(static_cast<char*>(v.data) - static_cast<char*>(p_));
      const int64_t rows = v.ndim() >= 2 ? v.shape[0] : 1;
      const size_t row_bytes = size_t(v.ndim() >= 2 ? row_elems(v) : v.numel()) * es;
      for (int64_t r = 0; r < rows; ++r)
        std::fill_n(inside.begin() + off + size_t(r * row_stride(v)) * es, row_bytes, 1);
    }
    for (size_t i = 0; i < b.size(); ++i)
      if (!inside[i] && b[i] != kFill) return false;
    return true;
  }

 private:
  DType dtype_;
  int64_t rows_, stride_;
  size_t bytes_ = 0;
  void* p_ = nullptr;
};

// Rows and bytes per row of a row-layout view (a 1-D view is one row).
void geometry(const TensorView& v, int64_t* rows, size_t* row_bytes, size_t* pitch) {
  const size_t es = dtype_size(v.dtype);
  if (v.ndim() >= 2) {
    *rows = v.shape[0];
    *row_bytes = size_t(row_elems(v)) * es;
    *pitch = size_t(row_stride(v)) * es;
  } else {
    *rows = 1;
    *row_bytes = *pitch = size_t(v.numel()) * es;
  }
}

// host (contiguous, same shape) -> device view, converted to the view's dtype.
void upload(const TensorView& dev, const HostTensor& host) {
  HostTensor h = converted(host, dev.dtype);
  int64_t rows;
  size_t row_bytes, pitch;
  geometry(dev, &rows, &row_bytes, &pitch);
  if (rows == 0 || row_bytes == 0) return;
  ASSERT_EQ(cudaMemcpy2D(dev.data, pitch, h.ptr<void>(), row_bytes, row_bytes, size_t(rows),
                         cudaMemcpyHostToDevice),
            cudaSuccess);
}

// device view -> contiguous host tensor of the view's dtype.
HostTensor download(const TensorView& dev) {
  HostTensor h(dev.dtype, dev.shape);
  int64_t rows;
  size_t row_bytes, pitch;
  geometry(dev, &rows, &row_bytes, &pitch);
  if (rows > 0 && row_bytes > 0) {
    EXPECT_EQ(cudaMemcpy2D(h.ptr<void>(), row_bytes, dev.data, pitch, row_bytes, size_t(rows),
                           cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return h;
}

// A contiguous device tensor holding `host` in `dtype`.
struct DevCopy {
  DevBuf buf;
  TensorView v;
  DevCopy(const HostTensor& host, DType dtype)
      : buf(dtype, 1, std::max<int64_t>(host.numel(), 1)), v(buf.view(0, host.shape())) {
    v.strides = TensorView::contiguous(nullptr, dtype, host.shape()).strides;
    upload(v, host);
  }
  operator TensorView() const { return v; }  // NOLINT
};

// ---------------------------------------------------------------- comparisons

void expect_close(const HostTensor& got, const HostTensor& ref, Metric metric, double tol,
                  const std::string& what) {
  ASSERT_EQ(got.numel(), ref.numel()) << what;
  const HostTensor g = converted(got, DType::kF32);
  const std::vector<double> r = to_doubles(ref.view());
  const Comparison c = compare_values(g.ptr<float>(), r.data(), got.numel(), metric, tol);
  EXPECT_TRUE(c.ok) << what << ": " << c.detail;
}

// The tolerance for an output of `dtype` (see the file comment).
double tol_for(DType dtype) { return dtype == DType::kBF16 ? kBf16Nmse : kF32Nmse; }

void expect_ok(const Status& s, const std::string& what) {
  ASSERT_TRUE(s.ok()) << what << ": " << s.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
}

std::string case_name(const testing::TestParamInfo<OpCase>& info) { return info.param.name; }

class CudaDense : public testing::Test {
 protected:
  cuda::CudaBackend backend;
  Context gpu() { return Context{.device_backend = &backend}; }
};

// ---------------------------------------------------------------- embedding

// Gathers ids from a [V, H] table of `table_dtype` into an `out_dtype` output whose rows are
// strided (offset `off` into rows of `stride`); CPU: the f32 table, exact comparison.
void run_embedding(cuda::CudaBackend& be, int64_t t, int64_t h, int64_t v, DType table_dtype,
                   DType out_dtype, int64_t stride, int64_t off, const std::string& seed) {
  SCOPED_TRACE(seed);
  HostTensor table = bf16_values({v, h}, seed + "/table");
  if (table_dtype == DType::kF16) table = converted(converted(table, DType::kF16), DType::kF32);
  CaseRng rng(seed);
  std::vector<int32_t> id(static_cast<size_t>(t));
  for (auto& x : id) x = int32_t(rng.below(v));
  if (t > 1) id[1] = int32_t(v - 1);
  id[0] = 0;
  HostTensor ids = i32_tensor(id), ref(DType::kF32, {t, h});
  ASSERT_TRUE(embedding(cpu_ctx(), table, ids, ref).ok());
  DevCopy dt(table, table_dtype), di(ids, DType::kI32);
  DevBuf ob(out_dtype, t, stride);
  const TensorView out = ob.view(off, {t, h});
  expect_ok(embedding(Context{.device_backend = &be}, dt, di, out), "embedding");
  // bf16 table -> bf16 out and any -> f32 out are copies; f16 -> bf16 would round (not used).
  expect_close(download(out), ref, Metric::kExact, 0, "embedding");
  EXPECT_TRUE(ob.untouched_outside({out}));
}

class CudaDenseEmbedding : public testing::TestWithParam<OpCase> {};

TEST_P(CudaDenseEmbedding, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const OpCase& c = GetParam();
  cuda::CudaBackend be;
  run_embedding(be, c.m, c.n, c.k, c.weight_dtype, DType::kF32, c.n, 0, c.name);
  if (c.weight_dtype != DType::kF16)
    run_embedding(be, c.m, c.n, c.k, c.weight_dtype, DType::kBF16, c.n + 8, 8,
                  std::string(c.name) + "/bf16_strided");
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaDenseEmbedding,
                         testing::ValuesIn(op_cases_for(OpKind::kEmbedding)), case_name);

TEST_F(CudaDense, EmbeddingRealWidthAndOddSizes) {
  SKIP_WITHOUT_GPU();
  run_embedding(backend, 2048, kH, kV, DType::kBF16, DType::kBF16, kH, 0, "emb_qwen3_m2048");
  run_embedding(backend, 7, kH, kV, DType::kBF16, DType::kF32, kH + 4, 4, "emb_qwen3_m7_f32");
  run_embedding(backend, 5, 20, 31, DType::kBF16, DType::kBF16, 23, 3, "emb_odd_20");
  run_embedding(backend, 3, 12, 9, DType::kF32, DType::kF32, 12, 0, "emb_odd_12_f32");
}

TEST_F(CudaDense, EmbeddingOutOfRangeIdsGiveZeroRows) {
  SKIP_WITHOUT_GPU();
  const int64_t v = 10;
  for (int64_t h : {16, 13}) {
    HostTensor table = bf16_values({v, h}, "emb_oob");
    HostTensor ids = i32_tensor({3, -1, 10, 1 << 30, 9});
    DevCopy dt(table, DType::kBF16), di(ids, DType::kI32);
    DevBuf ob(DType::kBF16, 5, h);
    const TensorView out = ob.view(0, {5, h});
    expect_ok(embedding(gpu(), dt, di, out), "embedding");
    HostTensor got = converted(download(out), DType::kF32);
    for (int64_t t = 0; t < 5; ++t)
      for (int64_t j = 0; j < h; ++j) {
        const int32_t id = ids.ptr<int32_t>()[t];
        const float want = id >= 0 && id < v ? table.ptr<float>()[id * h + j] : 0.0f;
        ASSERT_EQ(got.ptr<float>()[t * h + j], want) << "token " << t << " col " << j;
      }
  }
}

// ---------------------------------------------------------------- rms_norm family

// rms_norm of x [rows, d] (or [rows, heads, d] when heads > 0) in `x_dtype` -> `out_dtype`,
// x at column `off` of rows of `stride`; out separate (rows of stride, column off) or in place.
void run_rms_norm(cuda::CudaBackend& be, int64_t rows, int64_t heads, int64_t d,
                  DType x_dtype, DType w_dtype, DType out_dtype, int64_t stride, int64_t off,
                  bool in_place, const std::string& seed) {
  SCOPED_TRACE(seed);
  const Shape shape = heads > 0 ? Shape{rows, heads, d} : Shape{rows, d};
  HostTensor x = bf16_values(shape, seed + "/x", 0.05, 4.0);
  HostTensor w = bf16_values({d}, seed + "/w", 0.5, 1.5);
  if (w_dtype == DType::kF16) w = converted(converted(w, DType::kF16), DType::kF32);
  HostTensor ref(DType::kF32, shape);
  const float eps = 1e-6f;
  ASSERT_TRUE(rms_norm(cpu_ctx(), x, w, eps, ref).ok());
  DevCopy dw(w, w_dtype);
  DevBuf xb(x_dtype, rows, stride), ob(out_dtype, rows, stride);
  const TensorView xv = xb.view(off, shape);
  const TensorView ov = in_place ? xv : ob.view(off, shape);
  upload(xv, x);
  const Status s = heads > 0 ? rms_norm_per_head(Context{.device_backend = &be}, xv, dw, eps, ov)
                             : rms_norm(Context{.device_backend = &be}, xv, dw, eps, ov);
  expect_ok(s, "rms_norm");
  expect_close(download(ov), ref, Metric::kNormalizedMse, tol_for(out_dtype), "rms_norm");
  EXPECT_TRUE((in_place ? xb : ob).untouched_outside({ov}));
}

class CudaDenseNorm : public testing::TestWithParam<OpCase> {};

TEST_P(CudaDenseNorm, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const OpCase& c = GetParam();
  cuda::CudaBackend be;
  const bool per_head = c.op == OpKind::kRmsNormPerHead;
  const int64_t heads = per_head ? c.heads : 0, d = per_head ? c.head_dim : c.n;
  const int64_t width = per_head ? c.heads * c.head_dim : c.n;
  for (DType io : {DType::kBF16, DType::kF32}) {
    const std::string tag = std::string(c.name) + (io == DType::kBF16 ? "/bf16" : "/f32");
    run_rms_norm(be, c.m, heads, d, io, c.weight_dtype, io, width, 0, false, tag);
    run_rms_norm(be, c.m, heads, d, io, c.weight_dtype, io, width + 24, 8, true, tag + "/inplace");
  }
  run_rms_norm(be, c.m, heads, d, DType::kF32, c.weight_dtype, DType::kBF16, width + 3, 3, false,
               std::string(c.name) + "/f32_to_bf16_misaligned");
}
std::vector<OpCase> norm_cases() {
  std::vector<OpCase> c = op_cases_for(OpKind::kRmsNorm);
  for (const OpCase& x : op_cases_for(OpKind::kRmsNormPerHead)) c.push_back(x);
  return c;
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaDenseNorm, testing::ValuesIn(norm_cases()), case_name);

TEST_F(CudaDense, RmsNormRealWidthAndOddSizes) {
  SKIP_WITHOUT_GPU();
  for (int64_t m : kRealM) {
    const std::string tag = fmt::format("m{}", m);
    // Hidden norm: bf16 x -> bf16 out, and f32 x -> bf16 (the layer-0 norm of the residual).
    run_rms_norm(backend, m, 0, kH, DType::kBF16, DType::kBF16, DType::kBF16, kH, 0, false,
                 fmt::format("norm_h_{}", tag));
    run_rms_norm(backend, m, 0, kH, DType::kF32, DType::kBF16, DType::kBF16, kH, 0, false,
                 fmt::format("norm_h_f32_{}", tag));
    // q_norm / k_norm in place on the q and k slices of a fused qkv buffer.
    run_rms_norm(backend, m, kHq, kD, DType::kBF16, DType::kBF16, DType::kBF16,
                 (kHq + 2 * kHkv) * kD, 0, true, fmt::format("q_norm_{}", tag));
    run_rms_norm(backend, m, kHkv, kD, DType::kBF16, DType::kBF16, DType::kBF16,
                 (kHq + 2 * kHkv) * kD, kHq * kD, true, fmt::format("k_norm_{}", tag));
  }
  for (int64_t d : {12, 20, 37, 56}) {
    run_rms_norm(backend, 5, 0, d, DType::kBF16, DType::kF32, DType::kBF16, d, 0, false,
                 fmt::format("norm_odd_{}", d));
    run_rms_norm(backend, 3, 3, d, DType::kBF16, DType::kBF16, DType::kBF16, 5 * d, d, true,
                 fmt::format("per_head_odd_{}", d));
  }
  run_rms_norm(backend, 2, 0, 4096, DType::kBF16, DType::kF16, DType::kF32, 4096, 0, false,
               "norm_4096_block_variant");
}

// add_rms_norm: x `x_dtype` (strided), residual f32 (strided) updated, out `out_dtype`.
void run_add_rms_norm(cuda::CudaBackend& be, int64_t rows, int64_t d, DType x_dtype,
                      DType w_dtype, DType out_dtype, int64_t stride, int64_t off,
                      const std::string& seed) {
  SCOPED_TRACE(seed);
  HostTensor x = bf16_values({rows, d}, seed + "/x", 0.05, 2.0);
  HostTensor res = bf16_values({rows, d}, seed + "/res", 0.05, 2.0);
  HostTensor w = bf16_values({d}, seed + "/w", 0.5, 1.5);
  HostTensor ref_res = copy_of(res), ref(DType::kF32, {rows, d});
  const float eps = 1e-6f;
  ASSERT_TRUE(add_rms_norm(cpu_ctx(), x, ref_res, w, eps, ref).ok());
  DevCopy dw(w, w_dtype);
  DevBuf xb(x_dtype, rows, stride), rb(DType::kF32, rows, stride), ob(out_dtype, rows, stride);
  const TensorView xv = xb.view(off, {rows, d}), rv = rb.view(off, {rows, d}),
                   ov = ob.view(off, {rows, d});
  upload(xv, x);
  upload(rv, res);
  expect_ok(add_rms_norm(Context{.device_backend = &be}, xv, rv, dw, eps, ov), "add_rms_norm");
  expect_close(download(rv), ref_res, Metric::kExact, 0, "residual");
  expect_close(download(ov), ref, Metric::kNormalizedMse, tol_for(out_dtype), "out");
  EXPECT_TRUE(rb.untouched_outside({rv}));
  EXPECT_TRUE(ob.untouched_outside({ov}));
}

class CudaDenseAddNorm : public testing::TestWithParam<OpCase> {};

TEST_P(CudaDenseAddNorm, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const OpCase& c = GetParam();
  cuda::CudaBackend be;
  run_add_rms_norm(be, c.m, c.n, DType::kBF16, c.weight_dtype, DType::kBF16, c.n, 0, c.name);
  run_add_rms_norm(be, c.m, c.n, DType::kF32, c.weight_dtype, DType::kF32, c.n + 8, 8,
                   std::string(c.name) + "/f32_strided");
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaDenseAddNorm,
                         testing::ValuesIn(op_cases_for(OpKind::kAddRmsNorm)), case_name);

TEST_F(CudaDense, AddRmsNormRealWidthAndOddSizes) {
  SKIP_WITHOUT_GPU();
  for (int64_t m : kRealM)
    run_add_rms_norm(backend, m, kH, DType::kBF16, DType::kBF16, DType::kBF16, kH, 0,
                     fmt::format("add_norm_m{}", m));
  for (int64_t d : {12, 20, 56})
    run_add_rms_norm(backend, 4, d, DType::kBF16, DType::kBF16, DType::kBF16, d + 5, 5,
                     fmt::format("add_norm_odd_{}", d));
}

// ---------------------------------------------------------------- linear

struct LinearShape {
  std::string name;
  int64_t m, n, k;
  bool bias = false;
  DType y = DType::kBF16;
  int64_t x_stride = 0, x_off = 0, y_stride = 0, y_off = 0;  // 0: contiguous
  int64_t bias_off = 0;  // elements: a misaligned bias takes the bias-kernel path
};

void run_linear(cuda::CudaBackend& be, const LinearShape& s) {
  SCOPED_TRACE(s.name);
  HostTensor x = bf16_values({s.m, s.k}, s.name + "/x");
  HostTensor w = bf16_values({s.n, s.k}, s.name + "/w", 0.01, 0.1);
  HostTensor b = bf16_values({s.n}, s.name + "/b");
  HostTensor ref(DType::kF32, {s.m, s.n});
  const std::optional<TensorView> hb = s.bias ? std::optional<TensorView>(b.view()) : std::nullopt;
  ASSERT_TRUE(linear(cpu_ctx(), x, w, hb, ref).ok());
  DevCopy dw(w, DType::kBF16);
  DevBuf bb(DType::kBF16, 1, s.n + s.bias_off);
  const TensorView bv = bb.view(s.bias_off, {s.n});
  upload(bv, b);
  const int64_t xs = s.x_stride ? s.x_stride : s.k, ys = s.y_stride ? s.y_stride : s.n;
  DevBuf xb(DType::kBF16, s.m, xs), yb(s.y, s.m, ys);
  const TensorView xv = xb.view(s.x_off, {s.m, s.k}), yv = yb.view(s.y_off, {s.m, s.n});
  upload(xv, x);
  const std::optional<TensorView> db = s.bias ? std::optional<TensorView>(bv) : std::nullopt;
  expect_ok(linear(Context{.device_backend = &be}, xv, dw.v, db, yv), "linear");
  expect_close(download(yv), ref, Metric::kNormalizedMse, tol_for(s.y), "linear");
  EXPECT_TRUE(yb.untouched_outside({yv}));
}

class CudaDenseLinear : public testing::TestWithParam<OpCase> {};

TEST_P(CudaDenseLinear, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const OpCase& c = GetParam();
  cuda::CudaBackend be;
  if (c.weight_dtype != DType::kBF16) {  // bf16 weights only on CUDA: a clean kUnsupported
    DevCopy dw(bf16_values({c.n, c.k}, c.name), c.weight_dtype);
    DevBuf xb(DType::kBF16, c.m, c.k), yb(DType::kBF16, c.m, c.n);
    const Status s = linear(Context{.device_backend = &be}, xb.view(0, {c.m, c.k}), dw.v,
                            std::nullopt, yb.view(0, {c.m, c.n}));
    EXPECT_EQ(s.code(), ErrorCode::kUnsupported) << s.message();
    EXPECT_TRUE(yb.untouched_outside({}));
    return;
  }
  const std::string n = c.name;
  run_linear(be, {.name = n, .m = c.m, .n = c.n, .k = c.k, .bias = c.bias});
  run_linear(be, {.name = n + "/f32", .m = c.m, .n = c.n, .k = c.k, .bias = c.bias,
                  .y = DType::kF32});
  run_linear(be, {.name = n + "/strided", .m = c.m, .n = c.n, .k = c.k, .bias = c.bias,
                  .x_stride = c.k + 9, .x_off = 9, .y_stride = 2 * c.n + 1, .y_off = c.n + 1});
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaDenseLinear, testing::ValuesIn(op_cases_for(OpKind::kLinear)),
                         case_name);

TEST_F(CudaDense, LinearRealWidth) {
  SKIP_WITHOUT_GPU();
  const int64_t qkv = (kHq + 2 * kHkv) * kD;
  for (int64_t m : kRealM) {
    const std::string t = fmt::format("_m{}", m);
    // q, k and v projections into their column slices of the fused qkv buffer.
    if (m <= 128)
      run_linear(backend,
                 {.name = "q" + t, .m = m, .n = kHq * kD, .k = kH, .y_stride = qkv});
    run_linear(backend, {.name = "k" + t, .m = m, .n = kHkv * kD, .k = kH, .y_stride = qkv,
                         .y_off = kHq * kD});
    run_linear(backend, {.name = "v_bias" + t, .m = m, .n = kHkv * kD, .k = kH, .bias = true,
                         .y_stride = qkv, .y_off = (kHq + kHkv) * kD});
    if (m <= 128) run_linear(backend, {.name = "o" + t, .m = m, .n = kH, .k = kHq * kD});
    // Router logits in f32 (128 experts).
    run_linear(backend, {.name = "router" + t, .m = m, .n = 128, .k = kH, .y = DType::kF32});
  }
  run_linear(backend, {.name = "lm_head_m7", .m = 7, .n = kV, .k = kH, .y = DType::kF32});
}

TEST_F(CudaDense, LinearOddSizesBiasPathsAndEmpty) {
  SKIP_WITHOUT_GPU();
  run_linear(backend, {.name = "k56_n20", .m = 5, .n = 20, .k = 56});
  run_linear(backend, {.name = "k56_n20_f32_bias", .m = 5, .n = 20, .k = 56, .bias = true,
                       .y = DType::kF32});
  run_linear(backend, {.name = "k23_n17_bias", .m = 3, .n = 17, .k = 23, .bias = true});
  run_linear(backend, {.name = "k12_n1", .m = 9, .n = 1, .k = 12});
  run_linear(backend, {.name = "m1_k1", .m = 1, .n = 40, .k = 1, .bias = true});
  run_linear(backend, {.name = "bias_misaligned_bf16", .m = 4, .n = 64, .k = 32, .bias = true,
                       .bias_off = 1});
  run_linear(backend, {.name = "bias_f32_strided", .m = 6, .n = 48, .k = 64, .bias = true,
                       .y = DType::kF32, .x_stride = 72, .x_off = 3, .y_stride = 50, .y_off = 2});
  // M = 0: nothing to do, nothing written.
  HostTensor w = bf16_values({8, 16}, "empty/w");
  DevCopy dw(w, DType::kBF16);
  DevBuf xb(DType::kBF16, 1, 16), yb(DType::kBF16, 1, 8);
  expect_ok(linear(gpu(), xb.view(0, {0, 16}), dw.v, std::nullopt, yb.view(0, {0, 8})), "m0");
  EXPECT_TRUE(yb.untouched_outside({}));
}

// The small-M GEMV (kernels/dense_gemv.cuh, M <= kGemvMaxRows) at every row count and on both
// of its paths, and the first row count past it (cuBLASLt): real widths (the qkv, o, router and
// a cut LM head), a K tail of the 16-byte path, and the element path (odd K, misaligned x).
TEST_F(CudaDense, LinearSmallMEveryRowCount) {
  SKIP_WITHOUT_GPU();
  for (int64_t m = 1; m <= cuda::kernels::kGemvMaxRows + 1; ++m) {
    const std::string t = fmt::format("_m{}", m);
    run_linear(backend, {.name = "qkv" + t, .m = m, .n = (kHq + 2 * kHkv) * kD, .k = kH});
    run_linear(backend, {.name = "o_bias" + t, .m = m, .n = kH, .k = kHq * kD, .bias = true});
    run_linear(backend, {.name = "router" + t, .m = m, .n = 128, .k = kH, .y = DType::kF32});
    run_linear(backend, {.name = "head_cut" + t, .m = m, .n = 4099, .k = kH, .y = DType::kF32,
                         .y_stride = 4100, .y_off = 1});
    // K = 8 * (32 * 4 + 5): whole unrolled groups, then single chunks.
    run_linear(backend, {.name = "k_tail" + t, .m = m, .n = 24, .k = 8 * 133, .bias = true});
    // Enough columns for the 4-warp split of K (two blocks per SM on a 132-SM card), a K tail.
    run_linear(backend, {.name = "wide_k_tail" + t, .m = m, .n = 16 * 2 * 160 + 3, .k = 8 * 133});
    run_linear(backend, {.name = "odd_k" + t, .m = m, .n = 19, .k = 301, .bias = true});
    run_linear(backend, {.name = "x_misaligned" + t, .m = m, .n = 40, .k = 256,
                         .x_stride = 264, .x_off = 3, .y_stride = 41, .y_off = 1});
  }
}

// The fallback kernel (used where cuBLASLt has no algorithm) against the CPU directly.
TEST_F(CudaDense, LinearFallbackKernelMatchesCpu) {
  SKIP_WITHOUT_GPU();
  struct S { int64_t m, n, k; bool bias; DType y; };
  for (const S& s : {S{1, 20, 56, false, DType::kBF16}, S{70, 130, 33, true, DType::kF32},
                     S{65, 64, 16, true, DType::kBF16}, S{3, 5, 0, true, DType::kF32}}) {
    const std::string name = fmt::format("fallback_{}", s.m) + fmt::format("_{}", s.n) +
                             fmt::format("_{}", s.k);
    SCOPED_TRACE(name);
    HostTensor x = bf16_values({s.m, s.k}, name + "/x"), w = bf16_values({s.n, s.k}, name + "/w");
    HostTensor b = bf16_values({s.n}, name + "/b"), ref(DType::kF32, {s.m, s.n});
    const std::optional<TensorView> hb =
        s.bias ? std::optional<TensorView>(b.view()) : std::nullopt;
    ASSERT_TRUE(linear(cpu_ctx(), x, w, hb, ref).ok());
    DevCopy dx(x, DType::kBF16), dw(w, DType::kBF16), db(b, DType::kBF16);
    DevBuf yb(s.y, s.m, s.n + 3);
    const TensorView yv = yb.view(1, {s.m, s.n});
    cuda::kernels::GemmFallbackParams p{};
    p.x = dx.v.data;
    p.w = dw.v.data;
    p.bias = s.bias ? db.v.data : nullptr;
    p.y = yv.data;
    p.m = s.m;
    p.n = s.n;
    p.k = s.k;
    p.x_stride = s.k;
    p.y_stride = s.n + 3;
    p.y_dtype = s.y == DType::kBF16 ? cuda::kernels::ElemDType::kBF16
                                    : cuda::kernels::ElemDType::kF32;
    ASSERT_EQ(cuda::detail::launch_dense_gemm_fallback(p, nullptr), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    expect_close(download(yv), ref, Metric::kNormalizedMse, tol_for(s.y), name);
    EXPECT_TRUE(yb.untouched_outside({yv}));
  }
}

// linear captured into a CUDA graph after one eager call replays to the eager result, and
// reads its inputs at replay time.
// m = 7 runs the GEMV (stateless: a fresh backend may capture it), m = 20 cuBLASLt.
class CudaDenseLinearCapture : public testing::TestWithParam<int64_t> {};

TEST_P(CudaDenseLinearCapture, CapturedInAGraphReplays) {
  SKIP_WITHOUT_GPU();
  cuda::CudaBackend backend;
  const int64_t m = GetParam(), n = 512, k = kH;
  HostTensor x1 = bf16_values({m, k}, "cap/x1"), x2 = bf16_values({m, k}, "cap/x2");
  HostTensor w = bf16_values({n, k}, "cap/w", 0.01, 0.1), b = bf16_values({n}, "cap/b");
  DevCopy dw(w, DType::kBF16), db(b, DType::kBF16), dx(x1, DType::kBF16);
  DevBuf yb(DType::kBF16, m, n);
  const TensorView y = yb.view(0, {m, n});
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const Context ctx{.stream = stream, .device_backend = &backend};

  // A fresh backend cannot create cuBLASLt's state inside a capture: a clean error. The GEMV
  // has no state to create.
  {
    cuda::CudaBackend fresh;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
    const Status s = linear(Context{.stream = stream, .device_backend = &fresh}, dx, dw.v,
                            db.v, y);
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(stream, &g);
    if (g != nullptr) cudaGraphDestroy(g);
    cudaGetLastError();
    if (m > cuda::kernels::kGemvMaxRows)
      EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << s.message();
    else
      EXPECT_TRUE(s.ok()) << s.message();
  }

  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_TRUE(linear(ctx, dx, dw.v, db.v, y).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const HostTensor eager1 = download(y);
  upload(dx.v, x2);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_TRUE(linear(ctx, dx, dw.v, db.v, y).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const HostTensor eager2 = download(y);

  upload(dx.v, x1);
  ASSERT_EQ(cudaMemset(y.data, 0, y.nbytes()), cudaSuccess);
  // upload() and cudaMemset run on the legacy stream, which does not order `stream`.
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  const Status st = linear(ctx, dx, dw.v, db.v, y);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(st.ok()) << st.message();
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  expect_close(download(y), eager1, Metric::kExact, 0, "replay 1");
  upload(dx.v, x2);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  expect_close(download(y), eager2, Metric::kExact, 0, "replay 2");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}
INSTANTIATE_TEST_SUITE_P(GemvAndCublasLt, CudaDenseLinearCapture, testing::Values(int64_t(7), int64_t(20)));

// ---------------------------------------------------------------- activations

// silu_and_mul: x [m, 2i] bf16 (rows of x_stride), out [m, i] bf16 at column out_off.
void run_silu_and_mul(cuda::CudaBackend& be, int64_t m, int64_t i, int64_t x_stride,
                      int64_t out_stride, int64_t out_off, const std::string& seed) {
  SCOPED_TRACE(seed);
  HostTensor x = bf16_values({m, 2 * i}, seed, 0.05, 4.0), ref(DType::kF32, {m, i});
  ASSERT_TRUE(silu_and_mul(cpu_ctx(), x, ref).ok());
  DevBuf xb(DType::kBF16, m, x_stride), ob(DType::kBF16, m, out_stride);
  const TensorView xv = xb.view(0, {m, 2 * i}), ov = ob.view(out_off, {m, i});
  upload(xv, x);
  expect_ok(silu_and_mul(Context{.device_backend = &be}, xv, ov), "silu_and_mul");
  expect_close(download(ov), ref, Metric::kNormalizedMse, kBf16Nmse, "silu_and_mul");
  EXPECT_TRUE(ob.untouched_outside({ov}));
}

class CudaDenseSiluAndMul : public testing::TestWithParam<OpCase> {};

TEST_P(CudaDenseSiluAndMul, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const OpCase& c = GetParam();
  cuda::CudaBackend be;
  run_silu_and_mul(be, c.m, c.n, 2 * c.n, c.n, 0, c.name);
  run_silu_and_mul(be, c.m, c.n, 2 * c.n + 8, c.n + 16, 8, std::string(c.name) + "/strided");
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaDenseSiluAndMul,
                         testing::ValuesIn(op_cases_for(OpKind::kSiluAndMul)), case_name);

TEST_F(CudaDense, SiluAndMulRealWidthAndOddSizes) {
  SKIP_WITHOUT_GPU();
  for (int64_t m : kRealM) {
    run_silu_and_mul(backend, m, 768, 2 * 768, 768, 0, fmt::format("swiglu_768_m{}", m));
    if (m <= 128)
      run_silu_and_mul(backend, m, 6144, 2 * 6144, 6144, 0, fmt::format("swiglu_6144_m{}", m));
  }
  for (int64_t i : {12, 13, 20})
    run_silu_and_mul(backend, 3, i, 2 * i + 1, i + 2, 1, fmt::format("swiglu_odd_{}", i));
}

TEST_F(CudaDense, SiluMatchesCpuAndRunsInPlace) {
  SKIP_WITHOUT_GPU();
  for (const OpCase& c : op_cases_for(OpKind::kSilu))
    for (DType dt : {DType::kBF16, DType::kF32})
      for (int64_t n : {c.n, int64_t(64)}) {
        const std::string name = std::string(c.name) + "/" + dtype_name(dt) + std::to_string(n);
        SCOPED_TRACE(name);
        HostTensor x = bf16_values({c.m, n}, name, 0.05, 4.0), ref(DType::kF32, {c.m, n});
        ASSERT_TRUE(silu(cpu_ctx(), x, ref).ok());
        DevBuf xb(dt, c.m, n + 8);
        const TensorView xv = xb.view(8, {c.m, n});
        upload(xv, x);
        expect_ok(silu(gpu(), xv, xv), "silu");
        expect_close(download(xv), ref, Metric::kNormalizedMse, tol_for(dt), "silu");
        EXPECT_TRUE(xb.untouched_outside({xv}));
      }
}

// ---------------------------------------------------------------- rope

RopeConfig rope_config(const OpCase& c) {
  RopeConfig cfg;
  cfg.head_dim = c.head_dim;
  cfg.partial_rotary_factor = double(c.rotary_dim) / double(c.head_dim);
  cfg.type = c.rope_type;
  cfg.factor = c.rope_factor;
  cfg.theta = c.rope_type == RopeType::kLlama3 ? 500000.0 : 1000000.0;
  cfg.max_position_embeddings = 1024;
  if (c.rope_type == RopeType::kYarn || c.rope_type == RopeType::kLlama3)
    cfg.original_max_position_embeddings = 1024;
  return cfg;
}

// Rotates q and k, placed as column slices of one fused [t, (hq + 2 hkv) d] bf16 buffer.
// Tokens listed in `bad` get a position outside the table and must stay unchanged on the GPU.
void run_rope(cuda::CudaBackend& be, const OpCase& c, const std::vector<int64_t>& bad = {}) {
  SCOPED_TRACE(c.name);
  const int64_t t = c.m, d = c.head_dim, hq = c.heads, hkv = c.kv_heads, p = c.k;
  HostTensor table(DType::kF32, {p, c.rotary_dim});
  ASSERT_TRUE(rope_build_cos_sin(rope_config(c), p, table).ok());
  CaseRng rng(c.name);
  std::vector<int32_t> pos(static_cast<size_t>(t));
  for (auto& x : pos) x = int32_t(rng.below(p));
  pos[0] = int32_t(p - 1);
  HostTensor q = bf16_values({t, hq, d}, std::string(c.name) + "/q", 0.05, 2.0);
  HostTensor k = bf16_values({t, hkv, d}, std::string(c.name) + "/k", 0.05, 2.0);
  HostTensor rq = copy_of(q), rk = copy_of(k);
  HostTensor hpos = i32_tensor(pos);
  ASSERT_TRUE(rope_apply(cpu_ctx(), rq, rk, hpos, table).ok());
  for (int64_t b : bad) {  // the CPU rejects them: expect the unrotated rows
    pos[size_t(b)] = b % 2 ? -1 : int32_t(p);
    std::memcpy(rq.ptr<float>() + b * hq * d, q.ptr<float>() + b * hq * d, size_t(hq * d) * 4);
    std::memcpy(rk.ptr<float>() + b * hkv * d, k.ptr<float>() + b * hkv * d, size_t(hkv * d) * 4);
  }
  const int64_t stride = (hq + 2 * hkv) * d;
  DevBuf qkv(DType::kBF16, t, stride);
  const TensorView qv = qkv.view(0, {t, hq, d}), kv = qkv.view(hq * d, {t, hkv, d});
  upload(qv, q);
  upload(kv, k);
  DevCopy dpos(i32_tensor(pos), DType::kI32), dtab(table, DType::kF32);
  expect_ok(rope_apply(Context{.device_backend = &be}, qv, kv, dpos, dtab), "rope_apply");
  expect_close(download(qv), rq, Metric::kNormalizedMse, kBf16Nmse, "q");
  expect_close(download(kv), rk, Metric::kNormalizedMse, kBf16Nmse, "k");
  for (int64_t b : bad) {  // bit-exact: untouched
    const HostTensor gq = converted(download(qv), DType::kF32);
    EXPECT_EQ(std::memcmp(gq.ptr<float>() + b * hq * d, q.ptr<float>() + b * hq * d,
                          size_t(hq * d) * 4),
              0)
        << "token " << b << " was rotated";
  }
  EXPECT_TRUE(qkv.untouched_outside({qv, kv}));  // the v slice is never written
}

class CudaDenseRope : public testing::TestWithParam<OpCase> {};

TEST_P(CudaDenseRope, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  cuda::CudaBackend be;
  run_rope(be, GetParam());
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaDenseRope, testing::ValuesIn(op_cases_for(OpKind::kRope)),
                         case_name);

TEST_F(CudaDense, RopeRealWidthOddSizesAndBadPositions) {
  SKIP_WITHOUT_GPU();
  for (int64_t m : kRealM) {
    OpCase c{.name = "", .op = OpKind::kRope, .m = m, .k = 40960, .heads = int(kHq),
             .kv_heads = int(kHkv), .head_dim = int(kD), .rotary_dim = int(kD)};
    const std::string name = fmt::format("rope_qwen3_m{}", m);
    c.name = name.c_str();
    run_rope(backend, c);
  }
  OpCase odd12{.name = "rope_odd_12_partial", .op = OpKind::kRope, .m = 5, .k = 50, .heads = 3,
               .kv_heads = 1, .head_dim = 12, .rotary_dim = 8};
  run_rope(backend, odd12, {1, 4});
  OpCase odd20{.name = "rope_odd_20", .op = OpKind::kRope, .m = 9, .k = 300, .heads = 5,
               .kv_heads = 5, .head_dim = 20, .rotary_dim = 20};
  run_rope(backend, odd20, {0, 7});
}

// ---------------------------------------------------------------- kv_cache_write

// k, v slices of a fused qkv buffer -> bf16 caches [blocks, bs, hkv, d]. `slots` may hold
// negative slots and slots past the cache (skipped on the GPU; -1 for the CPU reference).
void run_kv_write(cuda::CudaBackend& be, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                  int64_t blocks, int64_t bs, std::vector<int32_t> slots,
                  const std::string& seed) {
  SCOPED_TRACE(seed);
  const int64_t num_slots = blocks * bs;
  HostTensor k = bf16_values({t, hkv, d}, seed + "/k"), v = bf16_values({t, hkv, d}, seed + "/v");
  HostTensor kc = bf16_values({blocks, bs, hkv, d}, seed + "/kc");
  HostTensor vc = bf16_values({blocks, bs, hkv, d}, seed + "/vc");
  HostTensor rkc = copy_of(kc), rvc = copy_of(vc);
  std::vector<int32_t> cpu_slots = slots;
  for (auto& s : cpu_slots)
    if (s >= num_slots) s = -1;
  ASSERT_TRUE(kv_cache_write(cpu_ctx(), k, v, i32_tensor(cpu_slots), rkc, rvc).ok());
  const int64_t stride = (hq + 2 * hkv) * d;
  DevBuf qkv(DType::kBF16, t, stride);
  const TensorView kv = qkv.view(hq * d, {t, hkv, d}), vv = qkv.view((hq + hkv) * d, {t, hkv, d});
  upload(kv, k);
  upload(vv, v);
  DevCopy dkc(kc, DType::kBF16), dvc(vc, DType::kBF16), ds(i32_tensor(slots), DType::kI32);
  expect_ok(kv_cache_write(Context{.device_backend = &be}, kv, vv, ds, dkc, dvc), "kv_write");
  expect_close(download(dkc), rkc, Metric::kExact, 0, "k_cache");
  expect_close(download(dvc), rvc, Metric::kExact, 0, "v_cache");
}

// Distinct random slots (a permutation prefix), a few replaced by -1 / past the cache.
std::vector<int32_t> random_slots(int64_t t, int64_t num_slots, CaseRng& rng) {
  std::vector<int32_t> all(static_cast<size_t>(num_slots));
  for (int64_t i = 0; i < num_slots; ++i) all[size_t(i)] = int32_t(i);
  for (int64_t i = 0; i < t; ++i)
    std::swap(all[size_t(i)], all[size_t(i + rng.below(num_slots - i))]);
  all.resize(size_t(t));
  if (t > 2) all[1] = -1;
  if (t > 3) all[3] = int32_t(num_slots + 5);
  return all;
}

TEST_F(CudaDense, KvCacheWriteTableCases) {
  SKIP_WITHOUT_GPU();
  for (const OpCase& c : op_cases_for(OpKind::kKvCacheWrite)) {
    int64_t t = 0, ctx_total = 0;
    for (size_t s = 0; s < c.q_lens.size(); ++s) t += c.q_lens[s];
    for (int cl : c.ctx_lens) ctx_total += (cl + c.block_size - 1) / c.block_size;
    CaseRng rng(c.name);
    const int64_t blocks = ctx_total + 1;
    run_kv_write(backend, t, c.heads, c.kv_heads, c.head_dim, blocks, c.block_size,
                 random_slots(t, blocks * c.block_size, rng), c.name);
  }
}

TEST_F(CudaDense, KvCacheWriteRealWidthAndOddSizes) {
  SKIP_WITHOUT_GPU();
  for (int64_t m : kRealM) {
    CaseRng rng(fmt::format("kv{}", m));
    const int64_t blocks = m / 16 + 8;
    run_kv_write(backend, m, kHq, kHkv, kD, blocks, 16, random_slots(m, blocks * 16, rng),
                 fmt::format("kv_qwen3_m{}", m));
  }
  CaseRng rng("kv_odd");
  run_kv_write(backend, 6, 3, 1, 12, 4, 3, random_slots(6, 12, rng), "kv_odd_12");
  run_kv_write(backend, 5, 2, 2, 20, 3, 5, random_slots(5, 15, rng), "kv_odd_20");
}

// ---------------------------------------------------------------- sigmoid_gated_add

void run_gated_add(cuda::CudaBackend& be, int64_t m, int64_t h, DType gate_dtype,
                   int64_t stride, int64_t off, const std::string& seed) {
  SCOPED_TRACE(seed);
  HostTensor x = bf16_values({m, h}, seed + "/x"), g = bf16_values({m, 1}, seed + "/g", 0.05, 3);
  HostTensor out0 = bf16_values({m, h}, seed + "/o"), ref = copy_of(out0);
  ASSERT_TRUE(sigmoid_gated_add(cpu_ctx(), x, g, ref).ok());
  DevBuf xb(DType::kBF16, m, stride), ob(DType::kBF16, m, stride), gb(gate_dtype, m, 3);
  const TensorView xv = xb.view(off, {m, h}), ov = ob.view(off, {m, h}), gv = gb.view(1, {m, 1});
  upload(xv, x);
  upload(ov, out0);
  upload(gv, g);
  expect_ok(sigmoid_gated_add(Context{.device_backend = &be}, xv, gv, ov), "sigmoid_gated_add");
  expect_close(download(ov), ref, Metric::kNormalizedMse, kBf16Nmse, "out");
  EXPECT_TRUE(ob.untouched_outside({ov}));
}

TEST_F(CudaDense, SigmoidGatedAdd) {
  SKIP_WITHOUT_GPU();
  for (int64_t m : kRealM) {
    run_gated_add(backend, m, kH, DType::kF32, kH, 0, fmt::format("gated_f32_m{}", m));
    run_gated_add(backend, m, kH, DType::kBF16, kH + 8, 8, fmt::format("gated_bf16_m{}", m));
  }
  run_gated_add(backend, 3, 20, DType::kF32, 23, 1, "gated_odd_20");
  run_gated_add(backend, 1, 37, DType::kBF16, 37, 0, "gated_odd_37");
}

// ---------------------------------------------------------------- argmax, log_softmax

void run_argmax(cuda::CudaBackend& be, const HostTensor& logits, int64_t stride, int64_t off,
                const std::string& seed) {
  SCOPED_TRACE(seed);
  const int64_t r = logits.shape()[0], v = logits.shape()[1];
  HostTensor ref(DType::kI32, {r});
  ASSERT_TRUE(argmax(cpu_ctx(), logits, ref).ok());
  DevBuf lb(DType::kF32, r, stride);
  const TensorView lv = lb.view(off, {r, v});
  upload(lv, logits);
  DevBuf ob(DType::kI32, 1, r);
  const TensorView ov = ob.view(0, {r});
  expect_ok(argmax(Context{.device_backend = &be}, lv, ov), "argmax");
  const HostTensor got = download(ov);
  for (int64_t i = 0; i < r; ++i)
    EXPECT_EQ(got.ptr<int32_t>()[i], ref.ptr<int32_t>()[i]) << "row " << i;
}

TEST_F(CudaDense, ArgmaxMatchesCpuWithTies) {
  SKIP_WITHOUT_GPU();
  for (const OpCase& c : op_cases_for(OpKind::kArgmax)) {
    HostTensor l = bf16_values({c.m, c.n}, c.name, 0.05, 8.0);
    run_argmax(backend, l, c.n, 0, c.name);
    run_argmax(backend, l, c.n + 5, 3, std::string(c.name) + "/strided");
  }
  for (int64_t r : {1, 7, 128}) {
    // bf16-rounded values in +-[0.05, 8] over 151936 ids: many exact ties, including at the
    // maximum; plus planted ties of the row maximum near both ends.
    HostTensor l = bf16_values({r, kV}, fmt::format("argmax_v{}", r), 0.05, 8.0);
    for (int64_t i = 0; i < r; ++i) {
      float* row = l.ptr<float>() + i * kV;
      const float mx = *std::max_element(row, row + kV);
      row[kV - 1 - i] = mx;
      row[(i * 7919) % kV] = mx;
    }
    run_argmax(backend, l, kV, 0, fmt::format("argmax_qwen3_r{}", r));
  }
  HostTensor flat(DType::kF32, {2, 9});  // all equal -> 0; all -inf -> 0
  for (int64_t i = 0; i < 9; ++i) flat.ptr<float>()[9 + i] = -INFINITY;
  run_argmax(backend, flat, 9, 0, "argmax_all_equal");
}

TEST_F(CudaDense, ArgmaxNeverPicksNan) {
  SKIP_WITHOUT_GPU();
  const int64_t v = 1003;
  HostTensor l = bf16_values({3, v}, "argmax_nan", 0.05, 8.0);
  float* r0 = l.ptr<float>();
  r0[0] = NAN;
  r0[500] = NAN;
  r0[17] = 100.0f;  // the largest number wins over every NaN
  float* r2 = l.ptr<float>() + 2 * v;
  for (int64_t i = 0; i < v; ++i) r2[i] = NAN;  // no number at all: 0
  DevCopy dl(l, DType::kF32);
  DevBuf ob(DType::kI32, 1, 3);
  const TensorView ov = ob.view(0, {3});
  expect_ok(argmax(gpu(), dl, ov), "argmax");
  const HostTensor got = download(ov);
  EXPECT_EQ(got.ptr<int32_t>()[0], 17);
  const float* r1 = l.ptr<float>() + v;
  EXPECT_EQ(got.ptr<int32_t>()[1], int32_t(std::max_element(r1, r1 + v) - r1));
  EXPECT_EQ(got.ptr<int32_t>()[2], 0);
}

void run_log_softmax(cuda::CudaBackend& be, int64_t r, int64_t v, int64_t stride, int64_t off,
                     bool in_place, const std::string& seed) {
  SCOPED_TRACE(seed);
  HostTensor x = bf16_values({r, v}, seed, 0.05, 12.0), ref(DType::kF32, {r, v});
  ASSERT_TRUE(log_softmax(cpu_ctx(), x, ref).ok());
  DevBuf xb(DType::kF32, r, stride), ob(DType::kF32, r, stride);
  const TensorView xv = xb.view(off, {r, v}), ov = in_place ? xv : ob.view(off, {r, v});
  upload(xv, x);
  expect_ok(log_softmax(Context{.device_backend = &be}, xv, ov), "log_softmax");
  expect_close(download(ov), ref, Metric::kNormalizedMse, kF32Nmse, "log_softmax");
  EXPECT_TRUE((in_place ? xb : ob).untouched_outside({ov}));
}

TEST_F(CudaDense, LogSoftmax) {
  SKIP_WITHOUT_GPU();
  for (const OpCase& c : op_cases_for(OpKind::kLogSoftmax)) {
    run_log_softmax(backend, c.m, c.n, c.n, 0, false, c.name);
    run_log_softmax(backend, c.m, c.n, c.n + 7, 5, true, std::string(c.name) + "/inplace");
  }
  for (int64_t r : {1, 7, 128})
    run_log_softmax(backend, r, kV, kV, 0, r == 7, fmt::format("log_softmax_qwen3_r{}", r));
  run_log_softmax(backend, 3, 20, 24, 4, false, "log_softmax_odd_20");
}

// ---------------------------------------------------------------- dtypes

// Everything the CUDA kernels do not take answers kUnsupported before any launch (so this
// runs without a GPU: the device pointers are never touched).
TEST(CudaDenseDtypes, WrongDtypesAreUnsupported) {
  cuda::CudaBackend backend;
  const Context ctx{.device_backend = &backend};
  alignas(16) static unsigned char fake[1 << 16];
  auto t = [](DType dt, Shape s) { return TensorView::contiguous(fake, dt, s, Device::kCuda); };
  const DType bf = DType::kBF16, f32 = DType::kF32, f16 = DType::kF16, i32 = DType::kI32;
  auto unsupported = [](const Status& s, const char* what) {
    EXPECT_EQ(s.code(), ErrorCode::kUnsupported) << what << ": " << s.message();
    EXPECT_EQ(s.message().find('\n'), std::string::npos) << what;
  };
  unsupported(embedding(ctx, t(bf, {10, 8}), t(i32, {2}), t(f16, {2, 8})), "embedding out f16");
  unsupported(rms_norm(ctx, t(f16, {2, 8}), t(bf, {8}), 1e-6f, t(bf, {2, 8})), "rms_norm x f16");
  unsupported(rms_norm(ctx, t(bf, {2, 8}), t(bf, {8}), 1e-6f, t(f16, {2, 8})), "rms_norm out");
  unsupported(add_rms_norm(ctx, t(bf, {2, 8}), t(bf, {2, 8}), t(bf, {8}), 1e-6f, t(bf, {2, 8})),
              "add_rms_norm residual bf16");
  unsupported(rms_norm_per_head(ctx, t(f16, {2, 2, 8}), t(bf, {8}), 1e-6f, t(f16, {2, 2, 8})),
              "rms_norm_per_head f16");
  unsupported(linear(ctx, t(bf, {2, 8}), t(f32, {4, 8}), std::nullopt, t(bf, {2, 4})),
              "linear f32 weight");
  unsupported(linear(ctx, t(bf, {2, 8}), t(f16, {4, 8}), std::nullopt, t(bf, {2, 4})),
              "linear f16 weight");
  unsupported(linear(ctx, t(f32, {2, 8}), t(bf, {4, 8}), std::nullopt, t(bf, {2, 4})),
              "linear f32 x");
  unsupported(linear(ctx, t(bf, {2, 8}), t(bf, {4, 8}), std::nullopt, t(f16, {2, 4})),
              "linear f16 y");
  unsupported(linear(ctx, t(bf, {2, 8}), t(bf, {4, 8}), t(f32, {4}), t(bf, {2, 4})),
              "linear f32 bias");
  unsupported(silu_and_mul(ctx, t(f32, {2, 8}), t(f32, {2, 4})), "silu_and_mul f32");
  unsupported(silu(ctx, t(bf, {2, 8}), t(f32, {2, 8})), "silu mixed");
  unsupported(silu(ctx, t(f16, {2, 8}), t(f16, {2, 8})), "silu f16");
  unsupported(rope_apply(ctx, t(f32, {2, 2, 8}), t(f32, {2, 1, 8}), t(i32, {2}), t(f32, {4, 8})),
              "rope f32");
  unsupported(kv_cache_write(ctx, t(bf, {2, 1, 8}), t(bf, {2, 1, 8}), t(i32, {2}),
                             t(f32, {2, 4, 1, 8}), t(f32, {2, 4, 1, 8})),
              "kv_cache_write f32 cache");
  unsupported(kv_cache_write(ctx, t(f32, {2, 1, 8}), t(f32, {2, 1, 8}), t(i32, {2}),
                             t(bf, {2, 4, 1, 8}), t(bf, {2, 4, 1, 8})),
              "kv_cache_write f32 k");
  unsupported(sigmoid_gated_add(ctx, t(f32, {2, 8}), t(f32, {2, 1}), t(f32, {2, 8})),
              "sigmoid_gated_add f32");
  unsupported(sigmoid_gated_add(ctx, t(bf, {2, 8}), t(f16, {2, 1}), t(bf, {2, 8})),
              "sigmoid_gated_add f16 gate");
  unsupported(argmax(ctx, t(bf, {2, 8}), t(i32, {2})), "argmax bf16");
  unsupported(log_softmax(ctx, t(bf, {2, 8}), t(bf, {2, 8})), "log_softmax bf16");
}

}  // namespace
}  // namespace moeopt::ops

#endif  // MOEOPT_HAVE_CUDA
