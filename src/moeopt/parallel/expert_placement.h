// Expert placement for expert parallelism (EP over G GPUs) from measured routing load: which
// GPU holds which experts of each MoE layer, with the hottest experts replicated.
//
// Input: tokens routed to each expert of each MoE layer (`ExpertLoad`, as the engine counts
// them and `serve` exposes them at /metrics as moeopt_expert_tokens_total{layer, expert}).
// Every GPU has ceil(E / G) + `redundant` expert slots per layer; the G * slots - E slots
// beyond one copy of each expert hold replicas (balanced placement only).
//
//   baseline   expert e on GPU e / ceil(E / G): contiguous blocks, what a placement that
//              ignores load does (no replicas)
//   balanced   1. replicas: while slots remain, give one more copy to the expert whose load
//                 per copy is the largest (ties: lowest id); a token of expert e goes to one
//                 of its r_e copies, so each copy carries load_e / r_e;
//              2. packing: copies in decreasing load (ties: lowest expert id, then copy
//                 index) each to the GPU with the least load so far that has a free slot and
//                 no copy of that expert yet (ties: lowest GPU id) — longest-processing-time
//                 first, the greedy rule of DeepSeek's EPLB;
//              3. the baseline instead when it is better (greedy packing can lose a few
//                 percent to a contiguous split that happens to be even).
// The figure of merit is a layer's imbalance = most loaded GPU / mean GPU load (1 = perfect;
// a step of EP waits for its most loaded GPU). Deterministic for given counts.
// Tests: tests/unit/parallel_expert_placement_test.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt::parallel {

struct ExpertLoad {
  int64_t num_layers = 0, num_experts = 0;
  std::vector<int64_t> tokens;  // [num_layers * num_experts], layer-major
};

// The moeopt_expert_tokens_total lines of a /metrics dump (other lines are skipped), for a
// model of `num_layers` MoE layers x `num_experts`. A malformed sample line, an index out of
// range, a negative or duplicate count, or no sample at all is an error naming the line.
Result<ExpertLoad> parse_expert_load_metrics(const std::string& text, int64_t num_layers,
                                             int64_t num_experts);

struct LayerPlacement {
  // gpu_experts[g]: the experts GPU g holds (a replicated expert appears on several GPUs).
  std::vector<std::vector<int32_t>> gpu_experts;
  std::vector<int32_t> copies;     // [E] copies of each expert
  std::vector<double> gpu_load;    // [G] tokens each GPU serves (load / copies summed)
  double imbalance = 1.0;          // max gpu_load / mean gpu_load (1 when no load)
};

struct PlacementOptions {
  int64_t gpus = 1;
  int64_t redundant = 0;  // extra expert slots per GPU and layer for replicas
};

// The two placements of one layer's loads [E] (above). gpus >= 1, E >= gpus, redundant >= 0.
Result<LayerPlacement> baseline_placement(const std::vector<int64_t>& loads, const PlacementOptions& o);
Result<LayerPlacement> balanced_placement(const std::vector<int64_t>& loads, const PlacementOptions& o);

}  // namespace moeopt::parallel
