// The interface a device backend (backend/cuda) implements so the ops can dispatch to it.
//
// The free functions in ops/<family>.h validate their arguments, then call the CPU reference
// for CPU tensors or ctx.device_backend for CUDA tensors. A backend overrides the ops it
// has; the rest answer kUnsupported, so the CUDA side can grow one op at a time. Arguments
// arrive validated (shapes, dtypes, devices as documented in each family's header).
#pragma once

#include <optional>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/attention.h"
#include "moeopt/ops/context.h"
#include "moeopt/ops/moe.h"
#include "moeopt/ops/random_fill.h"
#include "moeopt/ops/sampling.h"

namespace moeopt::ops {

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual const char* name() const = 0;

  // ---- Memory and copies. The model loader, the scratch arena (ops/scratch.h) and the
  // engine's device runner move weights, KV pages, batches and logits with these, so those
  // layers stay free of any device API. Copies are enqueued on ctx.stream in order; a host
  // source may be pageable (the backend stages it) and is free to reuse when the call returns.
  virtual Result<void*> allocate(size_t bytes) { return not_here("allocate"); }
  virtual void release(void* ptr) {}
  virtual Status copy_to_device(const Context&, void* dst, const void* host_src, size_t bytes) {
    return not_here("copy_to_device");
  }
  // Waits for the stream up to this copy, so `host_dst` is filled on return.
  virtual Status copy_to_host(const Context&, void* host_dst, const void* src, size_t bytes) {
    return not_here("copy_to_host");
  }
  virtual Status copy_on_device(const Context&, void* dst, const void* src, size_t bytes) {
    return not_here("copy_on_device");
  }
  virtual Status fill_zero(const Context&, void* dst, size_t bytes) { return not_here("fill_zero"); }
  virtual Status synchronize(const Context&) { return not_here("synchronize"); }
  // Free and total bytes of the device's memory right now.
  virtual Status memory_info(size_t* free_bytes, size_t* total_bytes) {
    return not_here("memory_info");
  }
  // Streams and graphs: a runner launches on its own stream and captures the launches of a
  // step (CUDA graphs) to replay them with one call. Handles are opaque.
  virtual Result<void*> create_stream() { return not_here("create_stream"); }
  virtual void destroy_stream(void* stream) {}
  virtual Status begin_capture(const Context&) { return not_here("begin_capture"); }
  // Ends the capture begun on ctx.stream and returns an executable graph.
  virtual Result<void*> end_capture(const Context&) { return not_here("end_capture"); }
  virtual Status launch_graph(const Context&, void* graph) { return not_here("launch_graph"); }
  virtual void destroy_graph(void* graph) {}
  // Fills a contiguous bf16 / f16 / f32 device tensor with ops/random_fill.h values.
  virtual Status random_fill(const Context&, const TensorView& t, const RandomFill& fill) {
    return not_here("random_fill");
  }
  // Converts a contiguous device tensor to dst's dtype (same numel; f32/f16/bf16; RNE).
  virtual Status convert(const Context&, const TensorView& src, const TensorView& dst) {
    return not_here("convert");
  }

  virtual Status embedding(const Context&, const TensorView& table, const TensorView& ids,
                           const TensorView& out) {
    return not_here("embedding");
  }
  virtual Status rms_norm(const Context&, const TensorView& x, const TensorView& weight,
                          float eps, const TensorView& out) {
    return not_here("rms_norm");
  }
  virtual Status add_rms_norm(const Context&, const TensorView& x, const TensorView& residual,
                              const TensorView& weight, float eps, const TensorView& out) {
    return not_here("add_rms_norm");
  }
  virtual Status linear(const Context&, const TensorView& x, const TensorView& weight,
                        const std::optional<TensorView>& bias, const TensorView& y) {
    return not_here("linear");
  }
  // linear with an fp8 e4m3 weight and its f32 block scale (ops/fp8.h, ops/linear.h); arrives
  // validated: weight [N, K] fp8, weight_scale [ceil(N/128), ceil(K/128)] f32.
  virtual Status linear_fp8(const Context&, const TensorView& x, const TensorView& weight,
                            const TensorView& weight_scale, const std::optional<TensorView>& bias,
                            const TensorView& y) {
    return not_here("linear (fp8 weight)");
  }
  // ops/fp8.h's per-token-group activation quantisation; arrives validated (x [M, K] f32).
  virtual Status quantize_fp8_activations(const Context&, const TensorView& x,
                                          const TensorView& x_q, const TensorView& x_scale) {
    return not_here("quantize_fp8_activations");
  }
  // ops/fp8.h's weight block quantisation (online quantisation at load); w_q rows may be
  // strided.
  virtual Status quantize_fp8_weight_blocks(const Context&, const TensorView& w,
                                            const TensorView& w_q, const TensorView& w_scale) {
    return not_here("quantize_fp8_weight_blocks");
  }
  virtual Status silu_and_mul(const Context&, const TensorView& x, const TensorView& out) {
    return not_here("silu_and_mul");
  }
  virtual Status silu(const Context&, const TensorView& x, const TensorView& out) {
    return not_here("silu");
  }
  virtual Status rope_apply(const Context&, const TensorView& q, const TensorView& k,
                            const TensorView& positions, const TensorView& cos_sin) {
    return not_here("rope_apply");
  }
  virtual Status kv_cache_write(const Context&, const TensorView& k, const TensorView& v,
                                const TensorView& slot_mapping, const TensorView& k_cache,
                                const TensorView& v_cache, const KvScales& scales) {
    return not_here("kv_cache_write");
  }
  virtual Status paged_attention(const Context&, const TensorView& q, const TensorView& k_cache,
                                 const TensorView& v_cache, const TensorView& block_table,
                                 const TensorView& context_lens,
                                 const TensorView& query_start_loc,
                                 const AttentionParams& params, const TensorView& out,
                                 const KvScales& scales) {
    return not_here("paged_attention");
  }
  virtual Status moe_route(const Context&, const TensorView& router_logits,
                           const RouteParams& params, const TensorView& expert_ids,
                           const TensorView& expert_weights) {
    return not_here("moe_route");
  }
  virtual Status moe_permute(const Context&, const TensorView& expert_ids,
                             const TensorView& expert_weights, int64_t num_experts,
                             int pad_rows_to, const MoePermutation& perm) {
    return not_here("moe_permute");
  }
  virtual Status moe_experts(const Context&, const TensorView& x, const ExpertWeights& weights,
                             const MoePermutation& perm, const TensorView& out_rows) {
    return not_here("moe_experts");
  }
  virtual Status moe_combine(const Context&, const TensorView& rows,
                             const TensorView& token_to_permuted_row, const TensorView& out) {
    return not_here("moe_combine");
  }
  virtual Status moe_forward(const Context&, const TensorView& x,
                             const TensorView& router_logits, const ExpertWeights& weights,
                             const MoeParams& params, const TensorView& out) {
    return not_here("moe_forward");
  }
  virtual Status sigmoid_gated_add(const Context&, const TensorView& x, const TensorView& gate,
                                   const TensorView& out) {
    return not_here("sigmoid_gated_add");
  }
  virtual Status argmax(const Context&, const TensorView& logits, const TensorView& out) {
    return not_here("argmax");
  }
  virtual Status log_softmax(const Context&, const TensorView& x, const TensorView& out) {
    return not_here("log_softmax");
  }
  // Batched sampling (ops/sampling.h); the engine calls it directly on its device runner.
  virtual Status sample(const Context&, const SamplingBatch& batch, const SamplingOutput& out) {
    return not_here("sample");
  }

 protected:
  Status not_here(const char* op) const {
    return make_error(ErrorCode::kUnsupported, "{}: not implemented by the {} backend", op,
                      name());
  }
};

}  // namespace moeopt::ops
