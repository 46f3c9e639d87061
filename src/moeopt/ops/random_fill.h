// Counter-based synthetic weights: the value of element i of a tensor is a pure function of
// (key, i, rule, fan_in), where key = random_fill_key(seed, tensor name). init-random
// (model/random_init.h) writes checkpoints with it on the CPU, and a device backend fills
// device tensors with the very same values (`moeopt --random-weights` on a GPU), so a
// synthetic model on the GPU equals the checkpoint init-random writes for the same seed.
//
// Rules (torch's default module initialisation, see random_init.h for why):
//   kLinear     u / sqrt(fan_in)     kEmbedding  u * sqrt(3)
//   kNorm       1 + 0.2 * u          kSmallBias  0.1 * u
// with u = (splitmix64(key + i) >> 40) * 2^-24 * 2 - 1, uniform in [-1, 1). Every step is one
// correctly rounded f32 operation (no fused multiply-add), so CPU and GPU agree bit for bit
// before and after rounding to the storage dtype (round to nearest even).
#pragma once

#include <cstdint>
#include <string_view>

#include "moeopt/core/hash.h"

namespace moeopt::ops {

enum class RandomFillRule : uint8_t { kLinear, kEmbedding, kNorm, kSmallBias };

struct RandomFill {
  uint64_t key = 0;
  RandomFillRule rule = RandomFillRule::kLinear;
  int64_t fan_in = 1;
};

inline uint64_t random_fill_key(uint64_t seed, std::string_view name) {
  return splitmix64(seed ^ fnv1a64(name));
}

// The CPU definition; backend/cuda/kernels/random_fill.cuh mirrors it operation for operation.
float random_fill_value(const RandomFill& f, uint64_t index);

}  // namespace moeopt::ops
