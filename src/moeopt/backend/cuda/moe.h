// CUDA MoE layer (BF16): router + top-k, permutation, grouped expert GEMMs, combine.
//
// The layer for M tokens, hidden H, expert width I, E experts, top-k:
//   moe_route_topk:      x [M, H] · Wr [E, H]^T -> softmax -> top-k ids/weights [M, k]
//   moe_experts_forward: permute (GPU, no host round trip) -> GEMM1 x·W13[e]^T with
//                        SiLU(gate)·up -> GEMM2 h·W2[e]^T times the routing weight ->
//                        combine (sum of each token's k rows, + residual if given);
//                        or, on request, all of it as one persistent kernel (moe_persistent.h)
// Every call only enqueues work on `stream` (no synchronisation, no allocation), so a step
// is CUDA-graph capturable once the workspace is allocated (plan/run split: the caller sizes
// the workspace with moe_workspace_bytes for the largest M it will run).
//
// Pointers are device pointers, 16-byte aligned; bf16 tensors are passed as void*.
// Weight layouts (ENK, row-major, the HF per-expert Linear weights stacked):
//   router_w [E, H]; w13 [E, 2I, H] (gate_proj rows then up_proj rows); w2 [E, H, I].
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
};

// Typed view of the workspace regions (device pointers), for tests and debugging.
struct MoeWorkspaceView {
  int32_t* tokens_per_expert;      // [E]
  int32_t* expert_offsets;         // [E + 1]
  int32_t* num_tiles;              // [1]
  int32_t* tile_expert;            // [M*k]
  int32_t* tile_row_begin;         // [M*k]
  int32_t* permuted_row_to_token;  // [M*k]
  float* permuted_row_weight;      // [M*k]
  int32_t* token_to_permuted_row;      // [M*k]
  void* h;                         // [M*k, I] bf16: SiLU(gate)*up, permuted rows
  void* y;                         // [M*k, H] bf16: weighted expert outputs, permuted rows
  // Persistent path (moe_persistent.h): counters, then f32 partial rows
  // [min(M*k, kPersistentMaxPairs), H]; h above is reused as its [M*k, I] bf16 buffer.
  int32_t* persistent_counters;
  float* persistent_y;
};

// Checks the dims against what the kernels support (one-line error naming the field).
Status moe_check_dims(const MoeDims& d);
size_t moe_workspace_bytes(const MoeDims& d);
MoeWorkspaceView moe_workspace_view(const MoeDims& d, void* workspace);

struct MoeRouteArgs {
  const void* x = nullptr;         // [M, H] bf16
  const void* router_w = nullptr;  // [E, H] bf16
  bool renormalize = true;         // norm_topk_prob
  int32_t* expert_ids = nullptr;   // [M, k] int32 out
  float* expert_weights = nullptr; // [M, k] f32 out
  // [M, E] f32 out. Optional, but without it small M runs the fused router on a few SMs
  // (latency-bound); with it, M < 132*16 uses the split logits -> top-k path.
  float* logits = nullptr;
  void* stream = nullptr;          // cudaStream_t
  bool programmatic_dependent_launch = true;  // PDL (sm_90): overlap with the previous kernel
};
Status moe_route_topk(const MoeDims& d, const MoeRouteArgs& a);

struct MoeExpertsArgs {
  const void* x = nullptr;              // [M, H] bf16
  const int32_t* expert_ids = nullptr;  // [M, k] int32
  const float* expert_weights = nullptr;// [M, k] f32
  const void* w13 = nullptr;            // [E, 2I, H] bf16
  const void* w2 = nullptr;             // [E, H, I] bf16
  const void* residual = nullptr;       // [M, H] bf16, optional (may equal out)
  void* out = nullptr;                  // [M, H] bf16
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  void* stream = nullptr;               // cudaStream_t
  std::optional<MoeGemmTile> tile;      // override the heuristic (benchmarks, tests)
  // GEMM 2's tile when it should differ from GEMM 1's (same token rows: they share the tile
  // table); default: moe_gemm2_tile() of GEMM 1's.
  std::optional<MoeGemmTile> tile2;
  // Programmatic dependent launch (sm_90): each kernel of the chain launches while its
  // predecessor drains and waits on-device for its inputs; GEMM 2 prefetches weights first.
  // true = where moe_use_pdl() says it pays; false = never.
  bool programmatic_dependent_launch = true;
  // Few assignments (M*k <= 512): the permutation runs as one single-block kernel instead of
  // count + place (false = always two kernels; for A/B benchmarks).
  bool single_block_permute = true;
  // PDL even where moe_use_pdl() says no (A/B benchmarks of that heuristic).
  bool pdl_everywhere = false;
  // The whole expert path as one persistent kernel (moe_persistent.h; M*k <= 256) instead of
  // permute -> GEMM 1 -> GEMM 2 -> combine. Unset: moe.cpp's choice (for now always the
  // multi-kernel path, which measured faster); true/false forces it (A/B benchmarks, tests).
  // That path fills none of the permutation regions of the workspace view, and ignores
  // tile/tile2/single_block_permute/pdl_everywhere.
  std::optional<bool> persistent;
};
Status moe_experts_forward(const MoeDims& d, const MoeExpertsArgs& a);

}  // namespace moeopt::cuda
