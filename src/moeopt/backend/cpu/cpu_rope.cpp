// CPU reference: rope_apply (rope.h). Rotate-half RoPE on the first rotary_dim dims of every
// q and k head vector, reading the [max_positions, rotary_dim] cos|sin table.
#include <vector>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/backend/cpu/cpu_util.h"

namespace moeopt::cpu {
namespace {

void rotate(float* x, const float* cos, const float* sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i] + a * sin[i];
  }
}

}  // namespace

Status rope_apply(const Context& ctx, const TensorView& q, const TensorView& k,
                  const TensorView& positions, const TensorView& cos_sin) {
  const int64_t tokens = q.shape[0], hq = q.shape[1], hkv = k.shape[1], d = q.shape[2];
  const int64_t max_pos = cos_sin.shape[0], rot = cos_sin.shape[1], half = rot / 2;
  const int32_t* pos = positions.ptr<int32_t>();
  for (int64_t t = 0; t < tokens; ++t)
    if (pos[t] < 0 || pos[t] >= max_pos)
      return make_error(ErrorCode::kInvalidArgument,
                        "rope_apply: position {} of token {} is outside the cos/sin table "
                        "[0, {})",
                        pos[t], t, max_pos);
  const float* table = cos_sin.ptr<float>();
  parallel_for(ctx, tokens, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* cs = table + int64_t(pos[t]) * rot;
      float* qt = row_f32(q, t);
      for (int64_t h = 0; h < hq; ++h) rotate(qt + h * d, cs, cs + half, half);
      float* kt = row_f32(k, t);
      for (int64_t h = 0; h < hkv; ++h) rotate(kt + h * d, cs, cs + half, half);
    }
  }, 4);
  return {};
}

}  // namespace moeopt::cpu
