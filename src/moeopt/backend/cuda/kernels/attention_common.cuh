// Device helpers shared by the attention kernels: the transposing ldmatrix the P*V product
// needs, bf16 packing of fp32 pairs, the query-row -> sequence lookup of the varlen layout and
// the one rule that decides which sequences are computed at all (so the main and the reduce
// kernels agree on the rows they write zeros to).
//
// Framework-free: raw pointers only, nothing from the engine.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/attention_params.cuh"

namespace moeopt::cuda::kernels::attn {

// Four 8x8 b16 matrices, transposed on the way: lane i supplies the row address of row
// (i % 8) of matrix (i / 8); for a matrix stored rows = k, columns = n, lane l receives
// elements (k 2*(l%4) and 2*(l%4)+1, n l/4): the "col" B operand of mma.m16n8k16.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1,
                                                  uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// Two fp32 -> one register of two bf16 (lo in the low half: the lower column index).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The sequence whose query rows hold token t: the last s with query_start_loc[s] <= t
// (sequences with no new tokens are skipped by construction). Always in [0, num_seqs).
__device__ __forceinline__ int find_sequence(const int32_t* query_start_loc, int num_seqs,
                                             int t) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (query_start_loc[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// A sequence whose new tokens exceed its context, or whose context exceeds the block table,
// is a caller bug: its rows are written as zeros (the CPU reference reports an error).
__device__ __forceinline__ bool sequence_computable(int n_new, int context_len,
                                                    int max_context) {
  return n_new <= context_len && context_len <= max_context;
}

}  // namespace moeopt::cuda::kernels::attn
