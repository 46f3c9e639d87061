// The CUDA device backend: ops::DeviceBackend implemented with the kernels of backend/cuda.
//
// Put a CudaBackend in ops::Context::device_backend (and the cudaStream_t in Context::stream)
// and the ops of ops/<family>.h run on CUDA tensors. Implemented so far: the MoE family
// (moe_route, moe_permute, moe_experts, moe_combine, moe_forward); every other op answers
// kUnsupported. What the CUDA MoE ops accept (anything else is a one-line kUnsupported error):
//   - expert weights stacked ENK (ExpertWeights::stacked), bf16, contiguous, H and I multiples
//     of 8 (16-byte rows), E <= 512 (<= 1024 for permute alone), k <= 32. Per-expert tensors
//     and f16/f32 weights are not supported yet: the engine stacks bf16 experts when it loads.
//   - activations bf16: moe_experts x [M, H] and out_rows [R, H], moe_combine rows [R, H] and
//     out [M, H], moe_forward x and out [M, H]; router logits f32; routing tensors as ops/moe.h.
// Differences from the CPU reference, by design (the GPU cannot return an error from a kernel
// without a host round trip): invalid entries are not reported but made harmless. Expert ids
// outside [0, E) in moe_permute get no row (token_to_permuted_row -1); rows whose token is
// outside [0, M) compute as zero rows; combine skips rows outside [0, R); expert_offsets are
// clamped to [0, R]. Numerics: bf16 inputs, fp32 accumulation, h = silu(gate)*up rounded to
// bf16 between the GEMMs, bf16 outputs (the tests bound the error against the CPU oracle).
//
// Workspace: moe_experts and moe_forward need device scratch. They use ctx.workspace when it
// is at least moe_*_workspace_bytes(); then every call only enqueues kernels (no allocation,
// no synchronisation) and is CUDA-graph capturable. Otherwise the backend grows a buffer of
// its own with cudaMalloc (not allowed while the stream is being captured: that is an error).
// One CudaBackend serves one stream at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "moeopt/core/status.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::cuda {

class CudaBackend final : public ops::DeviceBackend {
 public:
  CudaBackend() = default;
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const char* name() const override { return "cuda"; }

  Status moe_route(const ops::Context& ctx, const TensorView& router_logits,
                   const ops::RouteParams& params, const TensorView& expert_ids,
                   const TensorView& expert_weights) override;
  Status moe_permute(const ops::Context& ctx, const TensorView& expert_ids,
                     const TensorView& expert_weights, int64_t num_experts, int pad_rows_to,
                     const ops::MoePermutation& perm) override;
  Status moe_experts(const ops::Context& ctx, const TensorView& x,
                     const ops::ExpertWeights& weights, const ops::MoePermutation& perm,
                     const TensorView& out_rows) override;
  Status moe_combine(const ops::Context& ctx, const TensorView& rows,
                     const TensorView& token_to_permuted_row, const TensorView& out) override;
  Status moe_forward(const ops::Context& ctx, const TensorView& x,
                     const TensorView& router_logits, const ops::ExpertWeights& weights,
                     const ops::MoeParams& params, const TensorView& out) override;

  // Scratch bytes moe_experts needs for R permuted rows of width I over E experts.
  static size_t moe_experts_workspace_bytes(int64_t rows, int64_t inter, int64_t num_experts);
  // Scratch bytes moe_forward needs for M tokens (hidden H, width I, E experts, top-k).
  static size_t moe_forward_workspace_bytes(int64_t num_tokens, int64_t hidden, int64_t inter,
                                            int64_t num_experts, int64_t top_k);

 private:
  // ctx.workspace if large enough, else this backend's own buffer (grown as needed).
  Result<void*> scratch(const ops::Context& ctx, size_t bytes, const char* op);

  std::mutex mu_;
  void* own_ = nullptr;
  size_t own_bytes_ = 0;
};

}  // namespace moeopt::cuda
