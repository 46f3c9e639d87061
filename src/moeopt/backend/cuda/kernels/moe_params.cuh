// Parameter structs and launch constants of the MoE kernels (moe_route_logits.cuh,
// moe_permute.cuh, moe_grouped_gemm.cuh, moe_wgmma_gemm.cuh, moe_combine.cuh). Plain structs
// of raw device pointers with their shapes and dtypes, includable from host C++ (no device
// code), so the launchers' validation code does not need nvcc.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/elem_dtype.cuh"

namespace moeopt::cuda::kernels {

// moe_route_logits.cuh
inline constexpr int kRouterThreads = 256;
inline constexpr int kMaxExpertsPerLane = 16;  // E <= 512
inline constexpr int kMaxTopK = 32;

// moe_permute.cuh
inline constexpr int kPermuteThreads = 1024;
inline constexpr int kPermuteMaxExperts = 1024;
inline constexpr int kPlaceThreads = 512;
inline constexpr int kPlaceItems = 8;  // consecutive assignments per thread per pass
inline constexpr int kPermuteSmallMax = 512;  // single-block permutation up to this many
                                              // assignments (M*k; M = 64 at k = 8)

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
  int tile_rows;                  // GEMM token tile (rows per tile); tile table skipped when
                                  // tile_expert is nullptr (the ops-level permutation)
  int pad_rows_to;                // each expert's rows rounded up to a multiple (1 = none)
  int capacity;                   // rows of permuted_row_to_token/weight to fill: padding and
                                  // the tail past expert_offsets[E] get -1 / 0 (0 = no fill)
  bool single_block;              // num_assignments <= kPermuteSmallMax: one-kernel variant
};

// Tile table from an existing permutation (ops-level moe_experts): expert e's rows
// [expert_offsets[e], expert_offsets[e+1]) (padding rows included; offsets clamped to
// [0, num_rows]) are cut into tiles of tile_rows rows.
struct TilesParams {
  const int32_t* expert_offsets;  // [E + 1] int32
  int32_t* tile_expert;           // [max_tiles] int32
  int32_t* tile_row_begin;        // [max_tiles] int32
  int32_t* num_tiles;             // [1] int32
  int num_experts;
  int num_rows;                   // R, rows of the permuted buffers
  int tile_rows;
};

// Zeroes rows [clamp(expert_offsets[E], 0, num_rows), num_rows) of a bf16 [num_rows, cols]
// buffer (the unused tail of moe_experts' out_rows).
struct ZeroTailParams {
  const int32_t* expert_offsets;  // [E + 1] int32
  __nv_bfloat16* rows;            // [num_rows, cols] bf16
  int num_experts;
  int num_rows;
  int cols;                       // multiple of 8
};

// moe_route_logits.cuh: routing from given fp32 logits (the ops-level moe_route).
inline constexpr int kRouteWarps = kRouterThreads / 32;  // one token per warp
inline constexpr int kRouteMaxExperts = kMaxExpertsPerLane * 32;
enum class RouteScoring : int { kSoftmax = 0, kSigmoid = 1 };
enum class RouteGrouping : int { kNone = 0, kMaxScore = 1, kTop2Sum = 2 };

struct RouteLogitsParams {
  const float* logits;           // [num_tokens, num_experts] f32, rows logits_stride apart
  int64_t logits_stride;         // elements between rows (>= num_experts)
  const void* correction_bias;   // [num_experts] (bias_dtype) or nullptr
  ElemDType bias_dtype;
  int32_t* expert_ids;           // [num_tokens, top_k] int32 out, best first
  float* expert_weights;         // [num_tokens, top_k] f32 out
  int num_tokens;
  int num_experts;
  int top_k;
  RouteScoring scoring;
  RouteGrouping grouping;
  int n_group;                   // divides num_experts (grouping only)
  int topk_group;
  bool renormalize;
  float renormalize_eps;
  float routed_scaling_factor;
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
  int num_tokens;                 // rows of act for the GEMM-1 gather: tokens outside
                                  // [0, num_tokens) (padding rows: -1) read as zero rows
  int num_rows;                   // rows of out: expert_offsets are clamped to it
};

// fp8_moe_gemm.cuh: the W8A8 grouped GEMMs (same tile table as GroupedGemmParams).
struct Fp8GroupedGemmParams {
  // Tokens arrive quantised (kernels/fp8_quantize.cuh, fp8_quantize_act_kernel): e4m3 codes
  // act_q with row stride ld_act bytes and f32 group scales act_scale [rows, ceil(K/128)].
  //   GEMM 1: x_q [num_tokens, K], gathered through row_to_token;
  //   GEMM 2: h_q [rows, K] in permuted order (GEMM 1's f32 output, quantised in between);
  //   dense:  x_q [num_rows, K] in order.
  const unsigned char* act_q;
  const float* act_scale;         // row stride ceil(K/128)
  int ld_act;                     // bytes between rows of act_q (multiple of 16, >= K)
  const int32_t* row_to_token;    // [rows] int32 (GEMM1), else nullptr
  const unsigned char* weight;    // [E, N_w, K] e4m3 (ENK); N_w = 2*N_out if gated
  const float* weight_scale;      // [E, N_w blocks, ceil(K/128)] f32: GEMM1 2*ceil(N_out/128)
                                  // rows (gate blocks, then up blocks), GEMM2 ceil(N_out/128)
  const float* row_weight;        // [rows] f32 routing weight (GEMM2), else nullptr
  float* out_f32;                 // GEMM1: h [rows, N_out] f32 = silu(gate)*up
  __nv_bfloat16* out_bf16;        // GEMM2: y [rows, N_out] bf16 = row_weight * acc
  const int32_t* expert_offsets;  // [E + 1] int32
  const int32_t* tile_expert;     // [max_tiles] int32
  const int32_t* tile_row_begin;  // [max_tiles] int32
  const int32_t* num_tiles;       // [1] int32
  int K;                          // multiple of 16
  int N_out;                      // multiple of 8
  int num_tokens;                 // rows of x_q for the GEMM-1 gather (others read as zeros)
  int num_rows;                   // rows of out: expert_offsets are clamped to it
  // Dense linear (GEMM 2 form, one weight, E = 1): tile t covers token rows [t*BN, t*BN+BN)
  // of num_rows, in order; no tile table, expert offsets or routing weights. y = acc (+ bias)
  // goes to out_f32 when it is set, else out_bf16, with row stride ld_out.
  int dense;                      // 0: MoE GEMM (above); 1: dense linear
  int ld_out;                     // dense: elements between output rows
  const __nv_bfloat16* bias;      // dense: [N_out] bf16 or nullptr
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
  int num_rows;                    // rows of y: entries outside [0, num_rows) add nothing
};

}  // namespace moeopt::cuda::kernels
