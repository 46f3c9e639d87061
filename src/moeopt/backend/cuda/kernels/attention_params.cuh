// Parameter struct and launch constants of the attention kernels (attention_mma.cuh,
// attention_general.cuh, attention_reduce.cuh). A plain struct of raw device pointers,
// includable from host C++ (no device code), so the op file that validates and plans a
// launch (cuda_attention_ops.cpp) does not need nvcc.
//
// Layouts are those of ops/attention.h: q / out [T, Hq, D] bf16 with strided token rows,
// caches [num_blocks, block_size, Hkv, D] bf16 (or e4m3 codes + scales) contiguous ("NHD" pages), block_table
// [S, max_blocks] i32, context_lens [S] i32, query_start_loc [S + 1] i32.
//
// Split-KV (flash-decoding): the keys of a sequence are cut into chunks of split_keys
// positions, [z * split_keys, (z + 1) * split_keys), and CTA z of grid.z attends to chunk z
// only. With num_splits > 1 each CTA writes a normalised partial output and its log-sum-exp
// (base 2) per row, and the reduce kernel merges the chunks that intersect the row's visible
// range; a CTA whose chunk sees no key of its tile exits without writing.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace moeopt::cuda::kernels {

// Tensor-core path shapes (attention_mma.cuh): rows are (query token, q head of the GQA
// group) pairs of one kv head, row r = token * group + head, so a decode step packs the group
// of one token into one 16-row MMA tile and every group head shares the K/V loads.
//   prefill: 4 warps stacked over 64 rows, 64 keys per tile;
//   decode:  4 warps side by side over 16 rows, each on its own 32 of 128 keys per tile.
inline constexpr int kAttnPrefillRows = 64;
inline constexpr int kAttnPrefillKeys = 64;
inline constexpr int kAttnDecodeRows = 16;
inline constexpr int kAttnDecodeKeys = 128;
inline constexpr int kAttnMmaThreads = 128;

// General path (attention_general.cuh): any head_dim up to this, one CTA per (token, q head).
inline constexpr int kAttnGeneralMaxDim = 256;
inline constexpr int kAttnGeneralThreads = 128;

inline constexpr int kAttnReduceThreads = 128;
inline constexpr int kAttnMaxSplits = 32;  // grid.z of the tensor-core path

struct PagedAttentionParams {
  const __nv_bfloat16* q;        // [T, Hq, D], token row stride q_stride (elements)
  const __nv_bfloat16* k_cache;  // [num_blocks, block_size, Hkv, D]; null for fp8 caches
  const __nv_bfloat16* v_cache;
  // FP8 caches (ops/attention.h): e4m3 codes [num_blocks, block_size, Hkv, D] and f32 scales
  // [num_blocks, block_size, Hkv]; the value is code * scale. Null for bf16 caches.
  const unsigned char* k_codes;
  const unsigned char* v_codes;
  const float* k_scale;
  const float* v_scale;
  const int32_t* block_table;      // [num_seqs, max_blocks]
  const int32_t* context_lens;     // [num_seqs]
  const int32_t* query_start_loc;  // [num_seqs + 1]
  __nv_bfloat16* out;              // [T, Hq, D], token row stride out_stride
  float* o_part;    // [num_splits, T, Hq, D] normalised partial outputs (num_splits > 1)
  float* lse_part;  // [num_splits, T, Hq] log2(sum exp2(score - max)) + max; -inf: no key
  int64_t q_stride;
  int64_t out_stride;
  int num_tokens;    // T
  int num_seqs;      // S
  int num_q_heads;   // Hq
  int num_kv_heads;  // Hkv
  int head_dim;      // D
  int block_size;
  int max_blocks;    // block_table row length
  int num_blocks;    // cache pages (block ids outside [0, num_blocks) read as zero keys)
  int max_context;   // min(max_blocks * block_size, INT32_MAX): longer contexts are a caller
                     // bug and give zero rows
  int sliding_window;  // 0: none
  float scale_log2;    // scale * log2(e): scores are kept in base 2
  int tiles_per_seq;   // m-tiles of each sequence in grid.x (grid.x = S * tiles_per_seq)
  int num_splits;      // grid.z
  int split_keys;      // positions per split (a multiple of the key tile)
};

}  // namespace moeopt::cuda::kernels
