// CudaBackend's paged_attention (cuda_backend.h) on bf16 q / out and bf16 or fp8 caches; kv_cache_write, which fills
// the cache, lives with the dense ops (cuda_dense_ops.cpp). Plain C++ (no nvcc): what the
// kernels accept, which path runs, the split-KV plan and its workspace; kernels are launched
// through attention_launch.h. Shapes, devices and index dtypes were checked by
// ops/attention.cpp before this is called.
//
// Paths of paged_attention:
//   - tensor cores (kernels/attention_mma.cuh) for head_dim 64 / 128 with 16-byte aligned q,
//     out and caches and row strides that are multiples of 8 elements: the "decode" shape
//     (16 rows x 128 keys a tile) when max_query_len * group <= 16 rows, else the "prefill"
//     shape (64 x 64); split-KV when the (sequence, row tile, kv head) CTAs are too few to
//     fill the GPU (decode: also to cap each chunk at 512 keys);
//   - the general kernel (kernels/attention_general.cuh) for everything else up to head_dim
//     kAttnGeneralMaxDim.
// The launch is sized from the host-side hints (ops::AttentionParams::max_query_len /
// max_context_len; 0 = unknown: T query rows and the block table's capacity), never from the
// device metadata, so a captured launch replays correctly for any batch within the bounds.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "moeopt/backend/cuda/attention_launch.h"
#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/cuda_check.h"
#include "moeopt/core/align.h"
#include "moeopt/ops/check.h"

namespace moeopt::cuda {
namespace {

namespace k = kernels;

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// Split-KV limits: at most kAttnMaxSplits chunks, each of at least one key tile, and at most
// kSplitBudget bytes of partials (fewer splits for long batches; 1 needs no partials).
constexpr int kMaxSplits = k::kAttnMaxSplits;
constexpr size_t kSplitBudget = size_t(64) << 20;
// Decode splits until the CTAs fill the GPU about twice over, and until no chunk is longer
// than kDecodeSplitKeys (the context lengths of a batch are unknown on the host and uneven:
// the longest sequence must not run alone). Prefill tiles are many and heavy already: split
// only when they do not fill the GPU once.
constexpr int kDecodeWaves = 2;
constexpr int64_t kDecodeSplitKeys = 512;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Bytes of partials for one split: o [T, Hq, D] f32 and lse [T, Hq] f32, each 256-aligned.
size_t split_bytes(int64_t tokens, int64_t hq, int64_t d) {
  return align_up(size_t(tokens * hq * d) * 4) + align_up(size_t(tokens * hq) * 4);
}

}  // namespace

size_t CudaBackend::paged_attention_workspace_bytes(int64_t num_tokens, int64_t num_q_heads,
                                                    int64_t head_dim) {
  // Splits are chosen only while all of them fit kSplitBudget (see paged_attention).
  const size_t one = split_bytes(num_tokens, num_q_heads, head_dim);
  return std::min(one * kMaxSplits, std::max(kSplitBudget, one));
}

Status CudaBackend::paged_attention(const ops::Context& ctx, const TensorView& q,
                                    const TensorView& k_cache, const TensorView& v_cache,
                                    const TensorView& block_table,
                                    const TensorView& context_lens,
                                    const TensorView& query_start_loc,
                                    const ops::AttentionParams& params, const TensorView& out,
                                    const ops::KvScales& scales) {
  constexpr const char* op = "paged_attention";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "q", q, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "out", out, DType::kBF16));
  const bool fp8 = k_cache.dtype == DType::kF8E4M3;  // ops/attention.cpp checked the scales
  if (!fp8) MOEOPT_RETURN_IF_ERROR(need_dtype(op, "k_cache", k_cache, DType::kBF16));
  const int64_t t = q.shape[0], hq = q.shape[1], d = q.shape[2];
  const int64_t num_blocks = k_cache.shape[0], bs = k_cache.shape[1], hkv = k_cache.shape[2];
  const int64_t s = block_table.shape[0], max_blocks = block_table.shape[1];
  if (d < 1 || d > k::kAttnGeneralMaxDim)
    return make_error(ErrorCode::kUnsupported, "{}: head_dim {}, the CUDA backend takes 1..{}",
                      op, d, k::kAttnGeneralMaxDim);
  if (t * hq >= kInt32Max || s >= kInt32Max || hq > 65535 || num_blocks * bs >= kInt32Max ||
      max_blocks >= kInt32Max)
    return make_error(ErrorCode::kUnsupported,
                      "{}: {} tokens x {} heads, {} sequences, {} cache slots: sizes must be "
                      "< 2^31 (heads <= 65535)",
                      op, t, hq, s, num_blocks * bs);
  if (t == 0) return Status::ok_status();
  const cudaStream_t stream = stream_of(ctx);
  const int64_t q_stride = ops::row_stride(q), out_stride = ops::row_stride(out);
  if (s == 0)  // no sequence owns the rows: a caller bug, answered with zeros
    return cuda_status(cudaMemset2DAsync(out.data, size_t(out_stride) * 2, 0,
                                         size_t(hq * d) * 2, size_t(t), stream),
                       op, "zero fill");

  k::PagedAttentionParams p{};
  p.q = q.ptr<const __nv_bfloat16>();
  if (fp8) {
    p.k_codes = k_cache.ptr<const unsigned char>();
    p.v_codes = v_cache.ptr<const unsigned char>();
    p.k_scale = scales.k.ptr<const float>();
    p.v_scale = scales.v.ptr<const float>();
  } else {
    p.k_cache = k_cache.ptr<const __nv_bfloat16>();
    p.v_cache = v_cache.ptr<const __nv_bfloat16>();
  }
  p.block_table = block_table.ptr<const int32_t>();
  p.context_lens = context_lens.ptr<const int32_t>();
  p.query_start_loc = query_start_loc.ptr<const int32_t>();
  p.out = out.ptr<__nv_bfloat16>();
  p.q_stride = q_stride;
  p.out_stride = out_stride;
  p.num_tokens = int(t);
  p.num_seqs = int(s);
  p.num_q_heads = int(hq);
  p.num_kv_heads = int(hkv);
  p.head_dim = int(d);
  p.block_size = int(bs);
  p.max_blocks = int(max_blocks);
  p.num_blocks = int(num_blocks);
  const int64_t capacity = std::min(max_blocks * bs, kInt32Max);
  p.max_context = int(capacity);
  p.sliding_window = params.sliding_window;
  const float scale = params.scale > 0.0f ? params.scale : 1.0f / std::sqrt(float(d));
  p.scale_log2 = scale * 1.4426950408889634f;
  p.num_splits = 1;
  p.split_keys = int(std::max<int64_t>(capacity, 1));

  const bool mma = (d == 64 || d == 128) && aligned16(q.data) && aligned16(out.data) &&
                   aligned16(k_cache.data) && aligned16(v_cache.data) && q_stride % 8 == 0 &&
                   out_stride % 8 == 0;
  if (!mma)
    return cuda_status(detail::launch_paged_attention_general(p, stream), op,
                       "general attention launch");

  // Row tiles per sequence from the query-length bound, then split-KV from the context bound.
  const int64_t group = hq / hkv;
  const int64_t q_bound = params.max_query_len > 0 ? std::min<int64_t>(params.max_query_len, t) : t;
  const int64_t ctx_bound = std::max<int64_t>(
      1, params.max_context_len > 0 ? std::min<int64_t>(params.max_context_len, capacity)
                                    : capacity);
  const bool decode = q_bound * group <= k::kAttnDecodeRows;
  const detail::AttnMmaShape shape =
      decode ? detail::AttnMmaShape::kDecode : detail::AttnMmaShape::kPrefill;
  const int64_t tile_rows = decode ? k::kAttnDecodeRows : k::kAttnPrefillRows;
  const int64_t tile_keys = decode ? k::kAttnDecodeKeys : k::kAttnPrefillKeys;
  const int64_t tiles = (q_bound * group + tile_rows - 1) / tile_rows;
  if (s * tiles >= kInt32Max)
    return make_error(ErrorCode::kUnsupported, "{}: {} sequences x {} row tiles is too many",
                      op, s, tiles);
  p.tiles_per_seq = int(tiles);

  const int64_t ctas = s * tiles * hkv;
  const int64_t wanted = int64_t(decode ? kDecodeWaves : 1) * sm_count();
  int64_t splits = 1;
  if (ctas < wanted) splits = (wanted + ctas - 1) / ctas;
  if (decode) splits = std::max(splits, (ctx_bound + kDecodeSplitKeys - 1) / kDecodeSplitKeys);
  if (splits > 1) {
    const int64_t most = std::min<int64_t>(kMaxSplits, (ctx_bound + tile_keys - 1) / tile_keys);
    splits = std::clamp<int64_t>(splits, 1, std::max<int64_t>(most, 1));
    const size_t one = split_bytes(t, hq, d);
    splits = std::min<int64_t>(splits, std::max<int64_t>(1, int64_t(kSplitBudget / one)));
  }
  if (splits > 1) {
    const int64_t per = (ctx_bound + splits - 1) / splits;
    const int64_t keys = (per + tile_keys - 1) / tile_keys * tile_keys;
    splits = (ctx_bound + keys - 1) / keys;  // rounding up the chunk may leave fewer splits
    p.split_keys = int(keys);
  }
  if (splits > 1) {
    p.num_splits = int(splits);
    const size_t o_bytes = align_up(size_t(splits * t * hq * d) * 4);
    const size_t lse_bytes = align_up(size_t(splits * t * hq) * 4);
    MOEOPT_ASSIGN_OR_RETURN(void* ws, scratch(ctx, o_bytes + lse_bytes, op));
    p.o_part = static_cast<float*>(ws);
    p.lse_part = reinterpret_cast<float*>(static_cast<unsigned char*>(ws) + o_bytes);
  } else {
    p.num_splits = 1;
    p.split_keys = int(std::max<int64_t>(capacity, 1));  // one chunk: every key
  }
  return cuda_status(detail::launch_paged_attention_mma(p, shape, stream), op,
                     "tensor-core attention launch");
}

}  // namespace moeopt::cuda
