// CPU reference: kv_cache_write and paged_attention (attention.h, which documents the paged
// layout). One work item per (query token, q head): scores over the visible cached tokens,
// a two-pass softmax in fp32 and the weighted sum of V rows, each row read through the block
// table exactly as a paged GPU kernel would. FP8 caches: each (token, kv head) row is
// quantised with ops::fp8_quantize_group on write and read back as code * scale in f32.
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/backend/cpu/cpu_util.h"
#include "moeopt/ops/fp8.h"

namespace moeopt::cpu {
namespace {

// e4m3 code -> value, all 256 codes (decoding a cache row is on the attention's hot path).
const std::array<float, 256>& fp8_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[size_t(c)] = fp8e4m3_to_f32(uint8_t(c));
    return t;
  }();
  return table;
}

// Row `row` (a (slot, kv head) pair: [slots * Hkv] rows of d values) of a cache as f32.
void load_cache_row(const TensorView& cache, const TensorView& scale, int64_t row, int64_t d,
                    float* dst) {
  if (cache.dtype != DType::kF8E4M3) return load_f32(cache.data, cache.dtype, row * d, d, dst);
  const uint8_t* codes = static_cast<const uint8_t*>(cache.data) + row * d;
  const float s = scale.ptr<float>()[row];
  const std::array<float, 256>& value = fp8_values();
  for (int64_t i = 0; i < d; ++i) dst[i] = value[codes[i]] * s;
}

// Stores one token's [hkv, d] values at `slot`.
void store_cache_token(const TensorView& cache, const TensorView& scale, int64_t slot,
                       int64_t hkv, int64_t d, const float* src) {
  if (cache.dtype != DType::kF8E4M3)
    return store_f32(cache.data, cache.dtype, slot * hkv * d, hkv * d, src);
  uint8_t* codes = static_cast<uint8_t*>(cache.data) + slot * hkv * d;
  for (int64_t h = 0; h < hkv; ++h)
    scale.ptr<float>()[slot * hkv + h] = ops::fp8_quantize_group(src + h * d, d, codes + h * d);
}

}  // namespace

Status kv_cache_write(const Context& ctx, const TensorView& k, const TensorView& v,
                      const TensorView& slot_mapping, const TensorView& k_cache,
                      const TensorView& v_cache, const ops::KvScales& scales) {
  const int64_t tokens = k.shape[0], hkv = k_cache.shape[2], d = k_cache.shape[3];
  const int64_t num_slots = k_cache.shape[0] * k_cache.shape[1];
  const int32_t* slot = slot_mapping.ptr<int32_t>();
  for (int64_t t = 0; t < tokens; ++t)
    if (slot[t] >= num_slots)
      return make_error(ErrorCode::kInvalidArgument,
                        "kv_cache_write: slot {} of token {} is past the cache ({} slots)",
                        slot[t], t, num_slots);
  parallel_for(ctx, tokens, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      if (slot[t] < 0) continue;  // padding token
      store_cache_token(k_cache, scales.k, slot[t], hkv, d, row_f32(k, t));
      store_cache_token(v_cache, scales.v, slot[t], hkv, d, row_f32(v, t));
    }
  }, 16);
  return {};
}

Status paged_attention(const Context& ctx, const TensorView& q, const TensorView& k_cache,
                       const TensorView& v_cache, const TensorView& block_table,
                       const TensorView& context_lens, const TensorView& query_start_loc,
                       const ops::AttentionParams& params, const TensorView& out,
                       const ops::KvScales& kv_scales) {
  const int64_t tokens = q.shape[0], hq = q.shape[1], d = q.shape[2];
  const int64_t num_blocks = k_cache.shape[0], bs = k_cache.shape[1], hkv = k_cache.shape[2];
  const int64_t max_blocks = block_table.shape[1];
  const int32_t* bt = block_table.ptr<int32_t>();
  const int32_t* clen = context_lens.ptr<int32_t>();
  const int32_t* qsl = query_start_loc.ptr<int32_t>();

  std::vector<int32_t> seq_of;
  MOEOPT_RETURN_IF_ERROR(check_paged_batch("paged_attention", num_blocks, bs, block_table,
                                           context_lens, query_start_loc, tokens, seq_of));

  const float scale = params.scale > 0.0f ? params.scale : 1.0f / std::sqrt(float(d));
  const int64_t group = hq / hkv;
  parallel_for(ctx, tokens * hq, [&](int64_t b, int64_t e) {
    std::vector<float> scores, kv(static_cast<size_t>(d)), acc(static_cast<size_t>(d));
    for (int64_t item = b; item < e; ++item) {
      const int64_t t = item / hq, h = item % hq, g = h / group;
      const int64_t s = seq_of[size_t(t)];
      const int64_t n_new = int64_t(qsl[s + 1]) - qsl[s];
      const int64_t pos = int64_t(clen[s]) - n_new + (t - qsl[s]);
      const int64_t lo = params.sliding_window > 0
                             ? std::max<int64_t>(0, pos - params.sliding_window + 1)
                             : 0;
      const float* qv = row_f32(q, t) + h * d;
      // Row of token j's kv head g in a cache viewed as [slots * Hkv, D].
      auto cache_row = [&](int64_t j) {
        const int64_t slot = int64_t(bt[s * max_blocks + j / bs]) * bs + j % bs;
        return slot * hkv + g;
      };
      scores.resize(size_t(pos - lo + 1));
      float mx = -INFINITY;
      for (int64_t j = lo; j <= pos; ++j) {
        load_cache_row(k_cache, kv_scales.k, cache_row(j), d, kv.data());
        const float sc = dot_f32(qv, kv.data(), d) * scale;
        scores[size_t(j - lo)] = sc;
        mx = std::max(mx, sc);
      }
      float sum = 0.0f;
      for (float& sc : scores) {
        sc = std::exp(sc - mx);
        sum += sc;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = lo; j <= pos; ++j) {
        load_cache_row(v_cache, kv_scales.v, cache_row(j), d, kv.data());
        const float p = scores[size_t(j - lo)];
        for (int64_t i = 0; i < d; ++i) acc[size_t(i)] += p * kv[size_t(i)];
      }
      float* o = row_f32(out, t) + h * d;
      const float inv = 1.0f / sum;
      for (int64_t i = 0; i < d; ++i) o[i] = acc[size_t(i)] * inv;
    }
  }, 2);
  return {};
}

}  // namespace moeopt::cpu
