// Raw launchers of the FP8 helper kernels (fp8_launch.cu): the weight and activation
// quantisers, the small-M linear (GEMV) and the fallback linear. Validation lives in cuda_fp8_ops.cpp. Nothing to do enqueues nothing.
#pragma once

#include <cuda_runtime.h>

#include "moeopt/backend/cuda/kernels/fp8_params.cuh"
#include "moeopt/backend/cuda/kernels/moe_params.cuh"

namespace moeopt::cuda::detail {

cudaError_t launch_fp8_quantize_weight(const kernels::Fp8QuantWeightParams& p, cudaStream_t stream);
// pdl: programmatic dependent launch (the kernel waits for its predecessor before it reads).
cudaError_t launch_fp8_quantize_act(const kernels::Fp8QuantActParams& p, bool pdl,
                                    cudaStream_t stream);
// Shared memory (K + ceil(K/128)) * 4 bytes: the caller checks it fits (fp8_fallback_smem_bytes).
size_t fp8_fallback_smem_bytes(int64_t k);
// The dense W8A8 linear at 1 <= p.num_rows <= kGemvMaxRows (kernels/fp8_gemv.cuh), x already
// quantised; split_k 4 or 8 warps per 16 columns; programmatic dependent launch.
cudaError_t launch_fp8_gemv(const kernels::Fp8GroupedGemmParams& p, int split_k,
                            cudaStream_t stream);
cudaError_t launch_fp8_linear_fallback(const kernels::Fp8LinearFallbackParams& p, cudaStream_t stream);

}  // namespace moeopt::cuda::detail
