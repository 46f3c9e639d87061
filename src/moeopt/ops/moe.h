// Mixture-of-Experts ops: route -> permute -> experts -> combine, and moe_forward composing
// them. Vocabulary (DESIGN.md): expert_ids, expert_weights, tokens_per_expert,
// expert_offsets, permuted_row_to_token.
//
// For M tokens, hidden H, E experts of width I, top-k:
//
// 1. moe_route: router_logits [M, E] f32 -> expert_ids [M, k] int32, expert_weights [M, k] f32
//    scores = softmax(logits) or sigmoid(logits)                     (fp32)
//    choice = scores (+ correction_bias[E], DeepSeek-V3's e_score_correction_bias, which
//             only steers the selection)
//    grouping (DeepSeek): experts split into n_group equal groups; a group's score is its
//             max choice (kMaxScore, DeepSeek-V2 "group_limited_greedy") or the sum of its two
//             largest choices (kTop2Sum, DeepSeek-V3 "noaux_tc"); the topk_group best groups
//             stay and the choice of every other expert is set to 0.0 — as HF's
//             modeling_deepseek_v2 and DeepSeek's own modeling_deepseek.py do with
//             masked_fill(..., 0.0) (not -inf: with a negative bias a masked expert can then
//             still win). transformers 5.24's modeling_deepseek_v3 masks with -inf instead;
//             the two differ only when fewer than k kept experts have a positive choice.
//    ids    = top-k of choice; weights = scores[ids] (without the bias)
//    renormalize (norm_topk_prob; Mixtral always): weights /= (sum(weights) + renormalize_eps)
//             (Mixtral's softmax over the k selected logits is the same number.)
//    weights *= routed_scaling_factor
//    Order and ties: each row's k entries are sorted by choice, largest first; equal values
//    go to the lowest expert id (group ties: lowest group id). This is what torch.topk does
//    on the CPU; k <= 32, E <= 512, k <= E, and with grouping k <= topk_group * E / n_group.
//
// 2. moe_permute: counting sort of the M*k (token, j) pairs by expert, stable in (token, j).
//    tokens_per_expert     [E]     int32  pairs routed to expert e
//    expert_offsets        [E + 1] int32  exclusive scan of the per-expert row counts, each
//                                         rounded up to a multiple of pad_rows_to (the GEMM
//                                         tile; 1 = no padding). expert_offsets[E] = rows used
//    permuted_row_to_token [R]     int32  token of each row; -1 on padding rows and on rows
//                                         past expert_offsets[E]
//    permuted_row_weight   [R]     f32    expert_weights of that (token, j); 0 on padding
//    token_to_permuted_row [M, k]  int32  the inverse: row of pair (m, j)
//    R must be >= moe_permuted_capacity(M, k, E, pad_rows_to) = M*k + E*(pad_rows_to - 1).
//
// 3. moe_experts: for each expert e and each of its rows r (token t = permuted_row_to_token):
//       a = silu(x[t] · gate_e^T) * (x[t] · up_e^T)          [I]   (fp32)
//       out_rows[r] = permuted_row_weight[r] * (a · down_e^T)  [H]
//    Padding rows are written as 0. x [M, H] f32, out_rows [R, H] f32.
//
// 4. moe_combine: out[m] = sum_j rows[token_to_permuted_row[m, j]], j = 0..k-1 in order.
//
// Expert weights (ExpertWeights below) are used in place, bf16 / f16 / f32 / fp8 e4m3, either
// as HF checkpoints store them, one tensor per expert (gate_proj [I, H], up_proj [I, H],
// down_proj [H, I]; Mixtral's w1 / w3 / w2), or stacked "ENK" ([E, N, K] row-major):
// w13 [E, 2I, H] (rows 0..I-1 = gate, I..2I-1 = up, as transformers' gate_up_proj) and
// w2 [E, H, I].
//
// FP8 experts (contract shared by the CPU reference and the CUDA kernels). All expert
// matrices are fp8 e4m3 or none is; fp8 ones carry f32 block scales with HF
// `weight_scale_inv` semantics: w = float(w_q) * scale of its 128x128 block (ops/fp8.h).
// With IB = ceil(I/128), HB = ceil(H/128):
//   stacked     w13_scale [E, 2*IB, HB] f32: rows 0..IB-1 are the gate's blocks, IB..2*IB-1
//                         the up's (gate row r -> block r/128, up row r -> IB + r/128), so
//                         with I not a multiple of 128 no block mixes gate and up rows;
//               w2_scale  [E, HB, IB]   f32
//   per expert  gate_scale[e], up_scale[e] [IB, HB] f32, down_scale[e] [HB, IB] f32
// gate_scale(e) / up_scale(e) / down_scale(e) give expert e's [N-blocks, K-blocks] views
// whichever the layout. Scales are contiguous; a non-fp8 ExpertWeights has no scales
// (w13_scale / w2_scale empty, the vectors empty). validate_expert_weights checks all of it.
// The FP8 computation (activations quantised per token in groups of 128, the SiLU·up
// intermediate quantised the same way before GEMM 2, routing weight applied to GEMM 2's
// f32 output) is the one ops/fp8.h defines. Tests: tests/unit/ops_moe_test.cpp (kMoeFp8*).
#pragma once

#include <optional>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

constexpr int kMaxTopK = 32;
constexpr int kMaxExperts = 512;

enum class RouterScoring { kSoftmax, kSigmoid };
enum class ExpertGrouping { kNone, kMaxScore, kTop2Sum };

struct RouteParams {
  int top_k = 1;
  RouterScoring scoring = RouterScoring::kSoftmax;
  bool renormalize = false;        // norm_topk_prob
  float renormalize_eps = 0.0f;    // DeepSeek adds 1e-20 to the denominator
  ExpertGrouping grouping = ExpertGrouping::kNone;
  int n_group = 1;
  int topk_group = 1;
  float routed_scaling_factor = 1.0f;
  std::optional<TensorView> correction_bias;  // [E] f32 (bf16/f16 accepted)
};

Status moe_route(const Context& ctx, const TensorView& router_logits, const RouteParams& params,
                 const TensorView& expert_ids, const TensorView& expert_weights);

// Outputs of moe_permute (views the caller owns; see the file comment for shapes).
struct MoePermutation {
  TensorView tokens_per_expert;      // [E] int32
  TensorView expert_offsets;         // [E + 1] int32
  TensorView permuted_row_to_token;  // [R] int32
  TensorView permuted_row_weight;    // [R] f32
  TensorView token_to_permuted_row;  // [M, k] int32
};

int64_t moe_permuted_capacity(int64_t num_tokens, int top_k, int64_t num_experts,
                              int pad_rows_to);

Status moe_permute(const Context& ctx, const TensorView& expert_ids,
                   const TensorView& expert_weights, int64_t num_experts, int pad_rows_to,
                   const MoePermutation& perm);

struct ExpertWeights {
  // Stacked ENK layout (used when gate/up/down are empty).
  TensorView w13;  // [E, 2I, H]
  TensorView w2;   // [E, H, I]
  // FP8 block scales of the stacked layout (fp8 w13/w2 only; see the file comment).
  TensorView w13_scale;  // [E, 2*ceil(I/128), ceil(H/128)] f32
  TensorView w2_scale;   // [E, ceil(H/128), ceil(I/128)] f32
  // Per-expert tensors (a checkpoint's separate tensors), E entries each.
  std::vector<TensorView> gate;  // [I, H]
  std::vector<TensorView> up;    // [I, H]
  std::vector<TensorView> down;  // [H, I]
  // FP8 block scales of the per-expert layout, E entries each (fp8 only).
  std::vector<TensorView> gate_scales;  // [ceil(I/128), ceil(H/128)] f32
  std::vector<TensorView> up_scales;    // [ceil(I/128), ceil(H/128)] f32
  std::vector<TensorView> down_scales;  // [ceil(H/128), ceil(I/128)] f32

  static ExpertWeights stacked(const TensorView& w13, const TensorView& w2);
  static ExpertWeights stacked_fp8(const TensorView& w13, const TensorView& w13_scale,
                                   const TensorView& w2, const TensorView& w2_scale);
  static ExpertWeights per_expert(std::vector<TensorView> gate, std::vector<TensorView> up,
                                  std::vector<TensorView> down);
  static ExpertWeights per_expert_fp8(std::vector<TensorView> gate, std::vector<TensorView> up,
                                      std::vector<TensorView> down,
                                      std::vector<TensorView> gate_scales,
                                      std::vector<TensorView> up_scales,
                                      std::vector<TensorView> down_scales);
  // Stacked but with separate gate and up stacks: gate [E, I, H], up [E, I, H], down [E, H, I].
  static ExpertWeights stacked_separate(const TensorView& gate, const TensorView& up,
                                        const TensorView& down);

  bool is_stacked() const { return gate.empty(); }
  // True when the expert matrices are fp8 e4m3 (and so carry block scales).
  bool is_fp8() const;
  int64_t num_experts() const;
  int64_t hidden() const;
  int64_t intermediate() const;
  // Views of expert e's matrices, whichever the layout: [I, H], [I, H], [H, I].
  TensorView gate_proj(int64_t e) const;
  TensorView up_proj(int64_t e) const;
  TensorView down_proj(int64_t e) const;
  // FP8 only: expert e's block scales, whichever the layout: [IB, HB], [IB, HB], [HB, IB].
  TensorView gate_scale(int64_t e) const;
  TensorView up_scale(int64_t e) const;
  TensorView down_scale(int64_t e) const;
};

// Checks ExpertWeights' shapes/dtypes: all experts alike, contiguous, bf16/f16/f32, or fp8
// e4m3 with f32 block scales of exactly the shapes above; non-fp8 weights carry no scales.
Status validate_expert_weights(const char* op, const ExpertWeights& w);

Status moe_experts(const Context& ctx, const TensorView& x, const ExpertWeights& weights,
                   const MoePermutation& perm, const TensorView& out_rows);

Status moe_combine(const Context& ctx, const TensorView& rows,
                   const TensorView& token_to_permuted_row, const TensorView& out);

struct MoeParams {
  RouteParams route;
  int pad_rows_to = 1;
};

// route + permute + experts + combine: out [M, H] = sum_j w[m, j] * expert_{id[m, j]}(x[m]).
// On the CPU the temporaries are allocated here; on CUDA this goes to the device backend.
Status moe_forward(const Context& ctx, const TensorView& x, const TensorView& router_logits,
                   const ExpertWeights& weights, const MoeParams& params, const TensorView& out);

}  // namespace moeopt::ops
