// CPU reference helpers (see cpu_util.h).
#include "moeopt/backend/cpu/cpu_util.h"

#include <array>

#include "moeopt/core/thread_pool.h"

namespace moeopt::cpu {

void parallel_for(const ops::Context& ctx, int64_t n,
                  const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (ctx.pool == nullptr) {
    fn(0, n);
    return;
  }
  ctx.pool->parallel_for(n, fn, grain);
}

void load_f32(const void* base, DType t, int64_t offset, int64_t n, float* dst) {
  switch (t) {
    case DType::kF32: {
      const float* p = static_cast<const float*>(base) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = p[i];
      return;
    }
    case DType::kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(p[i]);
      return;
    }
    case DType::kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(p[i]);
      return;
    }
    case DType::kF8E4M3: {
      static const auto table = [] {
        std::array<float, 256> t{};
        for (int c = 0; c < 256; ++c) t[size_t(c)] = fp8e4m3_to_f32(uint8_t(c));
        return t;
      }();
      const uint8_t* p = static_cast<const uint8_t*>(base) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = table[p[i]];
      return;
    }
    case DType::kF64:
    case DType::kI8:
    case DType::kU8:
    case DType::kI16:
    case DType::kI32:
    case DType::kI64:
    case DType::kBool:
      // Ops validate dtypes before calling; the rest go through the generic loader.
      for (int64_t i = 0; i < n; ++i) dst[i] = load_as_f32(base, t, offset + i);
      return;
  }
}

void store_f32(void* base, DType t, int64_t offset, int64_t n, const float* src) {
  switch (t) {
    case DType::kF32: {
      float* p = static_cast<float*>(base) + offset;
      for (int64_t i = 0; i < n; ++i) p[i] = src[i];
      return;
    }
    case DType::kBF16: {
      uint16_t* p = static_cast<uint16_t*>(base) + offset;
      for (int64_t i = 0; i < n; ++i) p[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::kF16:
    case DType::kF8E4M3:
    case DType::kF64:
    case DType::kI8:
    case DType::kU8:
    case DType::kI16:
    case DType::kI32:
    case DType::kI64:
    case DType::kBool:
      for (int64_t i = 0; i < n; ++i) store_from_f32(base, t, offset + i, src[i]);
      return;
  }
}

float dot_f32(const float* a, const float* b, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j) s[j] += a[i] * b[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

Status check_paged_batch(const char* op, int64_t num_blocks, int64_t bs,
                         const TensorView& block_table, const TensorView& context_lens,
                         const TensorView& query_start_loc, int64_t tokens,
                         std::vector<int32_t>& seq_of) {
  const int64_t seqs = block_table.shape[0], max_blocks = block_table.shape[1];
  const int32_t* bt = block_table.ptr<int32_t>();
  const int32_t* clen = context_lens.ptr<int32_t>();
  const int32_t* qsl = query_start_loc.ptr<int32_t>();
  if (qsl[0] != 0 || qsl[seqs] != tokens)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: query_start_loc must start at 0 and end at {} (got {} and {})", op,
                      tokens, qsl[0], qsl[seqs]);
  seq_of.assign(size_t(tokens), 0);
  for (int64_t s = 0; s < seqs; ++s) {
    const int64_t n = int64_t(qsl[s + 1]) - qsl[s];
    if (n < 0 || n > clen[s] || int64_t(clen[s]) > max_blocks * bs)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: sequence {} has {} new tokens and context length {} (need 0 <= new "
                        "<= context <= {} = max_blocks_per_seq * block_size)",
                        op, s, n, clen[s], max_blocks * bs);
    for (int64_t b = 0; b < (int64_t(clen[s]) + bs - 1) / bs; ++b) {
      const int32_t blk = bt[s * max_blocks + b];
      if (blk < 0 || blk >= num_blocks)
        return make_error(ErrorCode::kInvalidArgument,
                          "{}: block_table[{}][{}] = {} is outside [0, {})", op, s, b, blk,
                          num_blocks);
    }
    for (int64_t t = qsl[s]; t < qsl[s + 1]; ++t) seq_of[size_t(t)] = int32_t(s);
  }
  return {};
}

}  // namespace moeopt::cpu
