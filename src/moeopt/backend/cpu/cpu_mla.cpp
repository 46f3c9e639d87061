// CPU reference: mla_cache_write, mla_rope_apply, mla_attention (ops/mla.h, which documents
// the latent cache and both attention forms). Plain loops in fp32; each output element is
// computed by one thread in a fixed order. kv_b is converted to f32 once per call (n * (dn +
// dv) * r values: 8 MB for DeepSeek-V2-Lite's layer), latent rows are read through the block
// table exactly as a paged GPU kernel would.
#include "moeopt/backend/cpu/cpu_mla.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "moeopt/backend/cpu/cpu_util.h"

namespace moeopt::cpu {
namespace {

void softmax_in_place(std::vector<float>& scores) {
  float mx = -INFINITY;
  for (float v : scores) mx = std::max(mx, v);
  for (float& v : scores) v = std::exp(v - mx);
}

}  // namespace

Status mla_cache_write(const ops::Context& ctx, const TensorView& latent,
                       const TensorView& slot_mapping, const TensorView& latent_cache) {
  const int64_t tokens = latent.shape[0], row = latent_cache.shape[3];
  const int64_t num_slots = latent_cache.shape[0] * latent_cache.shape[1];
  const int32_t* slot = slot_mapping.ptr<int32_t>();
  for (int64_t t = 0; t < tokens; ++t)
    if (slot[t] >= num_slots)
      return make_error(ErrorCode::kInvalidArgument,
                        "mla_cache_write: slot {} of token {} is past the cache ({} slots)", slot[t],
                        t, num_slots);
  parallel_for(ctx, tokens, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      if (slot[t] >= 0)
        store_f32(latent_cache.data, latent_cache.dtype, int64_t(slot[t]) * row, row, row_f32(latent, t));
  }, 16);
  return {};
}

Status mla_rope_apply(const ops::Context& ctx, const TensorView& q, const TensorView& k_rope,
                      const TensorView& positions, const TensorView& cos_sin, bool interleaved) {
  const int64_t tokens = q.shape[0], heads = q.shape[1], d = q.shape[2];
  const int64_t dr = k_rope.shape[1], dn = d - dr, half = dr / 2, max_pos = cos_sin.shape[0];
  const int32_t* pos = positions.ptr<int32_t>();
  for (int64_t t = 0; t < tokens; ++t)
    if (pos[t] < 0 || pos[t] >= max_pos)
      return make_error(ErrorCode::kInvalidArgument,
                        "mla_rope_apply: position {} of token {} is outside the cos/sin table [0, {})",
                        pos[t], t, max_pos);
  const float* table = cos_sin.ptr<float>();
  auto rotate = [&](float* x, const float* cos, const float* sin, std::vector<float>& tmp) {
    if (interleaved) {  // pairs (x[2i], x[2i+1]) -> [evens' | odds']
      for (int64_t i = 0; i < half; ++i) {
        const float a = x[2 * i], b = x[2 * i + 1];
        tmp[size_t(i)] = a * cos[i] - b * sin[i];
        tmp[size_t(half + i)] = b * cos[i] + a * sin[i];
      }
      std::copy(tmp.begin(), tmp.end(), x);
    } else {  // rotate-half (ops/rope.h)
      for (int64_t i = 0; i < half; ++i) {
        const float a = x[i], b = x[i + half];
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = b * cos[i] + a * sin[i];
      }
    }
  };
  parallel_for(ctx, tokens, [&](int64_t b, int64_t e) {
    std::vector<float> tmp(static_cast<size_t>(dr));
    for (int64_t t = b; t < e; ++t) {
      const float* cs = table + int64_t(pos[t]) * dr;
      float* qt = row_f32(q, t);
      for (int64_t h = 0; h < heads; ++h) rotate(qt + h * d + dn, cs, cs + half, tmp);
      rotate(row_f32(k_rope, t), cs, cs + half, tmp);
    }
  }, 4);
  return {};
}

Status mla_attention(const ops::Context& ctx, const TensorView& q, const TensorView& latent_cache,
                     const TensorView& kv_b, const TensorView& block_table,
                     const TensorView& context_lens, const TensorView& query_start_loc,
                     const ops::MlaParams& p, const TensorView& out) {
  const int64_t tokens = q.shape[0], heads = q.shape[1];
  const int64_t dn = p.qk_nope_head_dim, dr = p.qk_rope_head_dim, dv = p.v_head_dim;
  const int64_t lat = latent_cache.shape[3], r = lat - dr, bs = latent_cache.shape[1];
  const int64_t max_blocks = block_table.shape[1], hrows = dn + dv;
  std::vector<int32_t> seq_of;
  MOEOPT_RETURN_IF_ERROR(check_paged_batch("mla_attention", latent_cache.shape[0],
                                           latent_cache.shape[1], block_table, context_lens,
                                           query_start_loc, tokens, seq_of));
  const int32_t* bt = block_table.ptr<int32_t>();
  const int32_t* clen = context_lens.ptr<int32_t>();
  const int32_t* qsl = query_start_loc.ptr<int32_t>();
  // kv_b in f32: head h's W_uk rows at h * hrows, its W_uv rows at h * hrows + dn.
  std::vector<float> w(static_cast<size_t>(heads * hrows * r));
  parallel_for(ctx, heads * hrows, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) load_f32(kv_b.data, kv_b.dtype, i * r, r, w.data() + i * r);
  }, 64);
  // Element offset of token j's latent row of sequence s.
  auto latent_offset = [&](int64_t s, int64_t j) {
    return (int64_t(bt[s * max_blocks + j / bs]) * bs + j % bs) * lat;
  };
  auto position = [&](int64_t t) {
    const int64_t s = seq_of[size_t(t)];
    return int64_t(clen[s]) - (int64_t(qsl[s + 1]) - qsl[s]) + (t - qsl[s]);
  };

  if (p.form == ops::MlaForm::kAbsorbed) {
    parallel_for(ctx, tokens * heads, [&](int64_t b, int64_t e) {
      std::vector<float> q_lat(static_cast<size_t>(r)), o_lat(static_cast<size_t>(r)), row(static_cast<size_t>(lat)), scores;
      for (int64_t item = b; item < e; ++item) {
        const int64_t t = item / heads, h = item % heads, s = seq_of[size_t(t)], pos = position(t);
        const float* qh = row_f32(q, t) + h * (dn + dr);
        // q_lat = W_uk,h^T q_nope (rows of W_uk accumulated in order).
        std::fill(q_lat.begin(), q_lat.end(), 0.0f);
        for (int64_t i = 0; i < dn; ++i) {
          const float* wr = w.data() + (h * hrows + i) * r;
          for (int64_t c = 0; c < r; ++c) q_lat[size_t(c)] += qh[i] * wr[c];
        }
        scores.resize(size_t(pos + 1));
        for (int64_t j = 0; j <= pos; ++j) {
          load_f32(latent_cache.data, latent_cache.dtype, latent_offset(s, j), lat, row.data());
          scores[size_t(j)] =
              (dot_f32(q_lat.data(), row.data(), r) + dot_f32(qh + dn, row.data() + r, dr)) * p.scale;
        }
        softmax_in_place(scores);
        float sum = 0.0f;
        for (float v : scores) sum += v;
        std::fill(o_lat.begin(), o_lat.end(), 0.0f);
        for (int64_t j = 0; j <= pos; ++j) {
          load_f32(latent_cache.data, latent_cache.dtype, latent_offset(s, j), r, row.data());
          const float pj = scores[size_t(j)];
          for (int64_t c = 0; c < r; ++c) o_lat[size_t(c)] += pj * row[size_t(c)];
        }
        const float inv = 1.0f / sum;
        for (float& v : o_lat) v *= inv;
        float* o = row_f32(out, t) + h * dv;
        for (int64_t i = 0; i < dv; ++i)
          o[i] = dot_f32(w.data() + (h * hrows + dn + i) * r, o_lat.data(), r);
      }
    }, 2);
    return {};
  }

  // Expanded: per sequence, expand every cached token's keys and values once.
  const int64_t seqs = block_table.shape[0];
  std::vector<float> k_nope, v_all, k_rope;
  for (int64_t s = 0; s < seqs; ++s) {
    const int64_t n_new = int64_t(qsl[s + 1]) - qsl[s], len = clen[s];
    if (n_new == 0) continue;
    k_nope.assign(size_t(len * heads * dn), 0.0f);
    v_all.assign(size_t(len * heads * dv), 0.0f);
    k_rope.assign(size_t(len * dr), 0.0f);
    parallel_for(ctx, len, [&](int64_t b, int64_t e) {
      std::vector<float> row(static_cast<size_t>(lat));
      for (int64_t j = b; j < e; ++j) {
        load_f32(latent_cache.data, latent_cache.dtype, latent_offset(s, j), lat, row.data());
        std::copy(row.begin() + r, row.end(), k_rope.begin() + j * dr);
        for (int64_t h = 0; h < heads; ++h) {
          for (int64_t i = 0; i < dn; ++i)
            k_nope[size_t((j * heads + h) * dn + i)] = dot_f32(w.data() + (h * hrows + i) * r, row.data(), r);
          for (int64_t i = 0; i < dv; ++i)
            v_all[size_t((j * heads + h) * dv + i)] =
                dot_f32(w.data() + (h * hrows + dn + i) * r, row.data(), r);
        }
      }
    }, 1);
    parallel_for(ctx, n_new * heads, [&](int64_t b, int64_t e) {
      std::vector<float> scores, acc(static_cast<size_t>(dv));
      for (int64_t item = b; item < e; ++item) {
        const int64_t t = qsl[s] + item / heads, h = item % heads, pos = position(t);
        const float* qh = row_f32(q, t) + h * (dn + dr);
        scores.resize(size_t(pos + 1));
        for (int64_t j = 0; j <= pos; ++j)
          scores[size_t(j)] = (dot_f32(qh, k_nope.data() + (j * heads + h) * dn, dn) +
                               dot_f32(qh + dn, k_rope.data() + j * dr, dr)) * p.scale;
        softmax_in_place(scores);
        float sum = 0.0f;
        for (float v : scores) sum += v;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j = 0; j <= pos; ++j) {
          const float* vj = v_all.data() + (j * heads + h) * dv;
          for (int64_t i = 0; i < dv; ++i) acc[size_t(i)] += scores[size_t(j)] * vj[i];
        }
        float* o = row_f32(out, t) + h * dv;
        const float inv = 1.0f / sum;
        for (int64_t i = 0; i < dv; ++i) o[i] = acc[size_t(i)] * inv;
      }
    }, 2);
  }
  return {};
}

}  // namespace moeopt::cpu
