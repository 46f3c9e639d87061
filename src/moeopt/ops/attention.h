// Causal softmax attention over a paged KV cache (GQA, sliding window), plus the op that
// writes new keys/values into the cache.
//
// Paged KV layout ("NHD" pages, one pair of caches per layer):
//   k_cache, v_cache  [num_blocks, block_size, Hkv, D]   f32 / bf16 / f16
//     Token `t` of a sequence lives in block block_table[s][t / block_size] at offset
//     t % block_size. A "slot" is the flat index block * block_size + offset; row `slot` of
//     the cache viewed as [num_blocks * block_size, Hkv, D] holds that token's keys.
//   block_table       [num_seqs, max_blocks_per_seq]    int32 (physical block ids; entries
//                     past a sequence's last block are ignored and may hold anything)
//   context_lens      [num_seqs]                        int32: tokens of sequence s in the
//                     cache, INCLUDING this step's new tokens (write them first)
//   query_start_loc   [num_seqs + 1]                    int32, varlen layout: the new tokens
//                     of sequence s are q rows [query_start_loc[s], query_start_loc[s+1]),
//                     query_start_loc[0] = 0, non-decreasing, last = T
// The n_s = query_start_loc[s+1] - query_start_loc[s] new tokens of sequence s are its LAST
// n_s tokens: query i (0-based) is at position p = context_lens[s] - n_s + i and attends to
// cached positions j with j <= p (causal) and, with a sliding window W > 0, j > p - W (the W
// most recent tokens including itself: transformers' sliding-window mask, Mistral/Qwen2
// semantics). Prefill (n_s = context_len), chunked prefill (0 < n_s < context_len) and
// decode (n_s = 1) are all this one op. A sequence with n_s = 0 contributes no rows.
//
// GQA: Hq is a multiple of Hkv; q head h reads kv head h / (Hq / Hkv) (HF repeat_kv).
// Scores are (q · k) * scale with scale = 1/sqrt(D) unless given; softmax and the weighted
// sum of V are in fp32. q and out are [T, Hq, D] f32 on the CPU (token rows may be strided).
//
// kv_cache_write: stores k [T, Hkv, D] and v [T, Hkv, D] at slot_mapping [T] int32 (slot as
// above; a negative slot skips the token, e.g. padding). Converts to the cache dtype
// (round to nearest even for bf16/f16).
//
// FP8 caches (the lossy `fp8_kv_cache` option): k_cache / v_cache hold e4m3 codes and
// KvScales their dequantisation scales, one f32 per (slot, kv head):
//   k_scale, v_scale  [num_blocks, block_size, Hkv]   f32, contiguous
// and the cached value is code * scale. kv_cache_write quantises each (token, kv head) row
// of D values on its own, as ops/fp8.h quantises an activation group: scale =
// max(amax, 1e-10) / 448, code = e4m3(x / scale) (f32 division, RNE, saturating), so the
// scale follows every token's and head's own range and needs no calibration. A cached value
// costs 1 + 4/D bytes (1.03 at D = 128) instead of bf16's 2. paged_attention reads codes
// and scales and gives softmax(q . (code_k * s_k) * scale) (code_v * s_v) with
// the same fp32 softmax as the other dtypes. Bf16/f16/f32 caches take empty KvScales.
#pragma once

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

// The scales of an FP8 cache (above); both empty (data == nullptr) for the other dtypes.
struct KvScales {
  TensorView k, v;
  bool empty() const { return k.data == nullptr && v.data == nullptr; }
};

Status kv_cache_write(const Context& ctx, const TensorView& k, const TensorView& v,
                      const TensorView& slot_mapping, const TensorView& k_cache,
                      const TensorView& v_cache, const KvScales& scales = {});

struct AttentionParams {
  float scale = 0.0f;       // 0: 1/sqrt(head_dim)
  int sliding_window = 0;   // 0: none; else the number of most recent tokens attended
  // Host-side upper bounds a device backend sizes its launch with (the batch tensors live on
  // the device, so it cannot read them without a round trip). 0: unknown, the backend
  // assumes the worst its limits allow. The CPU reference ignores them. Values smaller than
  // the real ones are a caller bug (rows past the bound are not computed).
  int max_context_len = 0;  // >= every context_lens[s]
  int max_query_len = 0;    // >= every query_start_loc[s+1] - query_start_loc[s]
};

Status paged_attention(const Context& ctx, const TensorView& q, const TensorView& k_cache,
                       const TensorView& v_cache, const TensorView& block_table,
                       const TensorView& context_lens, const TensorView& query_start_loc,
                       const AttentionParams& params, const TensorView& out,
                       const KvScales& scales = {});

}  // namespace moeopt::ops
