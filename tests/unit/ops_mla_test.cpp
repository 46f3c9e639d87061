// MLA ops (ops/mla.h): mla_cache_write + mla_attention in both forms against a naive
// double-precision expanded attention over unpaged per-sequence arrays (odd block sizes,
// shuffled blocks, garbage past each sequence's blocks, prefill + decode + chunked prefill +
// a sequence with no new tokens in one call); mla_rope_apply against the rotation formulas
// (DeepSeek-V2's complex pairs, V3's interleave and rotate-half); the YaRN softmax scale.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <numeric>

#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/mla.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::ops {
namespace {

struct MlaCase {
  const char* name;
  int64_t heads, dn, dr, dv, rank, block_size;
  std::vector<int64_t> ctx_lens, q_lens;
  DType cache_dtype;
};

struct MlaSetup {
  int64_t num_blocks = 0, max_blocks = 0, tokens = 0;
  HostTensor block_table, context_lens, query_start_loc, cache, kv_b, q;
  std::vector<std::vector<double>> latent;  // per sequence [ctx, r + dr], exact cache values
};

MlaSetup make_setup(const MlaCase& c, const Context& ctx) {
  CaseRng rng(c.name);
  MlaSetup p;
  const int64_t seqs = int64_t(c.ctx_lens.size()), bs = c.block_size, lat = c.rank + c.dr;
  for (int64_t s = 0; s < seqs; ++s) {
    const int64_t need = (c.ctx_lens[size_t(s)] + bs - 1) / bs;
    p.num_blocks += need;
    p.max_blocks = std::max(p.max_blocks, need + 1);
  }
  p.num_blocks += 2;  // unused blocks
  std::vector<int32_t> order(size_t(p.num_blocks));
  std::iota(order.begin(), order.end(), 0);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.below(int64_t(i)))]);
  p.block_table = HostTensor(DType::kI32, {seqs, p.max_blocks});
  p.context_lens = HostTensor(DType::kI32, {seqs});
  p.query_start_loc = HostTensor(DType::kI32, {seqs + 1});
  p.cache = HostTensor(c.cache_dtype, {p.num_blocks, bs, 1, lat});
  poison(p.cache);
  p.query_start_loc.ptr<int32_t>()[0] = 0;
  size_t next = 0;
  for (int64_t s = 0; s < seqs; ++s) {
    const int64_t n = c.ctx_lens[size_t(s)], need = (n + bs - 1) / bs;
    for (int64_t b = 0; b < p.max_blocks; ++b)
      p.block_table.ptr<int32_t>()[s * p.max_blocks + b] = b < need ? order[next++] : 7000000 + int32_t(b);
    p.context_lens.ptr<int32_t>()[s] = int32_t(n);
    p.query_start_loc.ptr<int32_t>()[s + 1] = p.query_start_loc.ptr<int32_t>()[s] + int32_t(c.q_lens[size_t(s)]);
    // Latent rows (bf16-exact, so every cache dtype stores them as they are), written with
    // mla_cache_write plus one padding token (slot -1).
    HostTensor rows(DType::kF32, {n + 1, lat}), slots(DType::kI32, {n + 1});
    std::vector<double> vals;
    for (int64_t j = 0; j < n; ++j) {
      slots.ptr<int32_t>()[j] = p.block_table.ptr<int32_t>()[s * p.max_blocks + j / bs] * int32_t(bs) + int32_t(j % bs);
      for (int64_t i = 0; i < lat; ++i) {
        const float v = round_to_bf16(float(rng.nonzero(0.05, 1.0)));
        rows.ptr<float>()[j * lat + i] = v;
        vals.push_back(v);
      }
    }
    slots.ptr<int32_t>()[n] = -1;
    for (int64_t i = 0; i < lat; ++i) rows.ptr<float>()[n * lat + i] = 1e30f;
    EXPECT_TRUE(mla_cache_write(ctx, rows, slots, p.cache).ok());
    p.latent.push_back(std::move(vals));
  }
  p.tokens = p.query_start_loc.ptr<int32_t>()[seqs];
  p.kv_b = random_tensor(DType::kBF16, {c.heads * (c.dn + c.dv), c.rank}, rng, 0.05, 0.5);
  p.q = random_tensor(DType::kF32, {p.tokens, c.heads, c.dn + c.dr}, rng, 0.05, 1.0);
  return p;
}

// Expanded attention in double over the unpaged latent rows: out [T, n, dv].
std::vector<double> reference(const MlaCase& c, const MlaSetup& p, double scale) {
  const int64_t n = c.heads, dn = c.dn, dr = c.dr, dv = c.dv, r = c.rank, lat = r + dr;
  const std::vector<double> w = to_doubles(p.kv_b), q = to_doubles(p.q);
  std::vector<double> out(size_t(p.tokens * n * dv), 0.0);
  for (size_t s = 0; s < c.ctx_lens.size(); ++s) {
    const int64_t len = c.ctx_lens[s], q0 = p.query_start_loc.ptr<int32_t>()[s], nq = c.q_lens[s];
    const std::vector<double>& L = p.latent[s];
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t t = q0 + i, pos = len - nq + i;
      for (int64_t h = 0; h < n; ++h) {
        const double* qh = q.data() + (t * n + h) * (dn + dr);
        std::vector<double> sc(size_t(pos + 1));
        double mx = -INFINITY;
        for (int64_t j = 0; j <= pos; ++j) {
          double dot = 0;
          for (int64_t a = 0; a < dn; ++a) {
            double k = 0;
            for (int64_t b = 0; b < r; ++b) k += w[size_t((h * (dn + dv) + a) * r + b)] * L[size_t(j * lat + b)];
            dot += qh[a] * k;
          }
          for (int64_t a = 0; a < dr; ++a) dot += qh[dn + a] * L[size_t(j * lat + r + a)];
          sc[size_t(j)] = dot * scale;
          mx = std::max(mx, sc[size_t(j)]);
        }
        double sum = 0;
        for (double& v : sc) sum += (v = std::exp(v - mx));
        for (int64_t a = 0; a < dv; ++a) {
          double acc = 0;
          for (int64_t j = 0; j <= pos; ++j) {
            double v = 0;
            for (int64_t b = 0; b < r; ++b) v += w[size_t((h * (dn + dv) + dn + a) * r + b)] * L[size_t(j * lat + b)];
            acc += sc[size_t(j)] * v;
          }
          out[size_t((t * n + h) * dv + a)] = acc / sum;
        }
      }
    }
  }
  return out;
}

class MlaAttention : public ::testing::TestWithParam<MlaCase> {};

TEST_P(MlaAttention, BothFormsMatchExpandedReference) {
  const MlaCase& c = GetParam();
  ThreadPool pool(3);
  Context ctx;
  ctx.pool = &pool;
  MlaSetup p = make_setup(c, ctx);
  MlaParams mp;
  mp.qk_nope_head_dim = c.dn;
  mp.qk_rope_head_dim = c.dr;
  mp.v_head_dim = c.dv;
  mp.scale = 0.37f;
  const std::vector<double> want = reference(c, p, mp.scale);
  std::vector<std::vector<double>> got;
  for (MlaForm form : {MlaForm::kExpanded, MlaForm::kAbsorbed}) {
    mp.form = form;
    HostTensor out(DType::kF32, {p.tokens, c.heads, c.dv});
    poison(out);
    Status st = mla_attention(ctx, p.q, p.cache, p.kv_b, p.block_table, p.context_lens,
                              p.query_start_loc, mp, out);
    ASSERT_TRUE(st.ok()) << st.message();
    got.push_back(to_doubles(out));
    double worst = 0, mag = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::fabs(got.back()[i] - want[i]));
      mag = std::max(mag, std::fabs(want[i]));
    }
    EXPECT_LE(worst, 2e-5 * std::max(1.0, mag))
        << c.name << (form == MlaForm::kAbsorbed ? " absorbed" : " expanded") << ": max error " << worst;
  }
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[0][i], got[1][i], 2e-5) << i;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MlaAttention,
    ::testing::Values(
        // prefill, decode, chunked prefill, nothing new; block size 3
        MlaCase{"mla_odd_mixed", 3, 5, 4, 7, 9, 3, {7, 1, 10, 4}, {7, 1, 3, 0}, DType::kF32},
        // decode only (what the engine runs absorbed), bf16 cache, block size 5
        MlaCase{"mla_decode_bf16", 2, 8, 2, 3, 11, 5, {13, 6, 1}, {1, 1, 1}, DType::kBF16},
        // V3-like ratios at a small size, f16 cache, block size 1
        MlaCase{"mla_v3_ratios_f16", 4, 16, 8, 16, 36, 1, {5, 9}, {5, 2}, DType::kF16}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(MlaRope, InterleavedMatchesComplexPairsAndStoresDeinterleaved) {
  // One token, one head, dn = 3, dr = 6 at position 5, table built by ops/rope.h.
  const int64_t dn = 3, dr = 6, half = dr / 2;
  RopeConfig rc;
  rc.head_dim = int(dr);
  rc.theta = 10000.0;
  rc.max_position_embeddings = 16;
  HostTensor cos_sin(DType::kF32, {16, dr});
  ASSERT_TRUE(rope_build_cos_sin(rc, 0, cos_sin).ok());
  CaseRng rng("mla_rope");
  HostTensor q = random_tensor(DType::kF32, {1, 1, dn + dr}, rng), k = random_tensor(DType::kF32, {1, dr}, rng);
  const std::vector<double> q0 = to_doubles(q), k0 = to_doubles(k);
  HostTensor pos(DType::kI32, {1});
  pos.ptr<int32_t>()[0] = 5;
  for (bool interleaved : {true, false}) {
    HostTensor qq(DType::kF32, {1, 1, dn + dr}), kk(DType::kF32, {1, dr});
    std::copy_n(q.ptr<float>(), dn + dr, qq.ptr<float>());
    std::copy_n(k.ptr<float>(), dr, kk.ptr<float>());
    ASSERT_TRUE(mla_rope_apply(Context{}, qq, kk, pos, cos_sin, interleaved).ok());
    for (int64_t i = 0; i < dn; ++i) EXPECT_EQ(qq.ptr<float>()[i], q.ptr<float>()[i]);  // nope part untouched
    const float* qr = qq.ptr<float>() + dn;
    for (int64_t i = 0; i < half; ++i) {
      const double f = 5.0 * (1.0 / std::pow(10000.0, double(2 * i) / double(dr)));
      // The pair rotated by frequency i: (x[2i], x[2i+1]) when interleaved, (x[i], x[i+h]) not.
      const int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
      const std::complex<double> z = std::complex<double>(q0[size_t(dn + a)], q0[size_t(dn + b)]) *
                                     std::polar(1.0, f);
      // Stored as [evens' | odds'] in both cases.
      EXPECT_NEAR(qr[i], z.real(), 1e-5) << interleaved << " " << i;
      EXPECT_NEAR(qr[i + half], z.imag(), 1e-5) << interleaved << " " << i;
      const std::complex<double> zk =
          std::complex<double>(k0[size_t(a)], k0[size_t(b)]) * std::polar(1.0, f);
      EXPECT_NEAR(kk.ptr<float>()[i], zk.real(), 1e-5);
      EXPECT_NEAR(kk.ptr<float>()[i + half], zk.imag(), 1e-5);
    }
  }
}

TEST(MlaScale, YarnMscaleAllDimSquared) {
  RopeConfig rc;
  rc.head_dim = 64;
  EXPECT_FLOAT_EQ(mla_softmax_scale(192, rc), float(1.0 / std::sqrt(192.0)));  // default rope
  rc.type = RopeType::kYarn;
  rc.factor = 40.0;
  EXPECT_FLOAT_EQ(mla_softmax_scale(192, rc), float(1.0 / std::sqrt(192.0)));  // no mscale_all_dim
  rc.mscale = 1.0;
  rc.mscale_all_dim = 1.0;  // DeepSeek-V3's values
  const double m = 0.1 * std::log(40.0) + 1.0;
  EXPECT_FLOAT_EQ(mla_softmax_scale(192, rc), float(m * m / std::sqrt(192.0)));
  rc.mscale_all_dim = 0.707;  // DeepSeek-V2's
  const double m2 = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_FLOAT_EQ(mla_softmax_scale(192, rc), float(m2 * m2 / std::sqrt(192.0)));
  rc.factor = 1.0;  // no scaling: get_mscale is 1
  EXPECT_FLOAT_EQ(mla_softmax_scale(192, rc), float(1.0 / std::sqrt(192.0)));
  // The cos/sin factor: mscale / mscale_all_dim ratio of get_mscale (1 when equal).
  rc.factor = 40.0;
  rc.original_max_position_embeddings = 4096;
  rc.mscale = 0.707;
  auto f = rope_inv_freq(rc);
  ASSERT_TRUE(f.ok());
  EXPECT_FLOAT_EQ(f->attention_factor, 1.0f);
  rc.mscale = 0.9;
  rc.mscale_all_dim = 0.8;
  f = rope_inv_freq(rc);
  ASSERT_TRUE(f.ok());
  EXPECT_FLOAT_EQ(f->attention_factor,
                  float((0.1 * 0.9 * std::log(40.0) + 1.0) / (0.1 * 0.8 * std::log(40.0) + 1.0)));
}

TEST(MlaOps, RejectsBadShapesWithOneLine) {
  HostTensor cache(DType::kF32, {4, 3, 1, 12}), kv_b(DType::kF32, {2 * (4 + 5), 8});
  HostTensor q(DType::kF32, {1, 2, 4 + 4}), out(DType::kF32, {1, 2, 5});
  HostTensor bt(DType::kI32, {1, 2}), cl(DType::kI32, {1}), qsl(DType::kI32, {2});
  MlaParams mp{4, 4, 5, 0.5f, MlaForm::kAbsorbed};
  HostTensor bad_kv_b(DType::kF32, {2 * (4 + 5), 9});
  Status st = mla_attention(Context{}, q, cache, bad_kv_b, bt, cl, qsl, mp, out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("kv_b"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find('\n'), std::string::npos);
  HostTensor latent(DType::kF32, {1, 11}), slots(DType::kI32, {1});
  st = mla_cache_write(Context{}, latent, slots, cache);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("latent"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace moeopt::ops
