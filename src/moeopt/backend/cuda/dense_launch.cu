// Template instantiation and launch geometry for the dense kernels (see dense_launch.h).
// Rows always go on grid.x (up to 2^31 - 1); column blocks on grid.y, capped at 65535 with
// the kernels grid-striding over the rest.
#include "moeopt/backend/cuda/dense_launch.h"

#include "moeopt/backend/cuda/launch_ex.cuh"

#include <algorithm>
#include <cstdint>

#include "moeopt/backend/cuda/kernels/dense_embedding.cuh"
#include "moeopt/backend/cuda/kernels/dense_gemm_fallback.cuh"
#include "moeopt/backend/cuda/kernels/dense_gemv.cuh"
#include "moeopt/backend/cuda/kernels/dense_kv_write.cuh"
#include "moeopt/backend/cuda/kernels/dense_norm.cuh"
#include "moeopt/backend/cuda/kernels/dense_pointwise.cuh"
#include "moeopt/backend/cuda/kernels/dense_reduce.cuh"
#include "moeopt/backend/cuda/kernels/dense_rope.cuh"

namespace moeopt::cuda::detail {
namespace k = moeopt::cuda::kernels;
using DT = k::ElemDType;

namespace {

constexpr int64_t kMaxGridX = 2147483647;
constexpr int64_t kMaxGridY = 65535;

template <class... KArgs, class... Args>
cudaError_t launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t stream,
                   Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cfg.attrs = nullptr;
  cfg.numAttrs = 0;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}

// Grid for `rows` rows of `units` work units (8-element chunks or elements), `threads` per block.
dim3 row_grid(int64_t rows, int64_t units, int threads) {
  const int64_t cols = std::clamp<int64_t>((units + threads - 1) / threads, 1, kMaxGridY);
  return dim3(unsigned(rows), unsigned(cols));
}

template <class Tin>
cudaError_t embedding_out(const k::EmbeddingParams& p, DT out, dim3 grid, cudaStream_t s) {
  if (out == DT::kBF16)
    return launch(k::dense_embedding_kernel<Tin, __nv_bfloat16>, grid, dim3(k::kEmbeddingThreads),
                  s, p);
  return launch(k::dense_embedding_kernel<Tin, float>, grid, dim3(k::kEmbeddingThreads), s, p);
}

template <class Tx, class To, bool kAdd>
cudaError_t norm_variant(const k::NormParams& p, cudaStream_t s) {
  if (p.d <= k::kNormWarpMaxD) {
    const int64_t blocks = (p.vectors + k::kNormWarpsPerBlock - 1) / k::kNormWarpsPerBlock;
    return launch(k::dense_norm_kernel<Tx, To, kAdd, false>, dim3(unsigned(blocks)),
                  dim3(32 * k::kNormWarpsPerBlock), s, p);
  }
  return launch(k::dense_norm_kernel<Tx, To, kAdd, true>, dim3(unsigned(p.vectors)),
                dim3(k::kNormBlockThreads), s, p);
}

template <class Tx, class To>
cudaError_t norm_add(const k::NormParams& p, bool add, cudaStream_t s) {
  return add ? norm_variant<Tx, To, true>(p, s) : norm_variant<Tx, To, false>(p, s);
}

template <class Tx>
cudaError_t norm_out(const k::NormParams& p, DT out, bool add, cudaStream_t s) {
  return out == DT::kBF16 ? norm_add<Tx, __nv_bfloat16>(p, add, s) : norm_add<Tx, float>(p, add, s);
}

}  // namespace

cudaError_t launch_dense_embedding(const k::EmbeddingParams& p, DT table, DT out,
                                   cudaStream_t stream) {
  if (p.tokens <= 0 || p.hidden <= 0) return cudaSuccess;
  if (p.tokens > kMaxGridX) return cudaErrorInvalidValue;
  const dim3 grid = row_grid(p.tokens, p.vec ? p.hidden / 8 : p.hidden, k::kEmbeddingThreads);
  switch (table) {
    case DT::kBF16: return embedding_out<__nv_bfloat16>(p, out, grid, stream);
    case DT::kF16: return embedding_out<__half>(p, out, grid, stream);
    case DT::kF32: return embedding_out<float>(p, out, grid, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_dense_norm(const k::NormParams& p, DT x, DT out, bool add,
                              cudaStream_t stream) {
  if (p.vectors <= 0 || p.d <= 0) return cudaSuccess;
  if (p.vectors > kMaxGridX) return cudaErrorInvalidValue;
  return x == DT::kBF16 ? norm_out<__nv_bfloat16>(p, out, add, stream)
                        : norm_out<float>(p, out, add, stream);
}

cudaError_t launch_dense_rope(const k::RopeParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.rot <= 0 || p.hq + p.hkv <= 0) return cudaSuccess;
  if (p.tokens > kMaxGridX) return cudaErrorInvalidValue;
  const int64_t items = (p.hq + p.hkv) * (p.rot / 2);
  const int64_t gy = std::clamp<int64_t>((items + k::kRopeThreads - 1) / k::kRopeThreads, 1, kMaxGridY);
  return launch(k::dense_rope_kernel, dim3(unsigned(p.tokens), unsigned(gy)), dim3(k::kRopeThreads),
                stream, p);
}

cudaError_t launch_dense_kv_write(const k::KvWriteParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.row <= 0) return cudaSuccess;
  if (p.tokens > kMaxGridX) return cudaErrorInvalidValue;
  if (p.k_scale != nullptr)
    return launch(k::dense_kv_write_fp8_kernel, dim3(unsigned(p.tokens)),
                  dim3(k::kKvWriteThreads), stream, p);
  return launch(k::dense_kv_write_kernel, dim3(unsigned(p.tokens)), dim3(k::kKvWriteThreads),
                stream, p);
}

cudaError_t launch_dense_silu(const k::SiluParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.n <= 0) return cudaSuccess;
  if (p.rows > kMaxGridX) return cudaErrorInvalidValue;
  const dim3 grid = row_grid(p.rows, p.vec ? p.n / 8 : p.n, k::kPointwiseThreads);
  if (p.dtype == DT::kBF16)
    return launch(k::dense_silu_kernel<__nv_bfloat16>, grid, dim3(k::kPointwiseThreads), stream, p);
  if (p.dtype == DT::kF32 && !p.gated)
    return launch(k::dense_silu_kernel<float>, grid, dim3(k::kPointwiseThreads), stream, p);
  return cudaErrorInvalidValue;
}

cudaError_t launch_dense_gated_add(const k::GatedAddParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.n <= 0) return cudaSuccess;
  if (p.rows > kMaxGridX) return cudaErrorInvalidValue;
  const dim3 grid = row_grid(p.rows, p.vec ? p.n / 8 : p.n, k::kPointwiseThreads);
  return launch(k::dense_gated_add_kernel, grid, dim3(k::kPointwiseThreads), stream, p);
}

cudaError_t launch_dense_bias_add(const k::BiasAddParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.n <= 0) return cudaSuccess;
  if (p.rows > kMaxGridX) return cudaErrorInvalidValue;
  const dim3 grid = row_grid(p.rows, p.vec ? p.n / 8 : p.n, k::kPointwiseThreads);
  if (p.y_dtype == DT::kBF16)
    return launch(k::dense_bias_add_kernel<__nv_bfloat16>, grid, dim3(k::kPointwiseThreads),
                  stream, p);
  return launch(k::dense_bias_add_kernel<float>, grid, dim3(k::kPointwiseThreads), stream, p);
}

namespace {

template <int NT, int KS>
cudaError_t launch_gemv_mma(const k::GemvParams& p, dim3 grid, cudaStream_t stream) {
  if (p.y_dtype == DT::kBF16)
    return launch_ex(k::dense_gemv_mma_kernel<NT, KS, __nv_bfloat16>, grid, dim3(KS * 32), 0,
                     /*pdl=*/true, stream, p);
  return launch_ex(k::dense_gemv_mma_kernel<NT, KS, float>, grid, dim3(KS * 32), 0, /*pdl=*/true,
                   stream, p);
}

}  // namespace

cudaError_t launch_dense_gemv(const k::GemvParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  if (p.m < 1 || p.m > k::kGemvMaxRows || p.k < 1) return cudaErrorInvalidValue;
  constexpr int64_t kCols = (k::kGemvThreads / 32) * k::kGemvRowsPerWarp;
  const int64_t simt_blocks = (p.n + kCols - 1) / kCols;
  if (simt_blocks > kMaxGridX) return cudaErrorInvalidValue;
  const dim3 simt_grid(static_cast<unsigned>(simt_blocks)), simt_block(k::kGemvThreads);
  const bool bf16 = p.y_dtype == DT::kBF16;
  if (!p.vec)  // the element path, rows >= p.m skipped
    return bf16 ? launch_ex(k::dense_gemv_simt_kernel<k::kGemvMaxRows, __nv_bfloat16>, simt_grid,
                            simt_block, 0, true, stream, p)
                : launch_ex(k::dense_gemv_simt_kernel<k::kGemvMaxRows, float>, simt_grid,
                            simt_block, 0, true, stream, p);
  static_assert(k::kGemvSimtMaxRows == 2, "one SIMT instance per row count below");
  if (p.m == 1)
    return bf16 ? launch_ex(k::dense_gemv_simt_kernel<1, __nv_bfloat16>, simt_grid, simt_block, 0, true, stream, p)
                : launch_ex(k::dense_gemv_simt_kernel<1, float>, simt_grid, simt_block, 0, true, stream, p);
  if (p.m == 2)
    return bf16 ? launch_ex(k::dense_gemv_simt_kernel<2, __nv_bfloat16>, simt_grid, simt_block, 0, true, stream, p)
                : launch_ex(k::dense_gemv_simt_kernel<2, float>, simt_grid, simt_block, 0, true, stream, p);
  // Tensor cores: 16 columns a block, 8 tokens per mma.
  if (p.split_k != 4 && p.split_k != 8) return cudaErrorInvalidValue;
  const int64_t gx = (p.n + 15) / 16;
  if (gx > kMaxGridX) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(gx));
  static_assert(k::kGemvMaxRows == 16, "one or two 8-token mma tiles");
  const bool two = p.m > 8;
  if (p.split_k == 4)
    return two ? launch_gemv_mma<2, 4>(p, grid, stream) : launch_gemv_mma<1, 4>(p, grid, stream);
  return two ? launch_gemv_mma<2, 8>(p, grid, stream) : launch_gemv_mma<1, 8>(p, grid, stream);
}

cudaError_t launch_dense_gemm_fallback(const k::GemmFallbackParams& p, cudaStream_t stream) {
  if (p.m <= 0 || p.n <= 0) return cudaSuccess;
  const int64_t gx = (p.n + k::kGemmFallbackTile - 1) / k::kGemmFallbackTile;
  const int64_t gy = (p.m + k::kGemmFallbackTile - 1) / k::kGemmFallbackTile;
  if (gx > kMaxGridX || gy > kMaxGridY) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  if (p.y_dtype == DT::kBF16)
    return launch(k::dense_gemm_fallback_kernel<__nv_bfloat16>, grid,
                  dim3(k::kGemmFallbackThreads), stream, p);
  return launch(k::dense_gemm_fallback_kernel<float>, grid, dim3(k::kGemmFallbackThreads), stream,
                p);
}

cudaError_t launch_dense_argmax(const k::ArgmaxParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.rows > kMaxGridX || p.v <= 0 || p.v > INT32_MAX) return cudaErrorInvalidValue;
  return launch(k::dense_argmax_kernel, dim3(unsigned(p.rows)), dim3(k::kReduceThreads), stream, p);
}

cudaError_t launch_dense_log_softmax(const k::LogSoftmaxParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.v <= 0) return cudaSuccess;
  if (p.rows > kMaxGridX) return cudaErrorInvalidValue;
  return launch(k::dense_log_softmax_kernel, dim3(unsigned(p.rows)), dim3(k::kReduceThreads),
                stream, p);
}

}  // namespace moeopt::cuda::detail
