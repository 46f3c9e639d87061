// RoPE: frequencies of every scaling type against a double-precision transcription of the
// formulas in transformers' modeling_rope_utils (written here independently of the
// library's fp32 code), and rope_apply against direct rotation in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/op_cases.h"
#include "moeopt/ops/rope.h"

namespace moeopt::ops {
namespace {

constexpr double kPi = std::numbers::pi;

// The RopeConfig each table case uses.
RopeConfig config_for(const OpCase& c) {
  RopeConfig cfg;
  cfg.head_dim = c.head_dim;
  cfg.partial_rotary_factor = double(c.rotary_dim) / double(c.head_dim);
  cfg.type = c.rope_type;
  cfg.factor = c.rope_factor;
  cfg.theta = 10000.0;
  cfg.max_position_embeddings = 1024;
  if (c.rope_type == RopeType::kYarn) cfg.original_max_position_embeddings = 1024;
  if (c.rope_type == RopeType::kLlama3) {
    cfg.theta = 500000.0;
    cfg.original_max_position_embeddings = 1024;
    cfg.low_freq_factor = 1.0;
    cfg.high_freq_factor = 4.0;
  }
  return cfg;
}

struct RefFreq {
  std::vector<double> inv;
  double attention = 1.0;
};

// Double-precision reference of the HF formulas.
RefFreq ref_freq(const RopeConfig& cfg, int64_t seq_len) {
  const int dim = int(cfg.head_dim * cfg.partial_rotary_factor);
  auto base_inv = [&](double theta) {
    std::vector<double> v;
    for (int i = 0; i < dim / 2; ++i) v.push_back(std::pow(theta, -2.0 * i / dim));
    return v;
  };
  RefFreq r;
  const double orig = cfg.original_max_position_embeddings ? double(cfg.original_max_position_embeddings)
                                                           : double(cfg.max_position_embeddings);
  switch (cfg.type) {
    case RopeType::kDefault: r.inv = base_inv(cfg.theta); break;
    case RopeType::kLinear:
      r.inv = base_inv(cfg.theta);
      for (double& f : r.inv) f /= cfg.factor;
      break;
    case RopeType::kDynamic: {
      const double mp = double(cfg.max_position_embeddings);
      const double len = std::max(double(seq_len), mp);
      r.inv = base_inv(cfg.theta * std::pow(cfg.factor * len / mp - (cfg.factor - 1), dim / (dim - 2.0)));
      break;
    }
    case RopeType::kYarn: {
      auto corr = [&](double rot) { return dim * std::log(orig / (rot * 2 * kPi)) / (2 * std::log(cfg.theta)); };
      double lo = std::max(std::floor(corr(cfg.beta_fast)), 0.0);
      double hi = std::min(std::ceil(corr(cfg.beta_slow)), dim - 1.0);
      if (lo == hi) hi += 0.001;
      std::vector<double> b = base_inv(cfg.theta);
      for (int i = 0; i < dim / 2; ++i) {
        const double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
        r.inv.push_back(b[size_t(i)] / cfg.factor * ramp + b[size_t(i)] * (1 - ramp));
      }
      r.attention = cfg.attention_factor ? *cfg.attention_factor : 0.1 * std::log(cfg.factor) + 1;
      break;
    }
    case RopeType::kLlama3: {
      for (double f : base_inv(cfg.theta)) {
        const double wl = 2 * kPi / f;
        if (wl < orig / cfg.high_freq_factor) r.inv.push_back(f);
        else if (wl > orig / cfg.low_freq_factor) r.inv.push_back(f / cfg.factor);
        else {
          const double s = (orig / wl - cfg.low_freq_factor) / (cfg.high_freq_factor - cfg.low_freq_factor);
          r.inv.push_back((1 - s) * f / cfg.factor + s * f);
        }
      }
      break;
    }
  }
  return r;
}

class RopeCase : public ::testing::TestWithParam<OpCase> {};

TEST_P(RopeCase, FrequenciesMatchFormulas) {
  const OpCase& c = GetParam();
  RopeConfig cfg = config_for(c);
  Result<RopeFrequencies> f = rope_inv_freq(cfg, c.k);
  ASSERT_TRUE(f.ok()) << f.status().message();
  RefFreq ref = ref_freq(cfg, c.k);
  ASSERT_EQ(f->inv_freq.size(), ref.inv.size());
  for (size_t i = 0; i < ref.inv.size(); ++i)
    EXPECT_NEAR(f->inv_freq[i], ref.inv[i], 1e-6 * ref.inv[i]) << "inv_freq[" << i << "]";
  EXPECT_NEAR(f->attention_factor, ref.attention, 1e-6);
}

TEST_P(RopeCase, ApplyMatchesDirectRotation) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  RopeConfig cfg = config_for(c);
  const int64_t t = c.m, d = c.head_dim, rot = c.rotary_dim, half = rot / 2;
  HostTensor table(DType::kF32, {c.k, rot});
  ASSERT_TRUE(rope_build_cos_sin(cfg, c.k, table).ok());
  HostTensor pos(DType::kI32, {t});
  for (int64_t i = 0; i < t; ++i) pos.ptr<int32_t>()[i] = int32_t(rng.below(c.k));
  pos.ptr<int32_t>()[0] = int32_t(c.k - 1);
  if (t > 1) pos.ptr<int32_t>()[1] = 0;
  HostTensor q0 = random_tensor(DType::kF32, {t, c.heads, d}, rng);
  HostTensor k0 = random_tensor(DType::kF32, {t, c.kv_heads, d}, rng);
  ThreadPool pool(3);
  std::vector<HostTensor> outs;
  for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
    HostTensor q(DType::kF32, q0.shape()), k(DType::kF32, k0.shape());
    std::memcpy(q.ptr<void>(), q0.ptr<void>(), q0.nbytes());
    std::memcpy(k.ptr<void>(), k0.ptr<void>(), k0.nbytes());
    Status st = rope_apply(Context{.pool = p}, q, k, pos, table);
    ASSERT_TRUE(st.ok()) << st.message();
    outs.push_back(std::move(q));
    outs.push_back(std::move(k));
  }
  EXPECT_EQ(std::memcmp(outs[0].ptr<void>(), outs[2].ptr<void>(), outs[0].nbytes()), 0);
  EXPECT_EQ(std::memcmp(outs[1].ptr<void>(), outs[3].ptr<void>(), outs[1].nbytes()), 0);
  RefFreq f = ref_freq(cfg, c.k);
  for (int which = 0; which < 2; ++which) {
    const HostTensor& in = which == 0 ? q0 : k0;
    const HostTensor& got = outs[size_t(which)];
    const int64_t heads = in.shape()[1];
    std::vector<double> x = to_doubles(in), ref(x.size());
    for (int64_t i = 0; i < t; ++i)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t o = (i * heads + h) * d;
        for (int64_t j = 0; j < d; ++j) ref[size_t(o + j)] = x[size_t(o + j)];
        for (int64_t j = 0; j < half; ++j) {
          const double a = pos.ptr<int32_t>()[i] * f.inv[size_t(j)];
          const double cs = std::cos(a) * f.attention, sn = std::sin(a) * f.attention;
          ref[size_t(o + j)] = x[size_t(o + j)] * cs - x[size_t(o + j + half)] * sn;
          ref[size_t(o + j + half)] = x[size_t(o + j + half)] * cs + x[size_t(o + j)] * sn;
        }
      }
    Comparison cmp = compare_values(got.ptr<float>(), ref.data(), got.numel(), c.metric, c.tolerance);
    EXPECT_TRUE(cmp.ok) << (which ? "k: " : "q: ") << cmp.detail;
  }
}
INSTANTIATE_TEST_SUITE_P(Ops, RopeCase, ::testing::ValuesIn(op_cases_for(OpKind::kRope)),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(OpsRope, KnownValues) {
  RopeConfig cfg;
  cfg.head_dim = 64;
  cfg.theta = 10000;
  auto f = rope_inv_freq(cfg);
  ASSERT_TRUE(f.ok());
  EXPECT_FLOAT_EQ(f->inv_freq[0], 1.0f);
  EXPECT_NEAR(f->inv_freq[1], 0.7498942, 1e-6);  // 10000^(-2/64)
  // yarn: attention factor 0.1 ln(4) + 1, and the mscale / mscale_all_dim ratio form.
  cfg.type = RopeType::kYarn;
  cfg.factor = 4;
  cfg.max_position_embeddings = 4096;
  EXPECT_NEAR(rope_inv_freq(cfg)->attention_factor, 1.1386294, 1e-6);
  cfg.mscale = 1.0;
  cfg.mscale_all_dim = 0.5;
  EXPECT_NEAR(rope_inv_freq(cfg)->attention_factor, 1.1386294 / 1.0693147, 1e-6);
  cfg.attention_factor = 0.75;
  EXPECT_FLOAT_EQ(rope_inv_freq(cfg)->attention_factor, 0.75f);
  // dynamic at init (seq_len <= max positions) equals default
  RopeConfig dyn;
  dyn.head_dim = 32;
  dyn.type = RopeType::kDynamic;
  dyn.factor = 2;
  dyn.max_position_embeddings = 1000;
  RopeConfig def = dyn;
  def.type = RopeType::kDefault;
  EXPECT_EQ(rope_inv_freq(dyn, 500)->inv_freq, rope_inv_freq(def)->inv_freq);
  EXPECT_NE(rope_inv_freq(dyn, 1500)->inv_freq, rope_inv_freq(def)->inv_freq);
}

TEST(OpsRope, ValidationErrors) {
  RopeConfig cfg;
  cfg.head_dim = 10;
  cfg.partial_rotary_factor = 0.5;  // rotary dim 5: odd
  EXPECT_FALSE(rope_inv_freq(cfg).ok());
  HostTensor q(DType::kF32, {2, 2, 8}), k(DType::kF32, {2, 1, 8}), pos(DType::kI32, {2});
  HostTensor table(DType::kF32, {4, 8});
  pos.ptr<int32_t>()[1] = 4;
  Status st = rope_apply(Context{}, q, k, pos, table);
  EXPECT_EQ(st.message(), "rope_apply: position 4 of token 1 is outside the cos/sin table [0, 4)");
  HostTensor wide(DType::kF32, {4, 10});
  EXPECT_FALSE(rope_apply(Context{}, q, k, pos, wide).ok());
}

}  // namespace
}  // namespace moeopt::ops
