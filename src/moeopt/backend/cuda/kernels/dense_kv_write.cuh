// kv_cache_write (ops/attention.h): the bf16 k and v rows of token t ([hkv * d] each, token
// rows strided) are copied bit for bit to row slots[t] of the bf16 caches, viewed as
// [num_blocks * block_size, hkv * d]. A negative slot skips the token (padding); a slot past
// the cache is skipped too (a kernel cannot return the CPU's error).
//
// One block of kKvWriteThreads per token; 16-byte chunks when p.vec, else 2-byte elements.
//
// FP8 caches (dense_kv_write_fp8_kernel): each (token, kv head) row of d values of k and of
// v is quantised on its own (fp8_codes.cuh, the CPU's rounding): one warp per row, lane l
// holding elements l, l + 32, ... (d <= 256: at most 8), amax by a warp reduction, the codes
// to the cache row and the scale to k_scale / v_scale [slot * hkv + head].
#pragma once

#include "moeopt/backend/cuda/kernels/dense_common.cuh"
#include "moeopt/backend/cuda/kernels/fp8_codes.cuh"

namespace moeopt::cuda::kernels {

__global__ void __launch_bounds__(kKvWriteThreads) dense_kv_write_kernel(KvWriteParams p) {
  const int64_t t = blockIdx.x;
  const int32_t slot = p.slots[t];
  if (slot < 0 || int64_t(slot) >= p.num_slots) return;
  const uint16_t* ks = static_cast<const uint16_t*>(p.k) + t * p.k_stride;
  const uint16_t* vs = static_cast<const uint16_t*>(p.v) + t * p.v_stride;
  uint16_t* kd = static_cast<uint16_t*>(p.k_cache) + int64_t(slot) * p.row;
  uint16_t* vd = static_cast<uint16_t*>(p.v_cache) + int64_t(slot) * p.row;
  if (p.vec) {
    for (int64_t c = threadIdx.x; c < p.row / 8; c += kKvWriteThreads) {
      reinterpret_cast<uint4*>(kd)[c] = reinterpret_cast<const uint4*>(ks)[c];
      reinterpret_cast<uint4*>(vd)[c] = reinterpret_cast<const uint4*>(vs)[c];
    }
  } else {
    for (int64_t i = threadIdx.x; i < p.row; i += kKvWriteThreads) {
      kd[i] = ks[i];
      vd[i] = vs[i];
    }
  }
}

__global__ void __launch_bounds__(kKvWriteThreads) dense_kv_write_fp8_kernel(KvWriteParams p) {
  constexpr int kWarps = kKvWriteThreads / 32, kPerLane = kKvWriteFp8MaxDim / 32;
  const int64_t t = blockIdx.x;
  const int32_t slot = p.slots[t];
  if (slot < 0 || int64_t(slot) >= p.num_slots) return;
  const int d = p.head_dim, hkv = int(p.row / d);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < 2 * hkv; r += kWarps) {  // rows: k heads, then v heads
    const bool is_v = r >= hkv;
    const int h = is_v ? r - hkv : r;
    const __nv_bfloat16* src = static_cast<const __nv_bfloat16*>(is_v ? p.v : p.k) +
                               t * (is_v ? p.v_stride : p.k_stride) + int64_t(h) * d;
    float x[kPerLane];
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane + 32 * i;
      x[i] = e < d ? __bfloat162float(src[e]) : 0.f;
      amax = fmaxf(amax, fabsf(x[i]));
    }
    const float scale = fp8_scale_of(dense::warp_max(amax));
    const int64_t row = int64_t(slot) * hkv + h;
    unsigned char* dst = static_cast<unsigned char*>(is_v ? p.v_cache : p.k_cache) + row * d;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane + 32 * i;
      if (e < d) dst[e] = fp8_code(x[i], scale);
    }
    if (lane == 0) (is_v ? p.v_scale : p.k_scale)[row] = scale;
  }
}

}  // namespace moeopt::cuda::kernels
