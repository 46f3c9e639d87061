// ForwardBatch: what one model step computes, in the varlen + paged-KV layout the attention
// op takes (ops/attention.h, docs/glossary.md). Built by the engine's model runner, read by
// Model::forward. Host vectors; a device runner mirrors them into device buffers.
#pragma once

#include <cstdint>
#include <vector>

#include "moeopt/core/tensor.h"

namespace moeopt {

struct ForwardBatch {
  std::vector<int32_t> token_ids;        // [T] new tokens of all sequences, sequence-major
  std::vector<int32_t> positions;        // [T] their positions in their sequences
  std::vector<int32_t> query_start_loc;  // [S + 1] sequence s owns rows [q[s], q[s+1])
  std::vector<int32_t> context_lens;     // [S] cached tokens after this step (incl. new ones)
  std::vector<int32_t> block_table;      // [S, max_blocks_per_seq] physical block ids
  int32_t max_blocks_per_seq = 0;
  std::vector<int32_t> slot_mapping;     // [T] cache slot of each new token
  std::vector<int32_t> logits_rows;      // rows of [T] whose next-token logits are wanted
  // Optional [num_layers, num_experts] counters: when set, forward adds, for every MoE layer,
  // the number of (token, slot) pairs routed to each expert (the /metrics routing counts).
  int64_t* expert_token_counts = nullptr;
  // Upper bounds for the attention launch on a device (ops::AttentionParams). 0: the batch's
  // own maxima. A runner that captures a CUDA graph for reuse passes the largest values the
  // graph will ever see (e.g. max_model_len).
  int32_t max_context_len_bound = 0;
  int32_t max_query_len_bound = 0;

  int32_t num_tokens() const { return int32_t(token_ids.size()); }
  int32_t num_seqs() const { return int32_t(context_lens.size()); }
};

// The index vectors of a ForwardBatch as tensors on the model's device (Model::prepare).
struct BatchTensors {
  TensorView token_ids, positions, slot_mapping, query_start_loc, context_lens, block_table,
      logits_rows;
};

// One layer's paged KV cache: k and v are [num_blocks, block_size, Hkv, D] (NHD). FP8
// caches (e4m3 codes) carry their scales, [num_blocks, block_size, Hkv] f32 (ops/attention.h);
// the scales are empty views for the other dtypes.
struct LayerKv {
  TensorView k;
  TensorView v;
  TensorView k_scale{};
  TensorView v_scale{};
};

}  // namespace moeopt
