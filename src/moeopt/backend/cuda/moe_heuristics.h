// Tile choice for the MoE grouped GEMMs, per M regime (sm_90 / H100-H200 class GPUs).
//
// The deciding quantity is the expected number of rows per expert, M*k/E: the token tile
// (BN) should hold all rows of a typical expert so its weights stream from HBM once, while
// the weight tile (BM) stays small enough at decode sizes that every SM has weight rows to
// stream. Thresholds were set from bench/moe_layer.py's tile sweep (docs/perf.md).
#pragma once

#include <cstdint>

namespace moeopt::cuda {

// Grouped-GEMM tile configurations (BM weight rows x BN tokens; see moe_launch.cu).
enum class MoeGemmTile : uint8_t {
  kBm32Bn8,    // decode: 4 warps split K, 6-stage pipeline
  kBm64Bn16,
  kBm64Bn32,
  kBm128Bn64,
  kBm128Bn128, // prefill
  kBm32Bn8Bk128,  // decode candidates: 128-wide k steps (256-byte weight row segments)
  kBm64Bn8,       // decode candidate: 64 weight rows per block, 2 warps split K
  kBm64Bn8Bk128,  // decode candidate: 64 weight rows, 128-wide k steps
  kWgmma256x64,   // prefill, sm_90a: wgmma + TMA, warp-specialised, persistent; 64 tokens
  kWgmma256x128,  // prefill, sm_90a: as above with 128 tokens per tile
};
inline constexpr int kNumMoeGemmTiles = 10;

// Token rows per tile (the permutation's tile_rows) for a configuration.
int moe_gemm_tile_rows(MoeGemmTile tile);
const char* moe_gemm_tile_name(MoeGemmTile tile);
// The configuration for M tokens routed top-k over E experts.
MoeGemmTile choose_moe_gemm_tile(int64_t num_tokens, int64_t top_k, int64_t num_experts);
// GEMM 2's tile given GEMM 1's (same token rows; GEMM 2 has K = I, much shorter than H).
MoeGemmTile moe_gemm2_tile(MoeGemmTile gemm1_tile);
// Whether programmatic dependent launch pays for this size (it does at every measured M since
// the single-block permutation: docs/perf.md).
bool moe_use_pdl(int64_t num_tokens, int64_t top_k, int64_t num_experts);

// FP8 (W8A8) grouped-GEMM tiles (kernels/fp8_moe_gemm.cuh; BM weight rows x BN tokens, one
// 128-wide K group of both operands per pipeline stage, so shared memory does not grow with K).
enum class MoeFp8Tile : uint8_t {
  kBm32Bn8,     // decode: 4 warps split each K group
  kBm64Bn8,     // decode: 64 weight rows, 2 warps split each K group
  kBm128Bn8,    // decode GEMM 2 (K = I short): 128 weight rows per block
  kBm64Bn16,
  kBm64Bn32,
  kBm128Bn64,   // prefill: 8 warps
  kBm128Bn128,
  // sm_90a (kernels/fp8_wgmma_gemm.cuh): wgmma e4m3 + TMA weights, warp-specialised,
  // persistent; 256 weight rows x 16 / 32 / 64 tokens, one 128-wide K group per stage.
  kWgmma256x16,
  kWgmma256x32,
  kWgmma256x64,
};
inline constexpr int kNumMoeFp8Tiles = 10;
// Whether a tile is one of the wgmma tiles (one CTA per SM looping over work items).
bool is_fp8_wgmma_tile(MoeFp8Tile tile);
int moe_fp8_tile_rows(MoeFp8Tile tile);
int moe_fp8_tile_weight_rows(MoeFp8Tile tile);
const char* moe_fp8_tile_name(MoeFp8Tile tile);
// By rows per expert, as choose_moe_gemm_tile: the 32-row mma.sync blocks up to 4 rows per
// expert (decode), the wgmma tiles above (measured: moe_heuristics.cpp).
MoeFp8Tile choose_moe_fp8_tile(int64_t num_tokens, int64_t top_k, int64_t num_experts);
// GEMM 2's tile given GEMM 1's (same token rows). GEMM 2's K is I (768 for Qwen3-30B-A3B:
// six 128-groups), so a block of GEMM 1's 32 weight rows streams only 24 KB and its fixed
// costs dominate; the 8-token tiles take 128 rows there.
MoeFp8Tile moe_fp8_gemm2_tile(MoeFp8Tile gemm1_tile);
// The FP8 dense linear's tile for M tokens and N output features: from M = 128 the largest
// wgmma tile whose work items cover nine tenths of the num_sms SMs; otherwise the mma.sync
// rule for one expert holding all M rows, stepped down to smaller tiles while the grid would
// leave more than a tenth of the SMs without a block (decode: the weight stream needs every
// SM). allow_wgmma = false (an output the wgmma epilogue cannot store) keeps to mma.sync tiles.
MoeFp8Tile choose_fp8_linear_tile(int64_t m, int64_t n, int num_sms, bool allow_wgmma = true);

}  // namespace moeopt::cuda
