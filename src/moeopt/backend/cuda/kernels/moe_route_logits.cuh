// MoE routing from given fp32 router logits: the ops-level moe_route (ops/moe.h) on CUDA.
//
// Per token (one warp; lane owns experts lane + 32*j, j < kMaxExpertsPerLane):
//   scores = softmax(logits) (exp and sum in double, result rounded to fp32, as the CPU
//            reference does) or sigmoid(logits) (fp32)
//   choice = scores + correction_bias (DeepSeek-V3's e_score_correction_bias; selection only)
//   grouping: group g = experts [g*gs, (g+1)*gs), gs = E / n_group; group score = max choice
//            (kMaxScore) or the sum of the two largest choices (kTop2Sum); the topk_group best
//            groups stay (ties: lowest group id) and every other expert's choice becomes 0.0
//            (HF's masked_fill(..., 0.0), so a negative-bias expert of a dropped group can
//            still be picked, as in transformers)
//   ids    = top-k of choice, best first, ties to the lowest expert id (torch.topk on CPU)
//   weights = scores[ids]; renormalised by (sum + renormalize_eps) when asked, in selection
//            order; then times routed_scaling_factor
// The arithmetic follows backend/cpu/cpu_moe.cpp step by step (same fp32 operations in the
// same order), so ids agree with the CPU oracle except where two choices are within a
// rounding of each other.
//
// Bounds: E <= 32 * kMaxExpertsPerLane (512), 1 <= k <= min(32, E), n_group | E,
//         topk_group <= n_group. NaN logits are not supported (order unspecified).
// Test: tests/unit/cuda_moe_ops_test.cpp (RouteCase*).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>

#include "moeopt/backend/cuda/kernels/moe_params.cuh"
#include "moeopt/backend/cuda/kernels/sm80_mma_helpers.cuh"

namespace moeopt::cuda::kernels {

__device__ __forceinline__ float route_load_bias(const RouteLogitsParams& p, int e) {
  if (p.correction_bias == nullptr) return 0.f;
  switch (p.bias_dtype) {
    case ElemDType::kF32: return static_cast<const float*>(p.correction_bias)[e];
    case ElemDType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p.correction_bias)[e]);
    case ElemDType::kF16: return __half2float(static_cast<const __half*>(p.correction_bias)[e]);
  }
  return 0.f;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Warp-wide "best of (value, id)" with larger value first, equal values -> lower id.
// `extra` travels with the winner.
__device__ __forceinline__ void warp_best(float& best, int& best_id, float& extra) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, best_id, o);
    const float ox = __shfl_xor_sync(0xffffffffu, extra, o);
    if (oi != INT32_MAX && (best_id == INT32_MAX || ob > best || (ob == best && oi < best_id))) {
      best = ob;
      best_id = oi;
      extra = ox;
    }
  }
}

__global__ void __launch_bounds__(kRouterThreads) moe_route_from_logits_kernel(
    RouteLogitsParams p) {
  // Per warp: the token's choices (grouping reads them by group) and per-group values.
  __shared__ float s_choice[kRouteWarps][kRouteMaxExperts];
  __shared__ float s_group[kRouteWarps][kRouteMaxExperts];
  griddep_wait();  // logits come from the previous kernel
  griddep_launch_dependents();
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int tok = blockIdx.x * kRouteWarps + warp;
  if (tok >= p.num_tokens) return;  // warp-uniform; no block-wide barrier below
  const int E = p.num_experts;
  const float* lt = p.logits + size_t(tok) * size_t(p.logits_stride);

  float score[kMaxExpertsPerLane], choice[kMaxExpertsPerLane];
  if (p.scoring == RouteScoring::kSoftmax) {
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < kMaxExpertsPerLane; ++j) {
      const int e = lane + 32 * j;
      score[j] = e < E ? lt[e] : 0.f;
      if (e < E) mx = fmaxf(mx, score[j]);
    }
    mx = warp_max(mx);
    double sum = 0.0;
#pragma unroll
    for (int j = 0; j < kMaxExpertsPerLane; ++j)
      if (lane + 32 * j < E) sum += exp(double(score[j]) - double(mx));
    sum = warp_sum_f64(sum);
#pragma unroll
    for (int j = 0; j < kMaxExpertsPerLane; ++j)
      if (lane + 32 * j < E) score[j] = float(exp(double(score[j]) - double(mx)) / sum);
  } else {
#pragma unroll
    for (int j = 0; j < kMaxExpertsPerLane; ++j) {
      const int e = lane + 32 * j;
      score[j] = e < E ? 1.0f / (1.0f + expf(-lt[e])) : 0.f;
    }
  }
#pragma unroll
  for (int j = 0; j < kMaxExpertsPerLane; ++j) {
    const int e = lane + 32 * j;
    choice[j] = e < E ? score[j] + route_load_bias(p, e) : 0.f;
  }

  if (p.grouping != RouteGrouping::kNone) {
    const int ng = p.n_group, gs = E / p.n_group;
#pragma unroll
    for (int j = 0; j < kMaxExpertsPerLane; ++j)
      if (lane + 32 * j < E) s_choice[warp][lane + 32 * j] = choice[j];
    __syncwarp();
    for (int g = lane; g < ng; g += 32) {
      const float* c = &s_choice[warp][g * gs];
      float best = c[0], second = -INFINITY;
      for (int i = 1; i < gs; ++i) {
        if (c[i] > best) {
          second = best;
          best = c[i];
        } else if (c[i] > second) {
          second = c[i];
        }
      }
      s_group[warp][g] = p.grouping == RouteGrouping::kMaxScore ? best : best + second;
    }
    __syncwarp();
    // Keep the topk_group best groups: lane owns groups lane + 32*j.
    uint32_t kept = 0;
    for (int t = 0; t < p.topk_group; ++t) {
      float best = -INFINITY, unused = 0.f;
      int best_id = INT32_MAX;
      for (int j = 0; lane + 32 * j < ng; ++j) {
        const float v = s_group[warp][lane + 32 * j];
        if (!(kept >> j & 1u) && (best_id == INT32_MAX || v > best)) {
          best = v;
          best_id = lane + 32 * j;
        }
      }
      warp_best(best, best_id, unused);
      if ((best_id & 31) == lane) kept |= 1u << (best_id >> 5);
    }
    __syncwarp();
    for (int j = 0; lane + 32 * j < ng; ++j)
      s_group[warp][lane + 32 * j] = (kept >> j & 1u) ? 1.f : 0.f;
    __syncwarp();
#pragma unroll
    for (int j = 0; j < kMaxExpertsPerLane; ++j) {
      const int e = lane + 32 * j;
      if (e < E && s_group[warp][e / gs] == 0.f) choice[j] = 0.0f;
    }
  }

  // Top-k, best first; lane s keeps the s-th selection.
  uint32_t taken = 0;
  float my_score = 0.f, picked_sum = 0.f;
  int my_id = -1;
  for (int s = 0; s < p.top_k; ++s) {
    float best = -INFINITY, best_score = 0.f;
    int best_id = INT32_MAX;
#pragma unroll
    for (int j = 0; j < kMaxExpertsPerLane; ++j) {
      const int e = lane + 32 * j;
      // j ascending = ids ascending, so strict '>' keeps the lowest id among equals.
      if (e < E && !(taken >> j & 1u) && (best_id == INT32_MAX || choice[j] > best)) {
        best = choice[j];
        best_id = e;
        best_score = score[j];
      }
    }
    warp_best(best, best_id, best_score);
    if ((best_id & 31) == lane) taken |= 1u << (best_id >> 5);
    picked_sum += best_score;  // fp32, selection order: the CPU reference's order
    if (lane == s) {
      my_score = best_score;
      my_id = best_id;
    }
  }
  if (lane < p.top_k) {
    float w = my_score;
    if (p.renormalize) w /= (picked_sum + p.renormalize_eps);
    w *= p.routed_scaling_factor;
    p.expert_ids[size_t(tok) * p.top_k + lane] = my_id;
    p.expert_weights[size_t(tok) * p.top_k + lane] = w;
  }
}

}  // namespace moeopt::cuda::kernels
