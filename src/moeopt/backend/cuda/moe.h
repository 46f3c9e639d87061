// The fused CUDA MoE layer on raw device pointers: its envelope, its workspace plan and its
// launch sequence. Part of the MoE family's one host entry, cuda_moe_ops.cpp, which
// implements CudaBackend's MoE ops (cuda_backend.h) with it; `moeopt bench moe`, bench/capi
// and the GPU tests call it directly with routing they made themselves.
//
// For M tokens, hidden H, expert width I, E experts, top-k, given the routing
// (expert_ids [M, k], expert_weights [M, k]):
//   permute (on the GPU, no host round trip) -> GEMM 1 x·W13[e]^T with SiLU(gate)·up ->
//   GEMM 2 h·W2[e]^T times the routing weight -> combine (sum of each token's k rows,
//   + residual if given), the kernels linked by programmatic dependent launch.
//
// plan/run: moe_layer_plan() checks the dims against what the kernels take (the only check
// of the layer's dims; one-line errors naming the field), picks the GEMM tiles and lays out
// the workspace; moe_layer_run() only enqueues kernels on the stream (no allocation, no
// synchronisation, no checks), so it is CUDA-graph capturable. Region sizes grow with M, so
// a workspace of plan(largest M).bytes serves every smaller M (plan again per M: it is
// arithmetic only).
//
// Pointers are device pointers, 16-byte aligned; bf16 tensors are passed as void*.
// Weight layouts (ENK, row-major, the HF per-expert Linear weights stacked):
//   w13 [E, 2I, H] (gate_proj rows then up_proj rows); w2 [E, H, I].
// FP8 experts (MoeDims::fp8; W8A8 with 128x128 block scales, ops/fp8.h): w13 and w2 in e4m3
// with w13_scale [E, 2*ceil(I/128), ceil(H/128)] f32 (gate blocks, then up blocks) and
// w2_scale [E, ceil(H/128), ceil(I/128)] f32 (ops/moe.h). x is quantised per token in groups
// of 128 before GEMM 1 and the f32 SiLU·up intermediate per row before GEMM 2
// (kernels/fp8_quantize.cuh), so permute -> quantise x -> GEMM 1 -> quantise h -> GEMM 2 ->
// combine; the grouped GEMMs (kernels/fp8_moe_gemm.cuh) stream e4m3 codes of both operands.
// H and I must be multiples of 16.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "moeopt/backend/cuda/moe_heuristics.h"
#include "moeopt/core/status.h"

namespace moeopt::cuda {

struct MoeDims {
  int64_t num_tokens = 0;   // M
  int64_t hidden = 0;       // H
  int64_t inter = 0;        // I (moe_intermediate_size)
  int64_t num_experts = 0;  // E
  int64_t top_k = 0;        // k
  bool fp8 = false;         // e4m3 experts with block scales (else bf16)
};

struct MoeTileChoice {
  std::optional<MoeGemmTile> tile;   // GEMM 1's tile; default choose_moe_gemm_tile()
  std::optional<MoeGemmTile> tile2;  // GEMM 2's (same token rows); default moe_gemm2_tile()
  std::optional<MoeFp8Tile> fp8_tile;   // GEMM 1's tile for fp8 dims; default
                                        // choose_moe_fp8_tile()
  std::optional<MoeFp8Tile> fp8_tile2;  // GEMM 2's (same token rows); default
                                        // moe_fp8_gemm2_tile()
};

// Byte offsets of the workspace regions (A = M*k assignments), each 256-byte aligned:
//   expert_ids            [A] int32  routing, when the caller routes into the workspace
//   expert_weights        [A] f32      (CudaBackend::moe_forward); unused otherwise
//   tokens_per_expert     [E] int32
//   expert_offsets        [E + 1] int32
//   num_tiles             [1] int32
//   tile_expert           [max_tiles] int32   tile table (moe_permute.cuh)
//   tile_row_begin        [max_tiles] int32
//   permuted_row_to_token [A] int32
//   permuted_row_weight   [A] f32
//   token_to_permuted_row [A] int32
//   h                     [A, I] bf16   SiLU(gate)*up, permuted rows (f32 for fp8: GEMM 2
//                                       quantises it as the reference quantises its f32)
//   y                     [A, H] bf16   weighted expert outputs, permuted rows
//   fp8 only:
//   x_q, x_scale          [M, H] e4m3, [M, ceil(H/128)] f32   x quantised per token
//   h_q, h_scale          [A, I] e4m3, [A, ceil(I/128)] f32   h quantised per row
struct MoeLayerPlan {
  MoeDims dims;
  MoeGemmTile tile = MoeGemmTile::kBm32Bn8;
  MoeGemmTile tile2 = MoeGemmTile::kBm32Bn8;
  MoeFp8Tile fp8_tile = MoeFp8Tile::kBm32Bn8;   // fp8 dims: GEMM 1
  MoeFp8Tile fp8_tile2 = MoeFp8Tile::kBm32Bn8;  // fp8 dims: GEMM 2
  int tile_rows = 0;      // token rows per tile (both GEMMs)
  int64_t max_tiles = 0;  // upper bound of the tile table's length
  size_t expert_ids = 0, expert_weights = 0, tokens_per_expert = 0, expert_offsets = 0,
         num_tiles = 0, tile_expert = 0, tile_row_begin = 0, permuted_row_to_token = 0,
         permuted_row_weight = 0, token_to_permuted_row = 0, h = 0, y = 0;
  size_t x_q = 0, x_scale = 0, h_q = 0, h_scale = 0;  // fp8 only
  size_t bytes = 0;       // total
};

// Errors (kInvalidArgument / kUnsupported): M < 1, H or I not a positive multiple of 8 (16
// for fp8; an fp8 K = max(H, I) whose weight scales overflow the tile's shared memory),
// E outside [1, 512], k outside [1, min(32, E)], M*k or H*I*2 >= 2^31, a GEMM 2 tile with
// other token rows than GEMM 1's.
Result<MoeLayerPlan> moe_layer_plan(const MoeDims& d, const MoeTileChoice& tiles = {});

// Typed pointer into a planned workspace.
template <class T>
T* moe_region(void* workspace, size_t offset) {
  return reinterpret_cast<T*>(static_cast<unsigned char*>(workspace) + offset);
}

struct MoeLayerArgs {
  const void* x = nullptr;               // [M, H] bf16
  const int32_t* expert_ids = nullptr;   // [M, k] int32
  const float* expert_weights = nullptr; // [M, k] f32
  const void* w13 = nullptr;             // [E, 2I, H] bf16 (e4m3 for fp8)
  const void* w2 = nullptr;              // [E, H, I] bf16 (e4m3 for fp8)
  const float* w13_scale = nullptr;      // fp8: [E, 2*ceil(I/128), ceil(H/128)] f32
  const float* w2_scale = nullptr;       // fp8: [E, ceil(H/128), ceil(I/128)] f32
  const void* residual = nullptr;        // [M, H] bf16, optional (may equal out)
  void* out = nullptr;                   // [M, H] bf16
  void* workspace = nullptr;             // plan.bytes
  void* stream = nullptr;                // cudaStream_t
  // Programmatic dependent launch (sm_90): each kernel of the chain launches while its
  // predecessor drains and waits on-device for its inputs; GEMM 2 prefetches weights first.
  // moe_use_pdl() says where it pays (everywhere measured); false for A/B benchmarks.
  bool programmatic_dependent_launch = true;
  // Few assignments (M*k <= 512): the permutation as one single-block kernel instead of
  // count + place (false = always two kernels; for A/B benchmarks).
  bool single_block_permute = true;
};

// Enqueues permute -> GEMM 1 -> GEMM 2 -> combine for a plan made for these dims.
Status moe_layer_run(const MoeLayerPlan& plan, const MoeLayerArgs& a);

}  // namespace moeopt::cuda
