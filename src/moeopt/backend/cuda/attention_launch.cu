// Template instantiation and launch geometry for the attention kernels (attention_launch.h).
#include "moeopt/backend/cuda/attention_launch.h"

#include "moeopt/backend/cuda/kernels/attention_general.cuh"
#include "moeopt/backend/cuda/kernels/attention_mma.cuh"
#include "moeopt/backend/cuda/kernels/attention_reduce.cuh"

namespace moeopt::cuda::detail {
namespace k = moeopt::cuda::kernels;

namespace {

template <class C, bool F8>
cudaError_t launch_mma_as(const k::PagedAttentionParams& p, cudaStream_t stream) {
  auto kernel = k::paged_attention_mma_kernel<C, F8>;
  constexpr size_t smem = F8 ? C::kSmemBytesF8 : C::kSmemBytes;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(smem));
  if (e != cudaSuccess) return e;
  const dim3 grid(unsigned(p.num_seqs) * unsigned(p.tiles_per_seq), unsigned(p.num_kv_heads),
                  unsigned(p.num_splits));
  kernel<<<grid, C::kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

// bf16 or fp8 caches (PagedAttentionParams::k_codes set).
template <class C>
cudaError_t launch_mma(const k::PagedAttentionParams& p, cudaStream_t stream) {
  return p.k_codes != nullptr ? launch_mma_as<C, true>(p, stream) : launch_mma_as<C, false>(p, stream);
}

}  // namespace

cudaError_t launch_paged_attention_mma(const k::PagedAttentionParams& p, AttnMmaShape shape,
                                       cudaStream_t stream) {
  if (p.num_seqs <= 0 || p.tiles_per_seq <= 0 || p.num_splits <= 0) return cudaSuccess;
  cudaError_t e = cudaErrorInvalidValue;  // head_dim was checked by the caller
  const bool prefill = shape == AttnMmaShape::kPrefill;
  if (p.head_dim == 64)
    e = prefill ? launch_mma<k::AttnPrefill64>(p, stream) : launch_mma<k::AttnDecode64>(p, stream);
  else if (p.head_dim == 128)
    e = prefill ? launch_mma<k::AttnPrefill128>(p, stream)
                : launch_mma<k::AttnDecode128>(p, stream);
  if (e != cudaSuccess || p.num_splits == 1 || p.num_tokens <= 0) return e;
  const dim3 grid(unsigned(p.num_tokens), unsigned(p.num_q_heads));
  k::paged_attention_reduce_kernel<<<grid, k::kAttnReduceThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_paged_attention_general(const k::PagedAttentionParams& p,
                                           cudaStream_t stream) {
  if (p.num_tokens <= 0 || p.num_seqs <= 0) return cudaSuccess;
  const dim3 grid(unsigned(p.num_tokens), unsigned(p.num_q_heads));
  k::paged_attention_general_kernel<<<grid, k::kAttnGeneralThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace moeopt::cuda::detail
