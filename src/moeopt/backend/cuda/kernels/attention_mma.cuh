// Paged attention on tensor cores (mma.sync m16n8k16 bf16, fp32 accumulate), head_dim 64 or
// 128: FlashAttention-2 style tiles of rows x keys with an online softmax, K/V tiles gathered
// from the pages, and split-KV across CTAs (attention_params.cuh explains the splits).
//
// Rows. One CTA works on one kv head g of one sequence s: its rows are the (query token i,
// group head hh) pairs, row r = i * group + hh, q head g * group + hh. So the group heads of a
// token share every K/V tile (GQA), and a decode step (one token) fills group rows of a
// 16-row MMA tile. grid = (S * tiles_per_seq, Hkv, num_splits); CTAs whose tile starts past
// the sequence's rows, or whose split sees no key of the tile, exit at once, so a grid sized
// for upper bounds (CUDA-graph replays) stays correct.
//
// Warps. kWarpsM x kWarpsN warps: warp (wm, wn) owns rows [16 wm, 16 wm + 16) of the tile and
// keys [kKeysPerWarp wn, kKeysPerWarp (wn + 1)) of every key tile, with its own running max,
// sum and output accumulator; the epilogue merges the kWarpsN states of a row through shared
// memory. Prefill uses 4 x 1 (64 rows, 64 keys a tile), decode 1 x 4 (16 rows, 128 keys).
//
// Keys. Row r at position p = context_len - n_new + i sees keys j with lo <= j <= p, lo =
// p - W + 1 for a sliding window W (else 0), restricted to the CTA's split chunk. The CTA
// walks key tiles from its first visible key to one past its last; only keys inside that range
// are loaded (others, and keys whose page id is out of range, are zero-filled), and the mask
// is applied per row in registers. Scores are scaled by scale * log2(e) and exponentiated
// with exp2f.
//
// Shared memory (dynamic): Q [BM][D], K [BN][D], V [BN][D] bf16 with the 16-byte chunk index
// XOR-swizzled by (row % 8) so ldmatrix reads 8 rows without bank conflicts; the epilogue
// reuses that space for the fp32 accumulators [kWarpsN][BM][D + 8], followed by (max, sum)
// pairs [kWarpsN][BM]. Pipeline (bf16): V of tile n loads while Q K^T of tile n runs, K of
// tile n + 1 loads while P V of tile n runs (cp.async, one group in flight). A decode step is
// bound by that latency, not by the MMAs: the decode configs ask for 3 CTAs per SM
// (__launch_bounds__ minimum blocks) so that more tiles are in flight per SM.
//
// FP8 caches (kernel template F8 = true): K and V tiles arrive as e4m3 codes by cp.async in
// staging buffers [BN][D] bytes (plus the tile's per-key scales [BN] f32 each), and each
// thread converts the 16-byte chunks it loaded itself into the bf16 tiles above (exact:
// e4m3 fits bf16), so the MMAs are the bf16 ones. The scales are applied per key column:
// scores are (q . code_k) * s_k, and the softmax weights P (summed unscaled into l) are
// multiplied by s_v before P V. The conversion sits between the wait for a tile and the
// barrier that publishes it, and it frees the staging buffer at once (each thread converts
// only what it copied), so the next tile's codes are issued right after it: K codes of tile
// n + 1 load during Q K^T and P V of tile n, V codes of n + 1 during P V of n and Q K^T of
// n + 1 (two groups in flight). The converting thread also copies its rows' scales from the
// staging slots into the current-tile scales [2][BN] f32, which the next copy may not touch.
//
// Bounds: D in {64, 128}; q, out, caches 16-byte aligned with row strides multiples of 8
// elements (the host checks); T * Hq and the cache's slot count below 2^31.
#pragma once

#include <cuda_bf16.h>
#include <math_constants.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/attention_common.cuh"
#include "moeopt/backend/cuda/kernels/attention_params.cuh"
#include "moeopt/backend/cuda/kernels/fp8_codes.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {

template <int D, int WM, int WN, int BNW, int MIN_BLOCKS = 1>
struct AttnMmaConfig {
  static constexpr int kMinBlocks = MIN_BLOCKS;  // __launch_bounds__ CTAs per SM
  static constexpr int kD = D;
  static constexpr int kWarpsM = WM;
  static constexpr int kWarpsN = WN;
  static constexpr int kKeysPerWarp = BNW;
  static constexpr int BM = 16 * WM;    // rows per CTA tile
  static constexpr int BN = BNW * WN;   // keys per CTA tile
  static constexpr int kThreads = 32 * WM * WN;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr int kOStride = D + 8;  // fp32 epilogue row stride (bank spread)
  static constexpr int kKvLoads = BN * kChunks / kThreads;  // chunks per thread per K tile
  static constexpr size_t kQBytes = size_t(BM) * D * 2;
  static constexpr size_t kKvBytes = size_t(BN) * D * 2;
  static constexpr size_t kTileBytes = kQBytes + 2 * kKvBytes;
  static constexpr size_t kOBytes = size_t(WN) * BM * kOStride * 4;
  static constexpr size_t kMlOffset = kTileBytes > kOBytes ? kTileBytes : kOBytes;
  static constexpr size_t kSmemBytes = kMlOffset + size_t(WN) * BM * 2 * 4;
  // FP8 staging after everything else: e4m3 K and V tiles, then their scales.
  static constexpr int kChunks8 = D / 16;  // 16-byte chunks per e4m3 row
  static constexpr int kKvLoads8 = BN * kChunks8 / kThreads;
  static constexpr size_t kStage8Bytes = size_t(BN) * D;
  // staging codes [2][BN][D] B, staged scales [2][BN] f32, current-tile scales [2][BN] f32
  static constexpr size_t kSmemBytesF8 = kSmemBytes + 2 * kStage8Bytes + 4 * size_t(BN) * 4;
  static_assert(D == 64 || D == 128, "tensor-core attention takes head_dim 64 or 128");
  static_assert(BNW % 16 == 0, "keys per warp: whole k16 steps of P V");
  static_assert(kThreads % kChunks == 0 && (BN * kChunks) % kThreads == 0,
                "each thread loads a fixed chunk column of whole key rows");
  static_assert(kThreads % kChunks8 == 0 && (BN * kChunks8) % kThreads == 0,
                "fp8: each thread loads a fixed chunk column of whole key rows");
};

using AttnPrefill64 = AttnMmaConfig<64, 4, 1, 64>;
using AttnPrefill128 = AttnMmaConfig<128, 4, 1, 64>;
using AttnDecode64 = AttnMmaConfig<64, 1, 4, 32, 3>;
using AttnDecode128 = AttnMmaConfig<128, 1, 4, 32, 3>;
static_assert(AttnPrefill128::BM == kAttnPrefillRows && AttnPrefill128::BN == kAttnPrefillKeys &&
              AttnPrefill64::BM == kAttnPrefillRows && AttnPrefill64::BN == kAttnPrefillKeys);
static_assert(AttnDecode128::BM == kAttnDecodeRows && AttnDecode128::BN == kAttnDecodeKeys &&
              AttnDecode64::BM == kAttnDecodeRows && AttnDecode64::BN == kAttnDecodeKeys);
static_assert(AttnPrefill128::kThreads == kAttnMmaThreads &&
              AttnDecode128::kThreads == kAttnMmaThreads);

// Byte offset of chunk c of row r in a swizzled [rows][D] bf16 tile.
template <int D>
__device__ __forceinline__ uint32_t attn_swz(int r, int c) {
  return uint32_t(r * D * 2 + ((c ^ (r & 7)) << 4));
}

// 4-byte global -> shared copy (zero-filled when !valid), for the fp8 tiles' scales.
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}

template <class C, bool F8>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks)
    paged_attention_mma_kernel(PagedAttentionParams p) {
  constexpr int D = C::kD, BM = C::BM, BN = C::BN, BNW = C::kKeysPerWarp;
  constexpr int NT = C::kThreads, DC = C::kChunks, WN = C::kWarpsN, OS = C::kOStride;
  constexpr int kNt = BNW / 8;  // n8 score tiles per warp
  constexpr int kDt = D / 8;    // n8 output tiles per warp
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* q_s = smem;
  unsigned char* k_s = smem + C::kQBytes;
  unsigned char* v_s = k_s + C::kKvBytes;
  float* o_s = reinterpret_cast<float*>(smem);  // epilogue only: aliases Q/K/V
  float* ml_s = reinterpret_cast<float*>(smem + C::kMlOffset);
  unsigned char* k8_s = smem + C::kSmemBytes;  // fp8 only
  unsigned char* v8_s = k8_s + C::kStage8Bytes;
  float* ks_s = reinterpret_cast<float*>(v8_s + C::kStage8Bytes);
  float* vs_s = ks_s + BN;
  float* ks_cur = vs_s + BN;  // scales of the tile being computed
  float* vs_cur = ks_cur + BN;

  // Last row tiles first: under the causal mask they see the most keys, so the heavy CTAs
  // start in the first wave instead of forming the tail.
  const int seq = blockIdx.x / p.tiles_per_seq;
  const int m0 = (p.tiles_per_seq - 1 - blockIdx.x % p.tiles_per_seq) * BM;
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int q0 = p.query_start_loc[seq];
  const int n_new = p.query_start_loc[seq + 1] - q0;
  if (n_new <= 0) return;
  const int group = p.num_q_heads / p.num_kv_heads;
  const int rows = n_new * group;
  if (m0 >= rows) return;
  const int ctx = p.context_lens[seq];
  const int tid = threadIdx.x;
  const int rows_here = min(BM, rows - m0);

  if (!attn::sequence_computable(n_new, ctx, p.max_context)) {
    // Caller bug: zero rows. With splits the reduce kernel writes them.
    if (split != 0 || p.num_splits != 1) return;
    for (int idx = tid; idx < rows_here * (D / 2); idx += NT) {
      const int r = m0 + idx / (D / 2), d = (idx % (D / 2)) * 2;
      const int t = q0 + r / group, h = kvh * group + r % group;
      *reinterpret_cast<__nv_bfloat162*>(p.out + int64_t(t) * p.out_stride + int64_t(h) * D +
                                         d) = __floats2bfloat162_rn(0.f, 0.f);
    }
    return;
  }

  // Key range of this CTA: the union of its rows' visible ranges, cut to the split's chunk.
  const int first_pos = ctx - n_new + m0 / group;
  const int last_pos = ctx - n_new + (m0 + rows_here - 1) / group;
  const int tile_lo = p.sliding_window > 0 ? max(0, first_pos - p.sliding_window + 1) : 0;
  const int64_t chunk_lo = int64_t(split) * p.split_keys;
  const int jlo = int(max(int64_t(tile_lo), chunk_lo));
  const int jhi = int(min(int64_t(last_pos) + 1, chunk_lo + p.split_keys));
  if (jlo >= jhi) return;  // nothing of this tile in this split: the reduce skips it

  const int warp = tid >> 5, lane = tid & 31;
  const int wm = warp / WN, wn = warp % WN;
  const int g8 = lane >> 2, qd = lane & 3;

  // Visible key range [vlo, vhi) of this thread's two rows (g8 and g8 + 8 of the warp).
  int vlo[2], vhi[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int r = m0 + wm * 16 + g8 + rr * 8;
    if (r < rows) {
      const int pos = ctx - n_new + r / group;
      const int lo = p.sliding_window > 0 ? pos - p.sliding_window + 1 : 0;
      vlo[rr] = max(lo, jlo);
      vhi[rr] = min(pos + 1, jhi);
    } else {
      vlo[rr] = 0;  // padding row: sees nothing
      vhi[rr] = 0;
    }
  }

  // Q tile -> shared (zero rows past the sequence's rows).
  for (int idx = tid; idx < BM * DC; idx += NT) {
    const int r = idx / DC, c = idx % DC, ra = m0 + r;
    const bool valid = ra < rows;
    const __nv_bfloat16* src = p.q;
    if (valid)
      src = p.q + int64_t(q0 + ra / group) * p.q_stride +
            int64_t(kvh * group + ra % group) * D + c * 8;
    cp_async_16(smem_u32(q_s) + attn_swz<D>(r, c), src, valid);
  }

  // K/V gathering: thread tid always moves chunk column tid % DC of key rows
  // tid / DC + i * (NT / DC); the page slot of each row is looked up once per tile (with K)
  // and reused for V.
  const int32_t* bt = p.block_table + int64_t(seq) * p.max_blocks;
  const int my_chunk = tid % DC, my_row0 = tid / DC;
  constexpr int kRowStep = NT / DC;
  int slot[C::kKvLoads];
  auto load_k = [&](int n0) {
#pragma unroll
    for (int i = 0; i < C::kKvLoads; ++i) {
      const int r = my_row0 + i * kRowStep, j = n0 + r;
      int sl = -1;
      if (j >= jlo && j < jhi) {
        const int blk = bt[j / p.block_size];
        if (blk >= 0 && blk < p.num_blocks) sl = blk * p.block_size + j % p.block_size;
      }
      slot[i] = sl;
      const __nv_bfloat16* src = p.k_cache;
      if (sl >= 0) src = p.k_cache + (int64_t(sl) * p.num_kv_heads + kvh) * D + my_chunk * 8;
      cp_async_16(smem_u32(k_s) + attn_swz<D>(r, my_chunk), src, sl >= 0);
    }
  };
  auto load_v = [&]() {
#pragma unroll
    for (int i = 0; i < C::kKvLoads; ++i) {
      const int r = my_row0 + i * kRowStep, sl = slot[i];
      const __nv_bfloat16* src = p.v_cache;
      if (sl >= 0) src = p.v_cache + (int64_t(sl) * p.num_kv_heads + kvh) * D + my_chunk * 8;
      cp_async_16(smem_u32(v_s) + attn_swz<D>(r, my_chunk), src, sl >= 0);
    }
  };

  // FP8: thread tid moves 16-byte chunk column tid % kChunks8 of key rows tid / kChunks8 +
  // i * (NT / kChunks8) into the staging tile, its row's scale with chunk 0, and converts the
  // same chunks into the bf16 tile once they landed (only its own copies: no barrier needed
  // between the wait and the conversion).
  constexpr int DC8 = C::kChunks8, kRowStep8 = NT / DC8;
  const int my_chunk8 = tid % DC8, my_row8 = tid / DC8;
  int slot8[C::kKvLoads8];
  auto load8 = [&](bool v, int n0) {
    const unsigned char* codes = v ? p.v_codes : p.k_codes;
    const float* scales = v ? p.v_scale : p.k_scale;
    unsigned char* stage = v ? v8_s : k8_s;
    float* sc_s = v ? vs_s : ks_s;
#pragma unroll
    for (int i = 0; i < C::kKvLoads8; ++i) {
      const int r = my_row8 + i * kRowStep8;
      int sl = -1;
      if (!v) {
        const int j = n0 + r;
        if (j >= jlo && j < jhi) {
          const int blk = bt[j / p.block_size];
          if (blk >= 0 && blk < p.num_blocks) sl = blk * p.block_size + j % p.block_size;
        }
        slot8[i] = sl;
      } else {
        sl = slot8[i];
      }
      const int64_t row = int64_t(sl) * p.num_kv_heads + kvh;
      cp_async_16(smem_u32(stage) + uint32_t(r * D + my_chunk8 * 16),
                  sl >= 0 ? codes + row * D + my_chunk8 * 16 : codes, sl >= 0);
      if (my_chunk8 == 0) cp_async_4(smem_u32(sc_s + r), sl >= 0 ? scales + row : scales, sl >= 0);
    }
  };
  auto convert8 = [&](bool v) {
    const unsigned char* stage = v ? v8_s : k8_s;
    unsigned char* dst = v ? v_s : k_s;
    const float* sc_s = v ? vs_s : ks_s;
    float* cur = v ? vs_cur : ks_cur;
#pragma unroll
    for (int i = 0; i < C::kKvLoads8; ++i) {
      const int r = my_row8 + i * kRowStep8;
      if (my_chunk8 == 0) cur[r] = sc_s[r];
      const uint4 c = *reinterpret_cast<const uint4*>(stage + r * D + my_chunk8 * 16);
      const uint32_t w[4] = {c.x, c.y, c.z, c.w};
      uint32_t b[8];
#pragma unroll
      for (int q = 0; q < 4; ++q) fp8x4_to_bf16x4(w[q], b[2 * q], b[2 * q + 1]);
      *reinterpret_cast<uint4*>(dst + attn_swz<D>(r, 2 * my_chunk8)) = make_uint4(b[0], b[1], b[2], b[3]);
      *reinterpret_cast<uint4*>(dst + attn_swz<D>(r, 2 * my_chunk8 + 1)) = make_uint4(b[4], b[5], b[6], b[7]);
    }
  };

  const int n_begin = (jlo / BN) * BN;
  if constexpr (F8) {
    load8(false, n_begin);
    cp_async_commit();  // group: Q + K codes (first)
    load8(true, n_begin);
    cp_async_commit();  // group: V codes (first)
  } else {
    load_k(n_begin);
    cp_async_commit();  // group: Q + K(first)
  }

  uint32_t qf[D / 16][4];
  float o[kDt][4];
#pragma unroll
  for (int i = 0; i < kDt; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m_run[2] = {-CUDART_INF_F, -CUDART_INF_F};
  float l_run[2] = {0.f, 0.f};

  for (int n0 = n_begin; n0 < jhi; n0 += BN) {
    if constexpr (F8) {
      cp_async_wait<1>();  // K codes of n0 (and Q) landed; V codes of n0 may be in flight
      convert8(false);     // k_s, ks_cur are free: every warp passed the last barrier
      if (n0 + BN < jhi) load8(false, n0 + BN);
      cp_async_commit();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // K(n0) (and Q) landed; every warp is done with V of the last tile
    if (n0 == n_begin) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(smem_u32(q_s) + attn_swz<D>(wm * 16 + (lane & 15), kk * 2 + (lane >> 4)),
                    qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3]);
    }
    if constexpr (!F8) {
      load_v();
      cp_async_commit();
    }

    // S = Q K^T over this warp's keys.
    float s[kNt][4];
#pragma unroll
    for (int i = 0; i < kNt; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int nt2 = 0; nt2 < kNt / 2; ++nt2) {
        const int mi = lane >> 3;
        const int key = wn * BNW + nt2 * 16 + (mi >> 1) * 8 + (lane & 7);
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4(smem_u32(k_s) + attn_swz<D>(key, kk * 2 + (mi & 1)), b0, b1, b2, b3);
        const uint32_t blo[2] = {b0, b1}, bhi[2] = {b2, b3};
        mma_bf16_16816(s[2 * nt2], qf[kk], blo);
        mma_bf16_16816(s[2 * nt2 + 1], qf[kk], bhi);
      }
    }

    // Mask, scale, online softmax (rows g8 and g8 + 8; a row's 4 quad lanes share it).
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float mx = -CUDART_INF_F;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int local = wn * BNW + nt * 8 + 2 * qd + e, key = n0 + local;
          float& x = s[nt][2 * rr + e];
          float sc = p.scale_log2;
          if constexpr (F8) sc *= ks_cur[local];
          x = (key >= vlo[rr] && key < vhi[rr]) ? x * sc : -CUDART_INF_F;
          mx = fmaxf(mx, x);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[rr], mx);
      const float base = m_new == -CUDART_INF_F ? 0.f : m_new;
      const float alpha = exp2f(m_run[rr] - base);
      m_run[rr] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[nt][2 * rr + e];
          x = exp2f(x - base);
          sum += x;
        }
      }
      l_run[rr] = l_run[rr] * alpha + sum;
#pragma unroll
      for (int dt = 0; dt < kDt; ++dt) {
        o[dt][2 * rr] *= alpha;
        o[dt][2 * rr + 1] *= alpha;
      }
    }

    if constexpr (F8) {
      cp_async_wait<1>();  // V codes of n0 landed; K codes of n0 + BN may be in flight
      convert8(true);      // v_s, vs_cur are free: every warp passed the loop's barrier
      if (n0 + BN < jhi) load8(true, n0 + BN);  // slot8 holds n0 + BN's slots (K went first)
      cp_async_commit();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // V(n0) landed; every warp is done with K(n0)
    if constexpr (!F8) {
      if (n0 + BN < jhi) load_k(n0 + BN);
      cp_async_commit();
    }
    if constexpr (F8) {  // P <- P * s_v per key (l already summed the unscaled P)
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] *= vs_cur[wn * BNW + nt * 8 + 2 * qd + (e & 1)];
    }

    // O += P V over this warp's keys.
#pragma unroll
    for (int kk2 = 0; kk2 < BNW / 16; ++kk2) {
      const uint32_t a[4] = {attn::pack_bf16(s[2 * kk2][0], s[2 * kk2][1]),
                             attn::pack_bf16(s[2 * kk2][2], s[2 * kk2][3]),
                             attn::pack_bf16(s[2 * kk2 + 1][0], s[2 * kk2 + 1][1]),
                             attn::pack_bf16(s[2 * kk2 + 1][2], s[2 * kk2 + 1][3])};
#pragma unroll
      for (int dn2 = 0; dn2 < D / 16; ++dn2) {
        const int mi = lane >> 3;
        const int key = wn * BNW + kk2 * 16 + (mi & 1) * 8 + (lane & 7);
        uint32_t b0, b1, b2, b3;
        attn::ldmatrix_x4_trans(smem_u32(v_s) + attn_swz<D>(key, dn2 * 2 + (mi >> 1)), b0, b1,
                                b2, b3);
        const uint32_t blo[2] = {b0, b1}, bhi[2] = {b2, b3};
        mma_bf16_16816(o[2 * dn2], a, blo);
        mma_bf16_16816(o[2 * dn2 + 1], a, bhi);
      }
    }
  }

  // Epilogue: per-warp states -> shared, merge the kWarpsN states of each row, write.
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    l_run[rr] += __shfl_xor_sync(0xffffffffu, l_run[rr], 1);
    l_run[rr] += __shfl_xor_sync(0xffffffffu, l_run[rr], 2);
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the Q/K/V tiles the accumulators overwrite
  {
    float* ow = o_s + (wn * BM + wm * 16) * OS;
#pragma unroll
    for (int dt = 0; dt < kDt; ++dt) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr)
        *reinterpret_cast<float2*>(ow + (g8 + rr * 8) * OS + dt * 8 + 2 * qd) =
            make_float2(o[dt][2 * rr], o[dt][2 * rr + 1]);
    }
    if (qd == 0) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int r = wn * BM + wm * 16 + g8 + rr * 8;
        ml_s[r * 2] = m_run[rr];
        ml_s[r * 2 + 1] = l_run[rr];
      }
    }
  }
  __syncthreads();
  for (int idx = tid; idx < rows_here * (D / 2); idx += NT) {
    const int r = idx / (D / 2), d = (idx % (D / 2)) * 2;
    float mx = -CUDART_INF_F;
#pragma unroll
    for (int w = 0; w < WN; ++w) mx = fmaxf(mx, ml_s[(w * BM + r) * 2]);
    float sum = 0.f, acc0 = 0.f, acc1 = 0.f;
    if (mx != -CUDART_INF_F) {
#pragma unroll
      for (int w = 0; w < WN; ++w) {
        const float f = exp2f(ml_s[(w * BM + r) * 2] - mx);
        sum += ml_s[(w * BM + r) * 2 + 1] * f;
        const float2 v = *reinterpret_cast<const float2*>(o_s + (w * BM + r) * OS + d);
        acc0 += v.x * f;
        acc1 += v.y * f;
      }
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    const int ra = m0 + r;
    const int t = q0 + ra / group, h = kvh * group + ra % group;
    if (p.num_splits == 1) {
      *reinterpret_cast<__nv_bfloat162*>(p.out + int64_t(t) * p.out_stride + int64_t(h) * D +
                                         d) = __floats2bfloat162_rn(acc0 * inv, acc1 * inv);
    } else {
      const int64_t row = (int64_t(split) * p.num_tokens + t) * p.num_q_heads + h;
      *reinterpret_cast<float2*>(p.o_part + row * D + d) = make_float2(acc0 * inv, acc1 * inv);
      if (d == 0) p.lse_part[row] = sum > 0.f ? mx + log2f(sum) : -CUDART_INF_F;
    }
  }
}

}  // namespace moeopt::cuda::kernels
