// Raw launchers of the sampling kernels (internal to backend/cuda): grids, template instances
// and the CUB segmented sort. Validation, the workspace layout and the order of the steps are
// in cuda_sampling.cpp, compiled as plain C++.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "moeopt/backend/cuda/kernels/sampling_params.cuh"

namespace moeopt::cuda::detail {

// Fast greedy path: one kernel.
cudaError_t launch_sample_greedy(const kernels::GreedyParams& p, cudaStream_t stream);
// General path, per call: the prepare kernel over all rows.
cudaError_t launch_sample_prepare(const kernels::SampleParams& p, cudaStream_t stream);
// General path, per chunk of rows [p.chunk_begin, p.chunk_begin + chunk): ids 0..V-1, the
// segmented sort of the chunk's sampled rows (keys: logits, descending; values: ids) and the
// walk. keys_alt / ids_alt: [chunk * vocab] each; sort_temp: sort_temp_bytes(chunk, vocab).
cudaError_t launch_sample_chunk(kernels::SampleParams p, int chunk, float* keys_alt,
                                int32_t* ids, int32_t* ids_alt, void* sort_temp,
                                size_t sort_temp_bytes, cudaStream_t stream);
// CUB's temporary storage for sorting `chunk` rows of `vocab` pairs (no device work).
cudaError_t sample_sort_temp_bytes(int chunk, int vocab, size_t* bytes);

}  // namespace moeopt::cuda::detail
