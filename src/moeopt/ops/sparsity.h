// 2:4 structured sparsity of weight matrices (the layout the sparse tensor cores take): along
// K, every group of 4 consecutive elements of a row keeps 2 and zeroes the other 2.
//
//   w [N, K] f32 / bf16 / f16 / f8e4m3 (host, contiguous); out the same dtype and shape (may be
//   w itself). In each group {4g .. 4g+3} of a row the two elements with the largest
//   |w[n, k]| * importance[k] are kept (importance null: magnitude pruning; an activation-aware
//   criterion passes per-input-channel activation norms, as Wanda does), ties going to the
//   lower k; a tail group of K % 4 < 4 elements keeps min(2, its size). e4m3 codes are ranked
//   by their value: a group of 4 lies inside one 128-wide scale block, so the block scale
//   does not change the order, and a pruned code is +0 (0x00).
// The pruned dense matrix is the CPU reference of a sparse kernel: what a 2:4 GEMM computes
// equals a dense GEMM with it. Pruning keeps each group's largest element, so a 128x128 FP8
// block's amax, and with it its scale, is the same before and after.
// Test: tests/unit/ops_sparsity_test.cpp.
#pragma once

#include <unordered_map>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

inline constexpr int kSparseGroup = 4;  // elements per group along K
inline constexpr int kSparseKeep = 2;   // kept per group

Status prune_2_4(const Context& ctx, const TensorView& w, const TensorView& out,
                 const float* importance = nullptr);

// Calibration for the activation-aware criterion: while Context::expert_stats points here,
// the CPU MoE (unquantised experts) adds, for every routed expert it runs, the squares of
// each input channel over the rows it multiplies: sum_sq[gate or up weight data] [H] from
// the token rows, sum_sq[down weight data] [I] from the SiLU(gate)·up rows. The importance
// of channel k is then sqrt(sum_sq[k]) (Wanda's |W| * ||X_k||). One forward at a time.
struct ExpertInputStats {
  std::unordered_map<const void*, std::vector<double>> sum_sq;
  void add(const void* weight, const float* rows, int64_t n, int64_t k);
};

}  // namespace moeopt::ops
