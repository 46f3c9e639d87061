// Embedding gather: out[t, :] = table[ids[t], :] (dense_params.cuh EmbeddingParams).
//
// Grid (tokens, column blocks), kEmbeddingThreads threads; each thread moves 8-element
// chunks (16-byte loads) when p.vec, else single elements. A kernel cannot return an error,
// so an id outside [0, vocab) writes a zero row instead (the CPU reference reports it).
// The values go through fp32, which is exact for every table -> out pair except f16/f32 ->
// bf16, where they are rounded to nearest even.
#pragma once

#include "moeopt/backend/cuda/kernels/dense_common.cuh"

namespace moeopt::cuda::kernels {

inline constexpr int kEmbeddingThreads = 256;

template <class Tin, class Tout>
__global__ void __launch_bounds__(kEmbeddingThreads) dense_embedding_kernel(EmbeddingParams p) {
  const int64_t t = blockIdx.x;
  const int32_t id = p.ids[t];
  const bool valid = id >= 0 && int64_t(id) < p.vocab;
  const Tin* src = static_cast<const Tin*>(p.table) + (valid ? int64_t(id) * p.hidden : 0);
  Tout* dst = static_cast<Tout*>(p.out) + t * p.out_stride;
  const int64_t step = int64_t(gridDim.y) * kEmbeddingThreads;
  const int64_t first = int64_t(blockIdx.y) * kEmbeddingThreads + threadIdx.x;
  if (p.vec) {
    for (int64_t c = first; c < p.hidden / 8; c += step) {
      float f[8];
      if (valid) {
        dense::load8(src + c * 8, f);
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) f[i] = 0.0f;
      }
      dense::store8(dst + c * 8, f);
    }
  } else {
    for (int64_t i = first; i < p.hidden; i += step)
      dst[i] = dense::from_float<Tout>(valid ? dense::to_float(src[i]) : 0.0f);
  }
}

}  // namespace moeopt::cuda::kernels
