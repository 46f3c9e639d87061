// FP8 (W8A8, 128x128 block scales) grouped GEMM on sm_90a: wgmma e4m3 + TMA, warp-specialised,
// persistent. The contract is fp8_moe_gemm.cuh's (Fp8GroupedGemmParams, moe_params.cuh): the
// same three modes, GEMM 1 (gated, f32 SiLU·up out), GEMM 2 (row-weighted bf16 out) and the
// dense linear (p.dense: bias, bf16 or f32 out with row stride ld_out), the same numbers
//   y[r, n] = sum_g (s_x[r, g] * w_s[n/128, g]) * (sum_{k in g} x_q[r, k] * w_q[n, k]),
// so the mma.sync kernel and this one are interchangeable tiles of one op (moe_heuristics.h).
//
// Structure: moe_wgmma_gemm.cuh's (read that header first), with one 128-wide K group per
// pipeline stage: a 128-byte swizzled row is 128 e4m3 codes, so a stage is one K group of
//   A: 256 weight rows x 128 B (one 32 KiB TMA copy, gate/up interleaved for GEMM 1 by the
//      same 5-D box), B: BN token rows x 128 B (cp.async gather, 16-byte chunks),
//   scales: BN token scales of that group and 2 weight-block scales (cp.async, 4 bytes each).
// Consumers (2 warpgroups, 128 weight rows each = two m64 tiles x BN tokens) issue four
// m64nBNk32 e4m3 wgmmas per m64 tile into a partial accumulator, wait for them, release the
// stage and add partial * s_x[token] * w_s[block] into the running accumulator: the block
// scale is applied per K group inside the main loop, never to a sum over groups (the
// DeepGEMM recipe). A consumer warpgroup's 128 rows lie in one 128-row scale block (GEMM 2,
// dense: rows 128*cw of a tile starting on a multiple of 256) or, for GEMM 1, in one gate
// block and one up block (its 128 output columns start on a multiple of 128), so two scales
// per stage serve the whole tile.
//
// Registers: acc and the partial are 2 x BN/2 floats each per m64 tile pair (BN = 64: 128),
// which is why BN stops at 64 here (n128 would need 256).
//
// Epilogues: GEMM 1 writes h in f32 straight from the accumulators (8 lanes cover 32
// contiguous bytes of one row; the activation quantiser reads it next). GEMM 2 and the dense
// bf16 output go through moe_wgmma_gemm.cuh's stmatrix staging (16-byte row stores; dense:
// ld_out % 8 == 0 and a 16-byte aligned y, which the host checks before choosing this tile);
// the dense f32 output is stored straight from the accumulators.
//
// Bounds (launcher): K % 16 == 0, N_out % 8 == 0, 16-byte aligned rows (the TMA map needs
// K-byte row strides in multiples of 16). K tails are zero-filled by TMA (weights) and by
// cp.async (tokens); N tails by the tensor map's row bound; padding token rows read as zero
// codes with scale 0.
// Tests: tests/unit/cuda_moe_fp8_test.cpp (CudaMoeFp8Tiles: every tile against the CPU
// oracle), tests/unit/cuda_fp8_test.cpp (the dense linear). Bench: `moeopt bench moe --dtype
// fp8 --fp8-tiles ...`.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/moe_params.cuh"
#include "moeopt/backend/cuda/kernels/moe_wgmma_sm90.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {

template <int BN_, int STAGES_>
struct Fp8WgmmaTile {
  static constexpr int BM = 256, BN = BN_, BK = 128, STAGES = STAGES_;
  static constexpr int kThreads = 384;
  static constexpr int kABytes = BM * BK;  // 32 KiB: one TMA transaction per stage
  static constexpr int kBBytes = BN * BK;
  // Per stage: BN token scales, then the 2 weight-block scales (gate/up, or the blocks of the
  // two consumer warpgroups), padded to 16 bytes.
  static constexpr int kScaleBytes = (BN + 4) * 4;
  static constexpr int kLag = STAGES - 2;
  static constexpr int kStageOutBytes = BN * 128;  // bf16 staging [BN tokens][64 columns]
  static constexpr int out_cols(bool gated) { return gated ? BM / 2 : BM; }
  static constexpr int kSmemBytes = 1024 + STAGES * (kABytes + kBBytes + kScaleBytes) +
                                    2 * kStageOutBytes + 2 * STAGES * 8;
  static_assert(BN == 16 || BN == 32 || BN == 64, "e4m3 wgmma n: 16, 32 or 64 token rows");
  static_assert(kBBytes % 1024 == 0, "token tiles must keep 1024-byte swizzle atoms aligned");
  static_assert(STAGES >= 3, "kLag >= 1 needs at least three stages");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block on sm_90");
};

template <class T, bool kGated>
__device__ __forceinline__ void fp8_wgmma_body(const CUtensorMap& wmap,
                                               const Fp8GroupedGemmParams& p, int tma_mode) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int BM = T::BM, BN = T::BN, STAGES = T::STAGES;
  constexpr int kCols = T::out_cols(kGated);  // output columns per work item
  constexpr int kAcc = BN / 2;                // f32 accumulators per m64 tile per thread
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  const uint32_t a_s0 = base;
  const uint32_t b_s0 = a_s0 + STAGES * T::kABytes;
  const uint32_t out_u0 = b_s0 + STAGES * T::kBBytes;
  unsigned char* out_s0 = smem_raw + (out_u0 - raw);
  const uint32_t sc_u0 = out_u0 + 2 * T::kStageOutBytes;
  const float* sc_s0 = reinterpret_cast<const float*>(smem_raw + (sc_u0 - raw));
  const uint32_t full0 = sc_u0 + STAGES * T::kScaleBytes;
  const uint32_t empty0 = full0 + STAGES * 8;

  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full0 + s * 8, 128 + 1);
      mbar_init(empty0 + s * 8, 8);
    }
    mbar_init_fence();
    tma_prefetch_desc(&wmap);
  }
  __syncthreads();

  // PDL: the tile table and the quantised tokens come from the previous kernels.
  griddep_wait();
  griddep_launch_dependents();

  const int K = p.K, N_out = p.N_out, KB = (K + 127) / 128;
  const int NB = (N_out + 127) / 128;  // 128-row weight blocks of one matrix half
  const int nblk = (N_out + kCols - 1) / kCols;
  const int tiles = p.dense ? (p.num_rows + BN - 1) / BN : __ldcg(p.num_tiles);
  const int total = tiles * nblk;
  const int wg = tid / 128;
  // Tile t of the work list: its expert, first permuted row and row count.
  auto tile_of = [&](int t, int& e, int& row0, int& rows) {
    if (p.dense) {
      e = 0;
      row0 = t * BN;
      rows = min(BN, p.num_rows - row0);
    } else {
      e = __ldcg(p.tile_expert + t);
      row0 = __ldcg(p.tile_row_begin + t);
      rows = min(BN, min(__ldcg(p.expert_offsets + e + 1), p.num_rows) - row0);
    }
  };

  if (wg == 0) {
    // ------------------------------------------------------------ producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kWgmmaProducerRegs));
    const int chunk = tid % 8;  // 16-byte chunk of the 128-byte k slice
    const int rbase = tid / 8;  // rows rbase + 16*i
    constexpr int kRowsPerThread = BN / 16;
    auto source_row = [&](int r, int row0, int rows) -> int {
      if (r >= rows) return -1;
      if constexpr (kGated) {
        const int t = __ldcg(p.row_to_token + row0 + r);
        return t >= 0 && t < p.num_tokens ? t : -1;
      } else {
        return row0 + r;
      }
    };
    int it = 0;
    for (int w = blockIdx.x; w < total; w += gridDim.x) {
      const int tile = w / nblk, nb = w % nblk;
      int e, row0, rows;
      tile_of(tile, e, row0, rows);
      const int col0 = nb * kCols;
      int src_row[kRowsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) src_row[i] = source_row(rbase + 16 * i, row0, rows);
      // Scale sources of this item: thread tid < BN the token row tid's group scales, threads
      // BN and BN + 1 the two weight blocks' (GEMM 1: gate and up block of columns col0..;
      // else the blocks of rows col0 and col0 + 128, the second past N_out for a tail).
      const float* s_src = nullptr;
      if (tid < BN) {
        const int sr = source_row(tid, row0, rows);
        if (sr >= 0) s_src = p.act_scale + size_t(sr) * KB;
      } else if (tid < BN + 2) {
        const int j = tid - BN;
        if constexpr (kGated) {
          s_src = p.weight_scale + (size_t(e) * 2 * NB + size_t(j) * NB + col0 / 128) * KB;
        } else {
          const int blk = col0 / 128 + j;
          if (blk < NB) s_src = p.weight_scale + (size_t(e) * NB + blk) * KB;
        }
      }
      for (int kt = 0; kt < KB; ++kt, ++it) {
        const int s = it % STAGES;
        mbar_wait(empty0 + s * 8, ((it / STAGES) & 1) ^ 1);
        const uint32_t full = full0 + s * 8;
        const uint32_t a_s = a_s0 + s * T::kABytes;
        const int k0 = kt * T::BK;
        if (tid == 0) {
          if constexpr (kGated) {
            if (tma_mode == 0) {
              mbar_arrive_expect_tx(full, T::kABytes);
              tma_load_5d(a_s, &wmap, full, k0, 0, 0, col0 / 8, e);
            } else {
              // BM/8 boxes of 8 rows, gate/up alternating; boxes wholly past N_out skipped
              // (their rows only feed columns that are never stored).
              int boxes = 0;
              for (int j = 0; j < BM / 8; ++j) boxes += col0 + (j / 2) * 8 < N_out ? 1 : 0;
              mbar_arrive_expect_tx(full, boxes * 1024);
              for (int j = 0; j < BM / 8; ++j) {
                const int c = col0 + (j / 2) * 8;
                if (c >= N_out) continue;
                tma_load_2d(a_s + j * 1024, &wmap, full, k0,
                            e * 2 * N_out + ((j & 1) ? N_out : 0) + c);
              }
            }
          } else {
            mbar_arrive_expect_tx(full, T::kABytes);
            tma_load_3d(a_s, &wmap, full, k0, col0, e);
          }
        }
        const uint32_t b_s = b_s0 + s * T::kBBytes;
        const bool k_ok = k0 + chunk * 16 < K;
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
          const int r = rbase + 16 * i;
          const bool ok = k_ok && src_row[i] >= 0;
          const unsigned char* src =
              ok ? p.act_q + size_t(src_row[i]) * p.ld_act + k0 + chunk * 16 : p.act_q;
          cp_async_16(b_s + r * 128 + ((chunk ^ (r & 7)) * 16), src, ok);
        }
        if (tid < BN + 2) {
          const bool ok = s_src != nullptr;
          asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(
                           sc_u0 + s * T::kScaleBytes + tid * 4),
                       "l"(ok ? s_src + kt : p.act_scale), "r"(ok ? 4 : 0));
        }
        cp_async_commit();
        if (it >= T::kLag) {
          cp_async_wait<T::kLag>();
          fence_proxy_async_smem();
          mbar_arrive(full0 + ((it - T::kLag) % STAGES) * 8);
        }
      }
    }
    cp_async_wait<0>();
    fence_proxy_async_smem();
    for (int j = it - T::kLag < 0 ? 0 : it - T::kLag; j < it; ++j)
      mbar_arrive(full0 + (j % STAGES) * 8);
  } else {
    // ------------------------------------------------------------ consumers
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kWgmmaConsumerRegs));
    const int cw = wg - 1;  // weight rows [128*cw, 128*cw + 128): two m64 tiles
    const int wtid = tid % 128;
    const int warp = wtid / 32;
    const int lane = tid % 32;
    const int g = lane / 4, q2 = (lane % 4) * 2;
    unsigned char* out_s = out_s0 + cw * T::kStageOutBytes;
    const uint32_t out_s_u32 = out_u0 + cw * T::kStageOutBytes;
    float acc[2][kAcc], part[2][kAcc];
    int it = 0;
    for (int w = blockIdx.x; w < total; w += gridDim.x) {
      const int tile = w / nblk, nb = w % nblk;
      int e, row0, rows;
      tile_of(tile, e, row0, rows);
      const int col0 = nb * kCols;
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int i = 0; i < kAcc; ++i) acc[j][i] = 0.f;

      for (int kt = 0; kt < KB; ++kt, ++it) {
        const int s = it % STAGES;
        mbar_wait(full0 + s * 8, (it / STAGES) & 1);
        const uint32_t a_s = a_s0 + s * T::kABytes + cw * 128 * 128;
        const uint32_t b_s = b_s0 + s * T::kBBytes;
        wgmma_fence_operands(part[0]);
        wgmma_fence_operands(part[1]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < T::BK / 32; ++kk) {
          const uint64_t db = wgmma_desc_sw128(b_s + kk * 32);
#pragma unroll
          for (int j = 0; j < 2; ++j)
            wgmma_e4m3<BN>(part[j], wgmma_desc_sw128(a_s + j * 64 * 128 + kk * 32), db,
                           kk > 0 ? 1 : 0);
        }
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operands(part[0]);
        wgmma_fence_operands(part[1]);
        // This group's scales: accumulator (j, i) is weight row 16*warp + g (+8 for i%4 >= 2)
        // of m64 tile j (GEMM 1: gate for i%4 < 2, up for i%4 >= 2) and token
        // (i/4)*8 + q2 + (i&1).
        const float* sc = sc_s0 + s * (T::kScaleBytes / 4);
        const float w_lo = kGated ? sc[BN] : sc[BN + cw];
        const float w_hi = kGated ? sc[BN + 1] : w_lo;
        float2 ts[BN / 8];
#pragma unroll
        for (int q = 0; q < BN / 8; ++q) ts[q] = *reinterpret_cast<const float2*>(sc + q * 8 + q2);
        __syncwarp();
        if (lane == 0) mbar_arrive(empty0 + s * 8);
#pragma unroll
        for (int q = 0; q < BN / 8; ++q)
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            acc[j][q * 4 + 0] = fmaf(part[j][q * 4 + 0], ts[q].x * w_lo, acc[j][q * 4 + 0]);
            acc[j][q * 4 + 1] = fmaf(part[j][q * 4 + 1], ts[q].y * w_lo, acc[j][q * 4 + 1]);
            acc[j][q * 4 + 2] = fmaf(part[j][q * 4 + 2], ts[q].x * w_hi, acc[j][q * 4 + 2]);
            acc[j][q * 4 + 3] = fmaf(part[j][q * 4 + 3], ts[q].y * w_hi, acc[j][q * 4 + 3]);
          }
      }

      // ---------------------------------------------------------- epilogue
      if constexpr (kGated) {
        // h[row0 + tk, col] = silu(gate) * up: smem weight row 128*cw + 64*j + 16*warp + g
        // is gate column col0 + 64*cw + 32*j + 8*warp + g, its up row 8 further.
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int col = col0 + 64 * cw + 32 * j + 8 * warp + g;
#pragma unroll
          for (int q = 0; q < BN / 8; ++q)
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              const int tk = q * 8 + q2 + c;
              if (tk < rows && col < N_out) {
                const float gate = acc[j][q * 4 + c], up = acc[j][q * 4 + 2 + c];
                p.out_f32[size_t(row0 + tk) * N_out + col] = gate / (1.f + __expf(-gate)) * up;
              }
            }
        }
      } else if (p.dense && p.out_f32 != nullptr) {
        // Dense f32 y: accumulator (j, i) is column col0 + 128*cw + 64*j + 16*warp + g (+8).
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) {
            const int col = col0 + 128 * cw + 64 * j + 16 * warp + g + 8 * hi;
            if (col >= N_out) continue;
            const float b = p.bias ? __bfloat162float(p.bias[col]) : 0.f;
#pragma unroll
            for (int q = 0; q < BN / 8; ++q)
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                const int tk = q * 8 + q2 + c;
                if (tk < rows) p.out_f32[size_t(row0 + tk) * p.ld_out + col] = acc[j][q * 4 + hi * 2 + c] + b;
              }
          }
      } else {
        // bf16 y through the staging tile, in two passes of 64 columns (moe_wgmma_gemm.cuh's
        // epilogue): GEMM 2 scales by the row's routing weight, the dense mode adds the bias.
        const size_t ld = p.dense ? size_t(p.ld_out) : size_t(N_out);
#pragma unroll
        for (int pass = 0; pass < 2; ++pass) {
          float bias2[2] = {0.f, 0.f};
          if (p.dense && p.bias != nullptr)
#pragma unroll
            for (int sub = 0; sub < 2; ++sub) {
              const int col = col0 + 128 * cw + 64 * pass + 16 * warp + g + 8 * sub;
              bias2[sub] = col < N_out ? __bfloat162float(p.bias[col]) : 0.f;
            }
          named_bar_sync(1 + cw, 128);  // the previous staging reads are done
#pragma unroll
          for (int q0 = 0; q0 < BN / 8; q0 += 2) {
            uint32_t r[4];
#pragma unroll
            for (int m = 0; m < 4; ++m) {
              const int q = q0 + m / 2, sub = m % 2;
              const int tk = q * 8 + q2;
              float s0 = 1.f, s1 = 1.f;
              if (!p.dense) {
                s0 = tk < rows ? __ldg(p.row_weight + row0 + tk) : 0.f;
                s1 = tk + 1 < rows ? __ldg(p.row_weight + row0 + tk + 1) : 0.f;
              }
              r[m] = pack_bf16x2(acc[pass][q * 4 + sub * 2 + 0] * s0 + bias2[sub],
                                 acc[pass][q * 4 + sub * 2 + 1] * s1 + bias2[sub]);
            }
            const int mi = lane / 8, ri = lane % 8;
            const int tk = (q0 + mi / 2) * 8 + ri;
            const int ch = 2 * warp + (mi % 2);
            stmatrix_x4_trans(out_s_u32 + tk * 128 + ((ch ^ ri) * 16), r[0], r[1], r[2], r[3]);
          }
          named_bar_sync(1 + cw, 128);
          const int colbase = col0 + 128 * cw + 64 * pass;
#pragma unroll 4
          for (int idx = wtid; idx < BN * 8; idx += 128) {
            const int tk = idx / 8, ch = idx % 8;
            const int col = colbase + ch * 8;
            if (tk < rows && col < N_out) {
              const uint4 v =
                  *reinterpret_cast<const uint4*>(out_s + tk * 128 + ((ch ^ (tk & 7)) * 16));
              *reinterpret_cast<uint4*>(p.out_bf16 + size_t(row0 + tk) * ld + col) = v;
            }
          }
        }
      }
    }
  }
#endif
}

template <class T, bool kGated>
__global__ void __launch_bounds__(384, 1)
    fp8_moe_wgmma_gemm_kernel(const __grid_constant__ CUtensorMap wmap, Fp8GroupedGemmParams p,
                              int tma_mode) {
  fp8_wgmma_body<T, kGated>(wmap, p, tma_mode);
}

// The dense FP8 linear (p.dense = 1) on the same body, under its own name for profiles.
template <class T>
__global__ void __launch_bounds__(384, 1)
    fp8_linear_wgmma_kernel(const __grid_constant__ CUtensorMap wmap, Fp8GroupedGemmParams p,
                            int tma_mode) {
  fp8_wgmma_body<T, false>(wmap, p, tma_mode);
}

}  // namespace moeopt::cuda::kernels
