// Launchers of the memory-side kernels (internal to backend/cuda): synthetic weights and dtype
// conversion. Argument checks happen in cuda_memory.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/elem_dtype.cuh"

namespace moeopt::cuda::detail {

// ops/random_fill.h, bit-exact with the CPU: rule 0 linear, 1 embedding, 2 norm, 3 small bias.
cudaError_t launch_random_fill(void* dst, kernels::ElemDType type, int64_t n, uint64_t key, int rule,
                               int64_t fan_in, cudaStream_t stream);
// dst[i] = src[i] converted (round to nearest even).
cudaError_t launch_convert(const void* src, kernels::ElemDType src_type, void* dst, kernels::ElemDType dst_type,
                           int64_t n, cudaStream_t stream);

}  // namespace moeopt::cuda::detail
