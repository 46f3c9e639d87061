// Raw launchers of the MoE kernels (internal to backend/cuda). They only pick the template
// instance and grid; argument validation happens in cuda_moe_ops.cpp, which is compiled as
// plain C++ (the engine's Status/fmt headers do not go through nvcc).
#pragma once

#include <cuda.h>  // CUtensorMap (type only)
#include <cuda_runtime.h>

#include "moeopt/backend/cuda/kernels/moe_params.cuh"
#include "moeopt/backend/cuda/moe_heuristics.h"

namespace moeopt::cuda::detail {

// Dynamic shared memory a block may opt into on sm_90.
inline constexpr size_t kMaxSmemPerBlock = 227 * 1024;

// pdl: launch with programmatic dependent launch (the kernel may start while the previous
// kernel in the stream finishes; every kernel waits with griddepcontrol before it reads what
// its predecessor wrote).
// Count + place (two kernels), or one single-block kernel when p.single_block and
// num_assignments <= kPermuteSmallMax.
cudaError_t launch_moe_permute(const kernels::PermuteParams& p, bool pdl, cudaStream_t stream);
// max_tiles: upper bound of the tile table's length (grid.x); blocks past num_tiles exit.
cudaError_t launch_moe_grouped_gemm(MoeGemmTile tile, bool gated,
                                    const kernels::GroupedGemmParams& p, int max_tiles, bool pdl,
                                    cudaStream_t stream);
// FP8 (W8A8) grouped GEMM (fp8_moe_launch.cu) on quantised tokens; smem bytes the tile needs
// for K (the stages plus 8 bytes per 128-group of K).
size_t moe_fp8_gemm_smem_bytes(MoeFp8Tile tile, int K);
cudaError_t launch_moe_fp8_grouped_gemm(MoeFp8Tile tile, bool gated,
                                        const kernels::Fp8GroupedGemmParams& p, int max_tiles,
                                        bool pdl, cudaStream_t stream);
// The same kernel as a dense FP8 linear (p.dense = 1): grid ceil(num_rows / BN) x
// ceil(N_out / BM); with pdl it streams its first weight stages while the activation
// quantiser before it runs. Used by cuda_fp8_ops.cpp.
cudaError_t launch_fp8_dense_linear(MoeFp8Tile tile, const kernels::Fp8GroupedGemmParams& p,
                                    bool pdl, cudaStream_t stream);
cudaError_t launch_moe_combine(const kernels::CombineParams& p, bool pdl, cudaStream_t stream);

// The TMA weight map of the wgmma kernels (moe_wgmma_gemm.cuh, fp8_wgmma_gemm.cuh) over an ENK
// stack w [E, N_w, K] of elem_bytes 2 (bf16) or 1 (e4m3) elements (a dense [N, K] matrix is
// expert 0), boxes of one 128-byte swizzled row along K. GEMM 1 (gated): 5-D {K, 8 rows,
// gate/up (stride N_out rows), N_out/8 groups, E}, box {., 8, 2, bm/16, 1}, which lands gate
// and up 8-row groups interleaved; if the driver refuses those strides, a 2-D {K, rows} map
// with 8-row boxes (*mode = 1). Otherwise 3-D {K, N_out, E}, box {., bm, 1}. Rows past N_out
// and the K tail read as zeros. Needs K * elem_bytes % 16 == 0 and a 16-byte aligned w.
cudaError_t encode_wgmma_weight_map(const void* weight, int elem_bytes, bool gated, int K,
                                    int N_out, int bm, CUtensorMap* map, int* mode);

// Routing from given logits, the tile table of an existing permutation (ops-level
// moe_experts), zeroing the unused tail of out_rows.
cudaError_t launch_moe_route_from_logits(const kernels::RouteLogitsParams& p, cudaStream_t stream);
cudaError_t launch_moe_tiles_from_offsets(const kernels::TilesParams& p, cudaStream_t stream);
cudaError_t launch_moe_zero_tail_rows(const kernels::ZeroTailParams& p, cudaStream_t stream);

}  // namespace moeopt::cuda::detail
