// Grouped GEMM for the MoE experts, bf16 in, fp32 accumulate, bf16 out (mma.sync m16n8k16).
//
// For every token tile t of expert e (tile table from moe_permute.cuh) and every weight tile:
//     out[r, n] = sum_k act[src(r), k] * W[e, n, k]          r in the tile's permuted rows
// GEMM 1 (kGated): W = W13[e] of [2*N_out, K] (gate rows [0, N_out), up rows [N_out, 2*N_out)),
//     act = x gathered through permuted_row_to_token, and the epilogue writes
//     out[r, n] = silu(gate[r, n]) * up[r, n]                   (h, [rows, N_out])
// GEMM 2 (kWeighted): W = W2[e] of [N_out, K], act = h (already in permuted order), and the
//     epilogue multiplies by the routing weight of the row:
//     out[r, n] = row_weight[r] * sum_k h[r, k] * W2[e, n, k]   (y, [rows, N_out])
//
// Roles are swapped relative to a textbook GEMM ("swap AB"): the weight tile is the mma's
// A operand (its 16-row m dimension) and the tokens are the n dimension (8 per mma). At decode
// sizes an expert sees 1..8 tokens, so an n8 tile wastes little, while the weight tile keeps
// the tensor cores and all 16-byte loads busy on what actually bounds the layer: streaming
// expert weights. Larger token counts use larger n tiles (moe_heuristics.h picks per M).
//
// Tiles: BM weight rows x BN tokens x BK k per stage, STAGES-deep cp.async pipeline. Warps are
// laid out WARPS_M x WARPS_N x WARPS_K: WARPS_K > 1 splits each stage's BK among warps (decode:
// few tokens, so warps share the weight tile along K and reduce through shared memory at
// the end) — this keeps 16-byte weight loads in flight without split-K across blocks.
// For kGated the weight tile interleaves 16 gate rows and 16 up rows, so every warp owns
// matching gate/up accumulators and the SiLU*up product happens in registers.
//
// Shared memory rows are 64 bf16 wide chunks swizzled as chunk ^ (row % 8) so that ldmatrix
// reads are bank-conflict free.
//
// Bounds (static_asserts below + launcher checks): K % 8 == 0 (16-byte rows), BK % 64 == 0,
// WM % 16 == 0 (WM % 32 for kGated), WN % 8 == 0, pointers 16-byte aligned.
// Test: tests/unit/cuda_moe_test.cpp. Bench: bench/moe_layer.py.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/moe_params.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {


template <int BM_, int BN_, int BK_, int WARPS_M_, int WARPS_N_, int WARPS_K_, int STAGES_>
struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_;
  static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, WARPS_K = WARPS_K_;
  static constexpr int STAGES = STAGES_;
  static constexpr int kWarps = WARPS_M * WARPS_N * WARPS_K;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int WM = BM / WARPS_M;  // weight rows per warp
  static constexpr int WN = BN / WARPS_N;  // tokens per warp
  static constexpr int BKW = BK / WARPS_K; // k per warp per stage
  static constexpr int MI = WM / 16;       // mma tiles along weight rows
  static constexpr int NI = WN / 8;        // mma tiles along tokens
  static constexpr int kStageElems = (BM + BN) * BK;
  static constexpr int kSmemBytes = STAGES * kStageElems * 2;
  static_assert(BK % 64 == 0, "BK must be a multiple of 64 (swizzle over 8 16-byte chunks)");
  static_assert(WM % 16 == 0 && WN % 8 == 0 && BKW % 16 == 0, "warp tile must fit mma m16n8k16");
  static_assert(NI == 1 || NI % 2 == 0, "tokens per warp: 8 or a multiple of 16 (ldmatrix x4)");
  static_assert(STAGES >= 2, "pipeline needs at least two stages");
  // Cross-warp K reduction reuses the pipeline buffers.
  static_assert((WARPS_K - 1) * WARPS_M * WARPS_N * 32 * MI * NI * 4 * 4 <= kSmemBytes,
                "split-K reduction buffer must fit in the pipeline's shared memory");
};

// Byte offset of element (row, k) in a [rows, BK] swizzled tile.
template <int BK>
__device__ __forceinline__ int swz(int row, int k) {
  const int chunk = k / 8;
  return (row * BK + ((chunk ^ (row & 7)) * 8) + (k & 7)) * 2;
}

template <class T, bool kGated, bool kWeighted>
__global__ void __launch_bounds__(T::kThreads) moe_grouped_gemm_kernel(GroupedGemmParams p) {
  static_assert(!kGated || T::WM % 32 == 0, "gated: each warp owns gate/up 16-row pairs");
  static_assert(!(kGated && kWeighted), "GEMM1 is gated, GEMM2 is weighted");
  constexpr int BM = T::BM, BN = T::BN, BK = T::BK, STAGES = T::STAGES;
  extern __shared__ __align__(128) unsigned char smem[];

  // PDL: GEMM 1 reads the tile table the permutation kernel just wrote, so it waits first.
  // GEMM 2's tile table was written two kernels back (complete once every GEMM 1 block has
  // passed its own wait, which precedes GEMM 1's trigger), so GEMM 2 starts streaming its
  // weights before waiting for h (see the prologue below).
  if constexpr (kGated) {
    griddep_wait();
    griddep_launch_dependents();
  }
  // Tile table reads bypass L1 (ld.global.cg): GEMM 2 reads them before its PDL wait.
  const int tile = blockIdx.x;
  if (tile >= __ldcg(p.num_tiles)) return;
  const int e = __ldcg(p.tile_expert + tile);
  const int row0 = __ldcg(p.tile_row_begin + tile);
  // Rows of this tile: the expert's end clamped to the buffer (a malformed permutation from
  // the ops-level path then computes fewer rows instead of writing out of bounds).
  const int rows = min(BN, min(__ldcg(p.expert_offsets + e + 1), p.num_rows) - row0);
  const int K = p.K;
  const int N_out = p.N_out;
  const int N_w = kGated ? 2 * N_out : N_out;
  // Output columns covered by this block.
  const int col0 = blockIdx.y * (kGated ? BM / 2 : BM);

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int wk = warp % T::WARPS_K;
  const int wmn = warp / T::WARPS_K;
  const int wn = wmn % T::WARPS_N;
  const int wm = wmn / T::WARPS_N;

  const __nv_bfloat16* wbase = p.weight + size_t(e) * N_w * K;
  const uint32_t smem0 = smem_u32(smem);

  // Weight row (within W[e]) of tile row r, or -1 when outside N.
  auto weight_row = [&](int r) -> int {
    if constexpr (kGated) {
      const int j = (r / 32) * 16 + (r % 16);
      if (col0 + j >= N_out) return -1;
      return ((r / 16) & 1) ? N_out + col0 + j : col0 + j;
    } else {
      return col0 + r < N_out ? col0 + r : -1;
    }
  };
  auto token_src = [&](int r) -> const __nv_bfloat16* {
    if (r >= rows) return nullptr;
    if constexpr (kGated) {
      // Padding rows (-1) and out-of-range tokens gather a zero row: their h is 0.
      const int t = p.row_to_token[row0 + r];
      return t >= 0 && t < p.num_tokens ? p.act + size_t(t) * K : nullptr;
    }
    else return p.act + size_t(row0 + r) * K;
  };

  // Each thread's chunks are fixed across k, so resolve their row pointers once.
  constexpr int kChunksPerRow = BK / 8;
  constexpr int kAChunks = BM * kChunksPerRow;
  constexpr int kBChunks = BN * kChunksPerRow;
  constexpr int kAPerThread = (kAChunks + T::kThreads - 1) / T::kThreads;
  constexpr int kBPerThread = (kBChunks + T::kThreads - 1) / T::kThreads;
  const __nv_bfloat16* a_src[kAPerThread];
  const __nv_bfloat16* b_src[kBPerThread];
#pragma unroll
  for (int i = 0; i < kAPerThread; ++i) {
    const int c = tid + i * T::kThreads;
    const int wr = c < kAChunks ? weight_row(c / kChunksPerRow) : -1;
    a_src[i] = wr >= 0 ? wbase + size_t(wr) * K + (c % kChunksPerRow) * 8 : nullptr;
  }
#pragma unroll
  for (int i = 0; i < kBPerThread; ++i) {
    const int c = tid + i * T::kThreads;
    const __nv_bfloat16* s = c < kBChunks ? token_src(c / kChunksPerRow) : nullptr;
    b_src[i] = s != nullptr ? s + (c % kChunksPerRow) * 8 : nullptr;
  }

  const int num_k_tiles = (K + BK - 1) / BK;
  auto load_weights = [&](int stage, int kt) {
    const int k0 = kt * BK;
    const uint32_t a_smem = smem0 + stage * T::kStageElems * 2;
#pragma unroll
    for (int i = 0; i < kAPerThread; ++i) {
      const int c = tid + i * T::kThreads;
      if (kAChunks % T::kThreads != 0 && c >= kAChunks) break;
      const int r = c / kChunksPerRow, kc = c % kChunksPerRow;
      const bool ok = a_src[i] != nullptr && k0 + kc * 8 < K;
      cp_async_16(a_smem + swz<BK>(r, kc * 8), ok ? a_src[i] + k0 : p.weight, ok);
    }
  };
  auto load_tokens = [&](int stage, int kt) {
    const int k0 = kt * BK;
    const uint32_t b_smem = smem0 + stage * T::kStageElems * 2 + BM * BK * 2;
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      const int c = tid + i * T::kThreads;
      if (kBChunks % T::kThreads != 0 && c >= kBChunks) break;
      const int r = c / kChunksPerRow, kc = c % kChunksPerRow;
      const bool ok = b_src[i] != nullptr && k0 + kc * 8 < K;
      cp_async_16(b_smem + swz<BK>(r, kc * 8), ok ? b_src[i] + k0 : p.act, ok);
    }
  };
  auto load_stage = [&](int stage, int kt) {
    load_weights(stage, kt);
    load_tokens(stage, kt);
  };

  float acc[T::MI][T::NI][4];
#pragma unroll
  for (int i = 0; i < T::MI; ++i)
#pragma unroll
    for (int j = 0; j < T::NI; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.f;

  if constexpr (kGated) {
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < num_k_tiles) load_stage(s, s);
      cp_async_commit();
    }
  } else {
    // Weights of the first STAGES-1 k tiles stream in while GEMM 1 finishes; the token rows
    // (h, written by GEMM 1) only after the wait. One commit group holds the whole prologue,
    // padded with empty groups so the main loop's wait_group accounting is unchanged.
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s)
      if (s < num_k_tiles) load_weights(s, s);
    griddep_wait();
    griddep_launch_dependents();
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s)
      if (s < num_k_tiles) load_tokens(s, s);
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) cp_async_commit();
  }

  for (int kt = 0; kt < num_k_tiles; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nk = kt + STAGES - 1;
      if (nk < num_k_tiles) load_stage(nk % STAGES, nk);
      cp_async_commit();
    }
    const int stage = kt % STAGES;
    const uint32_t a_smem = smem0 + stage * T::kStageElems * 2;
    const uint32_t b_smem = a_smem + BM * BK * 2;
#pragma unroll
    for (int kk = 0; kk < T::BKW; kk += 16) {
      const int kofs = wk * T::BKW + kk;
      uint32_t af[T::MI][4];
      uint32_t bf[T::NI][2];
#pragma unroll
      for (int i = 0; i < T::MI; ++i) {
        const int r = wm * T::WM + i * 16 + (lane % 16);
        ldmatrix_x4(a_smem + swz<BK>(r, kofs + (lane / 16) * 8), af[i][0], af[i][1], af[i][2],
                    af[i][3]);
      }
      if constexpr (T::NI == 1) {
        const int r = wn * T::WN + (lane & 7);
        ldmatrix_x2(b_smem + swz<BK>(r, kofs + ((lane >> 3) & 1) * 8), bf[0][0], bf[0][1]);
      } else {
#pragma unroll
        for (int j = 0; j < T::NI; j += 2) {
          const int r = wn * T::WN + j * 8 + (lane & 7) + ((lane >> 4) << 3);
          ldmatrix_x4(b_smem + swz<BK>(r, kofs + ((lane >> 3) & 1) * 8), bf[j][0], bf[j][1],
                      bf[j + 1][0], bf[j + 1][1]);
        }
      }
#pragma unroll
      for (int i = 0; i < T::MI; ++i)
#pragma unroll
        for (int j = 0; j < T::NI; ++j) mma_bf16_16816(acc[i][j], af[i], bf[j]);
    }
  }
  cp_async_wait<0>();

  // Cross-warp K reduction: warps with wk > 0 park their accumulators, wk == 0 adds them.
  if constexpr (T::WARPS_K > 1) {
    __syncthreads();
    float* red = reinterpret_cast<float*>(smem);
    constexpr int kPerWarp = T::MI * T::NI * 4;
    if (wk > 0) {
      float* dst = red + ((wk - 1) * (T::WARPS_M * T::WARPS_N) + wmn) * 32 * kPerWarp;
#pragma unroll
      for (int i = 0; i < T::MI; ++i)
#pragma unroll
        for (int j = 0; j < T::NI; ++j)
#pragma unroll
          for (int c = 0; c < 4; ++c) dst[((i * T::NI + j) * 4 + c) * 32 + lane] = acc[i][j][c];
    }
    __syncthreads();
    if (wk > 0) return;
#pragma unroll
    for (int w = 1; w < T::WARPS_K; ++w) {
      const float* src = red + ((w - 1) * (T::WARPS_M * T::WARPS_N) + wmn) * 32 * kPerWarp;
#pragma unroll
      for (int i = 0; i < T::MI; ++i)
#pragma unroll
        for (int j = 0; j < T::NI; ++j)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[i][j][c] += src[((i * T::NI + j) * 4 + c) * 32 + lane];
    }
  }

  // Epilogue. Accumulator (i, j, c): weight-tile row wm*WM + i*16 + lane/4 + (c >= 2 ? 8 : 0),
  // token row wn*WN + j*8 + (lane%4)*2 + (c & 1).
  const int g = lane / 4;
  const int q2 = (lane % 4) * 2;
  if constexpr (kGated) {
#pragma unroll
    for (int i = 0; i < T::MI; i += 2) {  // (i, i+1) = (gate, up) for the same 16 columns
#pragma unroll
      for (int j = 0; j < T::NI; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int col = col0 + (wm * T::WM) / 2 + (i / 2) * 16 + g + (c >= 2 ? 8 : 0);
          const int r = wn * T::WN + j * 8 + q2 + (c & 1);
          if (col < N_out && r < rows) {
            const float gate = acc[i][j][c];
            const float up = acc[i + 1][j][c];
            const float h = gate / (1.f + __expf(-gate)) * up;
            p.out[size_t(row0 + r) * N_out + col] = __float2bfloat16(h);
          }
        }
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < T::MI; ++i) {
#pragma unroll
      for (int j = 0; j < T::NI; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int col = col0 + wm * T::WM + i * 16 + g + (c >= 2 ? 8 : 0);
          const int r = wn * T::WN + j * 8 + q2 + (c & 1);
          if (col < N_out && r < rows) {
            float v = acc[i][j][c];
            if constexpr (kWeighted) v *= p.row_weight[row0 + r];
            p.out[size_t(row0 + r) * N_out + col] = __float2bfloat16(v);
          }
        }
      }
    }
  }
}

}  // namespace moeopt::cuda::kernels
