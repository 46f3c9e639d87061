// Engine: the step loop shared by `generate`, `bench` and `serve`:
//   step() = schedule -> build the ForwardBatch -> model forward -> sample -> postprocess.
// Sequences join and leave every step (continuous batching); prompts may be prefilled in
// chunks; the KV cache is paged (block_allocator.h, kv_cache.h). Not thread-safe: one thread
// drives it (the server serialises access).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <memory>
#include <vector>

#include "moeopt/core/thread_pool.h"
#include "moeopt/engine/block_allocator.h"
#include "moeopt/engine/device_runner.h"
#include "moeopt/engine/kv_cache.h"
#include "moeopt/engine/scheduler.h"
#include "moeopt/model/model.h"

namespace moeopt {

struct EngineOptions {
  int num_threads = 0;                  // CPU worker threads (0: all hardware threads)
  int32_t block_size = 16;
  int32_t num_kv_blocks = 0;            // 0: derive from kv_cache_bytes
  size_t kv_cache_bytes = size_t(1) << 30;
  int32_t max_num_seqs = 64;
  int32_t max_num_batched_tokens = 2048;
  int32_t max_model_len = 0;            // 0: the config's max_position_embeddings
  bool enable_prefix_caching = false;   // share computed full blocks of identical prefixes
  bool enable_chunked_prefill = true;   // off: a prompt is prefilled in one step (needs
                                        // max_num_batched_tokens >= max_model_len)
  bool prefill_first = false;           // prompts before decodes (scheduler.h)
  // GPU: the backend of a model whose weights are on the device (null: CPU engine). The
  // engine then keeps its KV cache there (bf16, or fp8) and samples there (engine/device_runner.h).
  ops::DeviceBackend* device = nullptr;
  // FP8 (e4m3) KV cache with a scale per token and kv head (ops/attention.h): about half the
  // bytes of bf16, so twice the tokens per GB and half the attention reads; lossy.
  bool fp8_kv_cache = false;
  bool cuda_graphs = true;              // capture decode steps (device engine only)
  int32_t cuda_graph_max_batch = 256;   // largest decode batch captured
};

// The most samples one request may ask for (Engine::add_samples).
inline constexpr int32_t kMaxSamplesPerRequest = 256;

struct Request {
  std::vector<int32_t> prompt;
  SamplingParams params;
  bool want_prompt_logits = false;      // keep the logits at the last prompt position
  bool want_step_logits = false;        // return the logits row of every sampled token
};

// What a step produced for one request.
struct RequestOutput {
  uint64_t id = 0;
  std::vector<int32_t> new_tokens;          // generated this step (0 or 1)
  std::vector<SampleResult> samples;        // with logprobs when asked, parallel to new_tokens
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;             // so far, including this step
  int32_t cached_prompt_tokens = 0;         // prompt tokens taken from the prefix cache
  // When a step first ran this request's tokens (unset if it never ran: aborted while waiting).
  std::optional<std::chrono::steady_clock::time_point> first_scheduled;
  std::vector<float> prompt_logits_last;    // set on the first token when asked
  std::vector<float> logits;                // the row new_tokens[0] was sampled from, when
                                            // the request wants step logits
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> create(std::unique_ptr<Model> model, EngineOptions opt);

  const ModelConfig& config() const { return model_->config(); }
  int32_t max_model_len() const { return max_model_len_; }
  // Validates and queues a request; returns its id.
  Result<uint64_t> add_request(Request request);
  // Validates and queues `n` samples of one prompt (the OpenAI API's `n`), n in [1, kMaxSamplesPerRequest]:
  // n sequences with the request's settings, except that with a seed sample i draws from
  // seed + i (without one each sample seeds itself). Sample 0 prefills the prompt; the
  // others are forked from it once its prompt K/V are computed and share its full prompt
  // blocks (Scheduler::release_forks), so the prompt is computed once, not n times.
  // Returns the ids in sample order.
  Result<std::vector<uint64_t>> add_samples(Request request, int32_t n);
  // Runs one step; outputs for every sequence that produced a token or finished.
  Result<std::vector<RequestOutput>> step();
  bool has_unfinished() const { return !scheduler_->empty(); }
  // Marks a request aborted; its blocks are freed and its final output (finish_reason
  // kAbort) is reported by the next step(). False if the id is unknown or already done.
  bool abort(uint64_t id) { return scheduler_->abort(id); }
  int64_t num_steps() const { return steps_; }
  // Tokens routed to each expert so far, [num_layers, num_experts] row-major (dense layers
  // stay 0); empty for models without routed experts.
  // Counted on every step of a CPU engine; on a device only while count_expert_tokens(true)
  // (each such step copies the routing back per layer and runs without a CUDA graph).
  const std::vector<int64_t>& expert_token_counts() const { return expert_tokens_; }
  void count_expert_tokens(bool on) { count_expert_tokens_ = on; }
  bool counts_expert_tokens() const { return count_expert_tokens_; }
  const EngineOptions& options() const { return opt_; }
  // The KV cache's element type: f32 (CPU) or bf16 (GPU), or fp8_e4m3 with fp8_kv_cache.
  DType kv_dtype() const;

  const BlockAllocator& blocks() const { return *blocks_; }
  const Scheduler& scheduler() const { return *scheduler_; }

 private:
  Engine() = default;
  FinishReason check_stop(const Sequence& s, int32_t token) const;

  std::unique_ptr<Model> model_;
  EngineOptions opt_;
  int32_t max_model_len_ = 0;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<BlockAllocator> blocks_;
  std::unique_ptr<KvCache> kv_;          // CPU engine
  std::unique_ptr<ops::ScratchArena> arena_;  // CPU engine: step temporaries
  std::unique_ptr<DeviceRunner> runner_;      // GPU engine
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<int64_t> expert_tokens_;
  bool count_expert_tokens_ = true;
  uint64_t next_id_ = 1;
  int64_t steps_ = 0;
  std::vector<int32_t> eos_ids_;
};

// Convenience for generate/tests: runs requests to completion in one batch and returns, per
// request in order, its generated tokens and (if asked) prompt logits.
struct Completion {
  std::vector<int32_t> tokens;
  std::vector<SampleResult> samples;
  FinishReason finish_reason = FinishReason::kNone;
  std::vector<float> prompt_logits_last;
};
Result<std::vector<Completion>> run_to_completion(Engine& engine, std::vector<Request> requests);

}  // namespace moeopt
