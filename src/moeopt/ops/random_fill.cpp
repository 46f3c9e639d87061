#include "moeopt/ops/random_fill.h"

#include <algorithm>
#include <cmath>

namespace moeopt::ops {

float random_fill_value(const RandomFill& f, uint64_t index) {
  const uint64_t h = splitmix64(f.key + index);
  // volatile-free but contraction-free: each line is one rounded f32 operation.
  const float scaled = float(h >> 40) * 0x1.0p-24f;
  const float u = scaled * 2.0f - 1.0f;
  switch (f.rule) {
    case RandomFillRule::kLinear: return u / std::sqrt(float(std::max<int64_t>(1, f.fan_in)));
    case RandomFillRule::kEmbedding: return u * std::sqrt(3.0f);
    case RandomFillRule::kNorm: return 1.0f + 0.2f * u;
    case RandomFillRule::kSmallBias: return 0.1f * u;
  }
  return 0.0f;
}

}  // namespace moeopt::ops
