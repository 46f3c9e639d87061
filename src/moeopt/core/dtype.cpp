#include "moeopt/core/dtype.h"

#include <cmath>

namespace moeopt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kF8E4M3: return 1;
    case DType::kF64: return 8;
    case DType::kI8: return 1;
    case DType::kU8: return 1;
    case DType::kI16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kBool: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kF8E4M3: return "fp8_e4m3";
    case DType::kF64: return "f64";
    case DType::kI8: return "i8";
    case DType::kU8: return "u8";
    case DType::kI16: return "i16";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
    case DType::kBool: return "bool";
  }
  return "?";
}

const char* dtype_to_safetensors(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kF64: return "F64";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kI16: return "I16";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kBool: return "BOOL";
  }
  return "?";
}

std::optional<DType> dtype_from_safetensors(std::string_view n) {
  if (n == "F32") return DType::kF32;
  if (n == "F16") return DType::kF16;
  if (n == "BF16") return DType::kBF16;
  if (n == "F8_E4M3") return DType::kF8E4M3;
  if (n == "F64") return DType::kF64;
  if (n == "I8") return DType::kI8;
  if (n == "U8") return DType::kU8;
  if (n == "I16") return DType::kI16;
  if (n == "I32") return DType::kI32;
  if (n == "I64") return DType::kI64;
  if (n == "BOOL") return DType::kBool;
  return std::nullopt;
}

bool dtype_is_float(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16 || t == DType::kF8E4M3;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | (exp + 127 - 15) << 23 | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;        // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;       // overflow (>= 65520) -> inf
  if (abs < 0x38800000u) {                             // f16 subnormal or zero
    // Units of the smallest f16 subnormal (2^-24); the scaling is exact in f32 and
    // nearbyint rounds to nearest even in the default rounding mode.
    float a;
    std::memcpy(&a, &abs, 4);
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent by (127-15) << 23
  uint32_t lsb = (r >> 13) & 1u;
  r += 0xfffu + lsb;
  return sign | uint16_t(r >> 13);
}

// E4M3 (fn): 1 sign, 4 exponent (bias 7), 3 mantissa; 0x7f/0xff are NaN, no infinities.
float fp8e4m3_to_f32(uint8_t v) {
  uint32_t sign = v >> 7;
  uint32_t exp = (v >> 3) & 0xfu;
  uint32_t man = v & 0x7u;
  float out;
  if (exp == 0xf && man == 0x7) {
    out = std::nanf("");
  } else if (exp == 0) {
    out = std::ldexp(float(man), -9);  // man/8 * 2^-6
  } else {
    out = std::ldexp(1.0f + float(man) / 8.0f, int(exp) - 7);
  }
  return sign ? -out : out;
}

uint8_t f32_to_fp8e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  const float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;  // saturate to the largest finite value
  if (a < 0.015625f) {
    // Below the smallest normal (2^-6): subnormal codes are units of 2^-9, contiguous with
    // the normal codes (8 units = code 0x08 = 2^-6). a * 512 is exact; nearbyint is RNE.
    return sign | uint8_t(std::nearbyint(a * 512.0f));
  }
  // Normal: keep 3 of the 23 mantissa bits, rounding to nearest even; a carry moves into
  // the exponent as it should. The f32 exponent bias 127 becomes e4m3's 7.
  uint32_t u;
  std::memcpy(&u, &a, 4);
  const uint32_t r = u + 0x7ffffu + ((u >> 20) & 1u);
  return sign | uint8_t((r >> 20) - (120u << 3));
}

float load_as_f32(const void* data, DType t, int64_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(data)[i];
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::kF8E4M3: return fp8e4m3_to_f32(static_cast<const uint8_t*>(data)[i]);
    case DType::kF64: return float(static_cast<const double*>(data)[i]);
    case DType::kI8: return float(static_cast<const int8_t*>(data)[i]);
    case DType::kU8: return float(static_cast<const uint8_t*>(data)[i]);
    case DType::kI16: return float(static_cast<const int16_t*>(data)[i]);
    case DType::kI32: return float(static_cast<const int32_t*>(data)[i]);
    case DType::kI64: return float(static_cast<const int64_t*>(data)[i]);
    case DType::kBool: return static_cast<const uint8_t*>(data)[i] ? 1.0f : 0.0f;
  }
  return 0.0f;
}

void store_from_f32(void* data, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kF32: static_cast<float*>(data)[i] = v; return;
    case DType::kF16: static_cast<uint16_t*>(data)[i] = f32_to_f16(v); return;
    case DType::kBF16: static_cast<uint16_t*>(data)[i] = f32_to_bf16(v); return;
    case DType::kF8E4M3: static_cast<uint8_t*>(data)[i] = f32_to_fp8e4m3(v); return;
    case DType::kF64: static_cast<double*>(data)[i] = v; return;
    case DType::kI8: static_cast<int8_t*>(data)[i] = int8_t(v); return;
    case DType::kU8: static_cast<uint8_t*>(data)[i] = uint8_t(v); return;
    case DType::kI16: static_cast<int16_t*>(data)[i] = int16_t(v); return;
    case DType::kI32: static_cast<int32_t*>(data)[i] = int32_t(v); return;
    case DType::kI64: static_cast<int64_t*>(data)[i] = int64_t(v); return;
    case DType::kBool: static_cast<uint8_t*>(data)[i] = v != 0.0f; return;
  }
}

}  // namespace moeopt
