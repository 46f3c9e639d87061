// FP8 (W8A8, 128x128 block scales) grouped GEMM for the MoE experts, and the FP8 dense
// linear as its one-weight mode (mma.sync m16n8k32 e4m3 x e4m3 -> f32). The number format is
// ops/fp8.h's:
//   weights  w_q [E, N_w, K] e4m3, w_s [E, ceil(N_w'/128), ceil(K/128)] f32 (see below)
//   tokens   x_q [rows, K] e4m3 + s_x [rows, ceil(K/128)] f32, quantised per row in groups of
//            128 by fp8_quantize_act_kernel (fp8_quantize.cuh) before the GEMM: once per
//            token and layer input, not once per weight block that reads it
//   y[r, n]  = sum_g (s_x[r, g] * w_s[n/128, g]) * (sum_{k in g} x_q[r, k] * w_q[n, k])
// For every token tile of expert e (the tile table of moe_permute.cuh) and weight tile:
// GEMM 1 (kGated): W = W13[e] [2*N_out, K] (gate rows, then up rows), tokens = x_q [M, K]
//     gathered through permuted_row_to_token; epilogue h[r, n] = silu(gate) * up in f32
//     ([rows, N_out]; quantised to h_q by the activation quantiser, exactly as the CPU
//     reference quantises its f32 intermediate). Scale rows: gate row n -> n/128, up row n ->
//     ceil(N_out/128) + n/128 (the ops/moe.h w13_scale layout), so no block mixes gate and up.
// GEMM 2: W = W2[e] [N_out, K], tokens = h_q [rows, K] (permuted order); epilogue
//     y[r, n] = row_weight[r] * acc in bf16 (then moe_combine.cuh).
// Dense (GEMM 2's kernel with p.dense, the FP8 linear of ops/linear.h): one weight [N_out, K],
//     tokens = x_q [M, K] in order, y[m, n] = acc (+ bias) in bf16 or f32, strided rows.
//
// Roles ("swap AB", as in moe_grouped_gemm.cuh): weight rows are the mma's m dimension
// (16 rows, the A operand), tokens its n dimension (8 per mma). One pipeline stage is KG
// K groups: BK = KG x 128 e4m3 bytes of BM weight rows and BN token rows plus the KG x BN
// token scales of those groups, all by cp.async; so the block scale of a group is one number
// per 16-row mma tile (tiles never straddle a 128-row block: BM/2 or BM divides 128, or 128
// divides BM and tiles start on a block) and one per token. Each warp accumulates a group
// into a partial accumulator and adds it, times s_x * w_s, to the running one. WARPS_K > 1
// splits a stage's k among warps (decode: few tokens; the partials are reduced through shared
// memory at the end). KG = 2 makes every weight row of a stage one 256-byte run of global
// memory, as the BF16 kernel's 128-element rows are: with 128-byte runs the same tile
// streamed at ~60-70% of DRAM bandwidth where the BF16 kernel reaches ~90% (ncu, H200).
//
// Shared memory: STAGES x (weights [KG][BM][128 B], tokens [KG][BN][128 B], token scales
// [KG][BN] f32), then the weight scales [2][KBp] f32 (KBp = KB rounded up to KG; the padding
// groups' scales are 0 and their codes zero-filled). 128-byte rows are 16-byte chunks
// swizzled as chunk ^ (row % 8), so ldmatrix reads are bank-conflict free; the fragment layouts of
// m16n8k32 e4m3 are byte-for-byte those of m16n8k16 bf16, so the ldmatrix addressing is the
// bf16 kernel's in bytes. Programmatic dependent launch: GEMM 1 waits first (its tokens and
// tile table come from earlier kernels); GEMM 2 and the dense mode issue their first weight
// stages before they wait for the tokens.
//
// Bounds (launcher): K % 16 == 0 (16-byte rows of e4m3), N_out % 8 == 0, pointers and
// ld_act 16-byte aligned; K tails (K % 128) and N tails are zero-filled / masked; padding
// token rows read as zero codes with scale 0.
// Test: tests/unit/cuda_moe_fp8_test.cpp, tests/unit/cuda_fp8_test.cpp.
// Bench: `moeopt bench moe --dtype fp8`.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/moe_params.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {

template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int WARPS_K_, int KG_, int STAGES_>
struct Fp8GemmTile {
  static constexpr int KG = KG_;  // 128-wide K groups per stage
  static constexpr int BM = BM_, BN = BN_, BK = 128 * KG;  // BK in e4m3 elements = bytes
  static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, WARPS_K = WARPS_K_;
  static constexpr int STAGES = STAGES_;
  static constexpr int kWarps = WARPS_M * WARPS_N * WARPS_K;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int WM = BM / WARPS_M;
  static constexpr int WN = BN / WARPS_N;
  static constexpr int BKW = BK / WARPS_K;  // k per warp per stage
  static constexpr int MI = WM / 16;
  static constexpr int NI = WN / 8;
  // One stage: weights [KG][BM][128 B], tokens [KG][BN][128 B], token scales [KG][BN] f32
  // (128-aligned).
  static constexpr int kTokOffset = BM * BK;
  static constexpr int kScaleOffset = kTokOffset + BN * BK;
  static constexpr int kStageBytes = (kScaleOffset + KG * BN * 4 + 127) / 128 * 128;
  static_assert(WM % 16 == 0 && WN % 8 == 0 && BKW % 32 == 0, "warp tile must fit m16n8k32");
  static_assert(BKW <= 128 ? 128 % BKW == 0 : BKW % 128 == 0,
                "a warp's k slice must not straddle a 128-group unless it covers whole groups");
  static_assert(NI == 1 || NI % 2 == 0, "tokens per warp: 8 or a multiple of 16 (ldmatrix x4)");
  static_assert(STAGES >= 2, "pipeline needs at least two stages");
  static_assert(128 % BM == 0 || BM % 128 == 0, "weight tiles must not straddle scale blocks");
  static_assert(KG * BN <= kThreads, "one thread per (group, token row) loads the scales");
  // K groups rounded up to whole stages.
  static constexpr int padded_groups(int K) { return ((K + 127) / 128 + KG - 1) / KG * KG; }
  // Shared memory for K: the stages, then the weight scales [2][KBp] f32.
  static constexpr size_t smem_bytes(int K) {
    return size_t(STAGES) * kStageBytes + 2 * size_t(padded_groups(K)) * 4;
  }
  // Cross-warp K reduction reuses the stages.
  static_assert((WARPS_K - 1) * WARPS_M * WARPS_N * 32 * MI * NI * 4 * 4 <= STAGES * kStageBytes,
                "split-K reduction buffer must fit in the stages");
};

// Byte offset of byte `b` (0..127) of row `row` in a swizzled [rows][128 B] tile.
__device__ __forceinline__ int swz128(int row, int b) {
  return row * 128 + ((((b >> 4) ^ (row & 7))) << 4) + (b & 15);
}

// Byte offset of byte `b` (0..KG*128-1) of row `row` in a stage operand [KG][ROWS][128 B].
template <int ROWS>
__device__ __forceinline__ int swz_stage(int row, int b) {
  return (b >> 7) * (ROWS * 128) + swz128(row, b & 127);
}

__device__ __forceinline__ void mma_e4m3_16832(float (&c)[4], const uint32_t (&a)[4],
                                               const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// 4-byte global -> shared copy (the token scales of a stage); zero-filled when !valid.
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 4 : 0));
}

// The kernel body, shared by the MoE grouped GEMMs and the dense linear (two kernel names,
// so profiles tell them apart).
template <class T, bool kGated>
__device__ __forceinline__ void fp8_gemm_body(const Fp8GroupedGemmParams& p) {
  static_assert(!kGated || T::WM % 32 == 0, "gated: each warp owns gate/up 16-row pairs");
  constexpr int BM = T::BM, BN = T::BN, BK = T::BK, STAGES = T::STAGES;
  extern __shared__ __align__(128) unsigned char smem[];

  // The tile table was written by the permutation, which ran before GEMM 1 (and, for GEMM 2,
  // before the GEMM 1 that GEMM 2 waits on): GEMM 1 waits first; GEMM 2 reads the table and
  // starts its weight stream before it waits for h (as in moe_grouped_gemm.cuh).
  if constexpr (kGated) {
    griddep_wait();
    griddep_launch_dependents();
  }
  const int tile = blockIdx.x;
  int e = 0, row0 = tile * BN, rows = 0;
  if (!kGated && p.dense) {
    rows = min(BN, p.num_rows - row0);
    if (rows <= 0) return;
  } else {
    if (tile >= __ldcg(p.num_tiles)) return;
    e = __ldcg(p.tile_expert + tile);
    row0 = __ldcg(p.tile_row_begin + tile);
    rows = min(BN, min(__ldcg(p.expert_offsets + e + 1), p.num_rows) - row0);
  }
  const int K = p.K, KB = (K + 127) / 128;
  const int KBp = T::padded_groups(K);  // groups rounded up to whole stages
  const int KT = KBp / T::KG;           // pipeline stages over K
  const int N_out = p.N_out;
  const int N_w = kGated ? 2 * N_out : N_out;
  const int NB = kGated ? (N_out + 127) / 128 : 0;  // up rows' scale block offset
  const int col0 = blockIdx.y * (kGated ? BM / 2 : BM);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wk = warp % T::WARPS_K;
  const int wmn = warp / T::WARPS_K;
  const int wn = wmn % T::WARPS_N;
  const int wm = wmn / T::WARPS_N;

  const uint32_t smem_base = smem_u32(smem);
  float* w_scale = reinterpret_cast<float*>(smem + STAGES * T::kStageBytes);  // [2][KBp]

  const unsigned char* wbase = p.weight + size_t(e) * N_w * K;
  auto weight_row = [&](int r) -> int {
    if constexpr (kGated) {
      const int j = (r / 32) * 16 + (r % 16);
      if (col0 + j >= N_out) return -1;
      return ((r / 16) & 1) ? N_out + col0 + j : col0 + j;
    } else {
      return col0 + r < N_out ? col0 + r : -1;
    }
  };
  constexpr int kChunksPerRow = BK / 16;
  constexpr int kAChunks = BM * kChunksPerRow;
  constexpr int kAPerThread = (kAChunks + T::kThreads - 1) / T::kThreads;
  constexpr int kBChunks = BN * kChunksPerRow;
  constexpr int kBPerThread = (kBChunks + T::kThreads - 1) / T::kThreads;
  const unsigned char* a_src[kAPerThread];
#pragma unroll
  for (int i = 0; i < kAPerThread; ++i) {
    const int c = tid + i * T::kThreads;
    const int wr = c < kAChunks ? weight_row(c / kChunksPerRow) : -1;
    a_src[i] = wr >= 0 ? wbase + size_t(wr) * K + (c % kChunksPerRow) * 16 : nullptr;
  }
  auto load_weights = [&](int stage, int kt) {
    const int k0 = kt * BK;
    const uint32_t dst = smem_base + stage * T::kStageBytes;
#pragma unroll
    for (int i = 0; i < kAPerThread; ++i) {
      const int c = tid + i * T::kThreads;
      if (kAChunks % T::kThreads != 0 && c >= kAChunks) break;
      const int r = c / kChunksPerRow, kc = c % kChunksPerRow;
      const bool ok = a_src[i] != nullptr && k0 + kc * 16 < K;
      cp_async_16(dst + swz_stage<BM>(r, kc * 16), ok ? a_src[i] + k0 : p.weight, ok);
    }
  };

  // Weight stream first (independent of the predecessor kernel), then the token rows.
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load_weights(s, s);
    cp_async_commit();
  }
  // Block scales of the (at most two) 128-row blocks this tile's rows fall in.
  {
    const int blk = col0 / 128;  // gate / GEMM 2 block (a tile never straddles blocks)
    const float* ws = p.weight_scale + size_t(e) * (kGated ? 2 * NB : (N_out + 127) / 128) * KB;
    for (int g = tid; g < KBp; g += T::kThreads) {
      w_scale[g] = g < KB ? ws[size_t(blk) * KB + g] : 0.f;
      w_scale[KBp + g] = kGated && g < KB ? ws[size_t(NB + blk) * KB + g] : 0.f;
    }
  }
  if constexpr (!kGated) {
    griddep_wait();
    griddep_launch_dependents();
  }
  // Source row of token-tile row r (-1: padding, read as zero codes with scale 0).
  auto token_row = [&](int r) -> int {
    if (r >= rows) return -1;
    if constexpr (kGated) {
      const int t = p.row_to_token[row0 + r];
      return t >= 0 && t < p.num_tokens ? t : -1;
    } else {
      return row0 + r;
    }
  };
  const unsigned char* b_src[kBPerThread];
#pragma unroll
  for (int i = 0; i < kBPerThread; ++i) {
    const int c = tid + i * T::kThreads;
    const int tr = c < kBChunks ? token_row(c / kChunksPerRow) : -1;
    b_src[i] = tr >= 0 ? p.act_q + size_t(tr) * p.ld_act + (c % kChunksPerRow) * 16 : nullptr;
  }
  // Thread tid < KG * BN loads the scale of token row tid % BN, group tid / BN of a stage.
  const float* s_src = nullptr;
  const int s_group = tid / BN;
  if (tid < T::KG * BN) {
    const int tr = token_row(tid % BN);
    if (tr >= 0) s_src = p.act_scale + size_t(tr) * KB;
  }
  auto load_tokens = [&](int stage, int kt) {
    const int k0 = kt * BK;
    const uint32_t dst = smem_base + stage * T::kStageBytes + T::kTokOffset;
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      const int c = tid + i * T::kThreads;
      if (kBChunks % T::kThreads != 0 && c >= kBChunks) break;
      const int r = c / kChunksPerRow, kc = c % kChunksPerRow;
      const bool ok = b_src[i] != nullptr && k0 + kc * 16 < K;
      cp_async_16(dst + swz_stage<BN>(r, kc * 16), ok ? b_src[i] + k0 : p.act_q, ok);
    }
    if (tid < T::KG * BN) {
      const int g = kt * T::KG + s_group;
      const bool ok = s_src != nullptr && g < KB;
      cp_async_4(smem_base + stage * T::kStageBytes + T::kScaleOffset + tid * 4,
                 ok ? s_src + g : p.act_scale, ok);
    }
  };
  // The prologue's token rows: one more group per stage. With the weight groups before them,
  // the group holding stage kt's tokens is always the (STAGES - 1 + kt)-th, so the main
  // loop's cp_async_wait<STAGES - 2> covers both operands of every stage.
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load_tokens(s, s);
    cp_async_commit();
  }

  float acc[T::MI][T::NI][4], part[T::MI][T::NI][4];
#pragma unroll
  for (int i = 0; i < T::MI; ++i)
#pragma unroll
    for (int j = 0; j < T::NI; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = part[i][j][c] = 0.f;

  const int g4 = lane / 4;
  const int q2 = (lane % 4) * 2;
  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nk = kt + STAGES - 1;
      if (nk < KT) {
        load_weights(nk % STAGES, nk);
        load_tokens(nk % STAGES, nk);
      }
      cp_async_commit();
    }
    const uint32_t a_smem = smem_base + (kt % STAGES) * T::kStageBytes;
    const uint32_t b_smem = a_smem + T::kTokOffset;
    const float* tok_scale =
        reinterpret_cast<const float*>(smem + (kt % STAGES) * T::kStageBytes + T::kScaleOffset);
    constexpr int kFlushEvery = T::BKW < 128 ? T::BKW : 128;  // k between scale flushes
#pragma unroll
    for (int kk = 0; kk < T::BKW; kk += 32) {
      const int kofs = wk * T::BKW + kk;
      uint32_t af[T::MI][4];
      uint32_t bf[T::NI][2];
#pragma unroll
      for (int i = 0; i < T::MI; ++i) {
        const int r = wm * T::WM + i * 16 + (lane % 16);
        ldmatrix_x4(a_smem + swz_stage<BM>(r, kofs + (lane / 16) * 16), af[i][0], af[i][1],
                    af[i][2], af[i][3]);
      }
      if constexpr (T::NI == 1) {
        const int r = wn * T::WN + (lane & 7);
        ldmatrix_x2(b_smem + swz_stage<BN>(r, kofs + ((lane >> 3) & 1) * 16), bf[0][0],
                    bf[0][1]);
      } else {
#pragma unroll
        for (int j = 0; j < T::NI; j += 2) {
          const int r = wn * T::WN + j * 8 + (lane & 7) + ((lane >> 4) << 3);
          ldmatrix_x4(b_smem + swz_stage<BN>(r, kofs + ((lane >> 3) & 1) * 16), bf[j][0],
                      bf[j][1], bf[j + 1][0], bf[j + 1][1]);
        }
      }
#pragma unroll
      for (int i = 0; i < T::MI; ++i)
#pragma unroll
        for (int j = 0; j < T::NI; ++j) mma_e4m3_16832(part[i][j], af[i], bf[j]);
      if ((kk + 32) % kFlushEvery != 0) continue;
      // A 128-group ends: acc += (s_x * w_s) * partial, per mma row tile (one weight block)
      // and token column.
      const int g = kofs / 128;  // group within the stage
#pragma unroll
      for (int i = 0; i < T::MI; ++i) {
        const bool up = kGated && (i & 1);
        const float sw = w_scale[(up ? KBp : 0) + kt * T::KG + g];
#pragma unroll
        for (int j = 0; j < T::NI; ++j)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int tcol = wn * T::WN + j * 8 + q2 + (c & 1);
            const float s = tok_scale[g * BN + tcol] * sw;
            acc[i][j][c] = fmaf(s, part[i][j][c], acc[i][j][c]);
            part[i][j][c] = 0.f;
          }
      }
    }
  }
  cp_async_wait<0>();

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

  // Epilogue: accumulator (i, j, c) is weight-tile row wm*WM + i*16 + lane/4 (+8 for c >= 2),
  // token row wn*WN + j*8 + (lane%4)*2 + (c & 1).
  if constexpr (kGated) {
#pragma unroll
    for (int i = 0; i < T::MI; i += 2)
#pragma unroll
      for (int j = 0; j < T::NI; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int col = col0 + (wm * T::WM) / 2 + (i / 2) * 16 + g4 + (c >= 2 ? 8 : 0);
          const int r = wn * T::WN + j * 8 + q2 + (c & 1);
          if (col < N_out && r < rows) {
            const float gate = acc[i][j][c], up = acc[i + 1][j][c];
            p.out_f32[size_t(row0 + r) * N_out + col] = gate / (1.f + __expf(-gate)) * up;
          }
        }
  } else {
#pragma unroll
    for (int i = 0; i < T::MI; ++i)
#pragma unroll
      for (int j = 0; j < T::NI; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int col = col0 + wm * T::WM + i * 16 + g4 + (c >= 2 ? 8 : 0);
          const int r = wn * T::WN + j * 8 + q2 + (c & 1);
          if (col >= N_out || r >= rows) continue;
          if (p.dense) {
            const float y = acc[i][j][c] + (p.bias ? __bfloat162float(p.bias[col]) : 0.f);
            const size_t at = size_t(row0 + r) * p.ld_out + col;
            if (p.out_f32) p.out_f32[at] = y;
            else p.out_bf16[at] = __float2bfloat16(y);
          } else {
            p.out_bf16[size_t(row0 + r) * N_out + col] =
                __float2bfloat16(p.row_weight[row0 + r] * acc[i][j][c]);
          }
        }
  }
}

template <class T, bool kGated>
__global__ void __launch_bounds__(T::kThreads) fp8_moe_grouped_gemm_kernel(Fp8GroupedGemmParams p) {
  fp8_gemm_body<T, kGated>(p);
}

// The dense FP8 linear (p.dense = 1).
template <class T>
__global__ void __launch_bounds__(T::kThreads) fp8_linear_kernel(Fp8GroupedGemmParams p) {
  fp8_gemm_body<T, false>(p);
}

}  // namespace moeopt::cuda::kernels
