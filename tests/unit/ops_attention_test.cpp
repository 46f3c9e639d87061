// kv_cache_write and paged_attention against a naive double-precision attention over
// contiguous per-sequence K/V arrays (no paging, per-token loops): blocks are assigned in a
// shuffled order, unused block-table entries hold garbage, sequences mix prefill, chunked
// prefill, decode and zero new tokens. FP8 caches: the expected cache values are the inputs
// quantised per (token, kv head) row here, independently of the op (scale = max(amax, 1e-10)
// / 448, value = e4m3(x / scale) * scale), and unused slots hold NaN codes and scales.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/attention.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::ops {
namespace {

struct Paged {
  int64_t num_blocks = 0, max_blocks = 0;
  HostTensor block_table, context_lens, query_start_loc, k_cache, v_cache;
  HostTensor k_scale, v_scale;  // fp8 caches only
  std::vector<std::vector<double>> k, v;  // per sequence [ctx, Hkv, D], exact cache values
  int64_t tokens = 0;                     // total new tokens
};

// The value an fp8 cache holds for x in a row whose largest magnitude is amax.
double fp8_cached(double x, float amax) {
  const float scale = std::max(amax, 1e-10f) / 448.0f;
  return double(fp8e4m3_to_f32(f32_to_fp8e4m3(float(x) / scale)) * scale);
}

// Quantises each [d] row of `vals` as an fp8 cache stores it.
void fp8_round_rows(std::vector<double>& vals, int64_t d) {
  for (size_t r = 0; r < vals.size(); r += size_t(d)) {
    float amax = 0;
    for (int64_t e = 0; e < d; ++e) amax = std::max(amax, std::fabs(float(vals[r + size_t(e)])));
    for (int64_t e = 0; e < d; ++e) vals[r + size_t(e)] = fp8_cached(vals[r + size_t(e)], amax);
  }
}

KvScales scales_of(const Paged& p) {
  if (p.k_cache.dtype() != DType::kF8E4M3) return {};
  return {p.k_scale.view(), p.v_scale.view()};
}

// Builds the paging metadata and per-sequence K/V (values representable in bf16 and f16, so
// every cache dtype stores them exactly; fp8 caches store them rounded, see fp8_round_rows),
// and a poisoned cache.
Paged make_paged(const OpCase& c, CaseRng& rng) {
  Paged p;
  const int64_t seqs = int64_t(c.ctx_lens.size()), bs = c.block_size, hkv = c.kv_heads, d = c.head_dim;
  for (int64_t s = 0; s < seqs; ++s) {
    const int64_t need = (c.ctx_lens[size_t(s)] + bs - 1) / bs;
    p.num_blocks += need;
    p.max_blocks = std::max(p.max_blocks, need + 1);
  }
  p.num_blocks += 3;  // blocks nobody uses
  std::vector<int32_t> order(static_cast<size_t>(p.num_blocks));
  std::iota(order.begin(), order.end(), 0);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.below(int64_t(i)))]);
  p.block_table = HostTensor(DType::kI32, {seqs, p.max_blocks});
  p.context_lens = HostTensor(DType::kI32, {seqs});
  p.query_start_loc = HostTensor(DType::kI32, {seqs + 1});
  size_t next = 0;
  p.query_start_loc.ptr<int32_t>()[0] = 0;
  for (int64_t s = 0; s < seqs; ++s) {
    const int64_t ctx = c.ctx_lens[size_t(s)], need = (ctx + bs - 1) / bs;
    for (int64_t b = 0; b < p.max_blocks; ++b)
      p.block_table.ptr<int32_t>()[s * p.max_blocks + b] = b < need ? order[next++] : 1000000 + int32_t(b);
    p.context_lens.ptr<int32_t>()[s] = int32_t(ctx);
    p.query_start_loc.ptr<int32_t>()[s + 1] = p.query_start_loc.ptr<int32_t>()[s] + c.q_lens[size_t(s)];
    std::vector<double> kk, vv;
    for (int64_t i = 0; i < ctx * hkv * d; ++i) {
      kk.push_back(round_to_bf16(float(rng.nonzero(0.05, 1.0))));
      vv.push_back(round_to_bf16(float(rng.nonzero(0.05, 1.0))));
    }
    p.k.push_back(std::move(kk));
    p.v.push_back(std::move(vv));
  }
  p.tokens = p.query_start_loc.ptr<int32_t>()[seqs];
  p.k_cache = HostTensor(c.cache_dtype, {p.num_blocks, bs, hkv, d});
  p.v_cache = HostTensor(c.cache_dtype, {p.num_blocks, bs, hkv, d});
  poison(p.k_cache);
  poison(p.v_cache);
  if (c.cache_dtype == DType::kF8E4M3) {
    p.k_scale = HostTensor(DType::kF32, {p.num_blocks, bs, hkv});
    p.v_scale = HostTensor(DType::kF32, {p.num_blocks, bs, hkv});
    poison(p.k_scale);
    poison(p.v_scale);
  }
  return p;
}

// Writes every cached token of every sequence with kv_cache_write (one call per sequence),
// using slot = block_table[s][j / bs] * bs + j % bs. One padding token (slot -1) rides along.
void fill_cache(const OpCase& c, Paged& p, const Context& ctx) {
  const int64_t bs = c.block_size, hkv = c.kv_heads, d = c.head_dim;
  for (size_t s = 0; s < p.k.size(); ++s) {
    const int64_t n = c.ctx_lens[s];
    HostTensor k(DType::kF32, {n + 1, hkv, d}), v(DType::kF32, {n + 1, hkv, d});
    HostTensor slots(DType::kI32, {n + 1});
    for (int64_t j = 0; j < n; ++j) {
      slots.ptr<int32_t>()[j] = p.block_table.ptr<int32_t>()[int64_t(s) * p.max_blocks + j / bs] * int32_t(bs) + int32_t(j % bs);
      for (int64_t i = 0; i < hkv * d; ++i) {
        k.ptr<float>()[j * hkv * d + i] = float(p.k[s][size_t(j * hkv * d + i)]);
        v.ptr<float>()[j * hkv * d + i] = float(p.v[s][size_t(j * hkv * d + i)]);
      }
    }
    slots.ptr<int32_t>()[n] = -1;  // padding: must be skipped
    for (int64_t i = 0; i < hkv * d; ++i) k.ptr<float>()[n * hkv * d + i] = v.ptr<float>()[n * hkv * d + i] = 99.0f;
    Status st = kv_cache_write(ctx, k, v, slots, p.k_cache, p.v_cache, scales_of(p));
    ASSERT_TRUE(st.ok()) << st.message();
  }
  if (c.cache_dtype == DType::kF8E4M3)  // what the cache holds from now on
    for (size_t s = 0; s < p.k.size(); ++s) {
      fp8_round_rows(p.k[s], d);
      fp8_round_rows(p.v[s], d);
    }
}

// Element i of a cache (row i / d of the [slots * Hkv, d] view) as the op reads it.
double cached(const HostTensor& cache, const HostTensor& scale, int64_t i, int64_t d) {
  const float x = load_as_f32(cache.ptr<void>(), cache.dtype(), i);
  if (cache.dtype() != DType::kF8E4M3) return x;
  return double(x * scale.ptr<float>()[i / d]);
}

class KvWriteCase : public ::testing::TestWithParam<OpCase> {};

TEST_P(KvWriteCase, StoresEveryTokenAtItsSlotAndNothingElse) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  Paged p = make_paged(c, rng);
  ThreadPool pool(2);
  fill_cache(c, p, Context{.pool = &pool});
  const int64_t bs = c.block_size, row = int64_t(c.kv_heads) * c.head_dim;
  std::vector<char> used(static_cast<size_t>(p.num_blocks * bs), 0);
  for (size_t s = 0; s < p.k.size(); ++s)
    for (int64_t j = 0; j < c.ctx_lens[s]; ++j) {
      const int64_t slot = int64_t(p.block_table.ptr<int32_t>()[int64_t(s) * p.max_blocks + j / bs]) * bs + j % bs;
      used[size_t(slot)] = 1;
      for (int64_t i = 0; i < row; ++i) {
        ASSERT_EQ(cached(p.k_cache, p.k_scale, slot * row + i, c.head_dim), p.k[s][size_t(j * row + i)]);
        ASSERT_EQ(cached(p.v_cache, p.v_scale, slot * row + i, c.head_dim), p.v[s][size_t(j * row + i)]);
      }
    }
  for (int64_t slot = 0; slot < p.num_blocks * bs; ++slot)
    if (!used[size_t(slot)]) {
      for (int64_t i = 0; i < row; ++i) {
        ASSERT_TRUE(std::isnan(load_as_f32(p.k_cache.ptr<void>(), c.cache_dtype, slot * row + i)))
            << "slot " << slot << " was written";
      }
    }
}
INSTANTIATE_TEST_SUITE_P(Ops, KvWriteCase, ::testing::ValuesIn(op_cases_for(OpKind::kKvCacheWrite)),
                         [](const auto& info) { return std::string(info.param.name); });

class AttentionCase : public ::testing::TestWithParam<OpCase> {};

TEST_P(AttentionCase, MatchesNaiveAttention) {
  const OpCase& c = GetParam();
  CaseRng rng(c.name);
  Paged p = make_paged(c, rng);
  fill_cache(c, p, Context{});
  const int64_t hq = c.heads, hkv = c.kv_heads, d = c.head_dim, t = p.tokens;
  HostTensor q = random_tensor(DType::kF32, {t, hq, d}, rng);
  AttentionParams params{.scale = 0.0f, .sliding_window = c.sliding_window};
  ThreadPool pool(3);
  std::vector<HostTensor> outs;
  for (ThreadPool* tp : {static_cast<ThreadPool*>(nullptr), &pool}) {
    HostTensor out(DType::kF32, {t, hq, d});
    poison(out);
    Status st = paged_attention(Context{.pool = tp}, q, p.k_cache, p.v_cache, p.block_table,
                                p.context_lens, p.query_start_loc, params, out, scales_of(p));
    ASSERT_TRUE(st.ok()) << st.message();
    outs.push_back(std::move(out));
  }
  EXPECT_EQ(std::memcmp(outs[0].ptr<void>(), outs[1].ptr<void>(), outs[0].nbytes()), 0)
      << "result depends on the thread count";
  // Naive reference: per sequence, per new token, per head, over contiguous K/V.
  std::vector<double> qd = to_doubles(q), ref(static_cast<size_t>(t * hq * d));
  const double scale = 1.0 / std::sqrt(double(d));
  int64_t row = 0;
  for (size_t s = 0; s < p.k.size(); ++s) {
    const int64_t ctx = c.ctx_lens[s], n = c.q_lens[s];
    for (int64_t i = 0; i < n; ++i, ++row) {
      const int64_t pos = ctx - n + i;
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t g = h / (hq / hkv);
        std::vector<double> w;
        std::vector<int64_t> js;
        for (int64_t j = 0; j <= pos; ++j) {
          if (c.sliding_window > 0 && pos - j >= c.sliding_window) continue;
          double dot = 0;
          for (int64_t e = 0; e < d; ++e)
            dot += qd[size_t((row * hq + h) * d + e)] * p.k[s][size_t((j * hkv + g) * d + e)];
          w.push_back(dot * scale);
          js.push_back(j);
        }
        const double mx = *std::max_element(w.begin(), w.end());
        double sum = 0;
        for (double& x : w) sum += (x = std::exp(x - mx));
        for (int64_t e = 0; e < d; ++e) {
          double acc = 0;
          for (size_t a = 0; a < js.size(); ++a) acc += w[a] * p.v[s][size_t((js[a] * hkv + g) * d + e)];
          ref[size_t((row * hq + h) * d + e)] = acc / sum;
        }
      }
    }
  }
  Comparison cmp = compare_values(outs[0].ptr<float>(), ref.data(), outs[0].numel(), c.metric, c.tolerance);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
}
INSTANTIATE_TEST_SUITE_P(Ops, AttentionCase, ::testing::ValuesIn(op_cases_for(OpKind::kPagedAttention)),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(OpsAttention, ValidationErrors) {
  HostTensor kc(DType::kF32, {4, 2, 2, 8}), vc(DType::kF32, {4, 2, 2, 8});
  HostTensor q(DType::kF32, {3, 3, 8}), out(DType::kF32, {3, 3, 8});
  HostTensor bt(DType::kI32, {1, 4}), cl(DType::kI32, {1}), qsl(DType::kI32, {2});
  Status st = paged_attention(Context{}, q, kc, vc, bt, cl, qsl, {}, out);
  EXPECT_EQ(st.message(), "paged_attention: q has 3 heads, not a multiple of the cache's 2 kv heads");
  HostTensor q4(DType::kF32, {3, 4, 8}), out4(DType::kF32, {3, 4, 8});
  cl.ptr<int32_t>()[0] = 3;
  qsl.ptr<int32_t>()[1] = 3;
  bt.ptr<int32_t>()[1] = 7;  // second block (tokens 2..3) points past the cache
  st = paged_attention(Context{}, q4, kc, vc, bt, cl, qsl, {}, out4);
  EXPECT_EQ(st.message(), "paged_attention: block_table[0][1] = 7 is outside [0, 4)");
  bt.ptr<int32_t>()[1] = 1;
  cl.ptr<int32_t>()[0] = 2;  // 3 new tokens but only 2 in the cache
  st = paged_attention(Context{}, q4, kc, vc, bt, cl, qsl, {}, out4);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  HostTensor k(DType::kF32, {1, 2, 8}), slots(DType::kI32, {1});
  slots.ptr<int32_t>()[0] = 8;
  st = kv_cache_write(Context{}, k, k, slots, kc, vc);
  EXPECT_EQ(st.message(), "kv_cache_write: slot 8 of token 0 is past the cache (8 slots)");
  // FP8 caches need both scales, [num_blocks, block_size, Hkv] f32; others take none.
  HostTensor k8(DType::kF8E4M3, {4, 2, 2, 8}), v8(DType::kF8E4M3, {4, 2, 2, 8});
  HostTensor ks(DType::kF32, {4, 2, 2}), vs(DType::kF32, {4, 2, 2}), bad(DType::kF32, {4, 2, 3});
  slots.ptr<int32_t>()[0] = 1;
  st = kv_cache_write(Context{}, k, k, slots, k8, v8);
  EXPECT_EQ(st.message(), "kv_cache_write: an fp8_e4m3 cache needs its k and v scales");
  st = kv_cache_write(Context{}, k, k, slots, k8, v8, {ks.view(), bad.view()});
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.message().find("v_scale"), std::string::npos) << st.message();
  st = kv_cache_write(Context{}, k, k, slots, kc, vc, {ks.view(), vs.view()});
  EXPECT_EQ(st.message(), "kv_cache_write: KV scales are given for a f32 cache (only fp8_e4m3 caches have them)");
  EXPECT_TRUE(kv_cache_write(Context{}, k, k, slots, k8, v8, {ks.view(), vs.view()}).ok());
  st = paged_attention(Context{}, q4, k8, v8, bt, cl, qsl, {}, out4);
  EXPECT_EQ(st.message(), "paged_attention: an fp8_e4m3 cache needs its k and v scales");
}

}  // namespace
}  // namespace moeopt::ops
