// MoE router, fused: logits = x · Wr^T, softmax over all experts, top-k, optional
// renormalisation of the k selected probabilities (Qwen3/Mixtral `norm_topk_prob`; for
// Mixtral, softmax-over-all then renormalise equals softmax over the top-k logits).
//
// Fused path: one block of kRouterThreads threads handles TOK tokens: their x rows are staged
// in shared memory, each warp computes the logits of experts warp, warp+8, ... streaming the
// router weight rows with 16-byte loads (each Wr row is read once per block), then one warp
// per token does softmax + top-k in registers. With few tokens that is a handful of blocks
// each streaming the whole router matrix, latency-bound (91 us at M = 1 on an H200), so the
// launcher then uses the split path: logits over a (tokens x expert groups) grid into the
// logits buffer, then a top-k kernel.
//
// Top-k: experts are selected in descending logit order; ties go to the LOWEST expert id,
// as torch.topk does on the CPU. Selection is done on the fp32 logits (softmax is monotone).
// NaN logits are not supported (selection order with NaN is unspecified).
//
// Bounds: E <= 32 * kMaxExpertsPerLane (512), 1 <= k <= min(32, E), H % 8 == 0,
//         smem = TOK*H*2 + TOK*E*4 bytes (the launcher picks TOK so this fits).
// Test: tests/unit/cuda_moe_test.cpp (RouterTopk*). Bench: bench/moe_layer.py (router row).
#pragma once

#include <cuda_bf16.h>

#include <cfloat>
#include <cstdint>

#include "moeopt/backend/cuda/kernels/moe_params.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {


// Stages the x rows of tokens [t0, t0 + TOK) in shared memory (rows past the end are 0).
template <int TOK>
__device__ __forceinline__ void router_stage_x(const RouterParams& p, int t0, int ntok,
                                               __nv_bfloat16* xs) {
  const int H = p.hidden;
  const int chunks_per_row = H / 8;
  for (int c = threadIdx.x; c < TOK * chunks_per_row; c += kRouterThreads) {
    const int t = c / chunks_per_row;
    const int h = (c % chunks_per_row) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (t < ntok) v = *reinterpret_cast<const uint4*>(p.x + size_t(t0 + t) * H + h);
    *reinterpret_cast<uint4*>(xs + size_t(t) * H + h) = v;
  }
}

// Logits of experts [e_begin, e_end) for the TOK staged tokens: warp w owns experts
// e_begin + w, + 8, ...; lanes stride H in 8-element (16-byte) chunks. Writes
// out[t * out_stride + e] for t < ntok.
template <int TOK>
__device__ __forceinline__ void router_logits(const RouterParams& p, const __nv_bfloat16* xs,
                                              int ntok, int e_begin, int e_end, float* out,
                                              size_t out_stride) {
  const int H = p.hidden;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  constexpr int kWarps = kRouterThreads / 32;
  for (int e = e_begin + warp; e < e_end; e += kWarps) {
    float acc[TOK];
#pragma unroll
    for (int t = 0; t < TOK; ++t) acc[t] = 0.f;
    const __nv_bfloat16* wrow = p.router_w + size_t(e) * H;
    for (int h = lane * 8; h < H; h += 32 * 8) {
      const uint4 w = __ldg(reinterpret_cast<const uint4*>(wrow + h));
#pragma unroll
      for (int t = 0; t < TOK; ++t) {
        const uint4 xv = *reinterpret_cast<const uint4*>(xs + size_t(t) * H + h);
        acc[t] += dot8_bf16(w, xv);
      }
    }
#pragma unroll
    for (int t = 0; t < TOK; ++t) {
      const float s = warp_sum(acc[t]);
      if (lane == 0 && t < ntok) out[t * out_stride + e] = s;
    }
  }
}

// Softmax + top-k of one token by one warp; lt = its E logits. Lane owns experts lane + 32*j.
__device__ __forceinline__ void router_topk_token(const RouterParams& p, const float* lt, int tok,
                                                  bool write_logits) {
  const int E = p.num_experts;
  const int lane = threadIdx.x % 32;
  float v[kMaxExpertsPerLane];
  float mx = -FLT_MAX;
#pragma unroll
  for (int j = 0; j < kMaxExpertsPerLane; ++j) {
    const int e = lane + 32 * j;
    v[j] = e < E ? lt[e] : -FLT_MAX;
    if (e < E) mx = fmaxf(mx, v[j]);
  }
  mx = warp_max(mx);
  float denom = 0.f;
#pragma unroll
  for (int j = 0; j < kMaxExpertsPerLane; ++j)
    if (lane + 32 * j < E) denom += __expf(v[j] - mx);
  denom = warp_sum(denom);

  if (write_logits && p.logits_out != nullptr) {
#pragma unroll
    for (int j = 0; j < kMaxExpertsPerLane; ++j)
      if (lane + 32 * j < E) p.logits_out[size_t(tok) * E + lane + 32 * j] = v[j];
  }

  uint32_t taken = 0;   // bit j: expert lane + 32*j already selected
  float my_prob = 0.f;  // lane s keeps the probability of the s-th selection
  int my_id = -1;
  float picked_sum = 0.f;
  for (int s = 0; s < p.top_k; ++s) {
    // Best candidate in this lane: j ascending means lower ids first, so strict '>' keeps
    // the lowest id among equal values.
    float best = -FLT_MAX;
    int best_id = 0x7fffffff;
#pragma unroll
    for (int j = 0; j < kMaxExpertsPerLane; ++j) {
      const int e = lane + 32 * j;
      if (e < E && !(taken >> j & 1u) && (v[j] > best || best_id == 0x7fffffff)) {
        best = v[j];
        best_id = e;
      }
    }
    // Warp argmax with the lowest-id tie break.
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, best_id, o);
      if (ob > best || (ob == best && oi < best_id)) {
        best = ob;
        best_id = oi;
      }
    }
    if ((best_id & 31) == lane) taken |= 1u << (best_id >> 5);
    const float prob = __expf(best - mx) / denom;
    picked_sum += prob;
    if (lane == s) {
      my_prob = prob;
      my_id = best_id;
    }
  }
  if (lane < p.top_k) {
    const float w = p.renormalize ? my_prob / picked_sum : my_prob;
    p.expert_ids[size_t(tok) * p.top_k + lane] = my_id;
    p.expert_weights[size_t(tok) * p.top_k + lane] = w;
  }
}

// Fused path (many tokens): one block = TOK tokens, all experts, logits in shared memory.
template <int TOK>
__global__ void __launch_bounds__(kRouterThreads) moe_router_topk_kernel(RouterParams p) {
  static_assert(TOK >= 1 && TOK <= 16, "router: 1..16 tokens per block");
  extern __shared__ __align__(16) unsigned char router_smem[];
  const int H = p.hidden;
  const int E = p.num_experts;
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(router_smem);  // [TOK, H]
  float* logits = reinterpret_cast<float*>(router_smem + size_t(TOK) * H * 2);  // [TOK, E]

  griddep_wait();  // x comes from the previous kernel
  griddep_launch_dependents();
  const int t0 = blockIdx.x * TOK;
  const int ntok = min(TOK, p.num_tokens - t0);
  router_stage_x<TOK>(p, t0, ntok, xs);
  __syncthreads();
  router_logits<TOK>(p, xs, ntok, 0, E, logits, E);
  __syncthreads();
  constexpr int kWarps = kRouterThreads / 32;
  for (int t = threadIdx.x / 32; t < ntok; t += kWarps)
    router_topk_token(p, logits + t * E, t0 + t, /*write_logits=*/true);
}

// Split path (few tokens, where the fused kernel would run on a handful of SMs):
// 1) logits: grid (ceil(M / TOK), ceil(E / kRouterExpertsPerBlock)), each block streams
//    kRouterExpertsPerBlock router rows for TOK tokens into p.logits_out (required here);
// 2) top-k: one warp per token reading its logits back.
template <int TOK>
__global__ void __launch_bounds__(kRouterThreads) moe_router_logits_kernel(RouterParams p) {
  static_assert(TOK >= 1 && TOK <= 16, "router: 1..16 tokens per block");
  extern __shared__ __align__(16) unsigned char router_smem[];
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(router_smem);  // [TOK, H]
  griddep_wait();
  griddep_launch_dependents();
  const int t0 = blockIdx.x * TOK;
  const int ntok = min(TOK, p.num_tokens - t0);
  const int e_begin = blockIdx.y * kRouterExpertsPerBlock;
  const int e_end = min(p.num_experts, e_begin + kRouterExpertsPerBlock);
  router_stage_x<TOK>(p, t0, ntok, xs);
  __syncthreads();
  router_logits<TOK>(p, xs, ntok, e_begin, e_end, p.logits_out + size_t(t0) * p.num_experts,
                     p.num_experts);
}

__global__ void __launch_bounds__(kRouterThreads) moe_router_topk_from_logits_kernel(
    RouterParams p) {
  griddep_wait();  // logits from moe_router_logits_kernel
  griddep_launch_dependents();
  const int tok = blockIdx.x * (kRouterThreads / 32) + threadIdx.x / 32;
  if (tok >= p.num_tokens) return;
  router_topk_token(p, p.logits_out + size_t(tok) * p.num_experts, tok, /*write_logits=*/false);
}

}  // namespace moeopt::cuda::kernels
