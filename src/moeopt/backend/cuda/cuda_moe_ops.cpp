// The CUDA MoE family's one host entry: CudaBackend's MoE ops (cuda_backend.h) and the fused
// layer of moe.h — for each op the checks of what the kernels take beyond what ops/moe.cpp
// already validated, the workspace plan, and the launch sequence. Plain C++ (no nvcc);
// kernels are launched through moe_launch.h.
//
// What ops/moe.cpp validated before a call lands here: devices, shapes, contiguity and (for
// moe_route) the routing parameters; for moe_forward only the weights, devices and shapes —
// it dispatches before its routing checks, so moe_forward checks the routing parameters here
// (top_k through moe_layer_plan, grouping and bias through check_grouping).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/cuda_check.h"
#include "moeopt/backend/cuda/fp8_launch.h"
#include "moeopt/backend/cuda/memory_launch.h"
#include "moeopt/backend/cuda/moe.h"
#include "moeopt/backend/cuda/moe_heuristics.h"
#include "moeopt/backend/cuda/moe_launch.h"
#include "moeopt/core/align.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/fp8.h"

namespace moeopt::cuda {
namespace {

namespace k = kernels;

constexpr int64_t kInt32Limit = int64_t(1) << 31;
static_assert(k::kRouteMaxExperts >= ops::kMaxExperts && k::kPermuteMaxExperts >= ops::kMaxExperts,
              "the CUDA router and permutation take every expert count ops/moe.h allows");

// Regions laid out one after another, each kDeviceAlign-aligned.
struct Bump {
  size_t at = 0;
  size_t take(size_t bytes) {
    const size_t off = at;
    at += align_up(bytes);
    return off;
  }
};

unsigned char* at(void* base, size_t off) { return static_cast<unsigned char*>(base) + off; }

// Tiles of an expert-sorted row range: sum_e ceil(rows_e / tile_rows) <= (R + E*(tile_rows-1))
// / tile_rows, and never more than R.
int64_t max_tiles_of(int64_t rows, int64_t num_experts, int tile_rows) {
  return std::min<int64_t>(rows, (rows + num_experts * (tile_rows - 1)) / tile_rows);
}

// moe_forward's grouping and correction bias (top_k is the layer plan's).
Status check_grouping(const char* op, const ops::RouteParams& p, int64_t e) {
  if (p.grouping != ops::ExpertGrouping::kNone) {
    if (p.n_group < 1 || e % p.n_group != 0 || p.topk_group < 1 || p.topk_group > p.n_group)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: n_group {} must divide num_experts {} and topk_group {} be in "
                        "[1, n_group]",
                        op, p.n_group, e, p.topk_group);
    const int64_t gs = e / p.n_group;
    if (p.top_k > p.topk_group * gs || (p.grouping == ops::ExpertGrouping::kTop2Sum && gs < 2))
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: top_k {} / group size {} do not fit the grouping", op, p.top_k, gs);
  }
  if (p.correction_bias) {
    const TensorView& b = *p.correction_bias;
    if (b.device != Device::kCuda)
      return make_error(ErrorCode::kInvalidArgument, "{}: correction_bias is not on the GPU", op);
    MOEOPT_RETURN_IF_ERROR(ops::expect_shape(op, "correction_bias", b, {e}));
    MOEOPT_RETURN_IF_ERROR(ops::expect_contiguous(op, "correction_bias", b));
    MOEOPT_RETURN_IF_ERROR(ops::expect_dtype(op, "correction_bias", b,
                                             {DType::kF32, DType::kBF16, DType::kF16}));
  }
  return Status::ok_status();
}

// The route kernel on validated arguments (moe_route and moe_forward share it).
Status launch_route(const char* op, const ops::Context& ctx, const TensorView& logits,
                    const ops::RouteParams& p, int32_t* ids, float* weights) {
  k::RouteLogitsParams rp{};
  rp.logits = logits.ptr<const float>();
  rp.logits_stride = ops::row_stride(logits);
  rp.correction_bias = p.correction_bias ? p.correction_bias->data : nullptr;
  // Validated: f32, bf16 or f16.
  rp.bias_dtype = k::ElemDType::kF32;
  if (p.correction_bias && p.correction_bias->dtype == DType::kBF16)
    rp.bias_dtype = k::ElemDType::kBF16;
  if (p.correction_bias && p.correction_bias->dtype == DType::kF16)
    rp.bias_dtype = k::ElemDType::kF16;
  rp.expert_ids = ids;
  rp.expert_weights = weights;
  rp.num_tokens = int(logits.shape[0]);
  rp.num_experts = int(logits.shape[1]);
  rp.top_k = p.top_k;
  switch (p.scoring) {
    case ops::RouterScoring::kSoftmax: rp.scoring = k::RouteScoring::kSoftmax; break;
    case ops::RouterScoring::kSigmoid: rp.scoring = k::RouteScoring::kSigmoid; break;
  }
  switch (p.grouping) {
    case ops::ExpertGrouping::kNone: rp.grouping = k::RouteGrouping::kNone; break;
    case ops::ExpertGrouping::kMaxScore: rp.grouping = k::RouteGrouping::kMaxScore; break;
    case ops::ExpertGrouping::kTop2Sum: rp.grouping = k::RouteGrouping::kTop2Sum; break;
  }
  rp.n_group = p.n_group;
  rp.topk_group = p.topk_group;
  rp.renormalize = p.renormalize;
  rp.renormalize_eps = p.renormalize_eps;
  rp.routed_scaling_factor = p.routed_scaling_factor;
  return cuda_status(detail::launch_moe_route_from_logits(rp, stream_of(ctx)), op,
                     "route launch");
}

// Stacked bf16 experts with 16-byte rows, as the grouped GEMMs read them (shapes, contiguity
// and the dtype family were validated by ops/).
Status need_gemm_experts(const char* op, const ops::ExpertWeights& w) {
  if (!w.is_stacked())
    return make_error(ErrorCode::kUnsupported,
                      "{}: the CUDA backend takes stacked expert weights (w13 [E, 2I, H], "
                      "w2 [E, H, I]); per-expert tensors are not supported yet",
                      op);
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "w13", w.w13, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "w2", w.w2, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dense(op, "w13", w.w13));
  MOEOPT_RETURN_IF_ERROR(need_dense(op, "w2", w.w2));
  const int64_t h = w.hidden(), i = w.intermediate();
  if (h % 8 != 0 || i % 8 != 0)
    return make_error(ErrorCode::kUnsupported,
                      "{}: hidden {} and intermediate {} must be multiples of 8 on CUDA "
                      "(16-byte rows)",
                      op, h, i);
  if (h * i * 2 >= kInt32Limit)
    return make_error(ErrorCode::kUnsupported, "{}: hidden*intermediate*2 must be < 2^31", op);
  return Status::ok_status();
}

// moe_experts' workspace: h [R, I] bf16, then the tile table of the given permutation.
struct ExpertsPlan {
  MoeGemmTile tile;
  int tile_rows;
  int64_t max_tiles;
  size_t h, tile_expert, tile_row_begin, num_tiles, bytes;
};

ExpertsPlan experts_plan(int64_t rows, int64_t inter, int64_t num_experts) {
  ExpertsPlan l{};
  // Rows per expert decide the tile, as in the fused layer (moe_heuristics.h).
  l.tile = choose_moe_gemm_tile(rows, 1, num_experts);
  l.tile_rows = moe_gemm_tile_rows(l.tile);
  l.max_tiles = max_tiles_of(rows, num_experts, l.tile_rows);
  const size_t tiles = size_t(std::max<int64_t>(l.max_tiles, 1));
  Bump b;
  l.h = b.take(size_t(rows) * size_t(inter) * 2);
  l.tile_expert = b.take(tiles * 4);
  l.tile_row_begin = b.take(tiles * 4);
  l.num_tiles = b.take(4);
  l.bytes = b.at;
  return l;
}

// Stacked bf16 experts the grouped GEMMs take as they are.
bool native_experts(const ops::ExpertWeights& w) {
  return w.is_stacked() && w.w13.dtype == DType::kBF16 && w.w2.dtype == DType::kBF16 &&
         w.hidden() % 8 == 0 && w.intermediate() % 8 == 0 &&
         (reinterpret_cast<uintptr_t>(w.w13.data) & 15u) == 0 &&
         (reinterpret_cast<uintptr_t>(w.w2.data) & 15u) == 0;
}

bool native_fp8_experts(const ops::ExpertWeights& w) {
  return w.is_stacked() && w.hidden() % 16 == 0 && w.intermediate() % 16 == 0 &&
         (reinterpret_cast<uintptr_t>(w.w13.data) & 15u) == 0 &&
         (reinterpret_cast<uintptr_t>(w.w2.data) & 15u) == 0;
}

// Stacked e4m3 experts the FP8 grouped GEMMs take as they are (the scales' shapes and dtype
// were validated by ops/): 16-byte aligned, H and I multiples of 16.
Status need_fp8_gemm_experts(const char* op, const ops::ExpertWeights& w) {
  if (!w.is_stacked())
    return make_error(ErrorCode::kUnsupported,
                      "{}: FP8 experts on CUDA must be stacked (w13 [E, 2I, H], w2 [E, H, I])",
                      op);
  if (w.hidden() % 16 != 0 || w.intermediate() % 16 != 0)
    return make_error(ErrorCode::kUnsupported,
                      "{}: FP8 experts on CUDA need hidden {} and intermediate {} multiples of 16",
                      op, w.hidden(), w.intermediate());
  for (const auto& [name, t] : {std::pair<const char*, const TensorView*>{"w13", &w.w13},
                                {"w2", &w.w2}, {"w13_scale", &w.w13_scale},
                                {"w2_scale", &w.w2_scale}})
    MOEOPT_RETURN_IF_ERROR(need_dense(op, name, *t));
  return Status::ok_status();
}

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// moe_forward's repack workspace for expert layouts the GEMMs do not take: a zero-padded
// stack (w13 [E, 2Ip, Hp], w2 [E, Hp, Ip]; bf16 with Hp, Ip multiples of 8, or e4m3 with
// multiples of 16), x and out [M, Hp] bf16, then either a staging matrix for converting one
// expert matrix to bf16 or, for fp8, the stacked block scales (w13_scale [E, 2*IB, HB],
// w2_scale [E, HB, IB]: padding to a multiple of 16 never crosses a 128 boundary, so the
// block grid is unchanged). The zeroed part ends at `stage`; the layer's workspace follows
// at `layer`.
struct RepackPlan {
  int64_t hp, ip, ib, hb;
  size_t w13, w2, x, out, stage, w13s, w2s, layer;
};
RepackPlan repack_plan(int64_t m, int64_t h, int64_t inter, int64_t e, bool fp8) {
  RepackPlan l{};
  const int64_t mult = fp8 ? 16 : 8, elem = fp8 ? 1 : 2;
  l.hp = round_up(h, mult);
  l.ip = round_up(inter, mult);
  l.ib = ops::fp8_blocks(inter);
  l.hb = ops::fp8_blocks(h);
  Bump b;
  l.w13 = b.take(size_t(e * 2 * l.ip * l.hp * elem));
  l.w2 = b.take(size_t(e * l.hp * l.ip * elem));
  l.x = b.take(size_t(m * l.hp) * 2);
  l.out = b.take(size_t(m * l.hp) * 2);
  l.stage = b.take(fp8 ? 0 : size_t(inter * h) * 2);
  l.w13s = b.take(fp8 ? size_t(e * 2 * l.ib * l.hb) * 4 : 0);
  l.w2s = b.take(fp8 ? size_t(e * l.hb * l.ib) * 4 : 0);
  l.layer = b.at;
  return l;
}


// Copies a [rows, cols] matrix (any float dtype, contiguous) into rows of `dst_pitch`
// elements: bf16, converting through the staging buffer when it is not bf16 already, or
// e4m3 codes as they are.
Status place_matrix(const char* op, const TensorView& src, void* dst, int64_t dst_pitch,
                    void* stage, cudaStream_t s) {
  const int64_t rows = src.shape[0], cols = src.shape[1];
  if (src.dtype == DType::kF8E4M3)
    return cuda_status(cudaMemcpy2DAsync(dst, size_t(dst_pitch), src.data, size_t(cols),
                                         size_t(cols), size_t(rows), cudaMemcpyDeviceToDevice, s),
                       op, "pack weights");
  const void* from = src.data;
  if (src.dtype != DType::kBF16) {
    MOEOPT_RETURN_IF_ERROR(cuda_status(detail::launch_convert(src.data, elem_dtype_of(src.dtype), stage,
                                                              kernels::ElemDType::kBF16, rows * cols, s),
                                       op, "convert weights"));
    from = stage;
  }
  return cuda_status(cudaMemcpy2DAsync(dst, size_t(dst_pitch) * 2, from, size_t(cols) * 2,
                                       size_t(cols) * 2, size_t(rows), cudaMemcpyDeviceToDevice, s),
                     op, "pack weights");
}

// Route into the plan's routing regions, then the fused layer.
Status route_and_run(const char* op, const ops::Context& ctx, const TensorView& router_logits,
                     const ops::RouteParams& route, const MoeLayerPlan& plan, void* ws,
                     const void* x, const void* w13, const void* w2, void* out,
                     const float* w13_scale = nullptr, const float* w2_scale = nullptr) {
  auto* ids = moe_region<int32_t>(ws, plan.expert_ids);
  auto* wts = moe_region<float>(ws, plan.expert_weights);
  MOEOPT_RETURN_IF_ERROR(launch_route(op, ctx, router_logits, route, ids, wts));
  MoeLayerArgs a;
  a.x = x;
  a.expert_ids = ids;
  a.expert_weights = wts;
  a.w13 = w13;
  a.w2 = w2;
  a.w13_scale = w13_scale;
  a.w2_scale = w2_scale;
  a.out = out;
  a.workspace = ws;
  a.stream = ctx.stream;
  return moe_layer_run(plan, a);
}

}  // namespace

// ---- the fused layer (moe.h) -------------------------------------------------------------

Result<MoeLayerPlan> moe_layer_plan(const MoeDims& d, const MoeTileChoice& tiles) {
  if (d.num_tokens < 1)
    return make_error(ErrorCode::kInvalidArgument, "moe: num_tokens must be >= 1, got {}",
                      d.num_tokens);
  // 16-byte rows: 8 bf16 or 16 e4m3 elements.
  const int64_t row_mult = d.fp8 ? 16 : 8;
  if (d.hidden < row_mult || d.hidden % row_mult != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe: hidden must be a positive multiple of {}, got {}", row_mult, d.hidden);
  if (d.inter < row_mult || d.inter % row_mult != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe: inter (moe_intermediate_size) must be a positive multiple of {}, got {}",
                      row_mult, d.inter);
  if (d.num_experts < 1 || d.num_experts > ops::kMaxExperts)
    return make_error(ErrorCode::kUnsupported, "moe: num_experts must be in [1, {}], got {}",
                      ops::kMaxExperts, d.num_experts);
  if (d.top_k < 1 || d.top_k > ops::kMaxTopK || d.top_k > d.num_experts)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe: top_k must be in [1, min({}, num_experts={})], got {}", ops::kMaxTopK,
                      d.num_experts, d.top_k);
  if (d.num_tokens * d.top_k >= kInt32Limit)
    return make_error(ErrorCode::kUnsupported, "moe: num_tokens*top_k must be < 2^31, got {}",
                      d.num_tokens * d.top_k);
  if (d.hidden * d.inter * 2 >= kInt32Limit)
    return make_error(ErrorCode::kUnsupported, "moe: hidden*inter*2 must be < 2^31");
  MoeLayerPlan p;
  p.dims = d;
  p.tile = tiles.tile ? *tiles.tile : choose_moe_gemm_tile(d.num_tokens, d.top_k, d.num_experts);
  p.tile2 = tiles.tile2 ? *tiles.tile2 : moe_gemm2_tile(p.tile);
  p.tile_rows = moe_gemm_tile_rows(p.tile);
  if (d.fp8) {
    // Both GEMMs share the tile table: their tiles have the same token rows.
    p.fp8_tile = tiles.fp8_tile ? *tiles.fp8_tile
                                : choose_moe_fp8_tile(d.num_tokens, d.top_k, d.num_experts);
    p.fp8_tile2 = tiles.fp8_tile2 ? *tiles.fp8_tile2 : moe_fp8_gemm2_tile(p.fp8_tile);
    if (moe_fp8_tile_rows(p.fp8_tile2) != moe_fp8_tile_rows(p.fp8_tile))
      return make_error(ErrorCode::kInvalidArgument,
                        "moe: fp8 GEMM 2 tile {} has {} token rows, GEMM 1 tile {} has {}",
                        moe_fp8_tile_name(p.fp8_tile2), moe_fp8_tile_rows(p.fp8_tile2),
                        moe_fp8_tile_name(p.fp8_tile), moe_fp8_tile_rows(p.fp8_tile));
    for (const auto& [t, kk] : {std::pair{p.fp8_tile, d.hidden}, std::pair{p.fp8_tile2, d.inter}})
      if (detail::moe_fp8_gemm_smem_bytes(t, int(kk)) > detail::kMaxSmemPerBlock)
        return make_error(ErrorCode::kUnsupported,
                          "moe: fp8 tile {} does not fit K = {} in shared memory",
                          moe_fp8_tile_name(t), kk);
    p.tile_rows = moe_fp8_tile_rows(p.fp8_tile);
  } else if (moe_gemm_tile_rows(p.tile2) != p.tile_rows)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe: GEMM 2 tile {} has {} token rows, GEMM 1 tile {} has {}",
                      moe_gemm_tile_name(p.tile2), moe_gemm_tile_rows(p.tile2),
                      moe_gemm_tile_name(p.tile), p.tile_rows);
  const int64_t assignments = d.num_tokens * d.top_k;
  p.max_tiles = max_tiles_of(assignments, d.num_experts, p.tile_rows);
  const size_t A = size_t(assignments), E = size_t(d.num_experts);
  Bump b;
  p.expert_ids = b.take(A * 4);
  p.expert_weights = b.take(A * 4);
  p.tokens_per_expert = b.take(E * 4);
  p.expert_offsets = b.take((E + 1) * 4);
  p.num_tiles = b.take(4);
  p.tile_expert = b.take(size_t(p.max_tiles) * 4);
  p.tile_row_begin = b.take(size_t(p.max_tiles) * 4);
  p.permuted_row_to_token = b.take(A * 4);
  p.permuted_row_weight = b.take(A * 4);
  p.token_to_permuted_row = b.take(A * 4);
  p.h = b.take(A * size_t(d.inter) * (d.fp8 ? 4 : 2));
  p.y = b.take(A * size_t(d.hidden) * 2);
  if (d.fp8) {
    const size_t M = size_t(d.num_tokens);
    p.x_q = b.take(M * size_t(d.hidden));
    p.x_scale = b.take(M * size_t(ops::fp8_blocks(d.hidden)) * 4);
    p.h_q = b.take(A * size_t(d.inter));
    p.h_scale = b.take(A * size_t(ops::fp8_blocks(d.inter)) * 4);
  }
  p.bytes = b.at;
  return p;
}

namespace {

// The FP8 part of moe_layer_run: x quantised per token, GEMM 1, its f32 output quantised,
// GEMM 2 (same tile table as the bf16 GEMMs). The quantisers wait for their predecessor and
// release their dependent at once, so GEMM 2 still streams its first weight stages early.
Status run_fp8_gemms(const MoeLayerPlan& plan, const MoeLayerArgs& a, bool pdl,
                     cudaStream_t stream) {
  constexpr const char* op = "moe";
  const MoeDims& d = plan.dims;
  void* ws = a.workspace;
  const int64_t rows = d.num_tokens * d.top_k;
  auto quantise = [&](const void* src, k::ElemDType dt, int64_t n, int64_t kk, size_t q,
                      size_t s) {
    k::Fp8QuantActParams qp{};
    qp.x = src;
    qp.x_dtype = dt;
    qp.rows = n;
    qp.k = kk;
    qp.x_stride = kk;
    qp.x_q = moe_region<unsigned char>(ws, q);
    qp.q_stride = kk;
    qp.x_scale = moe_region<float>(ws, s);
    return cuda_status(detail::launch_fp8_quantize_act(qp, pdl, stream), op, "fp8 quantiser launch");
  };
  MOEOPT_RETURN_IF_ERROR(
      quantise(a.x, k::ElemDType::kBF16, d.num_tokens, d.hidden, plan.x_q, plan.x_scale));
  k::Fp8GroupedGemmParams g1{};
  g1.act_q = moe_region<const unsigned char>(ws, plan.x_q);
  g1.act_scale = moe_region<const float>(ws, plan.x_scale);
  g1.ld_act = int(d.hidden);
  g1.row_to_token = moe_region<int32_t>(ws, plan.permuted_row_to_token);
  g1.weight = static_cast<const unsigned char*>(a.w13);
  g1.weight_scale = a.w13_scale;
  g1.row_weight = nullptr;
  g1.out_f32 = moe_region<float>(ws, plan.h);
  g1.out_bf16 = nullptr;
  g1.expert_offsets = moe_region<int32_t>(ws, plan.expert_offsets);
  g1.tile_expert = moe_region<int32_t>(ws, plan.tile_expert);
  g1.tile_row_begin = moe_region<int32_t>(ws, plan.tile_row_begin);
  g1.num_tiles = moe_region<int32_t>(ws, plan.num_tiles);
  g1.K = int(d.hidden);
  g1.N_out = int(d.inter);
  g1.num_tokens = int(d.num_tokens);
  g1.num_rows = int(rows);
  MOEOPT_RETURN_IF_ERROR(cuda_status(
      detail::launch_moe_fp8_grouped_gemm(plan.fp8_tile, true, g1, int(plan.max_tiles), pdl,
                                          stream),
      op, "fp8 gemm1 launch"));
  MOEOPT_RETURN_IF_ERROR(
      quantise(moe_region<const float>(ws, plan.h), k::ElemDType::kF32, rows, d.inter, plan.h_q,
               plan.h_scale));
  k::Fp8GroupedGemmParams g2 = g1;
  g2.act_q = moe_region<const unsigned char>(ws, plan.h_q);
  g2.act_scale = moe_region<const float>(ws, plan.h_scale);
  g2.ld_act = int(d.inter);
  g2.row_to_token = nullptr;
  g2.weight = static_cast<const unsigned char*>(a.w2);
  g2.weight_scale = a.w2_scale;
  g2.row_weight = moe_region<float>(ws, plan.permuted_row_weight);
  g2.out_f32 = nullptr;
  g2.out_bf16 = moe_region<__nv_bfloat16>(ws, plan.y);
  g2.K = int(d.inter);
  g2.N_out = int(d.hidden);
  return cuda_status(detail::launch_moe_fp8_grouped_gemm(plan.fp8_tile2, false, g2,
                                                         int(plan.max_tiles), pdl, stream),
                     op, "fp8 gemm2 launch");
}

}  // namespace

Status moe_layer_run(const MoeLayerPlan& plan, const MoeLayerArgs& a) {
  constexpr const char* op = "moe";
  const MoeDims& d = plan.dims;
  void* ws = a.workspace;
  auto stream = static_cast<cudaStream_t>(a.stream);
  const bool pdl =
      a.programmatic_dependent_launch && moe_use_pdl(d.num_tokens, d.top_k, d.num_experts);
  const int64_t assignments = d.num_tokens * d.top_k;
  auto* expert_offsets = moe_region<int32_t>(ws, plan.expert_offsets);
  auto* tile_expert = moe_region<int32_t>(ws, plan.tile_expert);
  auto* tile_row_begin = moe_region<int32_t>(ws, plan.tile_row_begin);
  auto* num_tiles = moe_region<int32_t>(ws, plan.num_tiles);
  auto* row_to_token = moe_region<int32_t>(ws, plan.permuted_row_to_token);
  auto* row_weight = moe_region<float>(ws, plan.permuted_row_weight);
  auto* token_to_row = moe_region<int32_t>(ws, plan.token_to_permuted_row);
  auto* h = moe_region<__nv_bfloat16>(ws, plan.h);
  auto* y = moe_region<__nv_bfloat16>(ws, plan.y);

  k::PermuteParams pp{};
  pp.expert_ids = a.expert_ids;
  pp.expert_weights = a.expert_weights;
  pp.tokens_per_expert = moe_region<int32_t>(ws, plan.tokens_per_expert);
  pp.expert_offsets = expert_offsets;
  pp.permuted_row_to_token = row_to_token;
  pp.permuted_row_weight = row_weight;
  pp.token_to_permuted_row = token_to_row;
  pp.tile_expert = tile_expert;
  pp.tile_row_begin = tile_row_begin;
  pp.num_tiles = num_tiles;
  pp.num_assignments = int(assignments);
  pp.top_k = int(d.top_k);
  pp.num_experts = int(d.num_experts);
  pp.tile_rows = plan.tile_rows;
  pp.pad_rows_to = 1;
  pp.capacity = 0;
  pp.single_block = a.single_block_permute;
  MOEOPT_RETURN_IF_ERROR(
      cuda_status(detail::launch_moe_permute(pp, pdl, stream), op, "permute launch"));

  if (d.fp8) {
    MOEOPT_RETURN_IF_ERROR(run_fp8_gemms(plan, a, pdl, stream));
  } else {
    k::GroupedGemmParams g1{};
    g1.act = static_cast<const __nv_bfloat16*>(a.x);
    g1.row_to_token = row_to_token;
    g1.weight = static_cast<const __nv_bfloat16*>(a.w13);
    g1.row_weight = nullptr;
    g1.out = h;
    g1.expert_offsets = expert_offsets;
    g1.tile_expert = tile_expert;
    g1.tile_row_begin = tile_row_begin;
    g1.num_tiles = num_tiles;
    g1.K = int(d.hidden);
    g1.N_out = int(d.inter);
    g1.num_tokens = int(d.num_tokens);
    g1.num_rows = int(assignments);
    MOEOPT_RETURN_IF_ERROR(cuda_status(
        detail::launch_moe_grouped_gemm(plan.tile, true, g1, int(plan.max_tiles), pdl, stream), op,
        "gemm1 launch"));

    k::GroupedGemmParams g2 = g1;
    g2.act = h;
    g2.row_to_token = nullptr;
    g2.weight = static_cast<const __nv_bfloat16*>(a.w2);
    g2.row_weight = row_weight;
    g2.out = y;
    g2.K = int(d.inter);
    g2.N_out = int(d.hidden);
    MOEOPT_RETURN_IF_ERROR(cuda_status(
        detail::launch_moe_grouped_gemm(plan.tile2, false, g2, int(plan.max_tiles), pdl, stream),
        op, "gemm2 launch"));
  }

  k::CombineParams cp{};
  cp.y = y;
  cp.token_to_permuted_row = token_to_row;
  cp.residual = static_cast<const __nv_bfloat16*>(a.residual);
  cp.out = static_cast<__nv_bfloat16*>(a.out);
  cp.num_tokens = int(d.num_tokens);
  cp.hidden = int(d.hidden);
  cp.top_k = int(d.top_k);
  cp.num_rows = int(assignments);
  return cuda_status(detail::launch_moe_combine(cp, pdl, stream), op, "combine launch");
}

// ---- CudaBackend -------------------------------------------------------------------------

CudaBackend::~CudaBackend() {
  if (own_ != nullptr) cudaFree(own_);
  for (void* p : retired_) cudaFree(p);
}

size_t CudaBackend::moe_experts_workspace_bytes(int64_t rows, int64_t inter, int64_t num_experts) {
  return experts_plan(rows, inter, num_experts).bytes;
}

size_t CudaBackend::moe_forward_workspace_bytes(int64_t num_tokens, int64_t hidden, int64_t inter,
                                                int64_t num_experts, int64_t top_k) {
  const Result<MoeLayerPlan> p =
      moe_layer_plan(MoeDims{num_tokens, hidden, inter, num_experts, top_k});
  return p.ok() ? p->bytes : 0;
}

Result<void*> CudaBackend::scratch(const ops::Context& ctx, size_t bytes, const char* op) {
  bytes = std::max<size_t>(bytes, kDeviceAlign);
  if (ctx.workspace.data != nullptr && ctx.workspace.bytes >= bytes) return ctx.workspace.data;
  std::lock_guard<std::mutex> lock(mu_);
  if (own_bytes_ >= bytes) return own_;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream_of(ctx), &capture) == cudaSuccess &&
      capture != cudaStreamCaptureStatusNone)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: needs {} bytes of workspace while the stream is being captured; pass "
                      "ctx.workspace of that size",
                      op, bytes);
  if (own_ != nullptr) {
    // Kernels queued earlier, and CUDA graphs captured earlier, may still read the old
    // buffer: retire it (freed with the backend) instead of freeing it now.
    retired_.push_back(own_);
    own_ = nullptr;
    own_bytes_ = 0;
  }
  const size_t grown = (bytes + (size_t(1) << 20) - 1) >> 20 << 20;  // whole MiB
  MOEOPT_RETURN_IF_ERROR(cuda_status(cudaMalloc(&own_, grown), op, "workspace cudaMalloc"));
  own_bytes_ = grown;
  return own_;
}

Status CudaBackend::moe_route(const ops::Context& ctx, const TensorView& router_logits,
                              const ops::RouteParams& params, const TensorView& expert_ids,
                              const TensorView& expert_weights) {
  constexpr const char* op = "moe_route";
  const int64_t m = router_logits.shape[0];
  if (m * params.top_k >= kInt32Limit)
    return make_error(ErrorCode::kUnsupported, "{}: {} tokens is too many for one call", op, m);
  if (m == 0) return Status::ok_status();
  return launch_route(op, ctx, router_logits, params, expert_ids.ptr<int32_t>(),
                      expert_weights.ptr<float>());
}

Status CudaBackend::moe_permute(const ops::Context& ctx, const TensorView& expert_ids,
                                const TensorView& expert_weights, int64_t num_experts,
                                int pad_rows_to, const ops::MoePermutation& perm) {
  constexpr const char* op = "moe_permute";
  if (num_experts > k::kPermuteMaxExperts)
    return make_error(ErrorCode::kUnsupported, "{}: {} experts, the CUDA permutation takes <= {}",
                      op, num_experts, k::kPermuteMaxExperts);
  const int64_t a = expert_ids.numel(), r = perm.permuted_row_to_token.shape[0];
  if (a >= kInt32Limit || r >= kInt32Limit)
    return make_error(ErrorCode::kUnsupported, "{}: {} assignments / {} rows must be < 2^31", op,
                      a, r);
  k::PermuteParams pp{};
  pp.expert_ids = expert_ids.ptr<const int32_t>();
  pp.expert_weights = expert_weights.ptr<const float>();
  pp.tokens_per_expert = perm.tokens_per_expert.ptr<int32_t>();
  pp.expert_offsets = perm.expert_offsets.ptr<int32_t>();
  pp.permuted_row_to_token = perm.permuted_row_to_token.ptr<int32_t>();
  pp.permuted_row_weight = perm.permuted_row_weight.ptr<float>();
  pp.token_to_permuted_row = perm.token_to_permuted_row.ptr<int32_t>();
  pp.tile_expert = nullptr;  // no tile table: moe_experts builds its own from the offsets
  pp.tile_row_begin = nullptr;
  pp.num_tiles = nullptr;
  pp.num_assignments = int(a);
  pp.top_k = int(expert_ids.shape[1]);
  pp.num_experts = int(num_experts);
  pp.tile_rows = 1;
  pp.pad_rows_to = pad_rows_to;
  pp.capacity = int(r);
  pp.single_block = true;
  return cuda_status(detail::launch_moe_permute(pp, false, stream_of(ctx)), op, "permute launch");
}

Status CudaBackend::moe_experts(const ops::Context& ctx, const TensorView& x,
                                const ops::ExpertWeights& weights,
                                const ops::MoePermutation& perm, const TensorView& out_rows) {
  constexpr const char* op = "moe_experts";
  if (weights.is_fp8())
    return make_error(ErrorCode::kUnsupported,
                      "{}: FP8 experts run on CUDA through moe_forward only", op);
  MOEOPT_RETURN_IF_ERROR(need_gemm_experts(op, weights));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "x", x, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dense(op, "x", x));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "out_rows", out_rows, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dense(op, "out_rows", out_rows));
  const int64_t e = weights.num_experts(), h = weights.hidden(), inter = weights.intermediate();
  const int64_t m = x.shape[0], r = out_rows.shape[0];
  if (e > k::kPermuteMaxExperts)
    return make_error(ErrorCode::kUnsupported, "{}: {} experts, the CUDA path takes <= {}", op, e,
                      k::kPermuteMaxExperts);
  if (m >= kInt32Limit || r >= kInt32Limit)
    return make_error(ErrorCode::kUnsupported, "{}: {} tokens / {} rows must be < 2^31", op, m, r);
  if (r == 0) return Status::ok_status();
  const ExpertsPlan l = experts_plan(r, inter, e);
  MOEOPT_ASSIGN_OR_RETURN(void* ws, scratch(ctx, l.bytes, op));
  auto* tile_expert = moe_region<int32_t>(ws, l.tile_expert);
  auto* tile_row = moe_region<int32_t>(ws, l.tile_row_begin);
  auto* num_tiles = moe_region<int32_t>(ws, l.num_tiles);
  auto* h_rows = moe_region<__nv_bfloat16>(ws, l.h);
  const cudaStream_t stream = stream_of(ctx);

  k::TilesParams tp{};
  tp.expert_offsets = perm.expert_offsets.ptr<const int32_t>();
  tp.tile_expert = tile_expert;
  tp.tile_row_begin = tile_row;
  tp.num_tiles = num_tiles;
  tp.num_experts = int(e);
  tp.num_rows = int(r);
  tp.tile_rows = l.tile_rows;
  MOEOPT_RETURN_IF_ERROR(
      cuda_status(detail::launch_moe_tiles_from_offsets(tp, stream), op, "tile table launch"));

  // GEMM 1: h = silu(x W_gate^T) * (x W_up^T) over the permuted rows (padding rows: 0).
  k::GroupedGemmParams g1{};
  g1.act = x.ptr<const __nv_bfloat16>();
  g1.row_to_token = perm.permuted_row_to_token.ptr<const int32_t>();
  g1.weight = weights.w13.ptr<const __nv_bfloat16>();
  g1.row_weight = nullptr;
  g1.out = h_rows;
  g1.expert_offsets = perm.expert_offsets.ptr<const int32_t>();
  g1.tile_expert = tile_expert;
  g1.tile_row_begin = tile_row;
  g1.num_tiles = num_tiles;
  g1.K = int(h);
  g1.N_out = int(inter);
  g1.num_tokens = int(m);
  g1.num_rows = int(r);
  MOEOPT_RETURN_IF_ERROR(cuda_status(
      detail::launch_moe_grouped_gemm(l.tile, true, g1, int(l.max_tiles), false, stream), op,
      "gemm1 launch"));
  // GEMM 2: out_rows = row_weight * (h W_down^T) (padding rows have weight 0 and h = 0).
  k::GroupedGemmParams g2 = g1;
  g2.act = h_rows;
  g2.row_to_token = nullptr;
  g2.weight = weights.w2.ptr<const __nv_bfloat16>();
  g2.row_weight = perm.permuted_row_weight.ptr<const float>();
  g2.out = out_rows.ptr<__nv_bfloat16>();
  g2.K = int(inter);
  g2.N_out = int(h);
  MOEOPT_RETURN_IF_ERROR(cuda_status(
      detail::launch_moe_grouped_gemm(l.tile, false, g2, int(l.max_tiles), false, stream), op,
      "gemm2 launch"));
  // Rows past expert_offsets[E] are not covered by any tile: zero them, as the CPU does.
  k::ZeroTailParams zp{};
  zp.expert_offsets = perm.expert_offsets.ptr<const int32_t>();
  zp.rows = out_rows.ptr<__nv_bfloat16>();
  zp.num_experts = int(e);
  zp.num_rows = int(r);
  zp.cols = int(h);
  return cuda_status(detail::launch_moe_zero_tail_rows(zp, stream), op, "zero tail launch");
}

Status CudaBackend::moe_combine(const ops::Context& ctx, const TensorView& rows,
                                const TensorView& token_to_permuted_row, const TensorView& out) {
  constexpr const char* op = "moe_combine";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "rows", rows, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dense(op, "rows", rows));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "out", out, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dense(op, "out", out));
  const int64_t m = out.shape[0], h = out.shape[1], r = rows.shape[0];
  if (h % 8 != 0)
    return make_error(ErrorCode::kUnsupported, "{}: hidden {} must be a multiple of 8 on CUDA",
                      op, h);
  if (m >= kInt32Limit || r >= kInt32Limit || token_to_permuted_row.numel() >= kInt32Limit)
    return make_error(ErrorCode::kUnsupported, "{}: sizes must be < 2^31", op);
  if (m == 0 || h == 0) return Status::ok_status();
  k::CombineParams cp{};
  cp.y = rows.ptr<const __nv_bfloat16>();
  cp.token_to_permuted_row = token_to_permuted_row.ptr<const int32_t>();
  cp.residual = nullptr;
  cp.out = out.ptr<__nv_bfloat16>();
  cp.num_tokens = int(m);
  cp.hidden = int(h);
  cp.top_k = int(token_to_permuted_row.shape[1]);
  cp.num_rows = int(r);
  return cuda_status(detail::launch_moe_combine(cp, false, stream_of(ctx)), op, "combine launch");
}

Status CudaBackend::moe_forward(const ops::Context& ctx, const TensorView& x,
                                const TensorView& router_logits,
                                const ops::ExpertWeights& weights, const ops::MoeParams& params,
                                const TensorView& out) {
  constexpr const char* op = "moe_forward";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "x", x, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "out", out, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(ops::expect_dtype(op, "router_logits", router_logits, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(ops::expect_rows(op, "router_logits", router_logits));
  const int64_t e = weights.num_experts();
  MOEOPT_RETURN_IF_ERROR(check_grouping(op, params.route, e));
  const int64_t m = x.shape[0], h = weights.hidden(), inter = weights.intermediate();
  const int64_t top_k = params.route.top_k;
  if (m == 0) return Status::ok_status();
  // params.pad_rows_to only shapes the CPU's intermediate buffers: the fused path masks each
  // expert's partial tile instead of padding rows in memory, with the same result.
  if (weights.is_fp8() && native_fp8_experts(weights)) {
    MOEOPT_RETURN_IF_ERROR(need_fp8_gemm_experts(op, weights));
    MOEOPT_RETURN_IF_ERROR(need_dense(op, "x", x));
    MOEOPT_RETURN_IF_ERROR(need_dense(op, "out", out));
    MoeDims d{m, h, inter, e, top_k};
    d.fp8 = true;
    MOEOPT_ASSIGN_OR_RETURN(const MoeLayerPlan plan, moe_layer_plan(d));
    MOEOPT_ASSIGN_OR_RETURN(void* ws, scratch(ctx, plan.bytes, op));
    return route_and_run(op, ctx, router_logits, params.route, plan, ws, x.data,
                         weights.w13.data, weights.w2.data, out.data,
                         weights.w13_scale.ptr<const float>(), weights.w2_scale.ptr<const float>());
  }
  if (native_experts(weights)) {
    MOEOPT_RETURN_IF_ERROR(need_dense(op, "x", x));
    MOEOPT_RETURN_IF_ERROR(need_dense(op, "out", out));
    MOEOPT_ASSIGN_OR_RETURN(const MoeLayerPlan plan,
                            moe_layer_plan(MoeDims{m, h, inter, e, top_k}));
    MOEOPT_ASSIGN_OR_RETURN(void* ws, scratch(ctx, plan.bytes, op));
    return route_and_run(op, ctx, router_logits, params.route, plan, ws, x.data,
                         weights.w13.data, weights.w2.data, out.data);
  }
  // Anything else (per-expert tensors, f16/f32 weights, H or I not a multiple of 8 — of 16
  // for fp8): repack into a zero-padded stack (bf16, or the fp8 codes with their scales
  // stacked), pad x, run the native path, copy the H real columns out. Zero rows and columns
  // change nothing (silu(0) * 0 = 0; zero columns add 0 and leave every 128-group's amax as
  // it was). This costs a copy of every expert per call: a correctness path for odd inputs,
  // never the engine's (model/device_weights.h lays weights out natively).
  const bool fp8 = weights.is_fp8();
  const RepackPlan r = repack_plan(m, h, inter, e, fp8);
  MoeDims d{m, r.hp, r.ip, e, top_k};
  d.fp8 = fp8;
  MOEOPT_ASSIGN_OR_RETURN(const MoeLayerPlan plan, moe_layer_plan(d));
  MOEOPT_ASSIGN_OR_RETURN(void* ws, scratch(ctx, r.layer + plan.bytes, op));
  cudaStream_t s = stream_of(ctx);
  MOEOPT_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(ws, 0, r.stage, s), op, "zero the repack"));
  void* stage = at(ws, r.stage);
  const size_t elem = fp8 ? 1 : 2;
  for (int64_t i = 0; i < e; ++i) {
    const TensorView gate = weights.gate_proj(i), up = weights.up_proj(i), down = weights.down_proj(i);
    for (const TensorView* t : {&gate, &up, &down})
      if (!t->is_contiguous() || t->device != Device::kCuda)
        return make_error(ErrorCode::kUnsupported, "{}: expert {} is not a contiguous GPU tensor", op, i);
    unsigned char* w13e = at(ws, r.w13 + size_t(i * 2 * r.ip * r.hp) * elem);
    MOEOPT_RETURN_IF_ERROR(place_matrix(op, gate, w13e, r.hp, stage, s));
    MOEOPT_RETURN_IF_ERROR(place_matrix(op, up, w13e + size_t(r.ip * r.hp) * elem, r.hp, stage, s));
    MOEOPT_RETURN_IF_ERROR(
        place_matrix(op, down, at(ws, r.w2 + size_t(i * r.hp * r.ip) * elem), r.ip, stage, s));
    if (!fp8) continue;
    // Scales as they are (validated contiguous f32 by ops/): gate blocks, up blocks, down.
    const size_t sb = size_t(r.ib * r.hb) * 4;
    const TensorView gs = weights.gate_scale(i), us = weights.up_scale(i), ds = weights.down_scale(i);
    for (const auto& [dst, src] : {std::pair<size_t, const TensorView*>{r.w13s + 2 * i * sb, &gs},
                                   {r.w13s + (2 * i + 1) * sb, &us}, {r.w2s + i * sb, &ds}})
      MOEOPT_RETURN_IF_ERROR(cuda_status(
          cudaMemcpyAsync(at(ws, dst), src->data, sb, cudaMemcpyDeviceToDevice, s), op,
          "pack scales"));
  }
  const int64_t xs = ops::row_stride(x), os = ops::row_stride(out);
  MOEOPT_RETURN_IF_ERROR(cuda_status(
      cudaMemcpy2DAsync(at(ws, r.x), size_t(r.hp) * 2, x.data, size_t(xs) * 2, size_t(h) * 2,
                        size_t(m), cudaMemcpyDeviceToDevice, s),
      op, "pad x"));
  MOEOPT_RETURN_IF_ERROR(route_and_run(
      op, ctx, router_logits, params.route, plan, at(ws, r.layer), at(ws, r.x), at(ws, r.w13),
      at(ws, r.w2), at(ws, r.out), fp8 ? moe_region<const float>(ws, r.w13s) : nullptr,
      fp8 ? moe_region<const float>(ws, r.w2s) : nullptr));
  return cuda_status(cudaMemcpy2DAsync(out.data, size_t(os) * 2, at(ws, r.out), size_t(r.hp) * 2,
                                       size_t(h) * 2, size_t(m), cudaMemcpyDeviceToDevice, s),
                     op, "unpad out");
}

}  // namespace moeopt::cuda
