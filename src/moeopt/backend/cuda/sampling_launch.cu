// Template instances and launch geometry of the sampling kernels (see sampling_launch.h).
#include "moeopt/backend/cuda/sampling_launch.h"

#include <cub/device/device_segmented_radix_sort.cuh>

#include <algorithm>

#include "moeopt/backend/cuda/kernels/sampling_greedy.cuh"
#include "moeopt/backend/cuda/kernels/sampling_prepare.cuh"
#include "moeopt/backend/cuda/kernels/sampling_walk.cuh"

namespace moeopt::cuda::detail {
namespace k = moeopt::cuda::kernels;

namespace {

constexpr int kInitMaxBlocksPerRow = 64;

// The sort of one chunk: keys logits[chunk_begin * V ...] (descending) with ids as values.
// On return *keys / *vals point at the sorted buffers (CUB ping-pongs between the two).
cudaError_t sort_chunk(float* keys_cur, float* keys_alt, int32_t* ids, int32_t* ids_alt,
                       const int32_t* seg_begin, const int32_t* seg_end, int chunk, int vocab,
                       void* temp, size_t temp_bytes, const float** keys_out,
                       int32_t** ids_out, cudaStream_t stream) {
  cub::DoubleBuffer<float> d_keys(keys_cur, keys_alt);
  cub::DoubleBuffer<int32_t> d_vals(ids, ids_alt);
  size_t bytes = temp_bytes;
  const cudaError_t e = cub::DeviceSegmentedRadixSort::SortPairsDescending(
      temp, bytes, d_keys, d_vals, chunk * vocab, chunk, seg_begin, seg_end, 0,
      int(sizeof(float) * 8), stream);
  *keys_out = d_keys.Current();
  *ids_out = d_vals.Current();
  return e;
}

}  // namespace

cudaError_t launch_sample_greedy(const k::GreedyParams& p, cudaStream_t stream) {
  constexpr int kThreads = k::kSampleGreedyThreads;
  k::sample_greedy_kernel<kThreads><<<p.rows, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_sample_prepare(const k::SampleParams& p, cudaStream_t stream) {
  constexpr int kThreads = k::kSamplePrepareThreads;
  k::sample_prepare_kernel<kThreads><<<p.rows, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t sample_sort_temp_bytes(int chunk, int vocab, size_t* bytes) {
  cub::DoubleBuffer<float> d_keys(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> d_vals(nullptr, nullptr);
  *bytes = 0;
  return cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, *bytes, d_keys, d_vals, chunk * vocab, chunk, static_cast<const int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), 0, int(sizeof(float) * 8));
}

cudaError_t launch_sample_chunk(k::SampleParams p, int chunk, float* keys_alt, int32_t* ids,
                                int32_t* ids_alt, void* sort_temp, size_t sort_temp_bytes,
                                cudaStream_t stream) {
  const int vocab = p.vocab;
  float* keys = p.logits + size_t(p.chunk_begin) * size_t(vocab);
  p.init_ids = ids;
  const int per_row =
      std::min(kInitMaxBlocksPerRow, (vocab + k::kSampleInitThreads - 1) / k::kSampleInitThreads);
  k::sample_init_ids_kernel<<<dim3(per_row, chunk), k::kSampleInitThreads, 0, stream>>>(p);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  if (vocab > 1) {
    // Greedy rows have empty segments: CUB leaves them alone.
    e = sort_chunk(keys, keys_alt, ids, ids_alt, p.seg_begin + p.chunk_begin,
                   p.seg_end + p.chunk_begin, chunk, vocab, sort_temp, sort_temp_bytes,
                   &p.sorted_keys, &p.sorted_ids, stream);
    if (e != cudaSuccess) return e;
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  } else {
    p.sorted_keys = keys;  // one token: nothing to sort
    p.sorted_ids = ids;
  }
  constexpr int kThreads = k::kSampleWalkThreads;
  k::sample_walk_kernel<kThreads, k::kSampleWalkItems><<<chunk, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace moeopt::cuda::detail
