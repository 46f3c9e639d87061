// Grouped GEMM for the MoE experts at prefill sizes on sm_90a: wgmma + TMA, warp-specialised,
// persistent. Same contract as moe_grouped_gemm.cuh (GroupedGemmParams in moe_params.cuh):
//   GEMM 1 (kGated):    out[r, n] = silu(x[src(r)] . W13[e, n]) * (x[src(r)] . W13[e, I + n])
//   GEMM 2 (!kGated):   out[r, n] = row_weight[r] * (h[r] . W2[e, n])
// for the permuted rows r of each tile of the tile table; rows past the expert's end are not
// written, padding tokens (-1) read as zero rows.
//
// Roles ("swap AB", as in the mma.sync kernel): the weight tile is wgmma's A operand (BM = 256
// weight rows: 128 per consumer warpgroup, two m64 tiles each) and the token rows are its N
// dimension (BN = 64 or 128). 256 x 128 x 64 moves 48 KiB from L2 per 4.2 MFLOP; 128 x 128
// tiles (64 FLOP per byte) measured L2-bound at ~36% of the tensor peak.
//
// Block = 3 warpgroups (384 threads), one CTA per SM looping over work items
// w = blockIdx.x, blockIdx.x + gridDim.x, ... (item = token tile * weight blocks + block):
//   warpgroup 0, producer: thread 0 loads the weight tile of each k step with one TMA copy
//     (128B swizzle, out-of-range rows and the K tail zero-filled by the tensor map's bounds);
//     all 128 threads gather the BN token rows with 16-byte cp.async into the same swizzled
//     layout (zero-fill for padding rows, rows past the tile and the K tail). A thread
//     signals a stage's "full" barrier only once its copies of that stage landed
//     (cp.async.wait_group lagging kLag stages behind, then fence.proxy.async so the tensor
//     cores see the generic-proxy writes), so kLag+1 stages of copies stay in flight.
//   warpgroups 1, 2, consumers: each issues m64nBNk16 wgmmas over its 128 weight rows and all
//     BN tokens (accumulators in registers), releases a stage ("empty" barrier, one arrival
//     per warp) once the wgmmas that read it retired, and runs the epilogue.
//   setmaxnreg moves registers from the producer (88) to the consumers (208).
// Pipeline: STAGES slots of (A 256x64, B BNx64) bf16; full[s] expects 128 producer arrivals +
// 1 expect_tx arrival (TMA bytes), empty[s] 8 consumer-warp arrivals. Deadlock-free for
// kLag <= STAGES - 2 (a consumer releases a stage one k step late).
//
// GEMM 1 pairs gate and up rows inside one m64 half so SiLU(gate)*up happens in registers:
// smem weight row r (0..255) holds  (r/8 odd ? up : gate) row  col0 + (r/16)*8 + r%8,  so in
// the wgmma accumulator layout (warp w of an m64 tile owns rows 16w + lane/4 (+8)) every
// thread holds the gate value (c = 0, 1) and the up value (c = 2, 3) of the same column.
// One 5-D TMA box {64 k, 8 rows, gate/up, 16 groups, 1 expert} writes exactly that order;
// the 2-D fallback (tma_mode 1) issues 32 boxes of 8 rows.
//
// Epilogue, per consumer warpgroup (no cross-warpgroup sync): registers -> bf16x2 ->
// stmatrix.trans (each 8 weight rows x 8 tokens fragment becomes 8 token rows of 16 bytes)
// into its swizzled staging tile [BN tokens][64 columns] -> 16-byte coalesced global stores
// with row and column bounds (N_out % 8 == 0, so a 16-byte chunk is all in or all out);
// GEMM 2 in two passes of 64 columns.
//
// Measured (H100, Qwen3-30B-A3B, M = 8192, ncu): GEMM 1 850 us (tensor pipe 57% active),
// GEMM 2 521 us (46%). Open: L2 traffic (6.1 GB for GEMM 1), the epilogue not overlapped
// with the next item's MMAs, no TMA multicast across the token tiles of one expert.
//
// Requirements (checked by the launcher): K % 8 == 0, N_out % 8 == 0, 16-byte aligned rows.
// Tests: tests/unit/cuda_moe_test.cpp (CudaMoeExperts.*). Bench: bench/moe_layer.py.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/moe_params.cuh"
#include "moeopt/backend/cuda/kernels/moe_wgmma_sm90.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {

template <int BN_, int STAGES_>
struct WgmmaTile {
  static constexpr int BM = 256, BN = BN_, BK = 64, STAGES = STAGES_;
  static constexpr int kThreads = 384;
  static constexpr int kABytes = BM * BK * 2;  // 32 KiB: one TMA transaction per stage
  static constexpr int kBBytes = BN * BK * 2;
  static constexpr int kLag = STAGES - 2;
  // Epilogue staging per consumer warpgroup: [BN tokens][64 columns] bf16 (128-byte rows).
  static constexpr int kStageOutBytes = BN * 128;
  static constexpr int out_cols(bool gated) { return gated ? BM / 2 : BM; }
  // 1 KiB of slack to align the dynamic shared memory to 1024 (128B swizzle atoms).
  static constexpr int kSmemBytes =
      1024 + STAGES * (kABytes + kBBytes) + 2 * kStageOutBytes + 2 * STAGES * 8;
  static_assert(BN == 64 || BN == 128, "wgmma n: 64 or 128 token rows");
  static_assert(STAGES >= 3, "kLag >= 1 needs at least three stages");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block on sm_90");
};

template <class T, bool kGated>
__global__ void __launch_bounds__(384, 1)
    moe_wgmma_gemm_kernel(const __grid_constant__ CUtensorMap wmap, GroupedGemmParams p,
                          int tma_mode) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int BM = T::BM, BN = T::BN, STAGES = T::STAGES;
  constexpr int kCols = T::out_cols(kGated);  // output columns per work item
  constexpr int kAcc = BN / 2;                // f32 accumulators per m64 tile per thread
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  const uint32_t a_s0 = base;
  const uint32_t b_s0 = base + STAGES * T::kABytes;
  unsigned char* out_s0 = smem_raw + (base - raw) + STAGES * (T::kABytes + T::kBBytes);
  const uint32_t full0 = base + STAGES * (T::kABytes + T::kBBytes) + 2 * T::kStageOutBytes;
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

  // PDL: the tile table (GEMM 1) and h (GEMM 2) come from the previous kernels.
  griddep_wait();
  griddep_launch_dependents();

  const int K = p.K, N_out = p.N_out;
  const int nblk = (N_out + kCols - 1) / kCols;
  const int total = __ldcg(p.num_tiles) * nblk;
  const int num_k_tiles = (K + T::BK - 1) / T::BK;
  const int wg = tid / 128;

  if (wg == 0) {
    // ------------------------------------------------------------ producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kWgmmaProducerRegs));
    const int chunk = tid % 8;        // 16-byte chunk of the 64-wide k slice
    const int rbase = tid / 8;        // rows rbase + 16*i
    constexpr int kRowsPerThread = BN / 16;
    int it = 0;
    for (int w = blockIdx.x; w < total; w += gridDim.x) {
      const int tile = w / nblk, nb = w % nblk;
      const int e = __ldcg(p.tile_expert + tile);
      const int row0 = __ldcg(p.tile_row_begin + tile);
      const int rows = min(BN, min(__ldcg(p.expert_offsets + e + 1), p.num_rows) - row0);
      const int col0 = nb * kCols;
      // Source row (of act) per tile row, -1 = zero row.
      int src_row[kRowsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int r = rbase + 16 * i;
        src_row[i] = -1;
        if (r < rows) {
          if constexpr (kGated) {
            const int t = __ldcg(p.row_to_token + row0 + r);
            if (t >= 0 && t < p.num_tokens) src_row[i] = t;
          } else {
            src_row[i] = row0 + r;
          }
        }
      }
      for (int kt = 0; kt < num_k_tiles; ++kt, ++it) {
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
              // BM/8 boxes of 8 rows, gate/up alternating. Boxes wholly past N_out are
              // skipped (their smem rows only feed columns that are never stored).
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
        const bool k_ok = k0 + chunk * 8 < K;
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
          const int r = rbase + 16 * i;
          const bool ok = k_ok && src_row[i] >= 0;
          const __nv_bfloat16* src =
              ok ? p.act + size_t(src_row[i]) * K + k0 + chunk * 8 : p.act;
          cp_async_16(b_s + r * 128 + ((chunk ^ (r & 7)) * 16), src, ok);
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
    const int cw = wg - 1;            // weight rows [128*cw, 128*cw + 128): two m64 tiles
    const int wtid = tid % 128;
    const int warp = wtid / 32;
    const int lane = tid % 32;
    const int q2 = (lane % 4) * 2;  // g = lane / 4 in the comments below
    unsigned char* out_s = out_s0 + cw * T::kStageOutBytes;
    const uint32_t out_s_u32 = smem_u32(out_s);
    float acc[2][kAcc];
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int i = 0; i < kAcc; ++i) acc[j][i] = 0.f;
    int it = 0;
    for (int w = blockIdx.x; w < total; w += gridDim.x) {
      const int tile = w / nblk, nb = w % nblk;
      const int e = __ldcg(p.tile_expert + tile);
      const int row0 = __ldcg(p.tile_row_begin + tile);
      const int rows = min(BN, min(__ldcg(p.expert_offsets + e + 1), p.num_rows) - row0);
      const int col0 = nb * kCols;

      for (int kt = 0; kt < num_k_tiles; ++kt, ++it) {
        const int s = it % STAGES;
        mbar_wait(full0 + s * 8, (it / STAGES) & 1);
        const uint32_t a_s = a_s0 + s * T::kABytes + cw * 128 * 128;
        const uint32_t b_s = b_s0 + s * T::kBBytes;
        wgmma_fence_operands(acc[0]);
        wgmma_fence_operands(acc[1]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < T::BK / 16; ++kk) {
          const uint64_t db = wgmma_desc_sw128(b_s + kk * 32);
          const int scale_d = (kt > 0 || kk > 0) ? 1 : 0;
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const uint64_t da = wgmma_desc_sw128(a_s + j * 64 * 128 + kk * 32);
            if constexpr (BN == 128) {
              wgmma_m64n128k16(acc[j], da, db, scale_d);
            } else {
              wgmma_m64n64k16(acc[j], da, db, scale_d);
            }
          }
        }
        wgmma_commit();
        wgmma_fence_operands(acc[0]);
        wgmma_fence_operands(acc[1]);
        if (kt > 0) {
          wgmma_wait<1>();  // the previous k step's wgmmas retired: release its stage
          if (lane == 0) mbar_arrive(empty0 + ((it - 1) % STAGES) * 8);
        }
      }
      wgmma_wait<0>();
      wgmma_fence_operands(acc[0]);
      wgmma_fence_operands(acc[1]);
      if (lane == 0) mbar_arrive(empty0 + ((it - 1) % STAGES) * 8);

      // ---------------------------------------------------------- epilogue
      // Per warpgroup, in passes of 64 output columns through its own staging tile
      // [BN][64] (chunk c of token row tk at c ^ (tk % 8)), guarded by named barrier 1 + cw.
      // Accumulator acc[j][i]: n8 chunk q = i/4, token q*8 + q2 + (i & 1), weight row
      // 128*cw + 64*j + 16*warp + g + 8*((i/2) & 1) of the tile.
      constexpr int kPasses = kGated ? 1 : 2;
#pragma unroll
      for (int pass = 0; pass < kPasses; ++pass) {
        named_bar_sync(1 + cw, 128);  // the previous pass's staging reads are done
        // stmatrix.trans: the 8x8 fragment (8 weight rows x 8 tokens) of an n8 chunk lands
        // as 8 token rows of 16 bytes (8 consecutive output columns). Matrix m of an x4:
        // chunk q = q0 + m/2 and sub = m%2 (gated: the m64 tile j; GEMM 2: the 8-row half).
#pragma unroll
        for (int q0 = 0; q0 < BN / 8; q0 += 2) {
          uint32_t r[4];
#pragma unroll
          for (int m = 0; m < 4; ++m) {
            const int q = q0 + m / 2, sub = m % 2;
            if constexpr (kGated) {
              const float g0 = acc[sub][q * 4 + 0], g1 = acc[sub][q * 4 + 1];
              const float h0 = g0 / (1.f + __expf(-g0)) * acc[sub][q * 4 + 2];
              const float h1 = g1 / (1.f + __expf(-g1)) * acc[sub][q * 4 + 3];
              r[m] = pack_bf16x2(h0, h1);
            } else {
              const int tk = q * 8 + q2;
              const float rw0 = tk < rows ? __ldg(p.row_weight + row0 + tk) : 0.f;
              const float rw1 = tk + 1 < rows ? __ldg(p.row_weight + row0 + tk + 1) : 0.f;
              r[m] = pack_bf16x2(acc[pass][q * 4 + sub * 2 + 0] * rw0,
                                 acc[pass][q * 4 + sub * 2 + 1] * rw1);
            }
          }
          const int mi = lane / 8, ri = lane % 8;  // the row this lane addresses
          const int tk = (q0 + mi / 2) * 8 + ri;
          const int ch = kGated ? 4 * (mi % 2) + warp : 2 * warp + (mi % 2);
          stmatrix_x4_trans(out_s_u32 + tk * 128 + ((ch ^ ri) * 16), r[0], r[1], r[2], r[3]);
        }
        named_bar_sync(1 + cw, 128);
        const int colbase = kGated ? col0 + 64 * cw : col0 + 128 * cw + 64 * pass;
#pragma unroll 4
        for (int idx = wtid; idx < BN * 8; idx += 128) {
          const int tk = idx / 8, ch = idx % 8;
          const int col = colbase + ch * 8;
          if (tk < rows && col < N_out) {
            const uint4 v =
                *reinterpret_cast<const uint4*>(out_s + tk * 128 + ((ch ^ (tk & 7)) * 16));
            *reinterpret_cast<uint4*>(p.out + size_t(row0 + tk) * N_out + col) = v;
          }
        }
      }
    }
  }
#endif
}

}  // namespace moeopt::cuda::kernels
