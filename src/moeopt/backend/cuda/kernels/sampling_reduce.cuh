// Block-level reductions shared by the sampling kernels.
//
// ArgLse: one pass over a row gives its argmax (lowest id on ties) and its log-sum-exp by the
// online-softmax recurrence (s is the sum of exp(v - m) for the current maximum m, rescaled
// when m grows). fp32 with exp2f: for V = 151936 the relative error of s stays ~1e-6, far
// inside the 1e-4 the logprobs are held to. -inf entries (masked tokens) add nothing; NaN
// entries are ignored by the max and poison s (NaN logits are not supported).
//
// Best: the (value, id) order of the sampler, larger value first, equal values -> lower id.
//
// Every block_* function must be called by all threads of the block (it synchronises), and
// returns the result to every thread.
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>

namespace moeopt::cuda::kernels {

inline constexpr float kSampleLog2e = 1.4426950408889634f;

// exp(v - m) for v <= m, as exp2 of a pre-scaled argument (v == m == -inf gives 0, not NaN).
__device__ __forceinline__ float exp_sub(float v, float m) {
  return v == -INFINITY ? 0.f : exp2f((v - m) * kSampleLog2e);
}

// (value, id) comparison of the sampler: a before b.
__device__ __forceinline__ bool sample_better(float av, int ai, float bv, int bi) {
  return av > bv || (av == bv && ai < bi);
}

struct ArgLse {
  float m = -INFINITY;  // running maximum
  int idx = INT_MAX;    // its lowest id
  float s = 0.f;        // sum of exp(v - m)

  // Elements must arrive in increasing id order within one thread (the strict > keeps the
  // lowest id of equal maxima).
  __device__ __forceinline__ void push(float v, int i) {
    if (v > m) {
      s = m == -INFINITY ? 0.f : s * exp2f((m - v) * kSampleLog2e);
      m = v;
      idx = i;
    }
    if (idx == INT_MAX && v == -INFINITY) idx = i;  // an all -inf row still has an argmax
    s += exp_sub(v, m);
  }
  // Four consecutive elements base..base+3.
  __device__ __forceinline__ void push4(float4 v, int base) {
    const float mx = fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w));
    if (mx > m) {
      s = m == -INFINITY ? 0.f : s * exp2f((m - mx) * kSampleLog2e);
      m = mx;
      idx = base + (v.x == mx ? 0 : v.y == mx ? 1 : v.z == mx ? 2 : 3);
    }
    if (idx == INT_MAX && mx == -INFINITY) idx = base;
    if (m != -INFINITY)
      s += (exp_sub(v.x, m) + exp_sub(v.y, m)) + (exp_sub(v.z, m) + exp_sub(v.w, m));
  }
  __device__ __forceinline__ void merge(float om, int oi, float os) {
    const float nm = fmaxf(m, om);
    float ns = 0.f;
    if (nm != -INFINITY) {
      if (m != -INFINITY) ns += s * exp2f((m - nm) * kSampleLog2e);
      if (om != -INFINITY) ns += os * exp2f((om - nm) * kSampleLog2e);
    }
    if (oi != INT_MAX && (idx == INT_MAX || sample_better(om, oi, m, idx))) idx = oi;
    m = nm;
    s = ns;
  }
  // Natural log-sum-exp.
  __device__ __forceinline__ float lse() const { return m + logf(s); }
};

template <int THREADS>
struct ArgLseShared {
  float m[THREADS / 32];
  int idx[THREADS / 32];
  float s[THREADS / 32];
};

template <int THREADS>
__device__ __forceinline__ ArgLse block_arg_lse(ArgLse st, ArgLseShared<THREADS>& sh) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, st.m, o);
    const int oi = __shfl_xor_sync(0xffffffffu, st.idx, o);
    const float os = __shfl_xor_sync(0xffffffffu, st.s, o);
    st.merge(om, oi, os);
  }
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) {
    sh.m[warp] = st.m;
    sh.idx[warp] = st.idx;
    sh.s[warp] = st.s;
  }
  __syncthreads();
  ArgLse r;
  r.m = sh.m[0];
  r.idx = sh.idx[0];
  r.s = sh.s[0];
  for (int w = 1; w < THREADS / 32; ++w) r.merge(sh.m[w], sh.idx[w], sh.s[w]);
  return r;
}

// (value, id) best over the block; id INT_MAX means "none".
template <int THREADS>
struct BestShared {
  float v[THREADS / 32];
  int i[THREADS / 32];
};

template <int THREADS>
__device__ __forceinline__ void block_best(float& v, int& i, BestShared<THREADS>& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (oi != INT_MAX && (i == INT_MAX || sample_better(ov, oi, v, i))) {
      v = ov;
      i = oi;
    }
  }
  __syncthreads();
  if (lane == 0) {
    sh.v[warp] = v;
    sh.i[warp] = i;
  }
  __syncthreads();
  v = sh.v[0];
  i = sh.i[0];
  for (int w = 1; w < THREADS / 32; ++w) {
    if (sh.i[w] != INT_MAX && (i == INT_MAX || sample_better(sh.v[w], sh.i[w], v, i))) {
      v = sh.v[w];
      i = sh.i[w];
    }
  }
}

template <int THREADS>
struct SumShared {
  double v[THREADS / 32];
};

template <int THREADS>
__device__ __forceinline__ double block_sum(double x, SumShared<THREADS>& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  __syncthreads();
  if (lane == 0) sh.v[warp] = x;
  __syncthreads();
  double r = 0.0;
  for (int w = 0; w < THREADS / 32; ++w) r += sh.v[w];
  return r;
}

}  // namespace moeopt::cuda::kernels
