// Row reductions over f32 logits (ops/reduce.h), one block of kReduceThreads per row, fp32.
//
// argmax: each thread scans its elements in increasing index order keeping (value, index);
//   candidates are merged by "larger value, else lower index", so the lowest index of the
//   maximum wins. NaN compares false with everything and is never taken (it never wins;
//   the CPU reference lets the first NaN win); a row with no number answers 0.
// log_softmax: three passes (max with fmaxf, which ignores NaN as the CPU's std::fmax;
//   sum of expf(x - max); out = x - (max + log(sum))). Every element is read and written by
//   the same thread in the last pass and the reductions end in barriers, so out may be x.
// float4 accesses when p.vec (x, out 16-byte aligned; v and the row strides multiples of 4).
#pragma once

#include <climits>

#include "moeopt/backend/cuda/kernels/dense_common.cuh"

namespace moeopt::cuda::kernels {

__device__ __forceinline__ void argmax_take(float v, int32_t i, float& bv, int32_t& bi) {
  if (v > bv || (v == bv && i < bi)) {
    bv = v;
    bi = i;
  }
}

__global__ void __launch_bounds__(kReduceThreads) dense_argmax_kernel(ArgmaxParams p) {
  __shared__ float sv[kReduceThreads / 32];
  __shared__ int32_t si[kReduceThreads / 32];
  const float* x = p.x + int64_t(blockIdx.x) * p.x_stride;
  float bv = dense::neg_inf();
  int32_t bi = INT_MAX;  // nothing taken yet: loses every tie
  if (p.vec) {
    for (int64_t c = threadIdx.x; c < p.v / 4; c += kReduceThreads) {
      const float4 f = reinterpret_cast<const float4*>(x)[c];
      argmax_take(f.x, int32_t(c * 4), bv, bi);
      argmax_take(f.y, int32_t(c * 4 + 1), bv, bi);
      argmax_take(f.z, int32_t(c * 4 + 2), bv, bi);
      argmax_take(f.w, int32_t(c * 4 + 3), bv, bi);
    }
  } else {
    for (int64_t i = threadIdx.x; i < p.v; i += kReduceThreads)
      argmax_take(x[i], int32_t(i), bv, bi);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    argmax_take(ov, oi, bv, bi);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp != 0) return;
  bv = lane < kReduceThreads / 32 ? sv[lane] : dense::neg_inf();
  bi = lane < kReduceThreads / 32 ? si[lane] : INT_MAX;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    argmax_take(ov, oi, bv, bi);
  }
  if (lane == 0) p.out[blockIdx.x] = bi == INT_MAX ? 0 : bi;
}

__global__ void __launch_bounds__(kReduceThreads) dense_log_softmax_kernel(LogSoftmaxParams p) {
  __shared__ float red[kReduceThreads / 32];
  const float* x = p.x + int64_t(blockIdx.x) * p.x_stride;
  float* out = p.out + int64_t(blockIdx.x) * p.out_stride;
  const int64_t n4 = p.vec ? p.v / 4 : 0;
  float mx = dense::neg_inf();
  for (int64_t c = threadIdx.x; c < n4; c += kReduceThreads) {
    const float4 f = reinterpret_cast<const float4*>(x)[c];
    mx = fmaxf(fmaxf(mx, f.x), fmaxf(f.y, fmaxf(f.z, f.w)));
  }
  for (int64_t i = n4 * 4 + threadIdx.x; i < p.v; i += kReduceThreads) mx = fmaxf(mx, x[i]);
  mx = dense::block_max<kReduceThreads>(mx, red);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < n4; c += kReduceThreads) {
    const float4 f = reinterpret_cast<const float4*>(x)[c];
    sum += expf(f.x - mx) + expf(f.y - mx) + expf(f.z - mx) + expf(f.w - mx);
  }
  for (int64_t i = n4 * 4 + threadIdx.x; i < p.v; i += kReduceThreads) sum += expf(x[i] - mx);
  sum = dense::block_sum<kReduceThreads>(sum, red);
  const float lse = mx + logf(sum);
  for (int64_t c = threadIdx.x; c < n4; c += kReduceThreads) {
    const float4 f = reinterpret_cast<const float4*>(x)[c];
    reinterpret_cast<float4*>(out)[c] = make_float4(f.x - lse, f.y - lse, f.z - lse, f.w - lse);
  }
  for (int64_t i = n4 * 4 + threadIdx.x; i < p.v; i += kReduceThreads) out[i] = x[i] - lse;
}

}  // namespace moeopt::cuda::kernels
