// Template instantiation and launch geometry for the MoE kernels (see moe_launch.h).
#include "moeopt/backend/cuda/moe_launch.h"

#include <algorithm>

#include "moeopt/backend/cuda/kernels/moe_combine.cuh"
#include "moeopt/backend/cuda/kernels/moe_grouped_gemm.cuh"
#include "moeopt/backend/cuda/kernels/moe_permute.cuh"
#include "moeopt/backend/cuda/kernels/moe_router.cuh"

namespace moeopt::cuda::detail {
namespace k = moeopt::cuda::kernels;

// Tile configurations; MoeGemmTile names them (moe_heuristics.h).
//                        BM   BN  BK  WM WN WK STAGES
using TileBm32Bn8 = k::GemmTile<32, 8, 64, 1, 1, 4, 6>;
using TileBm64Bn16 = k::GemmTile<64, 16, 64, 2, 1, 2, 5>;
using TileBm64Bn32 = k::GemmTile<64, 32, 64, 2, 2, 1, 4>;
using TileBm128Bn64 = k::GemmTile<128, 64, 64, 4, 2, 1, 4>;
using TileBm128Bn128 = k::GemmTile<128, 128, 64, 2, 4, 1, 4>;

namespace {

template <class T, bool kGated>
cudaError_t launch_gemm(const k::GroupedGemmParams& p, int max_tiles, cudaStream_t stream) {
  constexpr bool kWeighted = !kGated;
  auto kernel = k::moe_grouped_gemm_kernel<T, kGated, kWeighted>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       T::kSmemBytes);
  if (e != cudaSuccess) return e;
  const int cols_per_block = kGated ? T::BM / 2 : T::BM;
  const dim3 grid(max_tiles, (p.N_out + cols_per_block - 1) / cols_per_block);
  kernel<<<grid, T::kThreads, T::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

template <class T>
cudaError_t launch_gemm_gated(bool gated, const k::GroupedGemmParams& p, int max_tiles,
                              cudaStream_t stream) {
  return gated ? launch_gemm<T, true>(p, max_tiles, stream)
               : launch_gemm<T, false>(p, max_tiles, stream);
}

template <int TOK>
cudaError_t launch_router(const k::RouterParams& p, cudaStream_t stream) {
  const size_t smem = router_smem_bytes(TOK, p.hidden, p.num_experts);
  auto kernel = k::moe_router_topk_kernel<TOK>;
  cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  const int blocks = (p.num_tokens + TOK - 1) / TOK;
  kernel<<<blocks, k::kRouterThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

size_t router_smem_bytes(int tokens_per_block, int hidden, int num_experts) {
  return size_t(tokens_per_block) * hidden * 2 + size_t(tokens_per_block) * num_experts * 4;
}

int router_tokens_per_block(int hidden, int num_experts) {
  // Largest of 16/8/4/2/1 whose staging fits in 96 KiB of shared memory.
  for (int t : {16, 8, 4, 2, 1})
    if (router_smem_bytes(t, hidden, num_experts) <= 96 * 1024) return t;
  return 0;  // too wide: the caller reports it
}

cudaError_t launch_moe_router_topk(const k::RouterParams& p, int tokens_per_block,
                                   cudaStream_t stream) {
  switch (tokens_per_block) {
    case 16: return launch_router<16>(p, stream);
    case 8: return launch_router<8>(p, stream);
    case 4: return launch_router<4>(p, stream);
    case 2: return launch_router<2>(p, stream);
    case 1: return launch_router<1>(p, stream);
    default: return cudaErrorInvalidValue;  // an int, not an enum: the caller validated it
  }
}

cudaError_t launch_moe_permute(const k::PermuteParams& p, cudaStream_t stream) {
  k::moe_count_kernel<<<1, k::kPermuteThreads, 0, stream>>>(p);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  k::moe_place_kernel<<<p.num_experts, k::kPlaceThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_moe_grouped_gemm(MoeGemmTile tile, bool gated, const k::GroupedGemmParams& p,
                                    int max_tiles, cudaStream_t stream) {
  if (max_tiles <= 0) return cudaSuccess;
  switch (tile) {
    case MoeGemmTile::kBm32Bn8: return launch_gemm_gated<TileBm32Bn8>(gated, p, max_tiles, stream);
    case MoeGemmTile::kBm64Bn16:
      return launch_gemm_gated<TileBm64Bn16>(gated, p, max_tiles, stream);
    case MoeGemmTile::kBm64Bn32:
      return launch_gemm_gated<TileBm64Bn32>(gated, p, max_tiles, stream);
    case MoeGemmTile::kBm128Bn64:
      return launch_gemm_gated<TileBm128Bn64>(gated, p, max_tiles, stream);
    case MoeGemmTile::kBm128Bn128:
      return launch_gemm_gated<TileBm128Bn128>(gated, p, max_tiles, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_moe_combine(const k::CombineParams& p, cudaStream_t stream) {
  constexpr int kColsPerBlock = k::kCombineThreads * 8;
  const dim3 grid(p.num_tokens, (p.hidden + kColsPerBlock - 1) / kColsPerBlock);
  k::moe_combine_kernel<<<grid, k::kCombineThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace moeopt::cuda::detail
