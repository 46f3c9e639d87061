// The MoE expert path for few tokens (decode) as ONE persistent kernel:
//   out[t] = residual[t] + sum_s w[t,s] * W2[e_s] · (SiLU(W13_gate[e_s] x_t) * W13_up[e_s] x_t)
// At M <= 16 the layer is a weight stream (M = 1, Qwen3-30B-A3B: 75.5 MB for 8 experts), so
// the kernel only has to keep HBM busy from start to end: no launch chain, no short waves.
//
// Layout of the work (every block runs the same schedule; grid = the co-resident maximum):
//  0. Each block builds the routing table in shared memory from expert_ids: the used experts
//     in ascending id (rank u = number of used ids below e, from a 512-bit mask), and per used
//     expert the list of its (token, slot) pairs (order inside a list is free: every pair's
//     values are computed independently, so results do not depend on it).
//  1. GEMM 1: the U*I (used expert, column n) items are cut into one contiguous range per
//     warp of the grid. An item streams gate row n and up row n of W13[e] (16-byte
//     L1-bypassing loads, 8 vectors per lane per row in flight: 8 KiB per warp), multiplies
//     by the x rows of the expert's tokens (L1-cached) in fp32, 4 pairs per pass, and
//     writes h[pair, n] = bf16(SiLU(g)*u). A warp then adds the number of columns it
//     finished to expert_done[u] (fence, then atomic) before it moves on.
//  2. GEMM 2: the U*ceil(H/4) (used expert, block of 4 W2 rows) items are cut the same way.
//     Before the first item of expert u a warp spins (acquire load, nanosleep) until
//     expert_done[u] == I, instead of a kernel boundary, with that item's first W2 loads
//     already in flight; then y[pair, j] = w[pair] * W2[e][j]·h[pair] (fp32; h read from L2,
//     issued together with the weights: other SMs wrote it during this kernel).
//  3. Per row block a counter counts the finished experts; the warp that brings it to U sums
//     each token's k partial rows in slot order (residual first, as moe_combine.cuh) into out.
//     No float atomics: results are bit-identical from run to run.
// Each per-expert counter sits on its own 128-byte line (kCounterStride) so that the
// spinning warps and the arrivals of different experts do not queue on one L2 line.
// Deadlock freedom: phase 1 never waits, phase 2 only waits on phase 1, and the launcher
// launches at most the number of blocks that are co-resident (occupancy API). Counters are
// zeroed by moe_persistent_reset_kernel before each call.
// Bounds: H, I multiples of 8, 16-byte aligned pointers, M*k <= kPersistentMaxPairs, E <= 512.
// Test: tests/unit/cuda_moe_test.cpp (CudaMoePersistent.*).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"
#include "moeopt/backend/cuda/moe_persistent.h"

namespace moeopt::cuda::kernels {

inline constexpr int kPersistentWarps = kPersistentThreads / 32;
inline constexpr int kPersistentMaxExperts = 512;
inline constexpr int kP1Vecs = 8;   // GEMM 1: 16-byte vectors per lane per row per step
inline constexpr int kP1Pairs = 4;  // GEMM 1: pairs per pass over the weight rows
inline constexpr int kP2Vecs = 3;   // GEMM 2: 16-byte vectors per lane per row per step
inline constexpr int kP2Pairs = 2;  // GEMM 2: pairs per pass
inline constexpr int kP2Rows = kPersistentRowsPerTask;
inline constexpr int kCounterStride = kPersistentCounterStride;

struct PersistentTable {
  uint32_t used_bits[kPersistentMaxExperts / 32];
  int num_used;
  int used_expert[kPersistentMaxPairs];      // rank -> expert id
  int used_count[kPersistentMaxPairs];       // rank -> pairs
  int used_offset[kPersistentMaxPairs + 1];  // rank -> first entry of pair_list
  int pair_rank[kPersistentMaxPairs];        // pair -> rank, -1 = invalid id
  int pair_slot[kPersistentMaxPairs];        // pair -> position in its expert's list
  int pair_list[kPersistentMaxPairs];        // pairs grouped by rank
};

__device__ __forceinline__ uint4 ld_stream16(const __nv_bfloat16* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// L2 loads (ld.global.cg) of data written by other SMs during this kernel; volatile so that
// they stay after the acquire that orders them.
__device__ __forceinline__ uint4 ld_l2_16(const void* p) {
  uint4 v;
  asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ float ld_l2_f32(const float* p) {
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ int ld_acquire_gpu(const int32_t* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// 8 bf16 (element 0 in the low half of .x) -> 8 floats.
__device__ __forceinline__ void unpack_bf16x8(const uint4& v, float (&f)[8]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

__device__ void persistent_build_table(const PersistentParams& p, PersistentTable& tab) {
  const int tid = threadIdx.x;
  const int A = p.num_tokens * p.top_k;
  if (tid < kPersistentMaxExperts / 32) tab.used_bits[tid] = 0;
  for (int i = tid; i < kPersistentMaxPairs; i += blockDim.x) tab.used_count[i] = 0;
  __syncthreads();
  for (int a = tid; a < A; a += blockDim.x) {
    const int e = p.expert_ids[a];
    const bool ok = e >= 0 && e < p.num_experts;
    tab.pair_rank[a] = ok ? e : -1;  // the expert id until the ranks are known
    if (ok) atomicOr(&tab.used_bits[e >> 5], 1u << (e & 31));
  }
  __syncthreads();
  for (int a = tid; a < A; a += blockDim.x) {
    const int e = tab.pair_rank[a];
    if (e < 0) continue;
    int r = __popc(tab.used_bits[e >> 5] & ((1u << (e & 31)) - 1u));
    for (int w = 0; w < (e >> 5); ++w) r += __popc(tab.used_bits[w]);
    tab.used_expert[r] = e;  // every pair of e writes the same value
    tab.pair_slot[a] = atomicAdd(&tab.used_count[r], 1);
    tab.pair_rank[a] = r;
  }
  if (tid == 0) {
    int u = 0;
    for (int w = 0; w < kPersistentMaxExperts / 32; ++w) u += __popc(tab.used_bits[w]);
    tab.num_used = u;
  }
  __syncthreads();
  if (tid < 32) {  // exclusive scan of used_count[0, U) into used_offset
    const int U = tab.num_used;
    int carry = 0;
    for (int base = 0; base < U; base += 32) {
      const int i = base + tid;
      int v = i < U ? tab.used_count[i] : 0;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int n = __shfl_up_sync(0xffffffffu, v, o);
        if (tid >= o) v += n;
      }
      if (i < U) tab.used_offset[i + 1] = carry + v;
      carry += __shfl_sync(0xffffffffu, v, 31);
    }
    if (tid == 0) tab.used_offset[0] = 0;
  }
  __syncthreads();
  for (int a = tid; a < A; a += blockDim.x) {
    const int r = tab.pair_rank[a];
    if (r >= 0) tab.pair_list[tab.used_offset[r] + tab.pair_slot[a]] = a;
  }
  __syncthreads();
}

// GEMM 1 item: column n of used expert u, for all its pairs.
__device__ __forceinline__ void persistent_gemm1_column(const PersistentParams& p,
                                                        const PersistentTable& tab, int u, int n,
                                                        int lane) {
  const int H = p.hidden, I = p.inter;
  const int e = tab.used_expert[u], cnt = tab.used_count[u], off = tab.used_offset[u];
  const __nv_bfloat16* grow = p.w13 + (size_t(e) * 2 * I + n) * H;
  const __nv_bfloat16* urow = grow + size_t(I) * H;
  constexpr int kStep = 32 * 8 * kP1Vecs;
  for (int g0 = 0; g0 < cnt; g0 += kP1Pairs) {
    int pair[kP1Pairs];
    const __nv_bfloat16* xrow[kP1Pairs];
    float ag[kP1Pairs], au[kP1Pairs];
#pragma unroll
    for (int t = 0; t < kP1Pairs; ++t) {
      pair[t] = g0 + t < cnt ? tab.pair_list[off + g0 + t] : -1;
      xrow[t] = p.x + size_t(pair[t] >= 0 ? pair[t] / p.top_k : 0) * H;
      ag[t] = 0.f;
      au[t] = 0.f;
    }
    for (int k0 = 0; k0 < H; k0 += kStep) {
      uint4 wg[kP1Vecs], wu[kP1Vecs];
#pragma unroll
      for (int v = 0; v < kP1Vecs; ++v) {
        const int k = k0 + (v * 32 + lane) * 8;
        if (k < H) {
          wg[v] = ld_stream16(grow + k);
          wu[v] = ld_stream16(urow + k);
        } else {
          wg[v] = make_uint4(0, 0, 0, 0);
          wu[v] = make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
      for (int v = 0; v < kP1Vecs; ++v) {
        const int k = k0 + (v * 32 + lane) * 8;
        if (k >= H) continue;
        float gf[8], uf[8];
        unpack_bf16x8(wg[v], gf);
        unpack_bf16x8(wu[v], uf);
#pragma unroll
        for (int t = 0; t < kP1Pairs; ++t) {
          if (pair[t] < 0) continue;  // warp-uniform
          float xf[8];
          unpack_bf16x8(__ldg(reinterpret_cast<const uint4*>(xrow[t] + k)), xf);
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            ag[t] = fmaf(gf[i], xf[i], ag[t]);
            au[t] = fmaf(uf[i], xf[i], au[t]);
          }
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kP1Pairs; ++t) {
      if (pair[t] < 0) continue;  // warp-uniform
      const float g = warp_sum(ag[t]);
      const float up = warp_sum(au[t]);
      if (lane == t) p.h[size_t(pair[t]) * I + n] = __float2bfloat16(g / (1.f + __expf(-g)) * up);
    }
  }
}

// GEMM 2 item: W2 rows [j0, j0 + kP2Rows) of used expert u, for all its pairs. When wait is
// set, h of expert u is not known to be complete yet: the first W2 loads are issued, then
// the warp spins on expert_done[u] before it loads any h.
__device__ __forceinline__ void persistent_gemm2_rows(const PersistentParams& p,
                                                      const PersistentTable& tab, int u, int j0,
                                                      bool wait, int lane) {
  const int H = p.hidden, I = p.inter;
  const int e = tab.used_expert[u], cnt = tab.used_count[u], off = tab.used_offset[u];
  const __nv_bfloat16* wrow = p.w2 + (size_t(e) * H + j0) * I;
  constexpr int kStep = 32 * 8 * kP2Vecs;
  for (int g0 = 0; g0 < cnt; g0 += kP2Pairs) {
    float acc[kP2Rows][kP2Pairs];
#pragma unroll
    for (int t = 0; t < kP2Pairs; ++t)
#pragma unroll
      for (int r = 0; r < kP2Rows; ++r) acc[r][t] = 0.f;
    int pair[kP2Pairs];
#pragma unroll
    for (int t = 0; t < kP2Pairs; ++t) pair[t] = -1;
    for (int k0 = 0; k0 < I; k0 += kStep) {
      uint4 wv[kP2Rows][kP2Vecs];
#pragma unroll
      for (int r = 0; r < kP2Rows; ++r)
#pragma unroll
        for (int v = 0; v < kP2Vecs; ++v) {
          const int k = k0 + (v * 32 + lane) * 8;
          wv[r][v] = k < I && j0 + r < H ? ld_stream16(wrow + size_t(r) * I + k)
                                         : make_uint4(0, 0, 0, 0);
        }
      if (wait) {
        while (ld_acquire_gpu(&p.expert_done[size_t(u) * kCounterStride]) < I) __nanosleep(256);
        __syncwarp();
        wait = false;
      }
      // Pair indices come from shared memory after the wait (the memory clobber of the
      // acquire keeps them, and so the h loads that depend on them, below it).
#pragma unroll
      for (int t = 0; t < kP2Pairs; ++t) pair[t] = g0 + t < cnt ? tab.pair_list[off + g0 + t] : -1;
      uint4 hv[kP2Pairs][kP2Vecs];
#pragma unroll
      for (int t = 0; t < kP2Pairs; ++t)
#pragma unroll
        for (int v = 0; v < kP2Vecs; ++v) {
          const int k = k0 + (v * 32 + lane) * 8;
          hv[t][v] = pair[t] >= 0 && k < I ? ld_l2_16(p.h + size_t(pair[t]) * I + k)
                                           : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
      for (int v = 0; v < kP2Vecs; ++v) {
        const int k = k0 + (v * 32 + lane) * 8;
        if (k >= I) continue;
        float wf[kP2Rows][8];
#pragma unroll
        for (int r = 0; r < kP2Rows; ++r) unpack_bf16x8(wv[r][v], wf[r]);
#pragma unroll
        for (int t = 0; t < kP2Pairs; ++t) {
          if (pair[t] < 0) continue;  // warp-uniform
          float hf[8];
          unpack_bf16x8(hv[t][v], hf);
#pragma unroll
          for (int r = 0; r < kP2Rows; ++r)
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[r][t] = fmaf(wf[r][i], hf[i], acc[r][t]);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kP2Pairs; ++t) {
      if (pair[t] < 0) continue;  // warp-uniform
      const float wt = __ldg(p.expert_weights + pair[t]);
#pragma unroll
      for (int r = 0; r < kP2Rows; ++r) {
        const float s = warp_sum(acc[r][t]);
        if (lane == r * kP2Pairs + t && j0 + r < H) p.y[size_t(pair[t]) * H + j0 + r] = wt * s;
      }
    }
  }
}

// out rows [j0, j0 + kP2Rows) of every token: residual + the k partial rows in slot order.
__device__ __forceinline__ void persistent_reduce_rows(const PersistentParams& p,
                                                       const PersistentTable& tab, int j0,
                                                       int lane) {
  const int H = p.hidden, k = p.top_k;
  for (int idx = lane; idx < p.num_tokens * kP2Rows; idx += 32) {
    const int t = idx / kP2Rows, j = j0 + idx % kP2Rows;
    if (j >= H) continue;
    float acc = p.residual != nullptr ? __bfloat162float(p.residual[size_t(t) * H + j]) : 0.f;
    for (int s = 0; s < k; ++s) {
      const int a = t * k + s;
      if (tab.pair_rank[a] >= 0) acc += ld_l2_f32(p.y + size_t(a) * H + j);
    }
    p.out[size_t(t) * H + j] = __float2bfloat16(acc);
  }
}

__global__ void moe_persistent_reset_kernel(int32_t* counters, int n) {
  griddep_wait();  // the previous layer's kernel may still be reading its counters
  griddep_launch_dependents();
  for (int i = threadIdx.x; i < n; i += blockDim.x) counters[i] = 0;
}

__global__ void __launch_bounds__(kPersistentThreads, 2) moe_persistent_kernel(PersistentParams p) {
  __shared__ PersistentTable tab;
  griddep_wait();  // counters (reset kernel), x and routing (earlier kernels)
  persistent_build_table(p, tab);
  const int U = tab.num_used;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (U == 0) {  // no valid expert: out = residual (or 0)
    if (blockIdx.x == 0)
      for (size_t i = threadIdx.x; i < size_t(p.num_tokens) * p.hidden; i += blockDim.x)
        p.out[i] = p.residual != nullptr ? p.residual[i] : __float2bfloat16(0.f);
    return;
  }
  const int64_t gw = int64_t(blockIdx.x) * kPersistentWarps + warp;
  const int64_t num_warps = int64_t(gridDim.x) * kPersistentWarps;

  {  // phase 1: GEMM 1 columns
    const int64_t items = int64_t(U) * p.inter;
    const int64_t end = items * (gw + 1) / num_warps;
    int run_u = -1, run = 0;
    for (int64_t c = items * gw / num_warps; c < end; ++c) {
      const int u = int(c / p.inter), n = int(c - int64_t(u) * p.inter);
      if (u != run_u) {
        if (run > 0) {
          __threadfence();
          __syncwarp();
          if (lane == 0) atomicAdd(&p.expert_done[size_t(run_u) * kCounterStride], run);
        }
        run_u = u;
        run = 0;
      }
      persistent_gemm1_column(p, tab, u, n, lane);
      ++run;
    }
    if (run > 0) {
      __threadfence();
      __syncwarp();
      if (lane == 0) atomicAdd(&p.expert_done[size_t(run_u) * kCounterStride], run);
    }
  }

  {  // phase 2: GEMM 2 row blocks, then the reduction of each completed row block
    const int row_blocks = (p.hidden + kP2Rows - 1) / kP2Rows;
    const int64_t items = int64_t(U) * row_blocks;
    const int64_t end = items * (gw + 1) / num_warps;
    int ready_u = -1;
    for (int64_t c = items * gw / num_warps; c < end; ++c) {
      const int u = int(c / row_blocks), rb = int(c - int64_t(u) * row_blocks);
      persistent_gemm2_rows(p, tab, u, rb * kP2Rows, u != ready_u, lane);
      ready_u = u;
      __threadfence();
      __syncwarp();
      int old = 0;
      if (lane == 0) old = atomicAdd(&p.rows_done[rb], 1);
      old = __shfl_sync(0xffffffffu, old, 0);
      if (old == U - 1) {
        __threadfence();
        persistent_reduce_rows(p, tab, rb * kP2Rows, lane);
      }
    }
  }
}

}  // namespace moeopt::cuda::kernels
