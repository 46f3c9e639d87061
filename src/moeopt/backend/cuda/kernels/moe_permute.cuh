// MoE permutation, on the GPU with no host round trip (CUDA-graph capturable).
//
// Input: expert_ids [num_tokens, top_k]; flat assignment a = token * top_k + slot.
// Output ("permuted rows" are the rows of the grouped GEMMs, grouped by expert):
//   tokens_per_expert[e]        number of assignments to expert e
//   expert_offsets[e]           exclusive scan of tokens_per_expert; expert_offsets[E] = rows
//   permuted_row_to_token[r]    token whose x row feeds permuted row r
//   permuted_row_weight[r]      routing weight of that assignment (applied in GEMM 2)
//   token_to_permuted_row[a]        inverse map, used by combine (-1 for an invalid expert id)
//   tile table for the grouped GEMMs: the rows of each expert are cut into tiles of
//   `tile_rows` rows (the GEMM's token tile); tile t covers rows
//   [tile_row_begin[t], min(tile_row_begin[t] + tile_rows, expert_offsets[e+1])) of expert
//   tile_expert[t]; num_tiles[0] = number of tiles. Rows are therefore NOT padded in memory:
//   the GEMM masks the partial last tile of each expert instead, which saves the padding bytes.
//
// Order within an expert is ascending assignment index (token-major), so the permutation is
// deterministic. Ids outside [0, E) are skipped (their rows do not exist, combine adds 0).
//
// Two kernels:
//   moe_count_kernel: one block; shared-memory histogram, scans, tile table.
//   moe_place_kernel: one block per expert; a block-wide ordered scan of "id == e" flags over
//                     all assignments gives each assignment its rank inside expert e.
// Bounds: E <= kPermuteMaxExperts, num_tokens * top_k < 2^31.
// Test: tests/unit/cuda_moe_test.cpp (Permute*).
#pragma once

#include <cstdint>

#include "moeopt/backend/cuda/kernels/moe_params.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {


// Inclusive block-wide scan of one int per thread (blockDim.x == kThreads, multiple of 32).
template <int kThreads>
__device__ __forceinline__ int block_inclusive_scan(int v, int* warp_sums) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += n;
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int s = lane < kThreads / 32 ? warp_sums[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int n = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += n;
    }
    if (lane < kThreads / 32) warp_sums[lane] = s;
  }
  __syncthreads();
  const int out = v + (warp > 0 ? warp_sums[warp - 1] : 0);
  __syncthreads();  // warp_sums may be reused by the caller
  return out;
}

__global__ void __launch_bounds__(kPermuteThreads) moe_count_kernel(PermuteParams p) {
  __shared__ int counts[kPermuteMaxExperts];
  __shared__ int warp_sums[32];
  griddep_wait();  // expert_ids come from the previous kernel; the workspace may still be read
  griddep_launch_dependents();
  const int E = p.num_experts;
  for (int e = threadIdx.x; e < E; e += kPermuteThreads) counts[e] = 0;
  __syncthreads();
  for (int a = threadIdx.x; a < p.num_assignments; a += kPermuteThreads) {
    const int e = p.expert_ids[a];
    if (e >= 0 && e < E) atomicAdd(&counts[e], 1);
  }
  __syncthreads();
  // E <= 1024 = one expert per thread.
  const int e = threadIdx.x;
  const int c = e < E ? counts[e] : 0;
  const int tiles = (c + p.tile_rows - 1) / p.tile_rows;
  const int incl_rows = block_inclusive_scan<kPermuteThreads>(c, warp_sums);
  const int incl_tiles = block_inclusive_scan<kPermuteThreads>(tiles, warp_sums);
  if (e < E) {
    const int row0 = incl_rows - c;
    const int tile0 = incl_tiles - tiles;
    p.tokens_per_expert[e] = c;
    p.expert_offsets[e] = row0;
    for (int t = 0; t < tiles; ++t) {
      p.tile_expert[tile0 + t] = e;
      p.tile_row_begin[tile0 + t] = row0 + t * p.tile_rows;
    }
    if (e == E - 1) {
      p.expert_offsets[E] = incl_rows;
      p.num_tiles[0] = incl_tiles;
    }
  }
}

__global__ void __launch_bounds__(kPlaceThreads) moe_place_kernel(PermuteParams p) {
  __shared__ int warp_sums[32];
  griddep_wait();
  griddep_launch_dependents();
  const int e = blockIdx.x;
  // Experts with no rows have nothing to place (block 0 always runs: it marks invalid ids).
  if (e != 0 && p.tokens_per_expert[e] == 0) return;
  int next_row = p.expert_offsets[e];
  const int end_row = p.expert_offsets[e + 1];
  const int n = p.num_assignments;
  constexpr int kPass = kPlaceThreads * kPlaceItems;
  for (int base = 0; base < n; base += kPass) {
    // Thread i owns assignments [base + i*items, base + (i+1)*items): contiguous, so the
    // block-wide exclusive scan of per-thread counts preserves assignment order.
    const int a0 = base + threadIdx.x * kPlaceItems;
    int ids[kPlaceItems];
    int mine = 0;
#pragma unroll
    for (int i = 0; i < kPlaceItems; ++i) {
      ids[i] = a0 + i < n ? p.expert_ids[a0 + i] : -1;
      mine += ids[i] == e;
    }
    // Every thread records the inverse map for invalid ids once (block 0 only).
    if (e == 0) {
#pragma unroll
      for (int i = 0; i < kPlaceItems; ++i)
        if (a0 + i < n && (ids[i] < 0 || ids[i] >= p.num_experts)) p.token_to_permuted_row[a0 + i] = -1;
    }
    const int incl = block_inclusive_scan<kPlaceThreads>(mine, warp_sums);
    int row = next_row + incl - mine;
#pragma unroll
    for (int i = 0; i < kPlaceItems; ++i) {
      if (ids[i] == e) {
        const int a = a0 + i;
        p.permuted_row_to_token[row] = a / p.top_k;
        p.permuted_row_weight[row] = p.expert_weights[a];
        p.token_to_permuted_row[a] = row;
        ++row;
      }
    }
    // Total of this pass = inclusive value of the last thread; broadcast through shared.
    __shared__ int pass_total;
    if (threadIdx.x == kPlaceThreads - 1) pass_total = incl;
    __syncthreads();
    next_row += pass_total;
    __syncthreads();
    if (e != 0 && next_row == end_row) break;  // all rows of e placed (block-uniform)
  }
}

}  // namespace moeopt::cuda::kernels
