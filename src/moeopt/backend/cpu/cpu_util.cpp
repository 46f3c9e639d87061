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

}  // namespace moeopt::cpu
