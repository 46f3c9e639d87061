// MoE ops: ExpertWeights views, validation and dispatch, and moe_forward (moe.h).
#include "moeopt/ops/moe.h"

#include "moeopt/backend/cpu/cpu_backend.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/device_backend.h"
#include "moeopt/ops/fp8.h"

namespace moeopt::ops {

Status validate_expert_matrices(const char* op, const ExpertWeights& w);

// ---- ExpertWeights ----------------------------------------------------------------------

ExpertWeights ExpertWeights::stacked(const TensorView& w13, const TensorView& w2) {
  ExpertWeights w;
  w.w13 = w13;
  w.w2 = w2;
  return w;
}

ExpertWeights ExpertWeights::stacked_fp8(const TensorView& w13, const TensorView& w13_scale,
                                         const TensorView& w2, const TensorView& w2_scale) {
  ExpertWeights w = stacked(w13, w2);
  w.w13_scale = w13_scale;
  w.w2_scale = w2_scale;
  return w;
}

ExpertWeights ExpertWeights::per_expert_fp8(std::vector<TensorView> gate,
                                            std::vector<TensorView> up,
                                            std::vector<TensorView> down,
                                            std::vector<TensorView> gate_scales,
                                            std::vector<TensorView> up_scales,
                                            std::vector<TensorView> down_scales) {
  ExpertWeights w = per_expert(std::move(gate), std::move(up), std::move(down));
  w.gate_scales = std::move(gate_scales);
  w.up_scales = std::move(up_scales);
  w.down_scales = std::move(down_scales);
  return w;
}

ExpertWeights ExpertWeights::per_expert(std::vector<TensorView> gate, std::vector<TensorView> up,
                                        std::vector<TensorView> down) {
  ExpertWeights w;
  w.gate = std::move(gate);
  w.up = std::move(up);
  w.down = std::move(down);
  return w;
}

ExpertWeights ExpertWeights::stacked_separate(const TensorView& gate, const TensorView& up,
                                              const TensorView& down) {
  ExpertWeights w;
  for (int64_t e = 0; e < gate.shape[0]; ++e) {
    w.gate.push_back(gate.select0(e));
    if (e < up.shape[0]) w.up.push_back(up.select0(e));
    if (e < down.shape[0]) w.down.push_back(down.select0(e));
  }
  return w;
}

int64_t ExpertWeights::num_experts() const {
  return is_stacked() ? (w13.ndim() == 3 ? w13.shape[0] : 0) : int64_t(gate.size());
}
int64_t ExpertWeights::hidden() const {
  return is_stacked() ? w13.shape[2] : gate[0].shape[1];
}
int64_t ExpertWeights::intermediate() const {
  return is_stacked() ? w13.shape[1] / 2 : gate[0].shape[0];
}
TensorView ExpertWeights::gate_proj(int64_t e) const {
  if (!is_stacked()) return gate[size_t(e)];
  const int64_t i = intermediate();
  return w13.select0(e).slice0(0, i);
}
TensorView ExpertWeights::up_proj(int64_t e) const {
  if (!is_stacked()) return up[size_t(e)];
  const int64_t i = intermediate();
  return w13.select0(e).slice0(i, 2 * i);
}
TensorView ExpertWeights::down_proj(int64_t e) const {
  return is_stacked() ? w2.select0(e) : down[size_t(e)];
}

bool ExpertWeights::is_fp8() const {
  if (is_stacked()) return w13.dtype == DType::kF8E4M3;
  return !gate.empty() && gate[0].dtype == DType::kF8E4M3;
}
TensorView ExpertWeights::gate_scale(int64_t e) const {
  if (!is_stacked()) return gate_scales[size_t(e)];
  const int64_t ib = fp8_blocks(intermediate());
  return w13_scale.select0(e).slice0(0, ib);
}
TensorView ExpertWeights::up_scale(int64_t e) const {
  if (!is_stacked()) return up_scales[size_t(e)];
  const int64_t ib = fp8_blocks(intermediate());
  return w13_scale.select0(e).slice0(ib, 2 * ib);
}
TensorView ExpertWeights::down_scale(int64_t e) const {
  return is_stacked() ? w2_scale.select0(e) : down_scales[size_t(e)];
}

namespace {

bool has_tensor(const TensorView& t) { return t.ndim() > 0 || t.data != nullptr; }

// The scales of validate_expert_weights: present with exactly the contract's shapes for
// fp8 weights, absent otherwise. Runs after the weight shapes are known to be right.
Status check_expert_scales(const char* op, const ExpertWeights& w) {
  const bool fp8 = w.is_fp8();
  const Device dev = w.is_stacked() ? w.w13.device : w.gate[0].device;
  auto check_scale = [&](const std::string& name, const TensorView& s, const Shape& want) {
    if (!has_tensor(s))
      return make_error(ErrorCode::kInvalidArgument, "{}: {} is missing", op, name);
    MOEOPT_RETURN_IF_ERROR(expect_present(op, name.c_str(), s));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, name.c_str(), s, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_shape(op, name.c_str(), s, want));
    MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, name.c_str(), s));
    if (s.device != dev)
      return make_error(ErrorCode::kInvalidArgument, "{}: {} is on another device than the weights",
                        op, name);
    return Status{};
  };
  const int64_t e = w.num_experts(), h = w.hidden(), inter = w.intermediate();
  const int64_t hb = fp8_blocks(h), ib = fp8_blocks(inter);
  if (w.is_stacked()) {
    if ((w.w2.dtype == DType::kF8E4M3) != fp8)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: w13 is {} but w2 is {} (all or none are fp8)", op,
                        dtype_name(w.w13.dtype), dtype_name(w.w2.dtype));
    if (!fp8) {
      if (has_tensor(w.w13_scale) || has_tensor(w.w2_scale))
        return make_error(ErrorCode::kInvalidArgument,
                          "{}: w13_scale / w2_scale given for {} (not fp8) expert weights", op,
                          dtype_name(w.w13.dtype));
      return {};
    }
    MOEOPT_RETURN_IF_ERROR(check_scale("w13_scale", w.w13_scale, {e, 2 * ib, hb}));
    return check_scale("w2_scale", w.w2_scale, {e, hb, ib});
  }
  if (!fp8) {
    if (!w.gate_scales.empty() || !w.up_scales.empty() || !w.down_scales.empty())
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: block scales given for {} (not fp8) expert weights", op,
                        dtype_name(w.gate[0].dtype));
    return {};
  }
  if (w.gate_scales.size() != size_t(e) || w.up_scales.size() != size_t(e) ||
      w.down_scales.size() != size_t(e))
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: {} experts but {} gate, {} up and {} down block scales", op, e,
                      w.gate_scales.size(), w.up_scales.size(), w.down_scales.size());
  for (int64_t i = 0; i < e; ++i) {
    MOEOPT_RETURN_IF_ERROR(
        check_scale(fmt::format("experts.{}.gate_proj.weight_scale_inv", i), w.gate_scales[size_t(i)], {ib, hb}));
    MOEOPT_RETURN_IF_ERROR(
        check_scale(fmt::format("experts.{}.up_proj.weight_scale_inv", i), w.up_scales[size_t(i)], {ib, hb}));
    MOEOPT_RETURN_IF_ERROR(
        check_scale(fmt::format("experts.{}.down_proj.weight_scale_inv", i), w.down_scales[size_t(i)], {hb, ib}));
  }
  return {};
}

}  // namespace

Status validate_expert_weights(const char* op, const ExpertWeights& w) {
  MOEOPT_RETURN_IF_ERROR(validate_expert_matrices(op, w));
  return check_expert_scales(op, w);
}

Status validate_expert_matrices(const char* op, const ExpertWeights& w) {
  auto check_dtype = [&](const char* name, const TensorView& t) {
    return expect_dtype(op, name, t, {DType::kBF16, DType::kF16, DType::kF32, DType::kF8E4M3});
  };
  if (w.is_stacked()) {
    MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "w13", w.w13, 3));
    MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "w13", w.w13));
    MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "w2", w.w2));
    MOEOPT_RETURN_IF_ERROR(check_dtype("w13", w.w13));
    MOEOPT_RETURN_IF_ERROR(check_dtype("w2", w.w2));
    const int64_t e = w.w13.shape[0], two_i = w.w13.shape[1], h = w.w13.shape[2];
    if (e < 1 || two_i < 2 || two_i % 2 != 0 || h < 1)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: w13 has shape {}, expected [E, 2I, H] with E, I, H >= 1", op,
                        w.w13.shape.str());
    MOEOPT_RETURN_IF_ERROR(expect_shape(op, "w2", w.w2, {e, h, two_i / 2}));
    if (w.w13.device != w.w2.device)
      return make_error(ErrorCode::kInvalidArgument, "{}: w13 and w2 on different devices", op);
    return {};
  }
  const size_t e = w.gate.size();
  if (w.up.size() != e || w.down.size() != e)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: {} gate, {} up and {} down expert tensors (expected equal counts)",
                      op, e, w.up.size(), w.down.size());
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "experts.0.gate_proj", w.gate[0], 2));
  const int64_t inter = w.gate[0].shape[0], h = w.gate[0].shape[1];
  for (size_t i = 0; i < e; ++i) {
    const std::string g = fmt::format("experts.{}.gate_proj", i);
    const std::string u = fmt::format("experts.{}.up_proj", i);
    const std::string d = fmt::format("experts.{}.down_proj", i);
    MOEOPT_RETURN_IF_ERROR(expect_shape(op, g.c_str(), w.gate[i], {inter, h}));
    MOEOPT_RETURN_IF_ERROR(expect_shape(op, u.c_str(), w.up[i], {inter, h}));
    MOEOPT_RETURN_IF_ERROR(expect_shape(op, d.c_str(), w.down[i], {h, inter}));
    MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, g.c_str(), w.gate[i]));
    MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, u.c_str(), w.up[i]));
    MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, d.c_str(), w.down[i]));
    MOEOPT_RETURN_IF_ERROR(check_dtype(g.c_str(), w.gate[i]));
    MOEOPT_RETURN_IF_ERROR(check_dtype(u.c_str(), w.up[i]));
    MOEOPT_RETURN_IF_ERROR(check_dtype(d.c_str(), w.down[i]));
    const bool fp8 = w.gate[0].dtype == DType::kF8E4M3;
    if ((w.gate[i].dtype == DType::kF8E4M3) != fp8 || (w.up[i].dtype == DType::kF8E4M3) != fp8 ||
        (w.down[i].dtype == DType::kF8E4M3) != fp8)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: expert {} mixes fp8 and non-fp8 weights (all or none are fp8)", op, i);
    if (w.gate[i].device != w.gate[0].device || w.up[i].device != w.gate[0].device ||
        w.down[i].device != w.gate[0].device)
      return make_error(ErrorCode::kInvalidArgument, "{}: expert {} weights on another device",
                        op, i);
  }
  if (e == 0 || inter < 1 || h < 1)
    return make_error(ErrorCode::kInvalidArgument, "{}: no experts or empty expert weights", op);
  return {};
}

namespace {

Device weights_device(const ExpertWeights& w) {
  return w.is_stacked() ? w.w13.device : w.gate[0].device;
}

Status check_perm(const char* op, const MoePermutation& p, int64_t num_experts, bool need_inverse,
                  int64_t m, int64_t k) {
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "tokens_per_expert", p.tokens_per_expert, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "tokens_per_expert", p.tokens_per_expert, {num_experts}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "tokens_per_expert", p.tokens_per_expert));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "expert_offsets", p.expert_offsets, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "expert_offsets", p.expert_offsets, {num_experts + 1}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "expert_offsets", p.expert_offsets));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "permuted_row_to_token", p.permuted_row_to_token, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "permuted_row_to_token", p.permuted_row_to_token, 1));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "permuted_row_to_token", p.permuted_row_to_token));
  const int64_t r = p.permuted_row_to_token.shape[0];
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "permuted_row_weight", p.permuted_row_weight, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "permuted_row_weight", p.permuted_row_weight, {r}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "permuted_row_weight", p.permuted_row_weight));
  if (need_inverse) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "token_to_permuted_row", p.token_to_permuted_row, {DType::kI32}));
    MOEOPT_RETURN_IF_ERROR(expect_shape(op, "token_to_permuted_row", p.token_to_permuted_row, {m, k}));
    MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "token_to_permuted_row", p.token_to_permuted_row));
  }
  return {};
}

}  // namespace

// ---- route ------------------------------------------------------------------------------

Status moe_route(const Context& ctx, const TensorView& router_logits, const RouteParams& p,
                 const TensorView& expert_ids, const TensorView& expert_weights) {
  constexpr const char* op = "moe_route";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(
      expect_same_device(op, {&router_logits, &expert_ids, &expert_weights}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "router_logits", router_logits, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "router_logits", router_logits));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "router_logits", router_logits, {DType::kF32}));
  const int64_t m = router_logits.shape[0], e = router_logits.shape[1];
  if (e < 1 || e > kMaxExperts)
    return make_error(ErrorCode::kInvalidArgument, "moe_route: {} experts, supported 1..{}", e,
                      kMaxExperts);
  if (p.top_k < 1 || p.top_k > kMaxTopK || p.top_k > e)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe_route: top_k {} must be in [1, min({}, num_experts {})]", p.top_k,
                      kMaxTopK, e);
  if (p.grouping != ExpertGrouping::kNone) {
    if (p.n_group < 1 || e % p.n_group != 0 || p.topk_group < 1 || p.topk_group > p.n_group)
      return make_error(ErrorCode::kInvalidArgument,
                        "moe_route: n_group {} must divide num_experts {} and topk_group {} be "
                        "in [1, n_group]",
                        p.n_group, e, p.topk_group);
    const int64_t group_size = e / p.n_group;
    if (p.top_k > p.topk_group * group_size)
      return make_error(ErrorCode::kInvalidArgument,
                        "moe_route: top_k {} exceeds the {} experts of the {} selected groups",
                        p.top_k, p.topk_group * group_size, p.topk_group);
    if (p.grouping == ExpertGrouping::kTop2Sum && group_size < 2)
      return make_error(ErrorCode::kInvalidArgument,
                        "moe_route: top-2-sum group scores need >= 2 experts per group (have {})",
                        group_size);
  }
  if (p.correction_bias) {
    if (p.correction_bias->device != dev)
      return make_error(ErrorCode::kInvalidArgument, "moe_route: correction_bias on another device");
    MOEOPT_RETURN_IF_ERROR(expect_shape(op, "correction_bias", *p.correction_bias, {e}));
    MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "correction_bias", *p.correction_bias));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "correction_bias", *p.correction_bias,
                                        {DType::kF32, DType::kBF16, DType::kF16}));
  }
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "expert_ids", expert_ids, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "expert_ids", expert_ids, {m, p.top_k}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "expert_ids", expert_ids));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "expert_weights", expert_weights, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "expert_weights", expert_weights, {m, p.top_k}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "expert_weights", expert_weights));
  if (dev == Device::kCpu) return cpu::moe_route(ctx, router_logits, p, expert_ids, expert_weights);
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->moe_route(ctx, router_logits, p, expert_ids, expert_weights);
}

// ---- permute ----------------------------------------------------------------------------

int64_t moe_permuted_capacity(int64_t num_tokens, int top_k, int64_t num_experts,
                              int pad_rows_to) {
  const int64_t pad = pad_rows_to > 1 ? pad_rows_to : 1;
  return num_tokens * top_k + num_experts * (pad - 1);
}

Status moe_permute(const Context& ctx, const TensorView& expert_ids,
                   const TensorView& expert_weights, int64_t num_experts, int pad_rows_to,
                   const MoePermutation& perm) {
  constexpr const char* op = "moe_permute";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(
      op, {&expert_ids, &expert_weights, &perm.tokens_per_expert, &perm.expert_offsets,
           &perm.permuted_row_to_token, &perm.permuted_row_weight, &perm.token_to_permuted_row},
      &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "expert_ids", expert_ids, 2));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "expert_ids", expert_ids));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "expert_ids", expert_ids, {DType::kI32}));
  const int64_t m = expert_ids.shape[0], k = expert_ids.shape[1];
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "expert_weights", expert_weights, {m, k}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "expert_weights", expert_weights));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "expert_weights", expert_weights, {DType::kF32}));
  if (num_experts < 1 || pad_rows_to < 1)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe_permute: num_experts {} and pad_rows_to {} must be >= 1",
                      num_experts, pad_rows_to);
  MOEOPT_RETURN_IF_ERROR(check_perm(op, perm, num_experts, true, m, k));
  const int64_t need = moe_permuted_capacity(m, int(k), num_experts, pad_rows_to);
  if (perm.permuted_row_to_token.shape[0] < need)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe_permute: permuted_row_to_token has {} rows, needs >= {} "
                      "(moe_permuted_capacity)",
                      perm.permuted_row_to_token.shape[0], need);
  if (dev == Device::kCpu)
    return cpu::moe_permute(ctx, expert_ids, expert_weights, num_experts, pad_rows_to, perm);
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->moe_permute(ctx, expert_ids, expert_weights, num_experts,
                                         pad_rows_to, perm);
}

// ---- experts ----------------------------------------------------------------------------

Status moe_experts(const Context& ctx, const TensorView& x, const ExpertWeights& weights,
                   const MoePermutation& perm, const TensorView& out_rows) {
  constexpr const char* op = "moe_experts";
  MOEOPT_RETURN_IF_ERROR(validate_expert_weights(op, weights));
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(
      op, {&x, &out_rows, &perm.tokens_per_expert, &perm.expert_offsets,
           &perm.permuted_row_to_token, &perm.permuted_row_weight}, &dev));
  if (weights_device(weights) != dev)
    return make_error(ErrorCode::kInvalidArgument, "moe_experts: weights on another device");
  const int64_t h = weights.hidden(), e = weights.num_experts();
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "x", x));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "x", x, {x.shape[0], h}));
  MOEOPT_RETURN_IF_ERROR(check_perm(op, perm, e, false, 0, 0));
  const int64_t r = perm.permuted_row_to_token.shape[0];
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out_rows", out_rows, {r, h}));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out_rows", out_rows));
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "x", x, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out_rows", out_rows, {DType::kF32}));
    return cpu::moe_experts(ctx, x, weights, perm, out_rows);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->moe_experts(ctx, x, weights, perm, out_rows);
}

// ---- combine ----------------------------------------------------------------------------

Status moe_combine(const Context& ctx, const TensorView& rows,
                   const TensorView& token_to_permuted_row, const TensorView& out) {
  constexpr const char* op = "moe_combine";
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&rows, &token_to_permuted_row, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "rows", rows, 2));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "rows", rows));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "token_to_permuted_row", token_to_permuted_row, 2));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "token_to_permuted_row", token_to_permuted_row));
  MOEOPT_RETURN_IF_ERROR(
      expect_dtype(op, "token_to_permuted_row", token_to_permuted_row, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(
      expect_shape(op, "out", out, {token_to_permuted_row.shape[0], rows.shape[1]}));
  MOEOPT_RETURN_IF_ERROR(expect_rows(op, "out", out));
  if (dev == Device::kCpu) {
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "rows", rows, {DType::kF32}));
    MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "out", out, {DType::kF32}));
    return cpu::moe_combine(ctx, rows, token_to_permuted_row, out);
  }
  if (!ctx.device_backend) return unsupported_device(op, dev);
  return ctx.device_backend->moe_combine(ctx, rows, token_to_permuted_row, out);
}

// ---- forward ----------------------------------------------------------------------------

Status moe_forward(const Context& ctx, const TensorView& x, const TensorView& router_logits,
                   const ExpertWeights& weights, const MoeParams& params, const TensorView& out) {
  constexpr const char* op = "moe_forward";
  MOEOPT_RETURN_IF_ERROR(validate_expert_weights(op, weights));
  Device dev;
  MOEOPT_RETURN_IF_ERROR(expect_same_device(op, {&x, &router_logits, &out}, &dev));
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "x", x, 2));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "out", out, x.shape));
  const int64_t e = weights.num_experts();
  MOEOPT_RETURN_IF_ERROR(
      expect_shape(op, "router_logits", router_logits, {x.shape[0], e}));
  if (dev != Device::kCpu) {
    if (!ctx.device_backend) return unsupported_device(op, dev);
    return ctx.device_backend->moe_forward(ctx, x, router_logits, weights, params, out);
  }
  const int64_t m = x.shape[0], k = params.route.top_k, h = weights.hidden();
  if (k < 1 || k > kMaxTopK || k > e)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe_forward: top_k {} must be in [1, min({}, num_experts {})]", k,
                      kMaxTopK, e);
  const int64_t cap = moe_permuted_capacity(m, int(k), e, params.pad_rows_to);
  HostTensor ids(DType::kI32, {m, k}), w(DType::kF32, {m, k});
  HostTensor counts(DType::kI32, {e}), offsets(DType::kI32, {e + 1});
  HostTensor row_token(DType::kI32, {cap}), row_weight(DType::kF32, {cap});
  HostTensor inverse(DType::kI32, {m, k}), rows(DType::kF32, {cap, h});
  MOEOPT_RETURN_IF_ERROR(moe_route(ctx, router_logits, params.route, ids, w));
  MoePermutation perm{counts, offsets, row_token, row_weight, inverse};
  MOEOPT_RETURN_IF_ERROR(moe_permute(ctx, ids, w, e, params.pad_rows_to, perm));
  MOEOPT_RETURN_IF_ERROR(moe_experts(ctx, x, weights, perm, rows));
  return moe_combine(ctx, rows, inverse, out);
}

}  // namespace moeopt::ops
