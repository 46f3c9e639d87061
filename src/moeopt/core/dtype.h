// Element types and scalar conversions (bf16, f16, fp8 e4m3 <-> f32).
//
// Storage types are plain integers (uint16_t for bf16/f16, uint8_t for fp8) so host code never
// depends on a compiler's half-precision support. Conversions round to nearest even, as
// torch does; NaN stays NaN.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace moeopt {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF8E4M3,  // OCP FP8 E4M3 ("e4m3fn": no infinities, max 448), as safetensors' F8_E4M3
  kF64,
  kI8,
  kU8,
  kI16,
  kI32,
  kI64,
  kBool,
};

// Bytes per element.
size_t dtype_size(DType t);
// moeopt's short name ("bf16", "f32", "fp8_e4m3", ...).
const char* dtype_name(DType t);
// safetensors header names ("BF16", "F8_E4M3", ...). nullopt for unknown names.
std::optional<DType> dtype_from_safetensors(std::string_view name);
const char* dtype_to_safetensors(DType t);
// true for the floating types the compute ops accept (f32, f16, bf16, fp8).
bool dtype_is_float(DType t);

struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };
struct fp8e4m3_t { uint8_t bits; };

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return uint16_t((u + rounding) >> 16);
}

// Round a float to the nearest bf16 value (handy for building references).
inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float fp8e4m3_to_f32(uint8_t v);
uint8_t f32_to_fp8e4m3(float f);  // saturates to +-448

// Load element i of a buffer of dtype t as float (float dtypes and integers).
float load_as_f32(const void* data, DType t, int64_t i);
// Store a float into element i (rounding for bf16/f16/fp8).
void store_from_f32(void* data, DType t, int64_t i, float v);

}  // namespace moeopt
