// The W8A8 linear at decode sizes (M <= kGemvMaxRows): y[M, N] = sum over 128-groups g of
// s_x[m, g] * s_w[n / 128, g] * (x_q[m, g] . w_q[n, g]) (+ bias[n]), the dense FP8 linear of
// ops/fp8.h, as a weight stream. x arrives quantised (fp8_quantize_act_kernel: e4m3 codes
// [M, K] with row stride ld_act and f32 scales [M, ceil(K/128)]), W is e4m3 [N, K] with its
// 128x128 block scales; the Fp8GroupedGemmParams of the dense mode (dense = 1, E = 1) carry
// them. Bounds (caller): K % 16 == 0, act_q / weight 16-byte aligned, ld_act % 16 == 0.
//
// The layout is dense_gemv.cuh's tensor-core path in bytes (the fragments of m16n8k32 e4m3
// are byte for byte those of m16n8k16 bf16): a block of KS warps owns 16 output columns n0 ..
// n0 + 15 (one weight-scale block row, since n0 is a multiple of 16) and every token; warp w
// takes the K groups w, w + KS, ...; in a group, lane (g, t) loads the 16 codes k = 128 gi +
// 64 r + 16 t .. + 15 (r = 0, 1) of W rows n0 + g, n0 + g + 8 and of x rows 8 j + g, and two
// m16n8k32 per (r, 8 tokens) read them as k slots (4t..4t+3, 16+4t..16+4t+3) without a
// shuffle. A group's products are summed in the tensor core's f32 accumulator, then added
// times s_x * s_w, as the CPU reference does per group (the order inside a group differs; the
// CPU sums in k order). The KS partials are added in warp order through shared memory.
// Tests: tests/unit/cuda_fp8_test.cpp (the kLinearFp8 op cases and
// LinearSmallMEveryRowCount, M = 1..17, against the CPU reference).
#pragma once

#include <type_traits>

#include "moeopt/backend/cuda/kernels/dense_gemv.cuh"
#include "moeopt/backend/cuda/kernels/fp8_moe_gemm.cuh"
#include "moeopt/backend/cuda/kernels/moe_params.cuh"

namespace moeopt::cuda::kernels {

inline constexpr int kFp8GemvUnroll = 2;  // K groups of W in flight per warp (2 KB)

template <int NT, int KS, class To>
__global__ void __launch_bounds__(KS * 32) fp8_gemv_kernel(Fp8GroupedGemmParams p) {
  constexpr int U = kFp8GemvUnroll;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  const int64_t n0 = int64_t(blockIdx.x) * 16, K = p.K, N = p.N_out;
  const int64_t groups = (K + 127) / 128;
  // Rows past N and tokens past M read a valid row; their results are dropped.
  const unsigned char* wa = p.weight + (n0 + g < N ? n0 + g : N - 1) * K;
  const unsigned char* wb = p.weight + (n0 + g + 8 < N ? n0 + g + 8 : N - 1) * K;
  const float* ws = p.weight_scale + (n0 / 128) * groups;
  const unsigned char* xr[NT];
  bool xv[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    xv[j] = 8 * j + g < p.num_rows;
    xr[j] = p.act_q + int64_t(xv[j] ? 8 * j + g : 0) * p.ld_act;
  }
  // a[u][r][0 | 1]: rows n0 + g | n0 + g + 8, codes 128 gi + 64 r + 16 t.
  auto load_w = [&](uint4 (&a)[U][2][2], int64_t gi0) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t k = (gi0 + int64_t(u) * KS) * 128 + 64 * r + 16 * t;
        const bool in = k < K;  // K % 16 == 0: a chunk is all in or all out
        a[u][r][0] = in ? gemv::load_stream(wa + k) : make_uint4(0, 0, 0, 0);
        a[u][r][1] = in ? gemv::load_stream(wb + k) : make_uint4(0, 0, 0, 0);
      }
  };
  float c[NT][4] = {};
  uint4 a[U][2][2];
  int64_t gi = warp;
  load_w(a, gi);
  griddep_wait();  // x_q and its scales come from the quantiser before us
  for (; gi < groups; gi += int64_t(KS) * U) {
    uint4 b[U][2][NT];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t k = (gi + int64_t(u) * KS) * 128 + 64 * r + 16 * t;
#pragma unroll
        for (int j = 0; j < NT; ++j)
          b[u][r][j] = k < K && xv[j] ? __ldg(reinterpret_cast<const uint4*>(xr[j] + k))
                                      : make_uint4(0, 0, 0, 0);
      }
    uint4 an[U][2][2];
    const bool more = gi + int64_t(KS) * U < groups;
    if (more) load_w(an, gi + int64_t(KS) * U);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t gu = gi + int64_t(u) * KS;
      if (gu >= groups) break;
      const float sw = __ldg(ws + gu);
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        float part[4] = {};
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const uint32_t ra[4] = {a[u][r][0].x, a[u][r][1].x, a[u][r][0].y, a[u][r][1].y};
          const uint32_t rb[4] = {a[u][r][0].z, a[u][r][1].z, a[u][r][0].w, a[u][r][1].w};
          const uint32_t ba[2] = {b[u][r][j].x, b[u][r][j].y}, bb[2] = {b[u][r][j].z, b[u][r][j].w};
          mma_e4m3_16832(part, ra, ba);
          mma_e4m3_16832(part, rb, bb);
        }
        // part[i]: row g (+ 8 for i >= 2), token 8 j + 2 t + (i & 1).
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int m = 8 * j + 2 * t + h;
          const float sx = m < p.num_rows ? __ldg(p.act_scale + int64_t(m) * groups + gu) : 0.0f;
          c[j][h] += part[h] * (sx * sw);
          c[j][2 + h] += part[2 + h] * (sx * sw);
        }
      }
    }
    if (more) {
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          a[u][r][0] = an[u][r][0];
          a[u][r][1] = an[u][r][1];
        }
    }
  }
  griddep_launch_dependents();
  __shared__ float part_sum[KS - 1][NT][4][32];
  if (warp > 0)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) part_sum[warp - 1][j][i][lane] = c[j][i];
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v = c[j][i];
#pragma unroll
      for (int q = 0; q < KS - 1; ++q) v += part_sum[q][j][i][lane];
      const int64_t n = n0 + g + (i >= 2 ? 8 : 0), m = 8 * j + 2 * t + (i & 1);
      if (n < N && m < p.num_rows) {
        if (p.bias != nullptr) v += __bfloat162float(p.bias[n]);
        if constexpr (std::is_same_v<To, float>) p.out_f32[m * p.ld_out + n] = v;
        else p.out_bf16[m * p.ld_out + n] = __float2bfloat16_rn(v);
      }
    }
}

}  // namespace moeopt::cuda::kernels
