// The op-case table and comparison metrics (op_cases.h).
//
// Cases cover: small odd shapes, M = 1, each weight dtype, GQA ratios 1/4/8, head_dim
// 64/128/odd, partial rotary, every RoPE scaling type, sliding windows, partially filled
// blocks, several sequences of different lengths (prefill, chunked prefill, decode mixed),
// k = 1, k = E, k = 32 with E = 512, experts that receive no tokens, DeepSeek grouping.
// Sizes stay small enough that the whole CPU op suite runs in seconds on 2 cores.
#include "moeopt/ops/op_cases.h"

#include <algorithm>
#include <cmath>
#include <climits>
#include <set>

#include <fmt/format.h>

namespace moeopt::ops {

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::kEmbedding: return "embedding";
    case OpKind::kRmsNorm: return "rms_norm";
    case OpKind::kAddRmsNorm: return "add_rms_norm";
    case OpKind::kRmsNormPerHead: return "rms_norm_per_head";
    case OpKind::kLinear: return "linear";
    case OpKind::kSiluAndMul: return "silu_and_mul";
    case OpKind::kSilu: return "silu";
    case OpKind::kRope: return "rope";
    case OpKind::kKvCacheWrite: return "kv_cache_write";
    case OpKind::kPagedAttention: return "paged_attention";
    case OpKind::kMoeRoute: return "moe_route";
    case OpKind::kMoePermute: return "moe_permute";
    case OpKind::kMoeForward: return "moe_forward";
    case OpKind::kArgmax: return "argmax";
    case OpKind::kLogSoftmax: return "log_softmax";
    case OpKind::kLinearFp8: return "linear_fp8";
    case OpKind::kMoeForwardFp8: return "moe_forward_fp8";
  }
  return "?";
}

const char* metric_name(Metric m) {
  switch (m) {
    case Metric::kNormalizedMse: return "normalized_mse";
    case Metric::kMaxRelError: return "max_rel_error";
    case Metric::kExact: return "exact";
    case Metric::kTopkSet: return "topk_set";
  }
  return "?";
}

namespace {

using D = DType;
using M = Metric;

std::vector<OpCase> build_cases() {
  std::vector<OpCase> c;
  auto add = [&](OpCase x) { c.push_back(std::move(x)); };

  // embedding: exact copies (bf16/f16 -> f32 is exact).
  add({.name = "embedding_bf16", .op = OpKind::kEmbedding, .m = 7, .n = 96, .k = 1000,
       .metric = M::kExact, .tolerance = 0});
  add({.name = "embedding_f32_m1", .op = OpKind::kEmbedding, .m = 1, .n = 33, .k = 17,
       .weight_dtype = D::kF32, .metric = M::kExact, .tolerance = 0});
  add({.name = "embedding_f16", .op = OpKind::kEmbedding, .m = 5, .n = 64, .k = 50,
       .weight_dtype = D::kF16, .metric = M::kExact, .tolerance = 0});

  // norms
  add({.name = "rms_norm_bf16", .op = OpKind::kRmsNorm, .m = 9, .n = 256});
  add({.name = "rms_norm_odd_f32_m1", .op = OpKind::kRmsNorm, .m = 1, .n = 37,
       .weight_dtype = D::kF32});
  add({.name = "rms_norm_f16", .op = OpKind::kRmsNorm, .m = 4, .n = 128, .weight_dtype = D::kF16});
  add({.name = "add_rms_norm_bf16", .op = OpKind::kAddRmsNorm, .m = 6, .n = 200});
  add({.name = "add_rms_norm_m1", .op = OpKind::kAddRmsNorm, .m = 1, .n = 31,
       .weight_dtype = D::kF32});
  add({.name = "rms_norm_per_head_128", .op = OpKind::kRmsNormPerHead, .m = 5, .heads = 4,
       .head_dim = 128});
  add({.name = "rms_norm_per_head_odd", .op = OpKind::kRmsNormPerHead, .m = 3, .heads = 3,
       .head_dim = 18, .weight_dtype = D::kF32});

  // linear
  add({.name = "linear_bf16", .op = OpKind::kLinear, .m = 13, .n = 96, .k = 256});
  add({.name = "linear_bf16_m1", .op = OpKind::kLinear, .m = 1, .n = 300, .k = 128});
  add({.name = "linear_odd_bias", .op = OpKind::kLinear, .m = 5, .n = 17, .k = 23, .bias = true});
  add({.name = "linear_f32", .op = OpKind::kLinear, .m = 8, .n = 64, .k = 100,
       .weight_dtype = D::kF32});
  add({.name = "linear_f16_bias", .op = OpKind::kLinear, .m = 3, .n = 40, .k = 64, .bias = true,
       .weight_dtype = D::kF16});
  add({.name = "linear_long_k", .op = OpKind::kLinear, .m = 2, .n = 8, .k = 4096});

  // activations
  add({.name = "silu_and_mul", .op = OpKind::kSiluAndMul, .m = 7, .n = 96});
  add({.name = "silu_and_mul_m1_odd", .op = OpKind::kSiluAndMul, .m = 1, .n = 13});
  add({.name = "silu", .op = OpKind::kSilu, .m = 4, .n = 77});

  // rope (k = number of positions in the table)
  add({.name = "rope_default_128", .op = OpKind::kRope, .m = 9, .k = 4096, .heads = 8,
       .kv_heads = 2, .head_dim = 128, .rotary_dim = 128, .metric = M::kMaxRelError,
       .tolerance = 2e-3});
  add({.name = "rope_default_64_m1", .op = OpKind::kRope, .m = 1, .k = 64, .heads = 4,
       .kv_heads = 4, .head_dim = 64, .rotary_dim = 64, .metric = M::kMaxRelError,
       .tolerance = 1e-5});
  add({.name = "rope_partial_odd", .op = OpKind::kRope, .m = 5, .k = 200, .heads = 3,
       .kv_heads = 1, .head_dim = 18, .rotary_dim = 8, .metric = M::kMaxRelError,
       .tolerance = 1e-4});
  add({.name = "rope_linear", .op = OpKind::kRope, .m = 6, .k = 1000, .heads = 2, .kv_heads = 1,
       .head_dim = 64, .rotary_dim = 64, .rope_type = RopeType::kLinear, .rope_factor = 4.0,
       .metric = M::kMaxRelError, .tolerance = 1e-3});
  add({.name = "rope_dynamic", .op = OpKind::kRope, .m = 6, .k = 3000, .heads = 2,
       .kv_heads = 2, .head_dim = 32, .rotary_dim = 32, .rope_type = RopeType::kDynamic,
       .rope_factor = 2.0, .metric = M::kMaxRelError, .tolerance = 2e-3});
  add({.name = "rope_yarn", .op = OpKind::kRope, .m = 6, .k = 3000, .heads = 4, .kv_heads = 2,
       .head_dim = 64, .rotary_dim = 64, .rope_type = RopeType::kYarn, .rope_factor = 4.0,
       .metric = M::kMaxRelError, .tolerance = 2e-3});
  add({.name = "rope_llama3", .op = OpKind::kRope, .m = 6, .k = 3000, .heads = 4,
       .kv_heads = 1, .head_dim = 128, .rotary_dim = 128, .rope_type = RopeType::kLlama3,
       .rope_factor = 8.0, .metric = M::kMaxRelError, .tolerance = 2e-3});

  // kv cache write + paged attention
  add({.name = "kv_write_bf16", .op = OpKind::kKvCacheWrite, .heads = 4, .kv_heads = 2,
       .head_dim = 64, .block_size = 4, .q_lens = {3, 5}, .ctx_lens = {7, 5},
       .cache_dtype = D::kBF16, .metric = M::kExact, .tolerance = 0});
  add({.name = "kv_write_f32", .op = OpKind::kKvCacheWrite, .heads = 2, .kv_heads = 1,
       .head_dim = 12, .block_size = 3, .q_lens = {1}, .ctx_lens = {8},
       .metric = M::kExact, .tolerance = 0});
  add({.name = "attn_prefill_gqa4_128", .op = OpKind::kPagedAttention, .heads = 8, .kv_heads = 2,
       .head_dim = 128, .block_size = 16, .q_lens = {37}, .ctx_lens = {37}});
  add({.name = "attn_decode_mha_64", .op = OpKind::kPagedAttention, .heads = 4, .kv_heads = 4,
       .head_dim = 64, .block_size = 8, .q_lens = {1, 1, 1}, .ctx_lens = {1, 20, 63}});
  add({.name = "attn_mixed_gqa8_odd", .op = OpKind::kPagedAttention, .heads = 8, .kv_heads = 1,
       .head_dim = 10, .block_size = 5, .q_lens = {4, 1, 11, 0}, .ctx_lens = {9, 14, 11, 6}});
  add({.name = "attn_sliding_window", .op = OpKind::kPagedAttention, .heads = 4, .kv_heads = 2,
       .head_dim = 32, .block_size = 4, .sliding_window = 7, .q_lens = {19, 1, 3},
       .ctx_lens = {19, 30, 12}});
  add({.name = "attn_bf16_cache", .op = OpKind::kPagedAttention, .heads = 6, .kv_heads = 2,
       .head_dim = 64, .block_size = 16, .q_lens = {5, 1}, .ctx_lens = {21, 40},
       .cache_dtype = D::kBF16});
  // FP8 caches (e4m3 codes + one f32 scale per token and kv head): GQA prefill at D 128,
  // decode over several pages at D 64, odd D / block sizes and a sliding window.
  add({.name = "kv_write_fp8", .op = OpKind::kKvCacheWrite, .heads = 4, .kv_heads = 2,
       .head_dim = 40, .block_size = 5, .q_lens = {3, 1}, .ctx_lens = {17, 9},
       .cache_dtype = D::kF8E4M3, .metric = M::kExact, .tolerance = 0});
  add({.name = "attn_fp8_prefill_gqa4_128", .op = OpKind::kPagedAttention, .heads = 8,
       .kv_heads = 2, .head_dim = 128, .block_size = 16, .q_lens = {37, 1},
       .ctx_lens = {37, 70}, .cache_dtype = D::kF8E4M3});
  add({.name = "attn_fp8_decode_64", .op = OpKind::kPagedAttention, .heads = 4, .kv_heads = 4,
       .head_dim = 64, .block_size = 8, .q_lens = {1, 1, 1}, .ctx_lens = {1, 20, 63},
       .cache_dtype = D::kF8E4M3});
  add({.name = "attn_fp8_odd_window", .op = OpKind::kPagedAttention, .heads = 6, .kv_heads = 3,
       .head_dim = 24, .block_size = 7, .sliding_window = 9, .q_lens = {12, 1, 0},
       .ctx_lens = {12, 30, 4}, .cache_dtype = D::kF8E4M3});
  add({.name = "attn_f16_cache_window1", .op = OpKind::kPagedAttention, .heads = 2,
       .kv_heads = 2, .head_dim = 16, .block_size = 2, .sliding_window = 1, .q_lens = {3},
       .ctx_lens = {6}, .cache_dtype = D::kF16});

  // moe routing
  add({.name = "route_softmax_qwen3", .op = OpKind::kMoeRoute, .m = 9, .experts = 128,
       .top_k = 8, .renormalize = true, .metric = M::kTopkSet, .tolerance = 1e-6});
  add({.name = "route_softmax_no_renorm", .op = OpKind::kMoeRoute, .m = 5, .experts = 60,
       .top_k = 4, .metric = M::kTopkSet, .tolerance = 1e-6});
  add({.name = "route_k1", .op = OpKind::kMoeRoute, .m = 7, .experts = 8, .top_k = 1,
       .renormalize = true, .metric = M::kTopkSet, .tolerance = 1e-6});
  add({.name = "route_k_eq_e", .op = OpKind::kMoeRoute, .m = 3, .experts = 6, .top_k = 6,
       .renormalize = true, .metric = M::kTopkSet, .tolerance = 1e-6});
  add({.name = "route_k32_e512", .op = OpKind::kMoeRoute, .m = 4, .experts = 512, .top_k = 32,
       .renormalize = true, .metric = M::kTopkSet, .tolerance = 1e-6});
  add({.name = "route_deepseek_v3", .op = OpKind::kMoeRoute, .m = 6, .experts = 64, .top_k = 8,
       .scoring = RouterScoring::kSigmoid, .grouping = ExpertGrouping::kTop2Sum, .n_group = 8,
       .topk_group = 4, .renormalize = true, .correction_bias = true,
       .routed_scaling_factor = 2.5f, .metric = M::kTopkSet, .tolerance = 1e-6});
  add({.name = "route_deepseek_v2", .op = OpKind::kMoeRoute, .m = 6, .experts = 32, .top_k = 6,
       .grouping = ExpertGrouping::kMaxScore, .n_group = 8, .topk_group = 3,
       .routed_scaling_factor = 16.0f, .metric = M::kTopkSet, .tolerance = 1e-6});
  add({.name = "route_sigmoid_plain", .op = OpKind::kMoeRoute, .m = 3, .experts = 16,
       .top_k = 3, .scoring = RouterScoring::kSigmoid, .metric = M::kTopkSet,
       .tolerance = 1e-6});

  // moe permute
  add({.name = "permute_basic", .op = OpKind::kMoePermute, .m = 11, .experts = 8, .top_k = 2,
       .metric = M::kExact, .tolerance = 0});
  add({.name = "permute_padded_sparse", .op = OpKind::kMoePermute, .m = 3, .experts = 40,
       .top_k = 5, .pad_rows_to = 16, .metric = M::kExact, .tolerance = 0});
  add({.name = "permute_m1_k32", .op = OpKind::kMoePermute, .m = 1, .experts = 512, .top_k = 32,
       .pad_rows_to = 4, .metric = M::kExact, .tolerance = 0});

  // moe forward (route + permute + experts + combine)
  add({.name = "moe_qwen3_like_stacked", .op = OpKind::kMoeForward, .m = 10, .n = 64, .k = 48,
       .experts = 16, .top_k = 4, .renormalize = true});
  add({.name = "moe_per_expert_m1", .op = OpKind::kMoeForward, .m = 1, .n = 40, .k = 24,
       .experts = 8, .top_k = 2, .renormalize = true, .stacked = false});
  add({.name = "moe_k1_f32_padded", .op = OpKind::kMoeForward, .m = 6, .n = 33, .k = 17,
       .experts = 4, .top_k = 1, .pad_rows_to = 8, .weight_dtype = D::kF32});
  add({.name = "moe_k_eq_e_f16", .op = OpKind::kMoeForward, .m = 3, .n = 16, .k = 8,
       .experts = 5, .top_k = 5, .stacked = false, .weight_dtype = D::kF16});
  add({.name = "moe_many_empty_experts", .op = OpKind::kMoeForward, .m = 2, .n = 32, .k = 16,
       .experts = 64, .top_k = 3, .renormalize = true});
  add({.name = "moe_deepseek_v3_routing", .op = OpKind::kMoeForward, .m = 5, .n = 24, .k = 12,
       .experts = 32, .top_k = 4, .scoring = RouterScoring::kSigmoid,
       .grouping = ExpertGrouping::kTop2Sum, .n_group = 4, .topk_group = 2,
       .renormalize = true, .correction_bias = true, .routed_scaling_factor = 2.5f});

  // FP8 W8A8 (ops/fp8.h). The CPU against a double reference that quantises x the same
  // way: only the accumulation differs, except where the MoE intermediate lands within an
  // f32 rounding of an e4m3 rounding boundary (rare; the tolerance allows a few such codes).
  // N/K tails: 200 = 128 + 72, 192 = 768 / 4 (a TP shard of Qwen3-30B-A3B's I).
  add({.name = "linear_fp8_k200_n192", .op = OpKind::kLinearFp8, .m = 5, .n = 192, .k = 200,
       .weight_dtype = D::kF8E4M3, .tolerance = 1e-10});
  add({.name = "linear_fp8_m1", .op = OpKind::kLinearFp8, .m = 1, .n = 300, .k = 128,
       .weight_dtype = D::kF8E4M3, .tolerance = 1e-10});
  add({.name = "linear_fp8_odd_bias", .op = OpKind::kLinearFp8, .m = 3, .n = 17, .k = 23,
       .bias = true, .weight_dtype = D::kF8E4M3, .tolerance = 1e-10});
  add({.name = "linear_fp8_long_k", .op = OpKind::kLinearFp8, .m = 2, .n = 130, .k = 1000,
       .weight_dtype = D::kF8E4M3, .tolerance = 1e-10});
  add({.name = "moe_fp8_tp_shard_k8", .op = OpKind::kMoeForwardFp8, .m = 7, .n = 200, .k = 192,
       .experts = 16, .top_k = 8, .renormalize = true, .weight_dtype = D::kF8E4M3,
       .tolerance = 1e-6});
  add({.name = "moe_fp8_per_expert_k1", .op = OpKind::kMoeForwardFp8, .m = 4, .n = 256,
       .k = 192, .experts = 4, .top_k = 1, .stacked = false, .weight_dtype = D::kF8E4M3,
       .tolerance = 1e-6});
  add({.name = "moe_fp8_empty_experts_k7", .op = OpKind::kMoeForwardFp8, .m = 2, .n = 64,
       .k = 48, .experts = 32, .top_k = 7, .renormalize = true, .weight_dtype = D::kF8E4M3,
       .tolerance = 1e-6});
  add({.name = "moe_fp8_odd_padded_k5", .op = OpKind::kMoeForwardFp8, .m = 9, .n = 130,
       .k = 70, .experts = 10, .top_k = 5, .pad_rows_to = 8, .stacked = false,
       .weight_dtype = D::kF8E4M3, .tolerance = 1e-6});
  add({.name = "moe_fp8_m1_k2", .op = OpKind::kMoeForwardFp8, .m = 1, .n = 128, .k = 128,
       .experts = 8, .top_k = 2, .renormalize = true, .weight_dtype = D::kF8E4M3,
       .tolerance = 1e-6});
  add({.name = "moe_fp8_k4_two_blocks", .op = OpKind::kMoeForwardFp8, .m = 6, .n = 384,
       .k = 256, .experts = 8, .top_k = 4, .renormalize = true, .weight_dtype = D::kF8E4M3,
       .tolerance = 1e-6});
  add({.name = "moe_fp8_k6_deepseek_routing", .op = OpKind::kMoeForwardFp8, .m = 5, .n = 96,
       .k = 160, .experts = 32, .top_k = 6, .scoring = RouterScoring::kSigmoid,
       .grouping = ExpertGrouping::kTop2Sum, .n_group = 4, .topk_group = 2,
       .renormalize = true, .correction_bias = true, .routed_scaling_factor = 2.5f,
       .weight_dtype = D::kF8E4M3, .tolerance = 1e-6});

  // reductions
  add({.name = "argmax", .op = OpKind::kArgmax, .m = 6, .n = 1000, .metric = M::kExact,
       .tolerance = 0});
  add({.name = "argmax_m1", .op = OpKind::kArgmax, .m = 1, .n = 7, .metric = M::kExact,
       .tolerance = 0});
  add({.name = "log_softmax", .op = OpKind::kLogSoftmax, .m = 4, .n = 5000});
  add({.name = "log_softmax_odd", .op = OpKind::kLogSoftmax, .m = 3, .n = 3});
  return c;
}

}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = build_cases();
  return cases;
}

std::vector<OpCase> op_cases_for(OpKind k) {
  std::vector<OpCase> out;
  for (const OpCase& c : op_cases())
    if (c.op == k) out.push_back(c);
  return out;
}

Comparison compare_values(const float* got, const double* ref, int64_t n, Metric metric,
                          double tolerance) {
  Comparison r;
  double err2 = 0.0, ref2 = 0.0, max_abs_err = 0.0, max_ref = 0.0;
  int64_t worst = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double g = double(got[i]);
    if (!std::isfinite(g) && std::isfinite(ref[i])) {
      r.value = INFINITY;
      r.detail = fmt::format("element {} is {} (reference {})", i, g, ref[i]);
      return r;
    }
    if (metric == Metric::kExact && !(g == ref[i]) && !(std::isnan(g) && std::isnan(ref[i]))) {
      r.value = INFINITY;
      r.detail = fmt::format("element {} is {}, expected exactly {}", i, g, ref[i]);
      return r;
    }
    const double e = std::fabs(g - ref[i]);
    err2 += e * e;
    ref2 += ref[i] * ref[i];
    max_ref = std::max(max_ref, std::fabs(ref[i]));
    if (e > max_abs_err) {
      max_abs_err = e;
      worst = i;
    }
  }
  switch (metric) {
    case Metric::kExact: r.value = 0.0; break;
    case Metric::kNormalizedMse: r.value = ref2 > 0 ? err2 / ref2 : err2; break;
    case Metric::kMaxRelError: r.value = max_ref > 0 ? max_abs_err / max_ref : max_abs_err; break;
    case Metric::kTopkSet: r.value = INFINITY; r.detail = "kTopkSet needs compare_topk_sets"; return r;
  }
  r.ok = r.value <= tolerance;
  if (worst >= 0)
    r.detail = fmt::format("{} = {:.3g} (tolerance {:.3g}); worst element {}: got {} ref {}",
                           metric_name(metric), r.value, tolerance, worst, got[worst], ref[worst]);
  return r;
}

Comparison compare_topk_sets(const int32_t* got, const int32_t* ref, const double* ref_score,
                             int64_t rows, int k, int64_t num, double tolerance) {
  Comparison r;
  for (int64_t m = 0; m < rows; ++m) {
    std::set<int32_t> g(got + m * k, got + (m + 1) * k), want(ref + m * k, ref + (m + 1) * k);
    if (int(g.size()) != k) {
      r.detail = fmt::format("row {}: duplicate ids in the top-{}", m, k);
      return r;
    }
    double kth = INFINITY;
    for (int32_t id : want) kth = std::min(kth, ref_score[m * num + id]);
    for (int32_t id : g) {
      if (id < 0 || id >= num) {
        r.detail = fmt::format("row {}: id {} outside [0, {})", m, id, num);
        return r;
      }
      if (!want.count(id) && ref_score[m * num + id] < kth - tolerance) {
        r.value = kth - ref_score[m * num + id];
        r.detail = fmt::format("row {}: id {} (score {}) selected, below the k-th reference "
                               "score {}",
                               m, id, ref_score[m * num + id], kth);
        return r;
      }
    }
  }
  r.ok = true;
  return r;
}

CaseRng::CaseRng(const std::string& name) : s_(1469598103934665603ull) {
  for (unsigned char ch : name) s_ = (s_ ^ ch) * 1099511628211ull;  // FNV-1a
}

uint64_t CaseRng::next() {
  uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double CaseRng::uniform(double lo, double hi) {
  return lo + (hi - lo) * (double(next() >> 11) * 0x1.0p-53);
}

double CaseRng::nonzero(double lo, double hi) {
  const double v = uniform(lo, hi);
  return (next() & 1) ? v : -v;
}

int64_t CaseRng::below(int64_t n) { return int64_t(next() % uint64_t(n)); }

HostTensor random_tensor(DType dtype, const Shape& shape, CaseRng& rng, double lo, double hi) {
  HostTensor t(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) store_from_f32(t.ptr<void>(), dtype, i, float(rng.nonzero(lo, hi)));
  return t;
}

void poison(const TensorView& t) {
  const int64_t n = t.numel();
  if (t.dtype == DType::kI32) {
    for (int64_t i = 0; i < n; ++i) t.ptr<int32_t>()[i] = INT32_MIN;
    return;
  }
  for (int64_t i = 0; i < n; ++i) store_from_f32(t.data, t.dtype, i, NAN);
}

std::vector<double> to_doubles(const TensorView& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[size_t(i)] = double(load_as_f32(t.data, t.dtype, i));
  return v;
}

}  // namespace moeopt::ops
