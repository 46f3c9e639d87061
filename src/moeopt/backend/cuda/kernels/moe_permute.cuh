// MoE permutation, on the GPU with no host round trip (CUDA-graph capturable).
//
// Input: expert_ids [num_tokens, top_k]; flat assignment a = token * top_k + slot.
// Output ("permuted rows" are the rows of the grouped GEMMs, grouped by expert):
//   tokens_per_expert[e]        number of assignments to expert e
//   expert_offsets[e]           exclusive scan of tokens_per_expert; expert_offsets[E] = rows
//   permuted_row_to_token[r]    token whose x row feeds permuted row r
//   permuted_row_weight[r]      routing weight of that assignment (applied in GEMM 2)
//   token_to_permuted_row[a]    inverse map, used by combine (-1 for an invalid expert id)
//   pad_rows_to > 1 (the ops-level moe_permute): each expert's rows are rounded up to a
//   multiple, and padding rows (and, with `capacity`, the tail past expert_offsets[E]) get
//   permuted_row_to_token -1 and weight 0. The fused layer runs with pad_rows_to = 1.
//   tile table for the grouped GEMMs: the rows of each expert are cut into tiles of
//   `tile_rows` rows (the GEMM's token tile); tile t covers rows
//   [tile_row_begin[t], min(tile_row_begin[t] + tile_rows, expert_offsets[e+1])) of expert
//   tile_expert[t]; num_tiles[0] = number of tiles. Rows are therefore NOT padded in memory:
//   the GEMM masks the partial last tile of each expert instead, which saves the padding bytes.
//
// Order within an expert is ascending assignment index (token-major), so the permutation is
// deterministic. Ids outside [0, E) are skipped (their rows do not exist, combine adds 0).
//
// Kernels (the launcher picks moe_permute_small_kernel alone for few assignments):
//   moe_permute_small_kernel: one block does everything (num_assignments <= kPermuteSmallMax).
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
  __shared__ int total_rows;
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
  const int padded = (c + p.pad_rows_to - 1) / p.pad_rows_to * p.pad_rows_to;
  const int tiles = (c + p.tile_rows - 1) / p.tile_rows;
  const int incl_rows = block_inclusive_scan<kPermuteThreads>(padded, warp_sums);
  const int incl_tiles = block_inclusive_scan<kPermuteThreads>(tiles, warp_sums);
  const bool tile_table = p.tile_expert != nullptr;
  if (e < E) {
    const int row0 = incl_rows - padded;
    const int tile0 = incl_tiles - tiles;
    p.tokens_per_expert[e] = c;
    p.expert_offsets[e] = row0;
    if (tile_table) {
      for (int t = 0; t < tiles; ++t) {
        p.tile_expert[tile0 + t] = e;
        p.tile_row_begin[tile0 + t] = row0 + t * p.tile_rows;
      }
    }
    if (e == E - 1) {
      p.expert_offsets[E] = incl_rows;
      if (tile_table) p.num_tiles[0] = incl_tiles;
      total_rows = incl_rows;
    }
  }
  // The tail past the last expert's rows (ops-level capacity): no token, weight 0.
  if (p.capacity > 0) {
    __syncthreads();
    for (int r = total_rows + threadIdx.x; r < p.capacity; r += kPermuteThreads) {
      p.permuted_row_to_token[r] = -1;
      p.permuted_row_weight[r] = 0.f;
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
  const int end_row = next_row + p.tokens_per_expert[e];  // padding rows follow
  // Padding rows of e (pad_rows_to > 1): no token, weight 0.
  for (int r = end_row + threadIdx.x; r < p.expert_offsets[e + 1]; r += kPlaceThreads) {
    p.permuted_row_to_token[r] = -1;
    p.permuted_row_weight[r] = 0.f;
  }
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

// Single-block permutation for few assignments (num_assignments <= kPermuteSmallMax): the
// count, scan, tile table and placement of the two kernels above in one launch (at decode
// sizes a launch and a 128-block grid that mostly exits cost more than the work). Thread a
// owns assignment a; its rank inside its expert is the number of earlier assignments with
// the same id (a scan of at most kPermuteSmallMax ids in shared memory), so the order is the
// same ascending assignment order as moe_place_kernel's. Same outputs as count + place.
__global__ void __launch_bounds__(kPermuteThreads) moe_permute_small_kernel(PermuteParams p) {
  __shared__ int counts[kPermuteMaxExperts];
  __shared__ int row_begin[kPermuteMaxExperts];
  __shared__ int ids_s[kPermuteSmallMax];
  __shared__ int warp_sums[32];
  __shared__ int total_rows;
  griddep_wait();
  griddep_launch_dependents();
  const int E = p.num_experts;
  const int a = threadIdx.x;
  for (int e = threadIdx.x; e < E; e += kPermuteThreads) counts[e] = 0;
  __syncthreads();
  int id = -1;
  float weight = 0.f;
  if (a < p.num_assignments) {
    weight = p.expert_weights[a];  // issued now, used after the scans
    id = p.expert_ids[a];
    if (id < 0 || id >= E) id = -1;
    ids_s[a] = id;
    if (id >= 0) atomicAdd(&counts[id], 1);
  }
  __syncthreads();
  const int e = threadIdx.x;  // E <= 1024: one expert per thread
  const int c = e < E ? counts[e] : 0;
  const int padded = (c + p.pad_rows_to - 1) / p.pad_rows_to * p.pad_rows_to;
  const int tiles = (c + p.tile_rows - 1) / p.tile_rows;
  const int incl_rows = block_inclusive_scan<kPermuteThreads>(padded, warp_sums);
  const int incl_tiles = block_inclusive_scan<kPermuteThreads>(tiles, warp_sums);
  if (e < E) {
    const int row0 = incl_rows - padded;
    const int tile0 = incl_tiles - tiles;
    row_begin[e] = row0;
    p.tokens_per_expert[e] = c;
    p.expert_offsets[e] = row0;
    if (p.tile_expert != nullptr) {
      for (int t = 0; t < tiles; ++t) {
        p.tile_expert[tile0 + t] = e;
        p.tile_row_begin[tile0 + t] = row0 + t * p.tile_rows;
      }
    }
    for (int r = row0 + c; r < row0 + padded; ++r) {  // padding rows
      p.permuted_row_to_token[r] = -1;
      p.permuted_row_weight[r] = 0.f;
    }
    if (e == E - 1) {
      p.expert_offsets[E] = incl_rows;
      if (p.tile_expert != nullptr) p.num_tiles[0] = incl_tiles;
      total_rows = incl_rows;
    }
  }
  __syncthreads();
  if (a < p.num_assignments) {
    if (id >= 0) {
      int rank = 0;
      for (int j = 0; j < a; ++j) rank += ids_s[j] == id;
      const int row = row_begin[id] + rank;
      p.permuted_row_to_token[row] = a / p.top_k;
      p.permuted_row_weight[row] = weight;
      p.token_to_permuted_row[a] = row;
    } else {
      p.token_to_permuted_row[a] = -1;
    }
  }
  if (p.capacity > 0)
    for (int r = total_rows + threadIdx.x; r < p.capacity; r += kPermuteThreads) {
      p.permuted_row_to_token[r] = -1;
      p.permuted_row_weight[r] = 0.f;
    }
}

// Tile table of an existing permutation (TilesParams): one block, one expert per thread.
__global__ void __launch_bounds__(kPermuteThreads) moe_tiles_from_offsets_kernel(TilesParams p) {
  __shared__ int warp_sums[32];
  griddep_wait();
  griddep_launch_dependents();
  const int E = p.num_experts;
  const int e = threadIdx.x;
  int rows = 0, row0 = 0;
  if (e < E) {
    // Clamped: a malformed permutation can make rows empty but never point outside [0, R).
    row0 = min(max(p.expert_offsets[e], 0), p.num_rows);
    const int row1 = min(max(p.expert_offsets[e + 1], 0), p.num_rows);
    rows = max(row1 - row0, 0);
  }
  const int tiles = (rows + p.tile_rows - 1) / p.tile_rows;
  const int incl = block_inclusive_scan<kPermuteThreads>(tiles, warp_sums);
  const int tile0 = incl - tiles;
  for (int t = 0; t < tiles; ++t) {
    p.tile_expert[tile0 + t] = e;
    p.tile_row_begin[tile0 + t] = row0 + t * p.tile_rows;
  }
  if (e == E - 1) p.num_tiles[0] = incl;
}

// Zero the rows past expert_offsets[E] (ZeroTailParams); grid-stride over 16-byte chunks.
__global__ void __launch_bounds__(256) moe_zero_tail_rows_kernel(ZeroTailParams p) {
  griddep_wait();
  griddep_launch_dependents();
  const int first = min(max(p.expert_offsets[p.num_experts], 0), p.num_rows);
  const size_t chunks_per_row = size_t(p.cols) / 8;
  const size_t n = size_t(p.num_rows - first) * chunks_per_row;
  uint4* base = reinterpret_cast<uint4*>(p.rows + size_t(first) * p.cols);
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    base[i] = make_uint4(0, 0, 0, 0);
}

}  // namespace moeopt::cuda::kernels
