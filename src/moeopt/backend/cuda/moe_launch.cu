// Template instantiation and launch geometry for the MoE kernels (see moe_launch.h).
#include "moeopt/backend/cuda/moe_launch.h"

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>

#include "moeopt/backend/cuda/kernels/moe_combine.cuh"
#include "moeopt/backend/cuda/launch_ex.cuh"
#include "moeopt/backend/cuda/kernels/moe_grouped_gemm.cuh"
#include "moeopt/backend/cuda/kernels/moe_wgmma_gemm.cuh"
#include "moeopt/backend/cuda/kernels/moe_permute.cuh"
#include "moeopt/backend/cuda/kernels/moe_route_logits.cuh"

namespace moeopt::cuda::detail {
namespace k = moeopt::cuda::kernels;

// Tile configurations; MoeGemmTile names them (moe_heuristics.h).
//                        BM   BN  BK  WM WN WK STAGES
using TileBm32Bn8 = k::GemmTile<32, 8, 64, 1, 1, 4, 6>;
using TileBm64Bn16 = k::GemmTile<64, 16, 64, 2, 1, 2, 5>;
using TileBm64Bn32 = k::GemmTile<64, 32, 64, 2, 2, 1, 4>;
using TileBm128Bn64 = k::GemmTile<128, 64, 64, 4, 2, 1, 4>;
using TileBm128Bn128 = k::GemmTile<128, 128, 64, 2, 4, 1, 3>;  // 96 KiB: 2 blocks per SM
using TileBm32Bn8Bk128 = k::GemmTile<32, 8, 128, 1, 1, 4, 4>;
using TileBm64Bn8 = k::GemmTile<64, 8, 64, 2, 1, 2, 6>;
using TileBm64Bn8Bk128 = k::GemmTile<64, 8, 128, 2, 1, 2, 4>;
// sm_90a wgmma tiles (moe_wgmma_gemm.cuh): 256 weight rows x BN tokens x 64, STAGES deep.
//                               BN STAGES   shared memory
using WgmmaBn64 = k::WgmmaTile<64, 5>;    // 217 KiB
using WgmmaBn128 = k::WgmmaTile<128, 4>;  // 225 KiB

namespace {

template <class T, bool kGated>
cudaError_t launch_gemm(const k::GroupedGemmParams& p, int max_tiles, bool pdl,
                        cudaStream_t stream) {
  constexpr bool kWeighted = !kGated;
  auto kernel = k::moe_grouped_gemm_kernel<T, kGated, kWeighted>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       T::kSmemBytes);
  if (e != cudaSuccess) return e;
  const int cols_per_block = kGated ? T::BM / 2 : T::BM;
  const dim3 grid(max_tiles, (p.N_out + cols_per_block - 1) / cols_per_block);
  return launch_ex(kernel, grid, dim3(T::kThreads), T::kSmemBytes, pdl, stream, p);
}

template <class T>
cudaError_t launch_gemm_gated(bool gated, const k::GroupedGemmParams& p, int max_tiles, bool pdl,
                              cudaStream_t stream) {
  return gated ? launch_gemm<T, true>(p, max_tiles, pdl, stream)
               : launch_gemm<T, false>(p, max_tiles, pdl, stream);
}

// cuTensorMapEncodeTiled through the runtime's driver entry point (no -lcuda: the binary
// still starts on machines without a driver).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = []() -> PFN_cuTensorMapEncodeTiled_v12000 {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess || f == nullptr) {
      cudaGetLastError();
      return nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// Experts in the tensor maps' expert dimension: an upper bound (the tile table names only
// valid experts; rows are bounded within an expert by the row dimensions).
constexpr cuuint64_t kMapExperts = k::kPermuteMaxExperts;

}  // namespace

cudaError_t encode_wgmma_weight_map(const void* weight, int elem_bytes, bool gated, int K,
                                    int N_out, int bm, CUtensorMap* map, int* mode) {
  const PFN_cuTensorMapEncodeTiled_v12000 enc = tensor_map_encoder();
  if (enc == nullptr) return cudaErrorNotSupported;
  if (elem_bytes != 1 && elem_bytes != 2) return cudaErrorInvalidValue;
  const cuuint64_t Kd = cuuint64_t(K), N = cuuint64_t(N_out), eb = cuuint64_t(elem_bytes);
  const cuuint32_t box_k = cuuint32_t(128 / elem_bytes);  // one 128-byte swizzled row
  const cuuint32_t ones[5] = {1, 1, 1, 1, 1};
  const CUtensorMapDataType dtype =
      elem_bytes == 2 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_UINT8;
  void* w = const_cast<void*>(weight);
  auto encode = [&](cuuint32_t rank, const cuuint64_t* dims, const cuuint64_t* strides,
                    const cuuint32_t* box) {
    return enc(map, dtype, rank, w, dims, strides, box, ones, CU_TENSOR_MAP_INTERLEAVE_NONE,
               CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  };
  *mode = 0;
  if (gated) {
    const cuuint64_t dims[5] = {Kd, 8, 2, N / 8, kMapExperts};
    const cuuint64_t strides[4] = {Kd * eb, N * Kd * eb, 8 * Kd * eb, 2 * N * Kd * eb};
    const cuuint32_t box[5] = {box_k, 8, 2, cuuint32_t(bm / 16), 1};
    if (encode(5, dims, strides, box) == CUDA_SUCCESS) return cudaSuccess;
    const cuuint64_t dims2[2] = {Kd, 2 * N * kMapExperts};
    const cuuint64_t strides2[1] = {Kd * eb};
    const cuuint32_t box2[2] = {box_k, 8};
    *mode = 1;
    return encode(2, dims2, strides2, box2) == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
  }
  const cuuint64_t dims[3] = {Kd, N, kMapExperts};
  const cuuint64_t strides[2] = {Kd * eb, N * Kd * eb};
  const cuuint32_t box[3] = {box_k, cuuint32_t(bm), 1};
  return encode(3, dims, strides, box) == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

namespace {

// Persistent launch: one CTA per SM (at most one per work item) loops over the tile table.
template <class T, bool kGated>
cudaError_t launch_wgmma_gemm(const k::GroupedGemmParams& p, int max_tiles, bool pdl,
                              cudaStream_t stream) {
  if (p.K % 8 != 0 || p.N_out % 8 != 0 || p.K <= 0 || p.N_out <= 0) return cudaErrorInvalidValue;
  CUtensorMap map;
  int mode = 0;
  cudaError_t e = encode_wgmma_weight_map(p.weight, 2, kGated, p.K, p.N_out, T::BM, &map, &mode);
  if (e != cudaSuccess) return e;
  auto kernel = k::moe_wgmma_gemm_kernel<T, kGated>;
  constexpr int kSmem = T::kSmemBytes;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (e != cudaSuccess) return e;
  int dev = 0, sms = 0;
  e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;
  constexpr int kCols = T::out_cols(kGated);
  const int64_t items = int64_t(max_tiles) * ((p.N_out + kCols - 1) / kCols);
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(items, sms)));
  return launch_ex(kernel, dim3(grid), dim3(T::kThreads), size_t(kSmem), pdl, stream, map, p, mode);
}

template <class T>
cudaError_t launch_wgmma_gated(bool gated, const k::GroupedGemmParams& p, int max_tiles, bool pdl,
                               cudaStream_t stream) {
  return gated ? launch_wgmma_gemm<T, true>(p, max_tiles, pdl, stream)
               : launch_wgmma_gemm<T, false>(p, max_tiles, pdl, stream);
}

}  // namespace

cudaError_t launch_moe_permute(const k::PermuteParams& p, bool pdl, cudaStream_t stream) {
  if (p.single_block && p.num_assignments <= k::kPermuteSmallMax)
    return launch_ex(k::moe_permute_small_kernel, dim3(1), dim3(k::kPermuteThreads), 0, pdl, stream,
                  p);
  cudaError_t e = launch_ex(k::moe_count_kernel, dim3(1), dim3(k::kPermuteThreads), 0, pdl, stream, p);
  if (e != cudaSuccess) return e;
  return launch_ex(k::moe_place_kernel, dim3(p.num_experts), dim3(k::kPlaceThreads), 0, pdl, stream,
                p);
}

cudaError_t launch_moe_grouped_gemm(MoeGemmTile tile, bool gated, const k::GroupedGemmParams& p,
                                    int max_tiles, bool pdl, cudaStream_t stream) {
  if (max_tiles <= 0) return cudaSuccess;
  switch (tile) {
    case MoeGemmTile::kBm32Bn8: return launch_gemm_gated<TileBm32Bn8>(gated, p, max_tiles, pdl, stream);
    case MoeGemmTile::kBm64Bn16:
      return launch_gemm_gated<TileBm64Bn16>(gated, p, max_tiles, pdl, stream);
    case MoeGemmTile::kBm64Bn32:
      return launch_gemm_gated<TileBm64Bn32>(gated, p, max_tiles, pdl, stream);
    case MoeGemmTile::kBm128Bn64:
      return launch_gemm_gated<TileBm128Bn64>(gated, p, max_tiles, pdl, stream);
    case MoeGemmTile::kBm128Bn128:
      return launch_gemm_gated<TileBm128Bn128>(gated, p, max_tiles, pdl, stream);
    case MoeGemmTile::kBm32Bn8Bk128:
      return launch_gemm_gated<TileBm32Bn8Bk128>(gated, p, max_tiles, pdl, stream);
    case MoeGemmTile::kBm64Bn8: return launch_gemm_gated<TileBm64Bn8>(gated, p, max_tiles, pdl, stream);
    case MoeGemmTile::kBm64Bn8Bk128:
      return launch_gemm_gated<TileBm64Bn8Bk128>(gated, p, max_tiles, pdl, stream);
    case MoeGemmTile::kWgmma256x64:
      return launch_wgmma_gated<WgmmaBn64>(gated, p, max_tiles, pdl, stream);
    case MoeGemmTile::kWgmma256x128:
      return launch_wgmma_gated<WgmmaBn128>(gated, p, max_tiles, pdl, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_moe_combine(const k::CombineParams& p, bool pdl, cudaStream_t stream) {
  constexpr int kColsPerBlock = k::kCombineThreads * 8;
  const dim3 grid(p.num_tokens, (p.hidden + kColsPerBlock - 1) / kColsPerBlock);
  return launch_ex(k::moe_combine_kernel, grid, dim3(k::kCombineThreads), 0, pdl, stream, p);
}

cudaError_t launch_moe_route_from_logits(const k::RouteLogitsParams& p, cudaStream_t stream) {
  if (p.num_tokens <= 0) return cudaSuccess;
  const dim3 grid((p.num_tokens + k::kRouteWarps - 1) / k::kRouteWarps);
  return launch_ex(k::moe_route_from_logits_kernel, grid, dim3(k::kRouterThreads), 0, false, stream,
                p);
}

cudaError_t launch_moe_tiles_from_offsets(const k::TilesParams& p, cudaStream_t stream) {
  return launch_ex(k::moe_tiles_from_offsets_kernel, dim3(1), dim3(k::kPermuteThreads), 0, false,
                stream, p);
}

cudaError_t launch_moe_zero_tail_rows(const k::ZeroTailParams& p, cudaStream_t stream) {
  if (p.num_rows <= 0) return cudaSuccess;
  // Enough blocks to cover a typical padded tail in one pass; the kernel grid-strides.
  const size_t chunks = size_t(p.num_rows) * size_t(p.cols / 8);
  const unsigned blocks = unsigned(std::min<size_t>((chunks + 255) / 256, 1024));
  return launch_ex(k::moe_zero_tail_rows_kernel, dim3(blocks), dim3(256), 0, false, stream, p);
}

}  // namespace moeopt::cuda::detail
