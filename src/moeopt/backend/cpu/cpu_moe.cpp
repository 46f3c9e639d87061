// CPU reference: moe_route, moe_permute, moe_experts, moe_combine (moe.h documents the
// semantics, ties and layouts).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/backend/cpu/cpu_fp8.h"
#include "moeopt/ops/fp8.h"
#include "moeopt/backend/cpu/cpu_util.h"
#include "moeopt/ops/sparsity.h"

namespace moeopt::cpu {
namespace {

// "a ranks before b": larger value first, equal values -> lower index (torch.topk on CPU).
struct RanksBefore {
  const float* v;
  bool operator()(int32_t a, int32_t b) const {
    if (v[a] != v[b]) return v[a] > v[b];
    return a < b;
  }
};

// The k best indices of v[0..n) in rank order.
void top_k_indices(const float* v, int32_t n, int32_t k, std::vector<int32_t>& idx) {
  idx.resize(size_t(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), RanksBefore{v});
  idx.resize(size_t(k));
}

}  // namespace

Status moe_route(const Context& ctx, const TensorView& router_logits,
                 const ops::RouteParams& p, const TensorView& expert_ids,
                 const TensorView& expert_weights) {
  const int64_t m_rows = router_logits.shape[0];
  const int32_t e = int32_t(router_logits.shape[1]), k = p.top_k;
  std::vector<float> bias;
  if (p.correction_bias) {
    bias.resize(size_t(e));
    load_f32(p.correction_bias->data, p.correction_bias->dtype, 0, e, bias.data());
  }
  int32_t* ids_out = expert_ids.ptr<int32_t>();
  float* w_out = expert_weights.ptr<float>();
  parallel_for(ctx, m_rows, [&](int64_t b, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(e)), choice(static_cast<size_t>(e)), group_score;
    std::vector<int32_t> idx, groups;
    for (int64_t m = b; m < end; ++m) {
      const float* l = row_f32(router_logits, m);
      // 1. scores (fp32 results; softmax's exp and sum in double).
      if (p.scoring == ops::RouterScoring::kSoftmax) {
        float mx = -INFINITY;
        for (int32_t i = 0; i < e; ++i) mx = std::max(mx, l[i]);
        double sum = 0.0;
        for (int32_t i = 0; i < e; ++i) sum += std::exp(double(l[i]) - double(mx));
        for (int32_t i = 0; i < e; ++i)
          scores[size_t(i)] = float(std::exp(double(l[i]) - double(mx)) / sum);
      } else {
        for (int32_t i = 0; i < e; ++i) scores[size_t(i)] = 1.0f / (1.0f + std::exp(-l[i]));
      }
      // 2. selection scores (+ bias), group masking.
      for (int32_t i = 0; i < e; ++i)
        choice[size_t(i)] = scores[size_t(i)] + (bias.empty() ? 0.0f : bias[size_t(i)]);
      if (p.grouping != ops::ExpertGrouping::kNone) {
        const int32_t ng = p.n_group, gs = e / ng;
        group_score.assign(size_t(ng), 0.0f);
        for (int32_t g = 0; g < ng; ++g) {
          const float* c = choice.data() + g * gs;
          if (p.grouping == ops::ExpertGrouping::kMaxScore) {
            group_score[size_t(g)] = *std::max_element(c, c + gs);
          } else {  // sum of the two largest
            top_k_indices(c, gs, 2, idx);
            group_score[size_t(g)] = c[idx[0]] + c[idx[1]];
          }
        }
        top_k_indices(group_score.data(), ng, p.topk_group, groups);
        std::vector<char> keep(static_cast<size_t>(ng), 0);
        for (int32_t g : groups) keep[size_t(g)] = 1;
        for (int32_t i = 0; i < e; ++i)
          if (!keep[size_t(i / gs)]) choice[size_t(i)] = 0.0f;  // HF masked_fill(..., 0.0)
      }
      // 3. top-k, weights from the unbiased scores, renormalise, scale.
      top_k_indices(choice.data(), e, k, idx);
      float* w = w_out + m * k;
      int32_t* ids = ids_out + m * k;
      float sum = 0.0f;
      for (int32_t j = 0; j < k; ++j) {
        ids[j] = idx[size_t(j)];
        w[j] = scores[size_t(idx[size_t(j)])];
        sum += w[j];
      }
      if (p.renormalize)
        for (int32_t j = 0; j < k; ++j) w[j] /= (sum + p.renormalize_eps);
      for (int32_t j = 0; j < k; ++j) w[j] *= p.routed_scaling_factor;
    }
  }, 8);
  return {};
}

Status moe_permute(const Context& ctx, const TensorView& expert_ids,
                   const TensorView& expert_weights, int64_t num_experts, int pad_rows_to,
                   const ops::MoePermutation& perm) {
  // A sequential counting sort: O(M*k), cheap next to the expert GEMMs.
  const int64_t m_rows = expert_ids.shape[0], k = expert_ids.shape[1];
  const int64_t cap = perm.permuted_row_to_token.shape[0];
  const int32_t* ids = expert_ids.ptr<int32_t>();
  const float* w = expert_weights.ptr<float>();
  int32_t* counts = perm.tokens_per_expert.ptr<int32_t>();
  int32_t* offsets = perm.expert_offsets.ptr<int32_t>();
  int32_t* row_token = perm.permuted_row_to_token.ptr<int32_t>();
  float* row_weight = perm.permuted_row_weight.ptr<float>();
  int32_t* inverse = perm.token_to_permuted_row.ptr<int32_t>();
  for (int64_t i = 0; i < m_rows * k; ++i)
    if (ids[i] < 0 || ids[i] >= num_experts)
      return make_error(ErrorCode::kInvalidArgument,
                        "moe_permute: expert_ids[{}][{}] = {} is outside [0, {})", i / k, i % k,
                        ids[i], num_experts);
  std::fill(counts, counts + num_experts, 0);
  for (int64_t i = 0; i < m_rows * k; ++i) ++counts[ids[i]];
  offsets[0] = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t padded = (int64_t(counts[e]) + pad_rows_to - 1) / pad_rows_to * pad_rows_to;
    offsets[e + 1] = int32_t(offsets[e] + padded);
  }
  std::fill(row_token, row_token + cap, -1);
  std::fill(row_weight, row_weight + cap, 0.0f);
  std::vector<int32_t> cursor(offsets, offsets + num_experts);
  for (int64_t m = 0; m < m_rows; ++m) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = ids[m * k + j];
      const int32_t r = cursor[size_t(e)]++;
      row_token[r] = int32_t(m);
      row_weight[r] = w[m * k + j];
      inverse[m * k + j] = r;
    }
  }
  (void)ctx;
  return {};
}

namespace {

// moe_experts with fp8 experts (ops/fp8.h, ops/moe.h): each token's x row is quantised once
// per token in groups of 128 along H, each row's silu(gate) * up intermediate in groups of
// 128 along I; both GEMMs are W8A8 block products; the routing weight scales GEMM 2's f32
// output. Called after the permutation has been validated and every row zeroed.
Status moe_experts_fp8(const Context& ctx, const TensorView& x, const ops::ExpertWeights& weights,
                       const ops::MoePermutation& perm, const TensorView& out_rows) {
  const int64_t num_e = weights.num_experts(), h = weights.hidden(), inter = weights.intermediate();
  const int64_t m_rows = x.shape[0];
  const int64_t hb = ops::fp8_blocks(h), ib = ops::fp8_blocks(inter);
  const int32_t* counts = perm.tokens_per_expert.ptr<int32_t>();
  const int32_t* offsets = perm.expert_offsets.ptr<int32_t>();
  const int32_t* row_token = perm.permuted_row_to_token.ptr<int32_t>();
  const float* row_weight = perm.permuted_row_weight.ptr<float>();
  std::vector<float> xq(size_t(m_rows * h)), xs(size_t(m_rows * hb));
  fp8_quantize_rows(ctx, x.ptr<float>(), ops::row_stride(x), m_rows, h, xq.data(), xs.data());
  std::vector<float> act, aq, as;
  for (int64_t e = 0; e < num_e; ++e) {
    const int64_t n = counts[e], r0 = offsets[e];
    if (n == 0) continue;
    const TensorView gate = weights.gate_proj(e), up = weights.up_proj(e);
    const TensorView down = weights.down_proj(e);
    const float* gs = weights.gate_scale(e).ptr<float>();
    const float* us = weights.up_scale(e).ptr<float>();
    const float* ds = weights.down_scale(e).ptr<float>();
    act.resize(size_t(n * inter));
    parallel_for(ctx, inter, [&](int64_t i0, int64_t i1) {
      std::vector<float> g(static_cast<size_t>(h)), u(static_cast<size_t>(h));
      for (int64_t i = i0; i < i1; ++i) {
        load_f32(gate.data, gate.dtype, i * h, h, g.data());
        load_f32(up.data, up.dtype, i * h, h, u.data());
        const float* gsr = gs + (i / ops::kFp8BlockSize) * hb;
        const float* usr = us + (i / ops::kFp8BlockSize) * hb;
        for (int64_t r = 0; r < n; ++r) {
          const int64_t t = row_token[r0 + r];
          const float* xqr = xq.data() + t * h;
          const float* xsr = xs.data() + t * hb;
          act[size_t(r * inter + i)] = silu_f32(fp8_dot_blocks(xqr, xsr, g.data(), gsr, h)) *
                                       fp8_dot_blocks(xqr, xsr, u.data(), usr, h);
        }
      }
    }, 8);
    aq.resize(size_t(n * inter));
    as.resize(size_t(n * ib));
    fp8_quantize_rows(ctx, act.data(), inter, n, inter, aq.data(), as.data());
    parallel_for(ctx, h, [&](int64_t c0, int64_t c1) {
      std::vector<float> dn(static_cast<size_t>(inter));
      for (int64_t c = c0; c < c1; ++c) {
        load_f32(down.data, down.dtype, c * inter, inter, dn.data());
        const float* dsr = ds + (c / ops::kFp8BlockSize) * ib;
        for (int64_t r = 0; r < n; ++r)
          row_f32(out_rows, r0 + r)[c] =
              row_weight[r0 + r] *
              fp8_dot_blocks(aq.data() + r * inter, as.data() + r * ib, dn.data(), dsr, inter);
      }
    }, 8);
  }
  return {};
}

}  // namespace

Status moe_experts(const Context& ctx, const TensorView& x, const ops::ExpertWeights& weights,
                   const ops::MoePermutation& perm, const TensorView& out_rows) {
  const int64_t num_e = weights.num_experts(), h = weights.hidden(), inter = weights.intermediate();
  const int64_t m_rows = x.shape[0], cap = out_rows.shape[0];
  const int32_t* counts = perm.tokens_per_expert.ptr<int32_t>();
  const int32_t* offsets = perm.expert_offsets.ptr<int32_t>();
  const int32_t* row_token = perm.permuted_row_to_token.ptr<int32_t>();
  const float* row_weight = perm.permuted_row_weight.ptr<float>();
  // Validate the permutation before touching memory through it.
  if (offsets[0] != 0 || offsets[num_e] > cap)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe_experts: expert_offsets must start at 0 and end at <= {} rows", cap);
  for (int64_t e = 0; e < num_e; ++e) {
    if (counts[e] < 0 || offsets[e + 1] - offsets[e] < counts[e])
      return make_error(ErrorCode::kInvalidArgument,
                        "moe_experts: expert {} has {} rows but offsets [{}, {})", e, counts[e],
                        offsets[e], offsets[e + 1]);
    for (int64_t r = offsets[e]; r < offsets[e] + counts[e]; ++r)
      if (row_token[r] < 0 || row_token[r] >= m_rows)
        return make_error(ErrorCode::kInvalidArgument,
                          "moe_experts: permuted_row_to_token[{}] = {} is outside [0, {})", r,
                          row_token[r], m_rows);
  }
  // Every row not computed below (padding, unused tail) is written as zeros.
  for (int64_t r = 0; r < cap; ++r) {
    float* o = row_f32(out_rows, r);
    std::fill(o, o + h, 0.0f);
  }
  if (weights.is_fp8()) {
    if (ctx.expert_stats)
      return make_error(ErrorCode::kUnsupported,
                        "moe_experts: calibration statistics are taken on unquantised experts");
    return moe_experts_fp8(ctx, x, weights, perm, out_rows);
  }
  std::vector<float> xs, act;
  for (int64_t e = 0; e < num_e; ++e) {
    const int64_t n = counts[e], r0 = offsets[e];
    if (n == 0) continue;
    // Gather this expert's input rows: xs [n, H].
    xs.resize(size_t(n * h));
    for (int64_t r = 0; r < n; ++r) {
      const float* src = row_f32(x, row_token[r0 + r]);
      std::copy(src, src + h, xs.begin() + r * h);
    }
    // act [n, I] = silu(xs · gate^T) * (xs · up^T), split over the I output features.
    act.resize(size_t(n * inter));
    const TensorView gate = weights.gate_proj(e), up = weights.up_proj(e);
    const TensorView down = weights.down_proj(e);
    parallel_for(ctx, inter, [&](int64_t ib, int64_t ie) {
      std::vector<float> g(static_cast<size_t>(h)), u(static_cast<size_t>(h));
      for (int64_t i = ib; i < ie; ++i) {
        load_f32(gate.data, gate.dtype, i * h, h, g.data());
        load_f32(up.data, up.dtype, i * h, h, u.data());
        for (int64_t r = 0; r < n; ++r) {
          const float* xr = xs.data() + r * h;
          act[size_t(r * inter + i)] = silu_f32(dot_f32(xr, g.data(), h)) * dot_f32(xr, u.data(), h);
        }
      }
    }, 8);
    if (ctx.expert_stats) {  // calibration (ops/sparsity.h)
      ctx.expert_stats->add(gate.data, xs.data(), n, h);
      ctx.expert_stats->sum_sq[up.data] = ctx.expert_stats->sum_sq[gate.data];  // same rows
      ctx.expert_stats->add(down.data, act.data(), n, inter);
    }
    // out_rows[r0 + r] = weight * (act[r] · down^T), split over the H output features.
    parallel_for(ctx, h, [&](int64_t hb, int64_t he) {
      std::vector<float> dn(static_cast<size_t>(inter));
      for (int64_t c = hb; c < he; ++c) {
        load_f32(down.data, down.dtype, c * inter, inter, dn.data());
        for (int64_t r = 0; r < n; ++r)
          row_f32(out_rows, r0 + r)[c] =
              row_weight[r0 + r] * dot_f32(act.data() + r * inter, dn.data(), inter);
      }
    }, 8);
  }
  return {};
}

Status moe_combine(const Context& ctx, const TensorView& rows,
                   const TensorView& token_to_permuted_row, const TensorView& out) {
  const int64_t m_rows = token_to_permuted_row.shape[0], k = token_to_permuted_row.shape[1];
  const int64_t h = rows.shape[1], r_rows = rows.shape[0];
  const int32_t* inv = token_to_permuted_row.ptr<int32_t>();
  for (int64_t i = 0; i < m_rows * k; ++i)
    if (inv[i] < 0 || inv[i] >= r_rows)
      return make_error(ErrorCode::kInvalidArgument,
                        "moe_combine: token_to_permuted_row[{}][{}] = {} is outside [0, {})",
                        i / k, i % k, inv[i], r_rows);
  parallel_for(ctx, m_rows, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      float* o = row_f32(out, m);
      std::fill(o, o + h, 0.0f);
      for (int64_t j = 0; j < k; ++j) {
        const float* src = row_f32(rows, inv[m * k + j]);
        for (int64_t c = 0; c < h; ++c) o[c] += src[c];
      }
    }
  }, 4);
  return {};
}

}  // namespace moeopt::cpu
