// Instantiation and launch geometry of the memory-side kernels (memory_launch.h).
#include "moeopt/backend/cuda/memory_launch.h"

#include <algorithm>

#include "moeopt/backend/cuda/kernels/random_fill.cuh"

namespace moeopt::cuda::detail {
namespace k = moeopt::cuda::kernels;
namespace {

constexpr int kThreads = 256;

int grid_for(int64_t n) {
  // Grid-stride loops: enough blocks to fill any Hopper several times over, no more.
  return int(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 132 * 32)));
}

template <typename S>
cudaError_t convert_from(const S* src, void* dst, kernels::ElemDType dst_type, int64_t n, cudaStream_t s) {
  const int g = grid_for(n);
  switch (dst_type) {
    case kernels::ElemDType::kF32: k::convert_kernel<<<g, kThreads, 0, s>>>(src, static_cast<float*>(dst), n); break;
    case kernels::ElemDType::kF16: k::convert_kernel<<<g, kThreads, 0, s>>>(src, static_cast<__half*>(dst), n); break;
    case kernels::ElemDType::kBF16:
      k::convert_kernel<<<g, kThreads, 0, s>>>(src, static_cast<__nv_bfloat16*>(dst), n);
      break;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_random_fill(void* dst, kernels::ElemDType type, int64_t n, uint64_t key, int rule,
                               int64_t fan_in, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  // The CPU computes sqrt(float(max(1, fan_in))): the same float is passed here.
  const float fan_in_f = float(std::max<int64_t>(1, fan_in));
  const int g = grid_for(n);
  switch (type) {
    case kernels::ElemDType::kF32:
      k::random_fill_kernel<<<g, kThreads, 0, stream>>>(static_cast<float*>(dst), n, key, rule, fan_in_f);
      break;
    case kernels::ElemDType::kF16:
      k::random_fill_kernel<<<g, kThreads, 0, stream>>>(static_cast<__half*>(dst), n, key, rule, fan_in_f);
      break;
    case kernels::ElemDType::kBF16:
      k::random_fill_kernel<<<g, kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), n, key, rule,
                                                        fan_in_f);
      break;
  }
  return cudaGetLastError();
}

cudaError_t launch_convert(const void* src, kernels::ElemDType src_type, void* dst, kernels::ElemDType dst_type,
                           int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  switch (src_type) {
    case kernels::ElemDType::kF32: return convert_from(static_cast<const float*>(src), dst, dst_type, n, stream);
    case kernels::ElemDType::kF16: return convert_from(static_cast<const __half*>(src), dst, dst_type, n, stream);
    case kernels::ElemDType::kBF16:
      return convert_from(static_cast<const __nv_bfloat16*>(src), dst, dst_type, n, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace moeopt::cuda::detail
