// CudaBackend's MoE ops (cuda_backend.h): argument checks for what the kernels support, the
// workspace layout of each op, and the launch sequences. Plain C++ (no nvcc); kernels are
// launched through moe_launch.h. The generic checks (shapes, devices, index dtypes) already
// happened in ops/moe.cpp before these are called.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/cuda_check.h"
#include "moeopt/backend/cuda/moe.h"
#include "moeopt/backend/cuda/moe_heuristics.h"
#include "moeopt/backend/cuda/moe_launch.h"
#include "moeopt/backend/cuda/memory_launch.h"
#include "moeopt/ops/check.h"

namespace moeopt::cuda {
namespace {

namespace k = kernels;

constexpr size_t kAlign = 256;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
constexpr int64_t kInt32Limit = int64_t(1) << 31;

// Stacked bf16 experts with 16-byte rows: what the grouped GEMMs read.
Status need_bf16_stacked(const char* op, const ops::ExpertWeights& w) {
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

Status check_route_params(const char* op, const ops::RouteParams& p, int64_t e) {
  if (e < 1 || e > k::kRouteMaxExperts)
    return make_error(ErrorCode::kUnsupported, "{}: {} experts, the CUDA router takes 1..{}", op,
                      e, k::kRouteMaxExperts);
  if (p.top_k < 1 || p.top_k > ops::kMaxTopK || p.top_k > e)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: top_k {} must be in [1, min({}, num_experts {})]", op, p.top_k,
                      ops::kMaxTopK, e);
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
  rp.bias_dtype = k::BiasDType::kF32;
  if (p.correction_bias && p.correction_bias->dtype == DType::kBF16)
    rp.bias_dtype = k::BiasDType::kBF16;
  if (p.correction_bias && p.correction_bias->dtype == DType::kF16)
    rp.bias_dtype = k::BiasDType::kF16;
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

// moe_experts' scratch: h [R, I] bf16, then the tile table.
struct ExpertsLayout {
  MoeGemmTile tile;
  int tile_rows;
  int64_t max_tiles;
  size_t h_off, tile_expert_off, tile_row_off, num_tiles_off, total;
};

ExpertsLayout experts_layout(int64_t rows, int64_t inter, int64_t num_experts) {
  ExpertsLayout l{};
  // Rows per expert decide the tile, as in the fused layer (moe_heuristics.h).
  l.tile = choose_moe_gemm_tile(rows, 1, num_experts);
  l.tile_rows = moe_gemm_tile_rows(l.tile);
  // Tiles: sum_e ceil(rows_e / tile_rows) <= (R + E*(tile_rows-1)) / tile_rows, and <= R.
  l.max_tiles = std::min<int64_t>(rows, (rows + num_experts * (l.tile_rows - 1)) / l.tile_rows);
  size_t at = 0;
  l.h_off = at;
  at += align_up(size_t(rows) * size_t(inter) * 2);
  l.tile_expert_off = at;
  at += align_up(size_t(std::max<int64_t>(l.max_tiles, 1)) * 4);
  l.tile_row_off = at;
  at += align_up(size_t(std::max<int64_t>(l.max_tiles, 1)) * 4);
  l.num_tiles_off = at;
  at += align_up(4);
  l.total = at;
  return l;
}

// moe_forward's scratch: expert_ids [M, k], expert_weights [M, k], then the layer workspace.
struct ForwardLayout {
  size_t ids_off, weights_off, layer_off, total;
};

ForwardLayout forward_layout(const MoeDims& d) {
  ForwardLayout l{};
  const size_t a = size_t(d.num_tokens * d.top_k);
  l.ids_off = 0;
  l.weights_off = align_up(a * 4);
  l.layer_off = l.weights_off + align_up(a * 4);
  l.total = l.layer_off + moe_workspace_bytes(d);
  return l;
}

unsigned char* at(void* base, size_t off) { return static_cast<unsigned char*>(base) + off; }

}  // namespace

CudaBackend::~CudaBackend() {
  if (own_ != nullptr) cudaFree(own_);
  for (void* p : retired_) cudaFree(p);
}

size_t CudaBackend::moe_experts_workspace_bytes(int64_t rows, int64_t inter, int64_t num_experts) {
  return experts_layout(rows, inter, num_experts).total;
}

size_t CudaBackend::moe_forward_workspace_bytes(int64_t num_tokens, int64_t hidden, int64_t inter,
                                                int64_t num_experts, int64_t top_k) {
  return forward_layout(MoeDims{num_tokens, hidden, inter, num_experts, top_k}).total;
}

Result<void*> CudaBackend::scratch(const ops::Context& ctx, size_t bytes, const char* op) {
  bytes = std::max<size_t>(bytes, kAlign);
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
  const int64_t m = router_logits.shape[0], e = router_logits.shape[1];
  MOEOPT_RETURN_IF_ERROR(check_route_params(op, params, e));
  if (m >= kInt32Limit / ops::kMaxTopK)
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
  MOEOPT_RETURN_IF_ERROR(need_bf16_stacked(op, weights));
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
  const ExpertsLayout l = experts_layout(r, inter, e);
  MOEOPT_ASSIGN_OR_RETURN(void* ws, scratch(ctx, l.total, op));
  auto* tile_expert = reinterpret_cast<int32_t*>(at(ws, l.tile_expert_off));
  auto* tile_row = reinterpret_cast<int32_t*>(at(ws, l.tile_row_off));
  auto* num_tiles = reinterpret_cast<int32_t*>(at(ws, l.num_tiles_off));
  auto* h_rows = reinterpret_cast<__nv_bfloat16*>(at(ws, l.h_off));
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

namespace {

// Stacked bf16 experts the grouped GEMMs take as they are.
bool native_experts(const ops::ExpertWeights& w) {
  return w.is_stacked() && w.w13.dtype == DType::kBF16 && w.w2.dtype == DType::kBF16 &&
         w.hidden() % 8 == 0 && w.intermediate() % 8 == 0 &&
         (reinterpret_cast<uintptr_t>(w.w13.data) & 15u) == 0 &&
         (reinterpret_cast<uintptr_t>(w.w2.data) & 15u) == 0;
}

int64_t round8(int64_t v) { return (v + 7) / 8 * 8; }

// Bytes of a padded bf16 stack (w13 [E, 2Ip, Hp], w2 [E, Hp, Ip]), x and out [M, Hp], and a
// staging matrix for converting one expert matrix to bf16.
struct RepackLayout {
  int64_t hp, ip;
  size_t w13_off, w2_off, x_off, out_off, stage_off, total;
};
RepackLayout repack_layout(int64_t m, int64_t h, int64_t inter, int64_t e) {
  RepackLayout l{};
  l.hp = round8(h);
  l.ip = round8(inter);
  size_t off = 0;
  auto take = [&](size_t bytes) {
    size_t at = off;
    off = align_up(off + bytes);
    return at;
  };
  l.w13_off = take(size_t(e * 2 * l.ip * l.hp) * 2);
  l.w2_off = take(size_t(e * l.hp * l.ip) * 2);
  l.x_off = take(size_t(m * l.hp) * 2);
  l.out_off = take(size_t(m * l.hp) * 2);
  l.stage_off = take(size_t(inter * h) * 2);
  l.total = off;
  return l;
}

detail::ElemType elem_of(DType t) {
  return t == DType::kF32 ? detail::ElemType::kF32
                          : t == DType::kF16 ? detail::ElemType::kF16 : detail::ElemType::kBF16;
}

// Copies a [rows, cols] matrix (any float dtype, contiguous) into bf16 rows of `dst_pitch`
// elements, converting through the staging buffer when it is not bf16 already.
Status place_matrix(const char* op, const TensorView& src, void* dst, int64_t dst_pitch,
                    void* stage, cudaStream_t s) {
  const int64_t rows = src.shape[0], cols = src.shape[1];
  const void* from = src.data;
  if (src.dtype != DType::kBF16) {
    MOEOPT_RETURN_IF_ERROR(cuda_status(detail::launch_convert(src.data, elem_of(src.dtype), stage,
                                                              detail::ElemType::kBF16, rows * cols, s),
                                       op, "convert weights"));
    from = stage;
  }
  return cuda_status(cudaMemcpy2DAsync(dst, size_t(dst_pitch) * 2, from, size_t(cols) * 2,
                                       size_t(cols) * 2, size_t(rows), cudaMemcpyDeviceToDevice, s),
                     op, "pack weights");
}

}  // namespace

// Route + grouped GEMMs + combine on validated, natively laid out tensors; `ws` holds
// forward_layout(d).total bytes.
Status CudaBackend::moe_forward_native(const ops::Context& ctx, const void* x,
                                       const TensorView& router_logits, const void* w13,
                                       const void* w2, const ops::RouteParams& route,
                                       const MoeDims& d, void* ws, void* out) {
  constexpr const char* op = "moe_forward";
  const ForwardLayout l = forward_layout(d);
  auto* ids = reinterpret_cast<int32_t*>(at(ws, l.ids_off));
  auto* wts = reinterpret_cast<float*>(at(ws, l.weights_off));
  MOEOPT_RETURN_IF_ERROR(launch_route(op, ctx, router_logits, route, ids, wts));
  MoeExpertsArgs a;
  a.x = x;
  a.expert_ids = ids;
  a.expert_weights = wts;
  a.w13 = w13;
  a.w2 = w2;
  a.residual = nullptr;
  a.out = out;
  a.workspace = at(ws, l.layer_off);
  a.workspace_bytes = l.total - l.layer_off;
  a.stream = ctx.stream;
  return moe_experts_forward(d, a);
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
  MOEOPT_RETURN_IF_ERROR(check_route_params(op, params.route, e));
  const int64_t m = x.shape[0], h = weights.hidden(), inter = weights.intermediate();
  if (m == 0) return Status::ok_status();
  // params.pad_rows_to only shapes the CPU's intermediate buffers: the fused path masks each
  // expert's partial tile instead of padding rows in memory, with the same result.
  if (native_experts(weights)) {
    MOEOPT_RETURN_IF_ERROR(need_dense(op, "x", x));
    MOEOPT_RETURN_IF_ERROR(need_dense(op, "out", out));
    MOEOPT_RETURN_IF_ERROR(need_bf16_stacked(op, weights));
    const MoeDims d{m, h, inter, e, params.route.top_k};
    MOEOPT_RETURN_IF_ERROR(moe_check_dims(d));
    MOEOPT_ASSIGN_OR_RETURN(void* ws, scratch(ctx, forward_layout(d).total, op));
    return moe_forward_native(ctx, x.data, router_logits, weights.w13.data, weights.w2.data,
                              params.route, d, ws, out.data);
  }
  // Anything else (per-expert tensors, f16/f32 weights, H or I not a multiple of 8): repack
  // into a zero-padded bf16 stack, pad x, run the native path, copy the H real columns out.
  // Zero rows and columns change nothing (silu(0) * 0 = 0; zero columns add 0). This costs a
  // copy of every expert per call: a correctness path for odd inputs, never the engine's
  // (model/device_weights.h lays weights out natively).
  const RepackLayout r = repack_layout(m, h, inter, e);
  const MoeDims d{m, r.hp, r.ip, e, params.route.top_k};
  MOEOPT_RETURN_IF_ERROR(moe_check_dims(d));
  const size_t fwd_off = align_up(r.total);
  MOEOPT_ASSIGN_OR_RETURN(void* ws, scratch(ctx, fwd_off + forward_layout(d).total, op));
  cudaStream_t s = stream_of(ctx);
  unsigned char* base = static_cast<unsigned char*>(ws);
  MOEOPT_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(base, 0, r.stage_off, s), op, "zero the repack"));
  void* stage = base + r.stage_off;
  for (int64_t i = 0; i < e; ++i) {
    const TensorView gate = weights.gate_proj(i), up = weights.up_proj(i), down = weights.down_proj(i);
    for (const TensorView* t : {&gate, &up, &down})
      if (!t->is_contiguous() || t->device != Device::kCuda)
        return make_error(ErrorCode::kUnsupported, "{}: expert {} is not a contiguous GPU tensor", op, i);
    auto* w13e = base + r.w13_off + size_t(i * 2 * r.ip * r.hp) * 2;
    MOEOPT_RETURN_IF_ERROR(place_matrix(op, gate, w13e, r.hp, stage, s));
    MOEOPT_RETURN_IF_ERROR(place_matrix(op, up, w13e + size_t(r.ip * r.hp) * 2, r.hp, stage, s));
    MOEOPT_RETURN_IF_ERROR(
        place_matrix(op, down, base + r.w2_off + size_t(i * r.hp * r.ip) * 2, r.ip, stage, s));
  }
  const int64_t xs = ops::row_stride(x), os = ops::row_stride(out);
  MOEOPT_RETURN_IF_ERROR(cuda_status(
      cudaMemcpy2DAsync(base + r.x_off, size_t(r.hp) * 2, x.data, size_t(xs) * 2, size_t(h) * 2,
                        size_t(m), cudaMemcpyDeviceToDevice, s),
      op, "pad x"));
  MOEOPT_RETURN_IF_ERROR(moe_forward_native(ctx, base + r.x_off, router_logits, base + r.w13_off,
                                            base + r.w2_off, params.route, d, base + fwd_off,
                                            base + r.out_off));
  return cuda_status(cudaMemcpy2DAsync(out.data, size_t(os) * 2, base + r.out_off, size_t(r.hp) * 2,
                                       size_t(h) * 2, size_t(m), cudaMemcpyDeviceToDevice, s),
                     op, "unpad out");
}

}  // namespace moeopt::cuda
