// Raw launchers of the attention kernels (internal to backend/cuda). They pick the template
// instance and the grid and report the CUDA error; validation and planning (paths, splits,
// workspace) happen in cuda_attention_ops.cpp, compiled as plain C++.
#pragma once

#include <cuda_runtime.h>

#include "moeopt/backend/cuda/kernels/attention_params.cuh"

namespace moeopt::cuda::detail {

// Tensor-core shapes (kernels/attention_mma.cuh).
enum class AttnMmaShape {
  kPrefill,  // kAttnPrefillRows rows x kAttnPrefillKeys keys per tile
  kDecode,   // kAttnDecodeRows rows x kAttnDecodeKeys keys per tile
};

// head_dim 64 or 128; grid (num_seqs * tiles_per_seq, Hkv, num_splits). Then, when
// num_splits > 1, the split merge.
cudaError_t launch_paged_attention_mma(const kernels::PagedAttentionParams& p,
                                       AttnMmaShape shape, cudaStream_t stream);
// Any head_dim in [1, kAttnGeneralMaxDim]; grid (T, Hq); ignores the split fields.
cudaError_t launch_paged_attention_general(const kernels::PagedAttentionParams& p,
                                           cudaStream_t stream);

}  // namespace moeopt::cuda::detail
