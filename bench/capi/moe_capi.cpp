// C ABI over the CUDA MoE layer (src/moeopt/backend/cuda/moe.h), the routing op and the linear
// op, built as the shared library libmoeopt_moe_capi.so so that bench/moe_layer.py and
// bench/linear_small_m.py can drive our kernels and the PyTorch peer
// from one Python process on literally the same device tensors (pointers from
// tensor.data_ptr(), stream from torch.cuda.current_stream().cuda_stream).
// Functions return 0 on success; on failure a non-zero ErrorCode and the message is kept for
// moeopt_moe_last_error() (one per thread).
#include <cstdint>
#include <optional>
#include <string>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/moe.h"
#include "moeopt/ops/linear.h"
#include "moeopt/ops/moe.h"

namespace {
thread_local std::string g_last_error;

int report(const moeopt::Status& st) {
  if (st.ok()) return 0;
  g_last_error = st.message();
  return int(st.code());
}
}  // namespace

#ifndef MOEOPT_CAPI
#define MOEOPT_CAPI
#endif

extern "C" {

MOEOPT_CAPI const char* moeopt_moe_last_error() { return g_last_error.c_str(); }

MOEOPT_CAPI int moeopt_moe_num_tiles() { return moeopt::cuda::kNumMoeGemmTiles; }

MOEOPT_CAPI const char* moeopt_moe_tile_name(int tile) {
  if (tile < 0 || tile >= moeopt::cuda::kNumMoeGemmTiles) return "?";
  return moeopt::cuda::moe_gemm_tile_name(moeopt::cuda::MoeGemmTile(tile));
}

MOEOPT_CAPI int moeopt_moe_auto_tile(int64_t num_tokens, int64_t top_k, int64_t num_experts) {
  return int(moeopt::cuda::choose_moe_gemm_tile(num_tokens, top_k, num_experts));
}

MOEOPT_CAPI int moeopt_moe_workspace_bytes(int64_t m, int64_t h, int64_t i, int64_t e, int64_t k,
                                           uint64_t* bytes) {
  const auto plan = moeopt::cuda::moe_layer_plan(moeopt::cuda::MoeDims{m, h, i, e, k});
  if (int rc = report(plan.status())) return rc;
  *bytes = plan->bytes;
  return 0;
}

// tile: -1 = heuristic, else a MoeGemmTile value (bits 4..7: GEMM 2's tile + 1, 0 = the
// default pairing). flags: bit 0 = no programmatic dependent launch, bit 1 = two-kernel
// permutation even for few assignments.
MOEOPT_CAPI int moeopt_moe_experts(int64_t m, int64_t h, int64_t i, int64_t e, int64_t k,
                                   const void* x, const int32_t* expert_ids,
                                   const float* expert_weights, const void* w13, const void* w2,
                                   const void* residual, void* out, void* workspace,
                                   uint64_t workspace_bytes, void* stream, int tile, int flags) {
  moeopt::cuda::MoeTileChoice tiles;
  if (tile >= 0) {
    const int t1 = tile & 15, t2 = (tile >> 4) & 15;
    if (t1 >= moeopt::cuda::kNumMoeGemmTiles || t2 > moeopt::cuda::kNumMoeGemmTiles) {
      g_last_error = "moe: tile index out of range";
      return int(moeopt::ErrorCode::kInvalidArgument);
    }
    tiles.tile = moeopt::cuda::MoeGemmTile(t1);
    if (t2 > 0) tiles.tile2 = moeopt::cuda::MoeGemmTile(t2 - 1);
  }
  const auto plan = moeopt::cuda::moe_layer_plan(moeopt::cuda::MoeDims{m, h, i, e, k}, tiles);
  if (int rc = report(plan.status())) return rc;
  if (workspace_bytes < plan->bytes) {
    g_last_error = "moe: workspace smaller than moeopt_moe_workspace_bytes()";
    return int(moeopt::ErrorCode::kInvalidArgument);
  }
  moeopt::cuda::MoeLayerArgs a;
  a.x = x;
  a.expert_ids = expert_ids;
  a.expert_weights = expert_weights;
  a.w13 = w13;
  a.w2 = w2;
  a.residual = residual;
  a.out = out;
  a.workspace = workspace;
  a.stream = stream;
  a.programmatic_dependent_launch = (flags & 1) == 0;
  a.single_block_permute = (flags & 2) == 0;
  return report(moeopt::cuda::moe_layer_run(*plan, a));
}

// The product's routing step on given router logits [m, e] f32 (ops::moe_route on the CUDA
// backend: softmax, top-k, optional renormalisation) into expert_ids / expert_weights [m, k].
MOEOPT_CAPI int moeopt_moe_route(int64_t m, int64_t e, int64_t k, const float* logits,
                                 int renormalize, int32_t* expert_ids, float* expert_weights,
                                 void* stream) {
  using moeopt::DType;
  using moeopt::Device;
  using moeopt::TensorView;
  static moeopt::cuda::CudaBackend backend;
  moeopt::ops::Context ctx;
  ctx.stream = stream;
  ctx.device_backend = &backend;
  moeopt::ops::RouteParams p;
  p.top_k = int(k);
  p.renormalize = renormalize != 0;
  const TensorView l =
      TensorView::contiguous(const_cast<float*>(logits), DType::kF32, {m, e}, Device::kCuda);
  const TensorView ids = TensorView::contiguous(expert_ids, DType::kI32, {m, k}, Device::kCuda);
  const TensorView w = TensorView::contiguous(expert_weights, DType::kF32, {m, k}, Device::kCuda);
  return report(moeopt::ops::moe_route(ctx, l, p, ids, w));
}

// The product's linear layer (ops::linear on the CUDA backend: the small-M GEMV up to
// kGemvMaxRows rows, cuBLASLt above) on bf16 x [m, k] and w [n, k] into y [m, n] (bf16, or f32
// when y_f32), bias bf16 [n] or null; for bench/linear_small_m.py.
MOEOPT_CAPI int moeopt_linear(int64_t m, int64_t n, int64_t k, const void* x, const void* w,
                              const void* bias, void* y, int y_f32, void* stream) {
  using moeopt::DType;
  using moeopt::Device;
  using moeopt::TensorView;
  static moeopt::cuda::CudaBackend backend;
  moeopt::ops::Context ctx;
  ctx.stream = stream;
  ctx.device_backend = &backend;
  const TensorView xv = TensorView::contiguous(const_cast<void*>(x), DType::kBF16, {m, k}, Device::kCuda);
  const TensorView wv = TensorView::contiguous(const_cast<void*>(w), DType::kBF16, {n, k}, Device::kCuda);
  const TensorView yv = TensorView::contiguous(y, y_f32 ? DType::kF32 : DType::kBF16, {m, n}, Device::kCuda);
  std::optional<TensorView> bv;
  if (bias != nullptr)
    bv = TensorView::contiguous(const_cast<void*>(bias), DType::kBF16, {n}, Device::kCuda);
  return report(moeopt::ops::linear(ctx, xv, wv, bv, yv));
}

}  // extern "C"
