// Template instances and launch geometry of the FP8 MoE grouped GEMM
// (kernels/fp8_moe_gemm.cuh, kernels/fp8_wgmma_gemm.cuh; see moe_launch.h).
#include <algorithm>

#include "moeopt/backend/cuda/kernels/fp8_moe_gemm.cuh"
#include "moeopt/backend/cuda/kernels/fp8_wgmma_gemm.cuh"
#include "moeopt/backend/cuda/launch_ex.cuh"
#include "moeopt/backend/cuda/moe_launch.h"

namespace moeopt::cuda::detail {
namespace k = moeopt::cuda::kernels;

// MoeFp8Tile configurations (moe_heuristics.h). KG = 2 (two 128-wide K groups, 256-byte
// weight rows per stage) for the 8-token tiles, which only stream weights; their stage counts
// keep each block's shared memory where it was at KG = 1 (same blocks per SM). Measured on
// the H200 (bench moe, Qwen3-30B-A3B shape): 1-2% faster at M = 8..64, GEMM 1 at 68% of DRAM
// throughput instead of 60% under ncu. The 16- and 32-token tiles lost 25-28% at M = 256/512
// with KG = 2 (3 stages) and keep KG = 1; the prefill tiles are bound by the mma pipe.
//                                 BM   BN WM WN WK KG STAGES
using Fp8Bm32Bn8 = k::Fp8GemmTile<32, 8, 1, 1, 4, 2, 4>;
using Fp8Bm64Bn8 = k::Fp8GemmTile<64, 8, 2, 1, 2, 2, 4>;
using Fp8Bm128Bn8 = k::Fp8GemmTile<128, 8, 4, 1, 1, 2, 3>;
using Fp8Bm64Bn16 = k::Fp8GemmTile<64, 16, 2, 1, 2, 1, 6>;
using Fp8Bm64Bn32 = k::Fp8GemmTile<64, 32, 2, 2, 1, 1, 6>;
using Fp8Bm128Bn64 = k::Fp8GemmTile<128, 64, 4, 2, 1, 1, 4>;
using Fp8Bm128Bn128 = k::Fp8GemmTile<128, 128, 2, 4, 1, 1, 4>;
// sm_90a wgmma tiles (fp8_wgmma_gemm.cuh): 256 weight rows x BN tokens x one 128-group per
// stage, STAGES deep.        BN STAGES   shared memory
using Fp8Wgmma16 = k::Fp8WgmmaTile<16, 6>;   // 210 KiB
using Fp8Wgmma32 = k::Fp8WgmmaTile<32, 6>;   // 226 KiB
using Fp8Wgmma64 = k::Fp8WgmmaTile<64, 5>;   // 218 KiB

namespace {

template <class T, bool kGated>
cudaError_t launch_fp8(const k::Fp8GroupedGemmParams& p, int max_tiles, bool pdl,
                       cudaStream_t stream) {
  auto kernel = p.dense ? k::fp8_linear_kernel<T> : k::fp8_moe_grouped_gemm_kernel<T, kGated>;
  const size_t smem = T::smem_bytes(p.K);
  cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e != cudaSuccess) return e;
  const int cols_per_block = kGated ? T::BM / 2 : T::BM;
  const dim3 grid(max_tiles, (p.N_out + cols_per_block - 1) / cols_per_block);
  return launch_ex(kernel, grid, dim3(T::kThreads), smem, pdl, stream, p);
}

template <class T>
cudaError_t launch_fp8_gated(bool gated, const k::Fp8GroupedGemmParams& p, int max_tiles,
                             bool pdl, cudaStream_t stream) {
  return gated ? launch_fp8<T, true>(p, max_tiles, pdl, stream)
               : launch_fp8<T, false>(p, max_tiles, pdl, stream);
}

// Persistent launch of a wgmma tile: one CTA per SM (at most one per work item) loops over
// the (token tile, weight block) items; tiles = the tile table's bound (MoE) or
// ceil(num_rows / BN) (dense).
template <class T, bool kGated>
cudaError_t launch_fp8_wgmma(const k::Fp8GroupedGemmParams& p, int tiles, bool pdl,
                             cudaStream_t stream) {
  if (p.K % 16 != 0 || p.N_out % 8 != 0 || p.K <= 0 || p.N_out <= 0 || p.ld_act % 16 != 0)
    return cudaErrorInvalidValue;
  if (p.dense && p.out_f32 == nullptr && p.ld_out % 8 != 0) return cudaErrorInvalidValue;
  CUtensorMap map;
  int mode = 0;
  cudaError_t e = encode_wgmma_weight_map(p.weight, 1, kGated, p.K, p.N_out, T::BM, &map, &mode);
  if (e != cudaSuccess) return e;
  auto kernel = p.dense ? k::fp8_linear_wgmma_kernel<T>
                        : k::fp8_moe_wgmma_gemm_kernel<T, kGated>;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemBytes);
  if (e != cudaSuccess) return e;
  int dev = 0, sms = 0;
  e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;
  constexpr int kCols = T::out_cols(kGated);
  const int64_t items = int64_t(tiles) * ((p.N_out + kCols - 1) / kCols);
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(items, sms)));
  return launch_ex(kernel, dim3(grid), dim3(T::kThreads), size_t(T::kSmemBytes), pdl, stream, map,
                   p, mode);
}

template <class T>
cudaError_t launch_fp8_wgmma_gated(bool gated, const k::Fp8GroupedGemmParams& p, int tiles,
                                   bool pdl, cudaStream_t stream) {
  return gated ? launch_fp8_wgmma<T, true>(p, tiles, pdl, stream)
               : launch_fp8_wgmma<T, false>(p, tiles, pdl, stream);
}

}  // namespace

size_t moe_fp8_gemm_smem_bytes(MoeFp8Tile tile, int K) {
  switch (tile) {
    case MoeFp8Tile::kBm32Bn8: return Fp8Bm32Bn8::smem_bytes(K);
    case MoeFp8Tile::kBm64Bn8: return Fp8Bm64Bn8::smem_bytes(K);
    case MoeFp8Tile::kBm128Bn8: return Fp8Bm128Bn8::smem_bytes(K);
    case MoeFp8Tile::kBm64Bn16: return Fp8Bm64Bn16::smem_bytes(K);
    case MoeFp8Tile::kBm64Bn32: return Fp8Bm64Bn32::smem_bytes(K);
    case MoeFp8Tile::kBm128Bn64: return Fp8Bm128Bn64::smem_bytes(K);
    case MoeFp8Tile::kBm128Bn128: return Fp8Bm128Bn128::smem_bytes(K);
    case MoeFp8Tile::kWgmma256x16: return Fp8Wgmma16::kSmemBytes;
    case MoeFp8Tile::kWgmma256x32: return Fp8Wgmma32::kSmemBytes;
    case MoeFp8Tile::kWgmma256x64: return Fp8Wgmma64::kSmemBytes;
  }
  return ~size_t(0);
}

cudaError_t launch_moe_fp8_grouped_gemm(MoeFp8Tile tile, bool gated,
                                        const k::Fp8GroupedGemmParams& p, int max_tiles,
                                        bool pdl, cudaStream_t stream) {
  if (max_tiles <= 0) return cudaSuccess;
  switch (tile) {
    case MoeFp8Tile::kBm32Bn8:
      return launch_fp8_gated<Fp8Bm32Bn8>(gated, p, max_tiles, pdl, stream);
    case MoeFp8Tile::kBm64Bn8:
      return launch_fp8_gated<Fp8Bm64Bn8>(gated, p, max_tiles, pdl, stream);
    case MoeFp8Tile::kBm128Bn8:
      return launch_fp8_gated<Fp8Bm128Bn8>(gated, p, max_tiles, pdl, stream);
    case MoeFp8Tile::kBm64Bn16:
      return launch_fp8_gated<Fp8Bm64Bn16>(gated, p, max_tiles, pdl, stream);
    case MoeFp8Tile::kBm64Bn32:
      return launch_fp8_gated<Fp8Bm64Bn32>(gated, p, max_tiles, pdl, stream);
    case MoeFp8Tile::kBm128Bn64:
      return launch_fp8_gated<Fp8Bm128Bn64>(gated, p, max_tiles, pdl, stream);
    case MoeFp8Tile::kBm128Bn128:
      return launch_fp8_gated<Fp8Bm128Bn128>(gated, p, max_tiles, pdl, stream);
    case MoeFp8Tile::kWgmma256x16:
      return launch_fp8_wgmma_gated<Fp8Wgmma16>(gated, p, max_tiles, pdl, stream);
    case MoeFp8Tile::kWgmma256x32:
      return launch_fp8_wgmma_gated<Fp8Wgmma32>(gated, p, max_tiles, pdl, stream);
    case MoeFp8Tile::kWgmma256x64:
      return launch_fp8_wgmma_gated<Fp8Wgmma64>(gated, p, max_tiles, pdl, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_fp8_dense_linear(MoeFp8Tile tile, const k::Fp8GroupedGemmParams& p, bool pdl,
                                    cudaStream_t stream) {
  if (p.num_rows <= 0 || p.N_out <= 0) return cudaSuccess;
  const int rows = moe_fp8_tile_rows(tile);
  const int tiles = (p.num_rows + rows - 1) / rows;
  switch (tile) {
    case MoeFp8Tile::kBm32Bn8: return launch_fp8<Fp8Bm32Bn8, false>(p, tiles, pdl, stream);
    case MoeFp8Tile::kBm64Bn8: return launch_fp8<Fp8Bm64Bn8, false>(p, tiles, pdl, stream);
    case MoeFp8Tile::kBm128Bn8: return launch_fp8<Fp8Bm128Bn8, false>(p, tiles, pdl, stream);
    case MoeFp8Tile::kBm64Bn16: return launch_fp8<Fp8Bm64Bn16, false>(p, tiles, pdl, stream);
    case MoeFp8Tile::kBm64Bn32: return launch_fp8<Fp8Bm64Bn32, false>(p, tiles, pdl, stream);
    case MoeFp8Tile::kBm128Bn64: return launch_fp8<Fp8Bm128Bn64, false>(p, tiles, pdl, stream);
    case MoeFp8Tile::kBm128Bn128: return launch_fp8<Fp8Bm128Bn128, false>(p, tiles, pdl, stream);
    case MoeFp8Tile::kWgmma256x16: return launch_fp8_wgmma<Fp8Wgmma16, false>(p, tiles, pdl, stream);
    case MoeFp8Tile::kWgmma256x32: return launch_fp8_wgmma<Fp8Wgmma32, false>(p, tiles, pdl, stream);
    case MoeFp8Tile::kWgmma256x64: return launch_fp8_wgmma<Fp8Wgmma64, false>(p, tiles, pdl, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace moeopt::cuda::detail
