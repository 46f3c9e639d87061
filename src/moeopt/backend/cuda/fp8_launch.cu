// Launch geometry of the FP8 helper kernels (fp8_launch.h).
#include "moeopt/backend/cuda/fp8_launch.h"
#include "moeopt/backend/cuda/kernels/fp8_gemv.cuh"
#include "moeopt/backend/cuda/kernels/fp8_linear_fallback.cuh"
#include "moeopt/backend/cuda/kernels/fp8_quantize.cuh"
#include "moeopt/backend/cuda/launch_ex.cuh"

namespace moeopt::cuda::detail {
namespace k = moeopt::cuda::kernels;

cudaError_t launch_fp8_quantize_weight(const k::Fp8QuantWeightParams& p, cudaStream_t stream) {
  if (p.n <= 0 || p.k <= 0) return cudaSuccess;
  const dim3 grid(unsigned((p.k + 127) / 128), unsigned((p.n + 127) / 128));
  k::fp8_quantize_weight_kernel<<<grid, k::kFp8BlockThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_fp8_quantize_act(const k::Fp8QuantActParams& p, bool pdl, cudaStream_t stream) {
  const int64_t pairs = p.rows * ((p.k + 127) / 128);
  if (pairs <= 0) return cudaSuccess;
  constexpr int64_t kPairsPerBlock = k::kFp8ActThreads / 16;
  const dim3 grid(unsigned((pairs + kPairsPerBlock - 1) / kPairsPerBlock));
  return launch_ex(k::fp8_quantize_act_kernel, grid, dim3(k::kFp8ActThreads), 0, pdl, stream, p);
}

namespace {

template <int NT, int KS>
cudaError_t launch_fp8_gemv_tile(const k::Fp8GroupedGemmParams& p, dim3 grid, cudaStream_t stream) {
  if (p.out_f32 != nullptr)
    return launch_ex(k::fp8_gemv_kernel<NT, KS, float>, grid, dim3(KS * 32), 0, true, stream, p);
  return launch_ex(k::fp8_gemv_kernel<NT, KS, __nv_bfloat16>, grid, dim3(KS * 32), 0, true, stream, p);
}

}  // namespace

cudaError_t launch_fp8_gemv(const k::Fp8GroupedGemmParams& p, int split_k, cudaStream_t stream) {
  if (p.N_out <= 0) return cudaSuccess;
  if (p.num_rows < 1 || p.num_rows > k::kGemvMaxRows || p.K < 16 || p.K % 16 != 0 ||
      (split_k != 4 && split_k != 8))
    return cudaErrorInvalidValue;
  const dim3 grid(unsigned((int64_t(p.N_out) + 15) / 16));
  static_assert(k::kGemvMaxRows == 16, "one or two 8-token mma tiles");
  const bool two = p.num_rows > 8;
  if (split_k == 4)
    return two ? launch_fp8_gemv_tile<2, 4>(p, grid, stream) : launch_fp8_gemv_tile<1, 4>(p, grid, stream);
  return two ? launch_fp8_gemv_tile<2, 8>(p, grid, stream) : launch_fp8_gemv_tile<1, 8>(p, grid, stream);
}

size_t fp8_fallback_smem_bytes(int64_t kk) { return size_t(kk + (kk + 127) / 128) * sizeof(float); }

cudaError_t launch_fp8_linear_fallback(const k::Fp8LinearFallbackParams& p, cudaStream_t stream) {
  if (p.m <= 0 || p.n <= 0) return cudaSuccess;
  const size_t smem = fp8_fallback_smem_bytes(p.k);
  cudaError_t e = cudaFuncSetAttribute(k::fp8_linear_fallback_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  const dim3 grid(unsigned(p.m), unsigned((p.n + k::kFp8FallbackCols - 1) / k::kFp8FallbackCols));
  k::fp8_linear_fallback_kernel<<<grid, k::kFp8FallbackThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace moeopt::cuda::detail
