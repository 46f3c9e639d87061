// The small-M MoE expert path as one persistent kernel (kernels/moe_persistent.cuh): its
// parameter struct (plain C++, includable without nvcc, like kernels/moe_params.cuh) and the
// launcher. moe.cpp validates and calls it; see moe.h for the layer's contract.
// Status (H100): correct on every test shape, but slower than the multi-kernel path at every
// M measured (M = 1: 38.3 against 32.6 us), so it runs only when MoeExpertsArgs::persistent
// asks for it. Next steps: bulk (TMA) weight copies for more bytes in flight per warp, and
// mma.sync instead of CUDA-core dot products for experts that several tokens share.
//
// Workspace of this path (regions of moe.cpp's layout, all device memory):
//   counters [min(M*k, kPersistentMaxPairs) * 32 + ceil(H / kPersistentRowsPerTask)] int32:
//            first the per-used-expert GEMM-1 column counts (one 128-byte line each), then
//            the per-row-block GEMM-2 arrival counts; zeroed by a one-block kernel launched
//            just before the layer kernel (so the pair stays CUDA-graph capturable and needs
//            no host state);
//   h        [M*k, I] bf16: SiLU(gate)*up per (token, slot) pair, pair = token*k + slot;
//   y        [M*k, H] f32: routing-weighted GEMM-2 partial rows per pair, summed in slot
//            order into out by the last arrival of each row block (deterministic).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moeopt::cuda {
namespace kernels {

inline constexpr int kPersistentThreads = 256;    // 8 warps; 2 blocks per SM
inline constexpr int kPersistentMaxPairs = 256;   // M*k (the routing table lives in smem)
inline constexpr int kPersistentRowsPerTask = 4;  // GEMM-2 W2 rows per warp task
inline constexpr int kPersistentCounterStride = 32;  // int32s: one 128-byte line per expert

struct PersistentParams {
  const __nv_bfloat16* x;         // [M, H] bf16 (must not alias out)
  const int32_t* expert_ids;      // [M, k] int32; ids outside [0, E) contribute nothing
  const float* expert_weights;    // [M, k] f32
  const __nv_bfloat16* w13;       // [E, 2I, H] bf16 (gate rows, then up rows)
  const __nv_bfloat16* w2;        // [E, H, I] bf16
  const __nv_bfloat16* residual;  // [M, H] bf16 or nullptr (may alias out)
  __nv_bfloat16* out;             // [M, H] bf16
  int32_t* expert_done;           // [M*k * kPersistentCounterStride] GEMM-1 columns finished,
                                  // per used expert (rank u at u * kPersistentCounterStride)
  int32_t* rows_done;             // [ceil(H / kPersistentRowsPerTask)] experts finished
  __nv_bfloat16* h;               // [M*k, I]
  float* y;                       // [M*k, H]
  int num_tokens;
  int hidden;
  int inter;
  int num_experts;  // <= 512
  int top_k;
};

}  // namespace kernels

namespace detail {

// Number of int32 counters the path needs (what the reset kernel zeroes).
inline int64_t persistent_num_counters(int64_t pairs, int64_t hidden) {
  const int64_t p = pairs < kernels::kPersistentMaxPairs ? pairs : kernels::kPersistentMaxPairs;
  return p * kernels::kPersistentCounterStride +
         (hidden + kernels::kPersistentRowsPerTask - 1) / kernels::kPersistentRowsPerTask;
}

// Launches the counter reset (1 block) and the layer kernel (as many blocks as fit on the
// device at once, at most 2 per SM: the blocks wait on each other's counters, so all must be
// resident). p.expert_done must be the start of the counters (rows_done follows it).
// pdl: both launched with programmatic dependent launch (each waits on-device for its
// predecessor before touching memory).
cudaError_t launch_moe_persistent(const kernels::PersistentParams& p, bool pdl,
                                  cudaStream_t stream);

// Blocks of the layer kernel for the current device (0 if it cannot be launched).
int moe_persistent_grid_blocks();

}  // namespace detail
}  // namespace moeopt::cuda
