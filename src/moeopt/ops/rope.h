// Rotary position embedding (RoPE), rotate-half / NeoX style as in HF Llama/Qwen/Mixtral.
//
// Frequencies follow transformers' modeling_rope_utils (the function each type mirrors):
//   default  _compute_default_rope_parameters:   inv_freq[i] = 1 / theta^(2i / dim)
//   linear   _compute_linear_scaling_rope_parameters: inv_freq / factor
//   dynamic  _compute_dynamic_ntk_parameters:    theta' = theta * ((factor * L / max_pos)
//            - (factor - 1))^(dim / (dim - 2)), L = max(seq_len, max_position_embeddings);
//            HF's dynamic_rope_update recomputes this when the longest position grows, so the
//            caller rebuilds the table with the current sequence length (rope_inv_freq's
//            seq_len argument).
//   yarn     _compute_yarn_parameters: ramp between interpolated (inv_freq / factor) and
//            extrapolated (inv_freq) frequencies over the correction range found from
//            beta_fast / beta_slow and original_max_position_embeddings (floored/ceiled
//            unless truncate = false); attention_factor (the cos/sin multiplier) is given,
//            or get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim) when both
//            are set, or get_mscale(factor) = 0.1 * ln(factor) + 1.
//   llama3   _compute_llama3_parameters: wavelengths above original_max / low_freq_factor
//            are divided by factor, below original_max / high_freq_factor kept, smooth
//            interpolation between.
// dim is the rotary dim: int(head_dim * partial_rotary_factor). As in HF, inv_freq is
// computed in fp32 (theta^(float(2i)/dim) evaluated in float), and cos/sin of
// float(position) * inv_freq are multiplied by attention_factor.
//
// Cos/sin table (what rope_apply reads; the same layout on the GPU):
//   cos_sin [max_positions, rotary_dim] f32, row p = [cos(p*f_0..f_{r/2-1}) | sin(p*f_0..)]
//   (already multiplied by attention_factor).
// Applying it to one head vector x[0..D) with r = rotary_dim, h = r / 2, for i < h:
//   x'[i]     = x[i]     * cos_i - x[i + h] * sin_i
//   x'[i + h] = x[i + h] * cos_i + x[i]     * sin_i
// and x'[j] = x[j] for r <= j < D (partial rotary: only the first r dims rotate, as in HF's
// apply_rotary_pos_emb with a partial rotary factor).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/context.h"

namespace moeopt::ops {

enum class RopeType { kDefault, kLinear, kDynamic, kYarn, kLlama3 };

struct RopeConfig {
  int head_dim = 0;
  double partial_rotary_factor = 1.0;  // rotary_dim = int(head_dim * partial_rotary_factor)
  double theta = 10000.0;               // rope_theta
  int64_t max_position_embeddings = 0;
  RopeType type = RopeType::kDefault;
  double factor = 1.0;                  // rope_scaling.factor (linear/dynamic/yarn/llama3)
  // yarn
  std::optional<double> attention_factor;
  double beta_fast = 32.0, beta_slow = 1.0;
  std::optional<double> mscale, mscale_all_dim;
  bool truncate = true;
  // yarn and llama3: pretraining context (0: use max_position_embeddings)
  int64_t original_max_position_embeddings = 0;
  // llama3
  double low_freq_factor = 1.0, high_freq_factor = 4.0;

  int rotary_dim() const { return int(double(head_dim) * partial_rotary_factor); }
};

struct RopeFrequencies {
  std::vector<float> inv_freq;    // [rotary_dim / 2]
  float attention_factor = 1.0f;  // cos/sin multiplier (yarn), else 1
};

// inv_freq and attention factor. seq_len only matters for kDynamic (0: at init, i.e.
// max_position_embeddings).
Result<RopeFrequencies> rope_inv_freq(const RopeConfig& cfg, int64_t seq_len = 0);

// Fills cos_sin [max_positions, rotary_dim] f32 (host) from rope_inv_freq(cfg, seq_len).
Status rope_build_cos_sin(const RopeConfig& cfg, int64_t seq_len, const TensorView& cos_sin);

// Rotates q [T, Hq, D] and k [T, Hkv, D] in place at positions [T] int32 (each in
// [0, max_positions)) using cos_sin [max_positions, rotary_dim]. rotary_dim is even and
// <= D. f32 on the CPU; token rows may be strided (check.h).
Status rope_apply(const Context& ctx, const TensorView& q, const TensorView& k,
                  const TensorView& positions, const TensorView& cos_sin);

}  // namespace moeopt::ops
