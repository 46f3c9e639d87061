// Raw launchers of the dense kernels (internal to backend/cuda). They pick the template
// instance and the grid and return the launch's error; argument validation happens in the
// plain C++ op files (cuda_dense_ops.cpp, cuda_linear.cpp), which nvcc never sees. A launch
// with nothing to do (zero rows or columns) enqueues nothing and returns cudaSuccess.
#pragma once

#include <cuda_runtime.h>

#include "moeopt/backend/cuda/kernels/dense_params.cuh"

namespace moeopt::cuda::detail {

// table: f32 / bf16 / f16; out: f32 / bf16.
cudaError_t launch_dense_embedding(const kernels::EmbeddingParams& p, kernels::ElemDType table,
                                   kernels::ElemDType out, cudaStream_t stream);
// x: f32 / bf16; out: f32 / bf16; add: add_rms_norm (p.residual f32, p.heads 1).
cudaError_t launch_dense_norm(const kernels::NormParams& p, kernels::ElemDType x,
                              kernels::ElemDType out, bool add, cudaStream_t stream);
cudaError_t launch_dense_rope(const kernels::RopeParams& p, cudaStream_t stream);
cudaError_t launch_dense_kv_write(const kernels::KvWriteParams& p, cudaStream_t stream);
cudaError_t launch_dense_silu(const kernels::SiluParams& p, cudaStream_t stream);
cudaError_t launch_dense_gated_add(const kernels::GatedAddParams& p, cudaStream_t stream);
cudaError_t launch_dense_bias_add(const kernels::BiasAddParams& p, cudaStream_t stream);
// 1 <= M <= kGemvMaxRows (else cudaErrorInvalidValue); launched with programmatic dependent
// launch.
cudaError_t launch_dense_gemv(const kernels::GemvParams& p, cudaStream_t stream);
// Needs ceil(M / 64) <= 65535 (the caller checks).
cudaError_t launch_dense_gemm_fallback(const kernels::GemmFallbackParams& p, cudaStream_t stream);
cudaError_t launch_dense_argmax(const kernels::ArgmaxParams& p, cudaStream_t stream);
cudaError_t launch_dense_log_softmax(const kernels::LogSoftmaxParams& p, cudaStream_t stream);

}  // namespace moeopt::cuda::detail
