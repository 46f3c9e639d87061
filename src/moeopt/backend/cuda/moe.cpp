// CUDA MoE layer: argument validation, workspace layout and the launch sequence (moe.h).
// Plain C++ (no nvcc): kernels are launched through moe_launch.h.
#include "moeopt/backend/cuda/moe.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "moeopt/backend/cuda/moe_launch.h"
#include "moeopt/backend/cuda/moe_persistent.h"

namespace moeopt::cuda {
namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::ok_status();
  return make_error(ErrorCode::kInternal, "moe: {} failed: {}", what, cudaGetErrorString(e));
}

Status check_ptr(const void* p, const char* name, bool required = true) {
  if (p == nullptr) {
    if (!required) return Status::ok_status();
    return make_error(ErrorCode::kInvalidArgument, "moe: {} is null", name);
  }
  if (!aligned16(p))
    return make_error(ErrorCode::kInvalidArgument, "moe: {} is not 16-byte aligned", name);
  return Status::ok_status();
}

// Byte offsets of the workspace regions, in MoeWorkspaceView order. The persistent path's
// regions (counters, f32 partial rows) are sized for min(M*k, kPersistentMaxPairs) pairs, so
// the total grows with M (a workspace sized for the largest M serves every smaller M).
constexpr int kRegions = 12;
struct Layout {
  size_t off[kRegions];
  size_t total;
};

Layout layout(const MoeDims& d) {
  const size_t E = size_t(d.num_experts), A = size_t(d.num_tokens * d.top_k);
  const size_t P = std::min<size_t>(A, size_t(kernels::kPersistentMaxPairs));
  const size_t counters = size_t(detail::persistent_num_counters(int64_t(A), d.hidden));
  const size_t sizes[kRegions] = {E * 4,     (E + 1) * 4, 16,
                                  A * 4,     A * 4,       A * 4,
                                  A * 4,     A * 4,       A * size_t(d.inter) * 2,
                                  A * size_t(d.hidden) * 2, counters * 4,
                                  P * size_t(d.hidden) * 4};
  Layout l{};
  size_t at = 0;
  for (int i = 0; i < kRegions; ++i) {
    l.off[i] = at;
    at += align_up(sizes[i]);
  }
  l.total = at;
  return l;
}

// Default path choice (MoeExpertsArgs::persistent unset): the multi-kernel path everywhere.
// Measured on an H100 (bench/moe_layer.py, Qwen3-30B-A3B shape, both paths forced in one
// process), the persistent kernel is slower at every size: M = 1 38.3 us against 32.6 us
// (58.8% / 69.1% of the HBM bound), M = 8 241.6 against 169.8 us uniform and 396 against
// 131 us Zipf (experts with several tokens make its CUDA-core dot products the bottleneck).
// It stays available through MoeExpertsArgs::persistent until it wins somewhere.
bool use_persistent_path(const MoeDims& d) {
  (void)d;
  return false;
}

// The small-M path: one persistent kernel (moe_persistent.h) after a counter reset.
Status persistent_experts_forward(const MoeDims& d, const MoeExpertsArgs& a) {
  const int64_t pairs = d.num_tokens * d.top_k;
  if (pairs > kernels::kPersistentMaxPairs)
    return make_error(ErrorCode::kUnsupported,
                      "moe: the persistent path takes num_tokens*top_k <= {}, got {}",
                      kernels::kPersistentMaxPairs, pairs);
  const MoeWorkspaceView ws = moe_workspace_view(d, a.workspace);
  kernels::PersistentParams p{};
  p.x = static_cast<const __nv_bfloat16*>(a.x);
  p.expert_ids = a.expert_ids;
  p.expert_weights = a.expert_weights;
  p.w13 = static_cast<const __nv_bfloat16*>(a.w13);
  p.w2 = static_cast<const __nv_bfloat16*>(a.w2);
  p.residual = static_cast<const __nv_bfloat16*>(a.residual);
  p.out = static_cast<__nv_bfloat16*>(a.out);
  p.expert_done = ws.persistent_counters;
  p.rows_done = ws.persistent_counters + pairs * kernels::kPersistentCounterStride;
  p.h = static_cast<__nv_bfloat16*>(ws.h);
  p.y = ws.persistent_y;
  p.num_tokens = int(d.num_tokens);
  p.hidden = int(d.hidden);
  p.inter = int(d.inter);
  p.num_experts = int(d.num_experts);
  p.top_k = int(d.top_k);
  return cuda_status(detail::launch_moe_persistent(p, a.programmatic_dependent_launch,
                                                   static_cast<cudaStream_t>(a.stream)),
                     "persistent launch");
}

}  // namespace

Status moe_check_dims(const MoeDims& d) {
  if (d.num_tokens < 1)
    return make_error(ErrorCode::kInvalidArgument, "moe: num_tokens must be >= 1, got {}",
                      d.num_tokens);
  if (d.hidden < 8 || d.hidden % 8 != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe: hidden must be a positive multiple of 8, got {}", d.hidden);
  if (d.inter < 8 || d.inter % 8 != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe: inter (moe_intermediate_size) must be a positive multiple of 8, got {}",
                      d.inter);
  if (d.num_experts < 1 || d.num_experts > kernels::kMaxExpertsPerLane * 32)
    return make_error(ErrorCode::kUnsupported, "moe: num_experts must be in [1, {}], got {}",
                      kernels::kMaxExpertsPerLane * 32, d.num_experts);
  if (d.top_k < 1 || d.top_k > kernels::kMaxTopK || d.top_k > d.num_experts)
    return make_error(ErrorCode::kUnsupported,
                      "moe: top_k must be in [1, min(32, num_experts={})], got {}",
                      d.num_experts, d.top_k);
  if (d.num_tokens * d.top_k >= (int64_t(1) << 31) || d.num_tokens >= (int64_t(1) << 31))
    return make_error(ErrorCode::kUnsupported, "moe: num_tokens*top_k must be < 2^31, got {}",
                      d.num_tokens * d.top_k);
  if (d.hidden * d.inter * 2 >= (int64_t(1) << 31))
    return make_error(ErrorCode::kUnsupported, "moe: hidden*inter*2 must be < 2^31");
  return Status::ok_status();
}

size_t moe_workspace_bytes(const MoeDims& d) { return layout(d).total; }

MoeWorkspaceView moe_workspace_view(const MoeDims& d, void* workspace) {
  const Layout l = layout(d);
  auto at = [&](int i) { return static_cast<unsigned char*>(workspace) + l.off[i]; };
  MoeWorkspaceView v;
  v.tokens_per_expert = reinterpret_cast<int32_t*>(at(0));
  v.expert_offsets = reinterpret_cast<int32_t*>(at(1));
  v.num_tiles = reinterpret_cast<int32_t*>(at(2));
  v.tile_expert = reinterpret_cast<int32_t*>(at(3));
  v.tile_row_begin = reinterpret_cast<int32_t*>(at(4));
  v.permuted_row_to_token = reinterpret_cast<int32_t*>(at(5));
  v.permuted_row_weight = reinterpret_cast<float*>(at(6));
  v.token_to_permuted_row = reinterpret_cast<int32_t*>(at(7));
  v.h = at(8);
  v.y = at(9);
  v.persistent_counters = reinterpret_cast<int32_t*>(at(10));
  v.persistent_y = reinterpret_cast<float*>(at(11));
  return v;
}

Status moe_route_topk(const MoeDims& d, const MoeRouteArgs& a) {
  MOEOPT_RETURN_IF_ERROR(moe_check_dims(d));
  MOEOPT_RETURN_IF_ERROR(check_ptr(a.x, "x"));
  MOEOPT_RETURN_IF_ERROR(check_ptr(a.router_w, "router_w"));
  MOEOPT_RETURN_IF_ERROR(check_ptr(a.expert_ids, "expert_ids", true));
  MOEOPT_RETURN_IF_ERROR(check_ptr(a.expert_weights, "expert_weights", true));
  const int tok = detail::router_tokens_per_block(int(d.hidden), int(d.num_experts));
  if (tok == 0)
    return make_error(ErrorCode::kUnsupported,
                      "moe: router: hidden {} x experts {} does not fit in shared memory",
                      d.hidden, d.num_experts);
  kernels::RouterParams p{};
  p.x = static_cast<const __nv_bfloat16*>(a.x);
  p.router_w = static_cast<const __nv_bfloat16*>(a.router_w);
  p.expert_ids = a.expert_ids;
  p.expert_weights = a.expert_weights;
  p.logits_out = a.logits;
  p.num_tokens = int(d.num_tokens);
  p.hidden = int(d.hidden);
  p.num_experts = int(d.num_experts);
  p.top_k = int(d.top_k);
  p.renormalize = a.renormalize;
  return cuda_status(
      detail::launch_moe_router_topk(p, tok, a.programmatic_dependent_launch,
                                      static_cast<cudaStream_t>(a.stream)),
      "router launch");
}

Status moe_experts_forward(const MoeDims& d, const MoeExpertsArgs& a) {
  MOEOPT_RETURN_IF_ERROR(moe_check_dims(d));
  if (d.num_experts > kernels::kPermuteMaxExperts)
    return make_error(ErrorCode::kUnsupported, "moe: permute supports at most {} experts",
                      kernels::kPermuteMaxExperts);
  MOEOPT_RETURN_IF_ERROR(check_ptr(a.x, "x"));
  MOEOPT_RETURN_IF_ERROR(check_ptr(a.w13, "w13"));
  MOEOPT_RETURN_IF_ERROR(check_ptr(a.w2, "w2"));
  MOEOPT_RETURN_IF_ERROR(check_ptr(a.out, "out"));
  MOEOPT_RETURN_IF_ERROR(check_ptr(a.residual, "residual", false));
  MOEOPT_RETURN_IF_ERROR(check_ptr(a.workspace, "workspace"));
  if (a.expert_ids == nullptr || a.expert_weights == nullptr)
    return make_error(ErrorCode::kInvalidArgument, "moe: expert_ids/expert_weights are null");
  const size_t need = moe_workspace_bytes(d);
  if (a.workspace_bytes < need)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe: workspace has {} bytes, the layer needs {}", a.workspace_bytes, need);

  const bool persistent = a.persistent ? *a.persistent : use_persistent_path(d);
  if (persistent) return persistent_experts_forward(d, a);

  const MoeGemmTile tile =
      a.tile ? *a.tile : choose_moe_gemm_tile(d.num_tokens, d.top_k, d.num_experts);
  const int tile_rows = moe_gemm_tile_rows(tile);
  const MoeGemmTile tile2 = a.tile2 ? *a.tile2 : moe_gemm2_tile(tile);
  if (moe_gemm_tile_rows(tile2) != tile_rows)
    return make_error(ErrorCode::kInvalidArgument,
                      "moe: GEMM 2 tile {} has {} token rows, GEMM 1 tile {} has {}",
                      moe_gemm_tile_name(tile2), moe_gemm_tile_rows(tile2),
                      moe_gemm_tile_name(tile), tile_rows);
  const int64_t assignments = d.num_tokens * d.top_k;
  // Tiles: sum_e ceil(c_e / rows) <= (A + E*(rows-1)) / rows, and never more than A.
  const int64_t max_tiles =
      std::min<int64_t>(assignments, (assignments + d.num_experts * (tile_rows - 1)) / tile_rows);
  const MoeWorkspaceView ws = moe_workspace_view(d, a.workspace);
  auto stream = static_cast<cudaStream_t>(a.stream);
  const bool pdl = a.programmatic_dependent_launch &&
                   (a.pdl_everywhere || moe_use_pdl(d.num_tokens, d.top_k, d.num_experts));

  kernels::PermuteParams pp{};
  pp.expert_ids = a.expert_ids;
  pp.expert_weights = a.expert_weights;
  pp.tokens_per_expert = ws.tokens_per_expert;
  pp.expert_offsets = ws.expert_offsets;
  pp.permuted_row_to_token = ws.permuted_row_to_token;
  pp.permuted_row_weight = ws.permuted_row_weight;
  pp.token_to_permuted_row = ws.token_to_permuted_row;
  pp.tile_expert = ws.tile_expert;
  pp.tile_row_begin = ws.tile_row_begin;
  pp.num_tiles = ws.num_tiles;
  pp.num_assignments = int(assignments);
  pp.top_k = int(d.top_k);
  pp.num_experts = int(d.num_experts);
  pp.tile_rows = tile_rows;
  pp.pad_rows_to = 1;
  pp.capacity = 0;
  pp.single_block = a.single_block_permute;
  MOEOPT_RETURN_IF_ERROR(cuda_status(detail::launch_moe_permute(pp, pdl, stream), "permute launch"));

  kernels::GroupedGemmParams g1{};
  g1.act = static_cast<const __nv_bfloat16*>(a.x);
  g1.row_to_token = ws.permuted_row_to_token;
  g1.weight = static_cast<const __nv_bfloat16*>(a.w13);
  g1.row_weight = nullptr;
  g1.out = static_cast<__nv_bfloat16*>(ws.h);
  g1.expert_offsets = ws.expert_offsets;
  g1.tile_expert = ws.tile_expert;
  g1.tile_row_begin = ws.tile_row_begin;
  g1.num_tiles = ws.num_tiles;
  g1.K = int(d.hidden);
  g1.N_out = int(d.inter);
  g1.num_tokens = int(d.num_tokens);
  g1.num_rows = int(assignments);
  MOEOPT_RETURN_IF_ERROR(cuda_status(
      detail::launch_moe_grouped_gemm(tile, true, g1, int(max_tiles), pdl, stream), "gemm1 launch"));

  kernels::GroupedGemmParams g2 = g1;
  g2.act = static_cast<const __nv_bfloat16*>(ws.h);
  g2.row_to_token = nullptr;
  g2.weight = static_cast<const __nv_bfloat16*>(a.w2);
  g2.row_weight = ws.permuted_row_weight;
  g2.out = static_cast<__nv_bfloat16*>(ws.y);
  g2.K = int(d.inter);
  g2.N_out = int(d.hidden);
  MOEOPT_RETURN_IF_ERROR(cuda_status(
      detail::launch_moe_grouped_gemm(tile2, false, g2, int(max_tiles), pdl, stream), "gemm2 launch"));

  kernels::CombineParams cp{};
  cp.y = static_cast<const __nv_bfloat16*>(ws.y);
  cp.token_to_permuted_row = ws.token_to_permuted_row;
  cp.residual = static_cast<const __nv_bfloat16*>(a.residual);
  cp.out = static_cast<__nv_bfloat16*>(a.out);
  cp.num_tokens = int(d.num_tokens);
  cp.hidden = int(d.hidden);
  cp.top_k = int(d.top_k);
  cp.num_rows = int(assignments);
  return cuda_status(detail::launch_moe_combine(cp, pdl, stream), "combine launch");
}

}  // namespace moeopt::cuda
