// RoPE frequencies (transformers' modeling_rope_utils, see rope.h), the cos/sin table, and
// rope_apply's validation and dispatch.
#include "moeopt/ops/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {
namespace {

// _compute_default_rope_parameters: 1 / base^(float(2i) / dim), evaluated in fp32 as torch
// does for `base ** (arange(0, dim, 2).float() / dim)`.
std::vector<float> pos_freqs(double base, int dim) {
  std::vector<float> f(static_cast<size_t>(dim / 2));
  for (int i = 0; i < dim / 2; ++i) f[size_t(i)] = std::pow(float(base), float(2 * i) / float(dim));
  return f;
}

std::vector<float> default_inv_freq(double base, int dim) {
  std::vector<float> f = pos_freqs(base, dim);
  for (float& v : f) v = 1.0f / v;
  return f;
}

// get_mscale in _compute_yarn_parameters.
double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

// find_correction_dim in _compute_yarn_parameters.
double yarn_correction_dim(double num_rotations, int dim, double base, double max_pos) {
  return (dim * std::log(max_pos / (num_rotations * 2.0 * std::numbers::pi))) /
         (2.0 * std::log(base));
}

}  // namespace

Result<RopeFrequencies> rope_inv_freq(const RopeConfig& cfg, int64_t seq_len) {
  const int dim = cfg.rotary_dim();
  if (cfg.head_dim <= 0 || dim <= 0 || dim > cfg.head_dim || dim % 2 != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "rope: rotary dim {} (head_dim {} x partial_rotary_factor {}) must be "
                      "even and in (0, head_dim]",
                      dim, cfg.head_dim, cfg.partial_rotary_factor);
  if (!(cfg.theta > 0.0))
    return make_error(ErrorCode::kInvalidArgument, "rope: rope_theta {} must be > 0", cfg.theta);
  const bool needs_factor = cfg.type != RopeType::kDefault;
  if (needs_factor && !(cfg.factor > 0.0))
    return make_error(ErrorCode::kInvalidArgument, "rope: rope_scaling.factor {} must be > 0",
                      cfg.factor);
  const int64_t orig_max = cfg.original_max_position_embeddings > 0
                               ? cfg.original_max_position_embeddings
                               : cfg.max_position_embeddings;
  RopeFrequencies out;
  switch (cfg.type) {
    case RopeType::kDefault:
      out.inv_freq = default_inv_freq(cfg.theta, dim);
      break;
    case RopeType::kLinear: {  // _compute_linear_scaling_rope_parameters
      out.inv_freq = default_inv_freq(cfg.theta, dim);
      for (float& f : out.inv_freq) f /= float(cfg.factor);
      break;
    }
    case RopeType::kDynamic: {  // _compute_dynamic_ntk_parameters
      if (cfg.max_position_embeddings <= 0)
        return make_error(ErrorCode::kInvalidArgument,
                          "rope: dynamic scaling needs max_position_embeddings");
      const double max_pos = double(cfg.max_position_embeddings);
      const double len = std::max(double(seq_len), max_pos);
      const double base = cfg.theta * std::pow((cfg.factor * len / max_pos) - (cfg.factor - 1.0),
                                               double(dim) / double(dim - 2));
      out.inv_freq = default_inv_freq(base, dim);
      break;
    }
    case RopeType::kYarn: {  // _compute_yarn_parameters
      if (orig_max <= 0)
        return make_error(ErrorCode::kInvalidArgument,
                          "rope: yarn needs original_max_position_embeddings or "
                          "max_position_embeddings");
      const double factor = cfg.factor;
      if (cfg.attention_factor) {
        out.attention_factor = float(*cfg.attention_factor);
      } else if (cfg.mscale && cfg.mscale_all_dim && *cfg.mscale != 0.0 &&
                 *cfg.mscale_all_dim != 0.0) {
        out.attention_factor = float(yarn_get_mscale(factor, *cfg.mscale) /
                                     yarn_get_mscale(factor, *cfg.mscale_all_dim));
      } else {
        out.attention_factor = float(yarn_get_mscale(factor, 1.0));
      }
      // find_correction_range
      double low = yarn_correction_dim(cfg.beta_fast, dim, cfg.theta, double(orig_max));
      double high = yarn_correction_dim(cfg.beta_slow, dim, cfg.theta, double(orig_max));
      if (cfg.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, double(dim - 1));
      if (low == high) high += 0.001;  // linear_ramp_factor's guard against a zero range
      const std::vector<float> pf = pos_freqs(cfg.theta, dim);  // base^(2i/dim)
      out.inv_freq.resize(pf.size());
      for (size_t i = 0; i < pf.size(); ++i) {
        const float pos_freq = pf[i];
        const float extra = 1.0f / pos_freq;
        const float inter = 1.0f / (float(factor) * pos_freq);
        float ramp = (float(i) - float(low)) / (float(high) - float(low));
        ramp = std::clamp(ramp, 0.0f, 1.0f);
        const float extra_factor = 1.0f - ramp;
        out.inv_freq[i] = inter * (1.0f - extra_factor) + extra * extra_factor;
      }
      break;
    }
    case RopeType::kLlama3: {  // _compute_llama3_parameters
      if (orig_max <= 0 || !(cfg.high_freq_factor != cfg.low_freq_factor))
        return make_error(ErrorCode::kInvalidArgument,
                          "rope: llama3 needs original_max_position_embeddings and "
                          "high_freq_factor != low_freq_factor");
      out.inv_freq = default_inv_freq(cfg.theta, dim);
      const double low_wl = double(orig_max) / cfg.low_freq_factor;
      const double high_wl = double(orig_max) / cfg.high_freq_factor;
      const float factor = float(cfg.factor);
      for (float& f : out.inv_freq) {
        const float wavelen = float(2.0 * std::numbers::pi) / f;
        float scaled = wavelen > float(low_wl) ? f / factor : f;
        const bool medium = !(wavelen < float(high_wl)) && !(wavelen > float(low_wl));
        if (medium) {
          const float smooth = (float(orig_max) / wavelen - float(cfg.low_freq_factor)) /
                               float(cfg.high_freq_factor - cfg.low_freq_factor);
          scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
        }
        f = scaled;
      }
      break;
    }
  }
  return out;
}

Status rope_build_cos_sin(const RopeConfig& cfg, int64_t seq_len, const TensorView& cos_sin) {
  MOEOPT_ASSIGN_OR_RETURN(RopeFrequencies freq, rope_inv_freq(cfg, seq_len));
  const int64_t rot = int64_t(freq.inv_freq.size()) * 2;
  MOEOPT_RETURN_IF_ERROR(expect_dtype("rope_build_cos_sin", "cos_sin", cos_sin, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_ndim("rope_build_cos_sin", "cos_sin", cos_sin, 2));
  MOEOPT_RETURN_IF_ERROR(
      expect_shape("rope_build_cos_sin", "cos_sin", cos_sin, {cos_sin.shape[0], rot}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous("rope_build_cos_sin", "cos_sin", cos_sin));
  if (cos_sin.device != Device::kCpu)
    return make_error(ErrorCode::kInvalidArgument,
                      "rope_build_cos_sin: cos_sin must be a host tensor (copy it to the GPU)");
  const int64_t half = rot / 2;
  float* t = cos_sin.ptr<float>();
  for (int64_t p = 0; p < cos_sin.shape[0]; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      // HF: freqs = float(p) * inv_freq (fp32), emb.cos() * attention_scaling.
      const float angle = float(p) * freq.inv_freq[size_t(i)];
      t[p * rot + i] = float(std::cos(double(angle))) * freq.attention_factor;
      t[p * rot + half + i] = float(std::sin(double(angle))) * freq.attention_factor;
    }
  }
  return {};
}

Status rope_apply(const Context& ctx, const TensorView& q, const TensorView& k,
                  const TensorView& positions, const TensorView& cos_sin) {
  constexpr const char* op = "rope_apply";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&q, &k, &positions, &cos_sin}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "q", q, 3));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "k", k, 3));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "q", q));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "k", k));
  const int64_t tokens = q.shape[0], d = q.shape[2];
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "k", k, {tokens, k.shape[1], d}));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "positions", positions, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "positions", positions, {tokens}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "positions", positions));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "cos_sin", cos_sin, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "cos_sin", cos_sin, 2));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "cos_sin", cos_sin));
  const int64_t rot = cos_sin.shape[1];
  if (rot <= 0 || rot % 2 != 0 || rot > d)
    return make_error(ErrorCode::kInvalidArgument,
                      "rope_apply: cos_sin has rotary dim {}, expected an even number in (0, "
                      "head_dim {}]",
                      rot, d);
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "q", q, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "k", k, {DType::kF32}));
    return cpu::rope_apply(ctx, q, k, positions, cos_sin);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->rope_apply(ctx, q, k, positions, cos_sin);
}

}  // namespace moeopt::ops
