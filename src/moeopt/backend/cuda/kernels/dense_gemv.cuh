// Small-M linear (decode steps): y[M, N] = x[M, K] W[N, K]^T (+ bias[N]) for 1 <= M <=
// kGemvMaxRows, bf16 x and W, f32 accumulation, y f32 or bf16 (rounded once). At these M the
// product is a stream of W's bytes (each weight is used M times); cuBLASLt's kernels for
// M = 1..16 read the qkv / o / router / LM-head weights of a decode step at 45-65% of the copy
// rate on an H200 (bench/linear_small_m.py, docs/perf.md); these kernels stream them faster.
//
// Tensor-core path (dense_gemv_mma_kernel; p.vec: K and x_stride multiples of 8, x and W
// 16-byte aligned). A block of KS = p.split_k warps (4 or 8) owns 16 output columns (rows of W)
// n0 .. n0+15 and every token; its warps split K (warp w takes the 32-wide K steps w, w + KS,
// ...) and add their partial sums through shared memory at the end. The caller picks KS so
// that the grid fits on the GPU in one wave with enough loads in flight: 4 when there are at
// least two blocks per SM (qkv, LM head), else 8 (o, router); with 8 warps everywhere the qkv
// grid needed 1.2 waves and ran at 45% of HBM. In a step, lane (g = lane / 4,
// t = lane % 4) loads with 16-byte loads the 8 values k = 32 s + 8 t .. + 7 of W rows n0 + g and
// n0 + g + 8 (ld.global.nc, no L1 allocation: every weight byte is read once) and of x rows
// (tokens) g and 8 + g, and feeds them to two mma.sync.m16n8k16 per 8 tokens without any
// shuffle: the mma's k slots (2t, 2t+1, 2t+8, 2t+9) of a thread stand for its real k values
// 8t + 4h + 0..3 (h = 0, 1) in A and in B alike, and since that map depends on t only, each
// product pairs W and x at the same real k. The sum over K is therefore a permuted f32 sum (a
// tensor-core accumulation order, then the KS warps' partials in warp order): deterministic
// for a shape, not the CPU's k order (tests/unit/cuda_dense_ops_test.cpp, the linear op
// cases and LinearSmallMEveryRowCount, at every M <= 17). kGemvUnroll steps of W are in flight
// per warp (4 KB), and the first ones are issued before griddepcontrol.wait: W does not depend
// on the previous kernel (launched with programmatic dependent launch), x and y do.
//
// SIMT path (dense_gemv_simt_kernel), for M <= kGemvSimtMaxRows on the vector path and for
// every M on the element path (odd K, unaligned rows): a warp per 2 output columns; lane l
// takes the 16-byte chunks l, l + 32, ... of both W rows (4 per row in flight, the first
// before griddepcontrol.wait) and the same chunks of x, or the elements k = l, l + 32, ...;
// f32 FMAs, then a butterfly over the warp. At M = 1 and 2 it streams faster than the
// tensor-core path (more warps in flight for the same bytes: qkv 6.8 vs 8.1 us, o 6.3 vs
// 8.6 us on an H200); from M = 4 its FMAs and x loads make it issue-bound, the tensor-core
// path is flat in M.
#pragma once

#include <cuda_bf16.h>

#include "moeopt/backend/cuda/kernels/dense_common.cuh"
#include "moeopt/backend/cuda/kernels/dense_params.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {

namespace gemv {

__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// acc[m][r] += x_m . w_r over one 8-element chunk (bf16 pairs unpacked by shifts: a bf16 is
// the high half of its f32).
template <int M, int R>
__device__ __forceinline__ void fma_chunk(float (&acc)[M][R], const uint4 (&w)[R],
                                          const __nv_bfloat16* const (&xrow)[M], int64_t c) {
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const uint4 xv = __ldg(reinterpret_cast<const uint4*>(xrow[m]) + c);
    const uint32_t xs[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint32_t ws[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        acc[m][r] = fmaf(__uint_as_float(xs[j] << 16), __uint_as_float(ws[j] << 16), acc[m][r]);
        acc[m][r] = fmaf(__uint_as_float(xs[j] & 0xffff0000u), __uint_as_float(ws[j] & 0xffff0000u),
                         acc[m][r]);
      }
    }
  }
}

}  // namespace gemv

template <int NT, int KS, class To>
__global__ void __launch_bounds__(KS * 32) dense_gemv_mma_kernel(GemvParams p) {
  constexpr int U = kGemvUnroll;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  const int64_t n0 = int64_t(blockIdx.x) * 16;
  const __nv_bfloat16* w = static_cast<const __nv_bfloat16*>(p.w);
  const __nv_bfloat16* x = static_cast<const __nv_bfloat16*>(p.x);
  // Rows past N and tokens past M read a valid row; their results are dropped.
  const __nv_bfloat16* wa = w + (n0 + g < p.n ? n0 + g : p.n - 1) * p.k;
  const __nv_bfloat16* wb = w + (n0 + g + 8 < p.n ? n0 + g + 8 : p.n - 1) * p.k;
  const __nv_bfloat16* xr[NT];
  bool xv[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    xv[j] = 8 * j + g < p.m;
    xr[j] = x + int64_t(xv[j] ? 8 * j + g : 0) * p.x_stride;
  }
  const int64_t steps = (p.k + 31) / 32;
  auto load_w = [&](uint4 (&a)[U][2], int64_t s) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k = (s + int64_t(u) * KS) * 32 + 8 * t;
      const bool in = k < p.k;  // K % 8 == 0: a chunk is all in or all out
      a[u][0] = in ? gemv::load_stream(wa + k) : make_uint4(0, 0, 0, 0);
      a[u][1] = in ? gemv::load_stream(wb + k) : make_uint4(0, 0, 0, 0);
    }
  };
  float c[NT][4] = {};
  uint4 a[U][2];
  int64_t s = warp;
  load_w(a, s);
  griddep_wait();
  for (; s < steps; s += int64_t(KS) * U) {
    uint4 b[U][NT];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k = (s + int64_t(u) * KS) * 32 + 8 * t;
#pragma unroll
      for (int j = 0; j < NT; ++j)
        b[u][j] = k < p.k && xv[j] ? __ldg(reinterpret_cast<const uint4*>(xr[j] + k))
                                   : make_uint4(0, 0, 0, 0);
    }
    uint4 an[U][2];
    const bool more = s + int64_t(KS) * U < steps;
    if (more) load_w(an, s + int64_t(KS) * U);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint32_t ra[4] = {a[u][0].x, a[u][1].x, a[u][0].y, a[u][1].y};
      const uint32_t rb[4] = {a[u][0].z, a[u][1].z, a[u][0].w, a[u][1].w};
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const uint32_t ba[2] = {b[u][j].x, b[u][j].y}, bb[2] = {b[u][j].z, b[u][j].w};
        mma_bf16_16816(c[j], ra, ba);
        mma_bf16_16816(c[j], rb, bb);
      }
    }
    if (more) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        a[u][0] = an[u][0];
        a[u][1] = an[u][1];
      }
    }
  }
  griddep_launch_dependents();  // the next kernel may launch; it waits for our completion
  // The warps' partial sums, added in warp order by warp 0.
  __shared__ float part[KS - 1][NT][4][32];
  if (warp > 0)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) part[warp - 1][j][i][lane] = c[j][i];
  __syncthreads();
  if (warp != 0) return;
  To* y = static_cast<To*>(p.y);
  const __nv_bfloat16* bias = static_cast<const __nv_bfloat16*>(p.bias);
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v = c[j][i];
#pragma unroll
      for (int q = 0; q < KS - 1; ++q) v += part[q][j][i][lane];
      // c0, c1: (row g, tokens 2t, 2t + 1); c2, c3: (row g + 8, same tokens).
      const int64_t n = n0 + g + (i >= 2 ? 8 : 0), m = 8 * j + 2 * t + (i & 1);
      if (n < p.n && m < p.m) {
        const float b = bias != nullptr ? __bfloat162float(bias[n]) : 0.0f;
        y[m * p.y_stride + n] = dense::from_float<To>(v + b);
      }
    }
}

// M: the row count (vector path, M = p.m <= kGemvSimtMaxRows) or kGemvMaxRows (element path,
// rows >= p.m skipped).
template <int M, class To>
__global__ void __launch_bounds__(kGemvThreads) dense_gemv_simt_kernel(GemvParams p) {
  constexpr int R = kGemvRowsPerWarp;
  constexpr int U = 4;  // chunks of one W row in flight per lane (vector path)
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t n0 = (int64_t(blockIdx.x) * (kGemvThreads / 32) + warp) * R;
  const bool active = n0 < p.n;  // a whole warp
  const __nv_bfloat16* w = static_cast<const __nv_bfloat16*>(p.w);
  const __nv_bfloat16* wrow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wrow[r] = w + (n0 + r < p.n ? n0 + r : p.n - 1) * p.k;  // in bounds
  const __nv_bfloat16* x = static_cast<const __nv_bfloat16*>(p.x);
  const __nv_bfloat16* xrow[M];
#pragma unroll
  for (int m = 0; m < M; ++m) xrow[m] = x + int64_t(m < p.m ? m : 0) * p.x_stride;
  float acc[M][R] = {};
  if (p.vec) {
    const int64_t chunks = p.k / 8;
    uint4 wv[U][R];
    int64_t c = lane;
    // The first group of weight chunks goes out before the wait on the previous kernel.
    if (active && c + 32 * (U - 1) < chunks) {
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < R; ++r)
          wv[u][r] = gemv::load_stream(reinterpret_cast<const uint4*>(wrow[r]) + c + 32 * u);
    }
    griddep_wait();
    if (!active) return;
    for (; c + 32 * (U - 1) < chunks; c += 32 * U) {
#pragma unroll
      for (int u = 0; u < U; ++u) gemv::fma_chunk<M, R>(acc, wv[u], xrow, c + 32 * u);
      const int64_t nc = c + 32 * U;
      if (nc + 32 * (U - 1) < chunks) {
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
          for (int r = 0; r < R; ++r)
            wv[u][r] = gemv::load_stream(reinterpret_cast<const uint4*>(wrow[r]) + nc + 32 * u);
      }
    }
    for (; c < chunks; c += 32) {
      uint4 w1[R];
#pragma unroll
      for (int r = 0; r < R; ++r) w1[r] = gemv::load_stream(reinterpret_cast<const uint4*>(wrow[r]) + c);
      gemv::fma_chunk<M, R>(acc, w1, xrow, c);
    }
  } else {
    griddep_wait();
    if (!active) return;
    for (int64_t k = lane; k < p.k; k += 32) {
      float wf[R];
#pragma unroll
      for (int r = 0; r < R; ++r) wf[r] = __bfloat162float(wrow[r][k]);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (m >= p.m) break;
        const float xf = __bfloat162float(xrow[m][k]);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[m][r] = fmaf(xf, wf[r], acc[m][r]);
      }
    }
  }
  griddep_launch_dependents();  // the next kernel may launch; it waits for our completion
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
        acc[m][r] += __shfl_xor_sync(0xffffffffu, acc[m][r], off);
  // Lane m * R + r writes output (m, n0 + r): M * R <= 32 lanes, one store each.
  static_assert(M * R <= 32, "one lane per output of the warp");
  To* y = static_cast<To*>(p.y);
  const __nv_bfloat16* bias = static_cast<const __nv_bfloat16*>(p.bias);
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (lane == m * R + r && m < p.m && n0 + r < p.n) {
        const float b = bias != nullptr ? __bfloat162float(bias[n0 + r]) : 0.0f;
        y[int64_t(m) * p.y_stride + n0 + r] = dense::from_float<To>(acc[m][r] + b);
      }
}

}  // namespace moeopt::cuda::kernels
