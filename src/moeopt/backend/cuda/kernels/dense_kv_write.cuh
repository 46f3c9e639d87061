// kv_cache_write (ops/attention.h): the bf16 k and v rows of token t ([hkv * d] each, token
// rows strided) are copied bit for bit to row slots[t] of the bf16 caches, viewed as
// [num_blocks * block_size, hkv * d]. A negative slot skips the token (padding); a slot past
// the cache is skipped too (a kernel cannot return the CPU's error).
//
// One block of kKvWriteThreads per token; 16-byte chunks when p.vec, else 2-byte elements.
#pragma once

#include "moeopt/backend/cuda/kernels/dense_common.cuh"

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

}  // namespace moeopt::cuda::kernels
