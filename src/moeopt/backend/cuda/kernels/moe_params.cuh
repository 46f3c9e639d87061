// Parameter structs and launch constants of the MoE kernels (moe_router.cuh,
// moe_permute.cuh, moe_grouped_gemm.cuh, moe_combine.cuh). Plain structs of raw device
// pointers with their shapes and dtypes, includable from host C++ (no device code), so the
// launchers' validation code does not need nvcc.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace moeopt::cuda::kernels {

// moe_router.cuh
inline constexpr int kRouterThreads = 256;
inline constexpr int kMaxExpertsPerLane = 16;  // E <= 512
inline constexpr int kMaxTopK = 32;
inline constexpr int kRouterExpertsPerBlock = 8;  // split path: one router row per warp

struct RouterParams {
  const __nv_bfloat16* x;         // [num_tokens, hidden] bf16, row-major
  const __nv_bfloat16* router_w;  // [num_experts, hidden] bf16, row-major (HF gate.weight)
  int32_t* expert_ids;            // [num_tokens, top_k] int32, descending probability
  float* expert_weights;          // [num_tokens, top_k] f32 routing weights
  float* logits_out;              // [num_tokens, num_experts] f32; fused path: optional output,
                                  // split path: required (logits kernel -> top-k kernel)
  int num_tokens;
  int hidden;
  int num_experts;
  int top_k;
  bool renormalize;  // divide the k selected probabilities by their sum
};

// moe_permute.cuh
inline constexpr int kPermuteThreads = 1024;
inline constexpr int kPermuteMaxExperts = 1024;
inline constexpr int kPlaceThreads = 512;
inline constexpr int kPlaceItems = 8;  // consecutive assignments per thread per pass

struct PermuteParams {
  const int32_t* expert_ids;      // [num_tokens, top_k] int32
  const float* expert_weights;    // [num_tokens, top_k] f32
  int32_t* tokens_per_expert;     // [E] int32
  int32_t* expert_offsets;        // [E + 1] int32
  int32_t* permuted_row_to_token; // [num_tokens * top_k] int32 (first expert_offsets[E] used)
  float* permuted_row_weight;     // [num_tokens * top_k] f32
  int32_t* token_to_permuted_row;     // [num_tokens * top_k] int32
  int32_t* tile_expert;           // [max_tiles] int32
  int32_t* tile_row_begin;        // [max_tiles] int32
  int32_t* num_tiles;             // [1] int32
  int num_assignments;            // num_tokens * top_k
  int top_k;
  int num_experts;
  int tile_rows;                  // GEMM token tile (rows per tile)
};

// moe_grouped_gemm.cuh
struct GroupedGemmParams {
  const __nv_bfloat16* act;       // GEMM1: x [num_tokens, K]; GEMM2: h [rows, K] (permuted)
  const int32_t* row_to_token;    // [rows] int32: GEMM1 gathers act rows through it; GEMM2: nullptr
  const __nv_bfloat16* weight;    // [E, N_w, K] bf16 row-major (ENK); N_w = 2*N_out if gated
  const float* row_weight;        // [rows] f32 routing weight per permuted row (GEMM2), else nullptr
  __nv_bfloat16* out;             // [rows, N_out] bf16, permuted row order
  const int32_t* expert_offsets;  // [E + 1] int32
  const int32_t* tile_expert;     // [max_tiles] int32
  const int32_t* tile_row_begin;  // [max_tiles] int32
  const int32_t* num_tiles;       // [1] int32
  int K;
  int N_out;
};

// moe_combine.cuh
inline constexpr int kCombineThreads = 128;

struct CombineParams {
  const __nv_bfloat16* y;          // [rows, hidden] bf16, permuted order (weighted)
  const int32_t* token_to_permuted_row;// [num_tokens, top_k] int32
  const __nv_bfloat16* residual;   // [num_tokens, hidden] bf16 or nullptr
  __nv_bfloat16* out;              // [num_tokens, hidden] bf16 (may alias residual)
  int num_tokens;
  int hidden;
  int top_k;
};

}  // namespace moeopt::cuda::kernels
