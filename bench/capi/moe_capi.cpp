// C ABI over the CUDA MoE layer (src/moeopt/backend/cuda/moe.h), built as the shared library
// libmoeopt_moe_capi.so so that bench/moe_layer.py can drive our kernels and the PyTorch peer
// from one Python process on literally the same device tensors (pointers from
// tensor.data_ptr(), stream from torch.cuda.current_stream().cuda_stream).
// Functions return 0 on success; on failure a non-zero ErrorCode and the message is kept for
// moeopt_moe_last_error() (one per thread).
#include <cstdint>
#include <string>

#include "moeopt/backend/cuda/moe.h"

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
  const moeopt::cuda::MoeDims d{m, h, i, e, k};
  if (int rc = report(moeopt::cuda::moe_check_dims(d))) return rc;
  *bytes = moeopt::cuda::moe_workspace_bytes(d);
  return 0;
}

// tile: -1 = heuristic, else a MoeGemmTile value (bits 4..7: GEMM 2's tile + 1). flags: bit 0 = no programmatic dependent launch,
// bit 1 = two-kernel permutation even for few assignments, bit 2 = PDL at every size,
// bit 3 = force the persistent one-kernel path, bit 4 = force the multi-kernel path.
MOEOPT_CAPI int moeopt_moe_experts(int64_t m, int64_t h, int64_t i, int64_t e, int64_t k, const void* x,
                       const int32_t* expert_ids, const float* expert_weights, const void* w13,
                       const void* w2, const void* residual, void* out, void* workspace,
                       uint64_t workspace_bytes, void* stream, int tile, int flags) {
  moeopt::cuda::MoeExpertsArgs a;
  a.x = x;
  a.expert_ids = expert_ids;
  a.expert_weights = expert_weights;
  a.w13 = w13;
  a.w2 = w2;
  a.residual = residual;
  a.out = out;
  a.workspace = workspace;
  a.workspace_bytes = workspace_bytes;
  a.stream = stream;
  a.programmatic_dependent_launch = (flags & 1) == 0;
  a.single_block_permute = (flags & 2) == 0;
  a.pdl_everywhere = (flags & 4) != 0;
  if ((flags & 8) != 0) a.persistent = true;
  if ((flags & 16) != 0) a.persistent = false;
  if (tile >= 0) {
    // Low 4 bits: GEMM 1 tile; bits 4..7: GEMM 2 tile + 1 (0 = the default pairing).
    const int t1 = tile & 15, t2 = (tile >> 4) & 15;
    if (t1 >= moeopt::cuda::kNumMoeGemmTiles || t2 > moeopt::cuda::kNumMoeGemmTiles) {
      g_last_error = "moe: tile index out of range";
      return int(moeopt::ErrorCode::kInvalidArgument);
    }
    a.tile = moeopt::cuda::MoeGemmTile(t1);
    if (t2 > 0) a.tile2 = moeopt::cuda::MoeGemmTile(t2 - 1);
  }
  return report(moeopt::cuda::moe_experts_forward(moeopt::cuda::MoeDims{m, h, i, e, k}, a));
}

MOEOPT_CAPI int moeopt_moe_route(int64_t m, int64_t h, int64_t e, int64_t k, const void* x,
                     const void* router_w, int renormalize, int32_t* expert_ids,
                     float* expert_weights, float* logits, void* stream) {
  moeopt::cuda::MoeRouteArgs a;
  a.x = x;
  a.router_w = router_w;
  a.renormalize = renormalize != 0;
  a.expert_ids = expert_ids;
  a.expert_weights = expert_weights;
  a.logits = logits;
  a.stream = stream;
  return report(moeopt::cuda::moe_route_topk(moeopt::cuda::MoeDims{m, h, 8, e, k}, a));
}

}  // extern "C"
