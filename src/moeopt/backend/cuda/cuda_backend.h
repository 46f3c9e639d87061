// The CUDA device backend: ops::DeviceBackend implemented with the kernels of backend/cuda.
//
// Put a CudaBackend in ops::Context::device_backend (and the cudaStream_t in Context::stream)
// and the ops of ops/<family>.h run on CUDA tensors: every family the decoder calls (dense ops,
// linear in bf16 and FP8, attention, sampling, MoE; what each accepts is said with its
// declaration below; anything else is a one-line kUnsupported error). What the CUDA MoE ops
// accept:
//   - expert weights stacked ENK (ExpertWeights::stacked), bf16, contiguous, H and I multiples
//     of 8 (16-byte rows), E <= 512 (<= 1024 for permute alone), k <= 32 — what the grouped
//     GEMMs read, and how the engine lays weights out (model/device_weights.h). moe_forward
//     also takes anything else (per-expert tensors, f16/f32 weights, odd H or I) by repacking
//     into a zero-padded bf16 stack per call: correct, not fast; moe_experts does not.
//   - fp8 e4m3 experts with f32 128x128 block scales (ops/moe.h, ops/fp8.h) in moe_forward
//     only (W8A8, moe.h); stacked with H and I multiples of 16 natively, anything else
//     through the same repack; moe_experts answers kUnsupported for them.
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
// its own with cudaMalloc (not allowed while the stream is being captured: that is an error);
// outgrown buffers are kept until the backend dies, so captured graphs stay valid.
// One CudaBackend serves one stream at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

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

  // ---- Memory and copies (cuda_memory.cpp): cudaMalloc'd device memory; host-to-device
  // copies go through a pinned staging buffer so pageable sources still copy asynchronously.
  Result<void*> allocate(size_t bytes) override;
  void release(void* ptr) override;
  Status copy_to_device(const ops::Context& ctx, void* dst, const void* host_src,
                        size_t bytes) override;
  Status copy_to_host(const ops::Context& ctx, void* host_dst, const void* src,
                      size_t bytes) override;
  Status copy_on_device(const ops::Context& ctx, void* dst, const void* src,
                        size_t bytes) override;
  Status fill_zero(const ops::Context& ctx, void* dst, size_t bytes) override;
  Status synchronize(const ops::Context& ctx) override;
  Status memory_info(size_t* free_bytes, size_t* total_bytes) override;
  Status random_fill(const ops::Context& ctx, const TensorView& t,
                     const ops::RandomFill& fill) override;
  Status convert(const ops::Context& ctx, const TensorView& src, const TensorView& dst) override;

  // ---- Streams and CUDA graphs (cuda_graph.cpp).
  Result<void*> create_stream() override;
  void destroy_stream(void* stream) override;
  Status begin_capture(const ops::Context& ctx) override;
  Result<void*> end_capture(const ops::Context& ctx) override;
  Status launch_graph(const ops::Context& ctx, void* graph) override;
  void destroy_graph(void* graph) override;

  // ---- Dense ops (cuda_dense_ops.cpp).
  // bf16 activations with an f32 residual stream (docs in cuda_dense_ops.cpp / cuda_linear.cpp).
  Status embedding(const ops::Context& ctx, const TensorView& table, const TensorView& ids,
                   const TensorView& out) override;
  Status rms_norm(const ops::Context& ctx, const TensorView& x, const TensorView& weight,
                  float eps, const TensorView& out) override;
  Status add_rms_norm(const ops::Context& ctx, const TensorView& x, const TensorView& residual,
                      const TensorView& weight, float eps, const TensorView& out) override;
  Status linear(const ops::Context& ctx, const TensorView& x, const TensorView& weight,
                const std::optional<TensorView>& bias, const TensorView& y) override;
  // FP8 (cuda_fp8_ops.cpp): the W8A8 linear (bf16 x, e4m3 weight with f32 block scales,
  // bf16 bias, bf16 / f32 y; x quantised once into scratch()), the activation quantiser and
  // the block quantiser of online quantisation (both bit-equal to the CPU's).
  Status linear_fp8(const ops::Context& ctx, const TensorView& x, const TensorView& weight,
                    const TensorView& weight_scale, const std::optional<TensorView>& bias,
                    const TensorView& y) override;
  Status quantize_fp8_activations(const ops::Context& ctx, const TensorView& x,
                                  const TensorView& x_q, const TensorView& x_scale) override;
  Status quantize_fp8_weight_blocks(const ops::Context& ctx, const TensorView& w,
                                    const TensorView& w_q, const TensorView& w_scale) override;
  Status silu_and_mul(const ops::Context& ctx, const TensorView& x,
                      const TensorView& out) override;
  Status silu(const ops::Context& ctx, const TensorView& x, const TensorView& out) override;
  Status rope_apply(const ops::Context& ctx, const TensorView& q, const TensorView& k,
                    const TensorView& positions, const TensorView& cos_sin) override;
  Status kv_cache_write(const ops::Context& ctx, const TensorView& k, const TensorView& v,
                        const TensorView& slot_mapping, const TensorView& k_cache,
                        const TensorView& v_cache, const ops::KvScales& scales) override;
  Status sigmoid_gated_add(const ops::Context& ctx, const TensorView& x, const TensorView& gate,
                           const TensorView& out) override;
  Status argmax(const ops::Context& ctx, const TensorView& logits, const TensorView& out) override;
  Status log_softmax(const ops::Context& ctx, const TensorView& x, const TensorView& out) override;

  // ---- Attention (cuda_attention_ops.cpp).
  // paged_attention takes bf16 q, out and caches, or fp8 e4m3 caches with their scales
  // (anything else is kUnsupported), head_dim 1..256, any block_size. Tensor cores for head_dim 64/128 with 16-byte aligned q/out/caches
  // and row strides of multiples of 8 elements, a general kernel otherwise. Invalid metadata
  // is made harmless instead of reported (no host round trip): a sequence with more new
  // tokens than context, or more context than its block-table row, gets zero rows; page ids
  // outside the cache read as zero keys (tensor cores) or are skipped (general kernel).
  // Split-KV partials come from scratch(): at most paged_attention_workspace_bytes(), so a
  // ctx.workspace of that size makes every call capturable.
  Status paged_attention(const ops::Context& ctx, const TensorView& q, const TensorView& k_cache,
                         const TensorView& v_cache, const TensorView& block_table,
                         const TensorView& context_lens, const TensorView& query_start_loc,
                         const ops::AttentionParams& params, const TensorView& out,
                         const ops::KvScales& scales) override;
  // Upper bound of the scratch paged_attention takes for T query tokens of Hq heads x D.
  static size_t paged_attention_workspace_bytes(int64_t num_tokens, int64_t num_q_heads,
                                                int64_t head_dim);

  // ---- Sampling (cuda_sampling.cpp).
  // Batched sampling (ops/sampling.h) with logits, settings and results on the GPU. The
  // engine calls it directly, so the shapes, dtypes and devices are checked here. uniform
  // may be f32 (as ops/sampling.h) or f64 (the host draw unrounded). Two paths:
  //   - all_greedy, no penalties, num_logprobs 0: one kernel (argmax + raw logprob), no
  //     workspace;
  //   - otherwise a prepare kernel per row (raw log-sum-exp, top logprobs, penalties, greedy
  //     rows' argmax), then for the sampled rows, in chunks of rows, a CUB segmented radix
  //     sort of the penalised logits (descending, stable by id) and a walk kernel (top-k,
  //     top-p, min-p, the draw) over the sorted row.
  // all_greedy is trusted: with it set every row is taken greedily. logits are overwritten.
  // Workspace as the MoE ops: ctx.workspace if at least sample_workspace_bytes(), else the
  // backend's own buffer (not while the stream is being captured).
  Status sample(const ops::Context& ctx, const ops::SamplingBatch& batch,
                const ops::SamplingOutput& out) override;
  // Scratch bytes sample() needs for R rows of V logits with P penalty entries (any hints and
  // num_logprobs; the fast greedy path needs none).
  static Result<size_t> sample_workspace_bytes(int64_t rows, int64_t vocab,
                                               int64_t penalty_entries);

  // ---- MoE (cuda_moe_ops.cpp: the family's one host entry; the fused layer is moe.h).
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
  std::vector<void*> retired_;  // outgrown scratch buffers, freed with the backend
  // Pinned staging for copy_to_device (cuda_memory.cpp). shared_ptr members carry their
  // deleter, so each op file keeps its state's type to itself.
  struct Staging;
  std::shared_ptr<Staging> staging_;
  // linear's cuBLASLt handle, fixed workspace and per-shape matmul plans (cuda_linear.cpp),
  // created by the first call.
  struct LinearState;
  std::mutex linear_mu_;
  std::shared_ptr<LinearState> linear_;
  // (attention keeps no state of its own: split-KV partials come from scratch())
};

}  // namespace moeopt::cuda
