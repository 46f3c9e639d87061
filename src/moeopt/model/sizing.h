// Sizing: exact parameter counts, weight bytes (BF16 and block-FP8), KV-cache bytes per token,
// how much batch x context fits on 1/2/4/8 H100/H200 GPUs, and a recommended GPU count and
// parallel layout. Everything is computed from the tensor specs (tensor_specs.h), so the
// numbers are exact for the config, not formula estimates.
//
// Conventions (stated once, used by inspect and the tests):
//   - total  = every tensor of the main model. DeepSeek-V3's multi-token-prediction module
//              (num_nextn_predict_layers) is excluded and reported separately as `mtp`.
//   - active = total - routed experts + num_experts_per_tok routed experts per MoE layer: the
//              parameters one token touches. Embeddings and lm_head are counted in both (an
//              untied lm_head is a full [V, H] matmul per token; a tied one is not counted
//              twice). Shared experts, routers, norms and dense layers are always active.
//   - BF16 bytes = 2 bytes per parameter.
//   - FP8 bytes  = block-wise FP8 e4m3 (DeepSeek-V3 / Qwen -FP8 style): the 2-D linear
//              weights of attention, dense MLPs, shared and routed experts take 1 byte per
//              element plus one f32 scale per 128x128 block (ceil on each dim; the config's
//              weight_block_size when it has one). Embeddings, lm_head, norms, biases and
//              routers stay BF16: they are a small share of the bytes and quantizing them
//              costs accuracy (Qwen's and DeepSeek's FP8 releases keep them unquantized too).
//   - KV bytes per token: GQA 2 (K and V) * layers * kv_heads * head_dim * bytes;
//              MLA layers * (kv_lora_rank + qk_rope_head_dim) * bytes (the compressed latent
//              cache that absorbed-MLA kernels read). Sliding windows are ignored (full cache).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "moeopt/model/config.h"
#include "moeopt/model/safetensors.h"
#include "moeopt/model/tensor_specs.h"

namespace moeopt {

struct ParamCounts {
  int64_t total = 0;
  int64_t active = 0;
  // Breakdown of total (sums to total).
  int64_t embedding = 0;
  int64_t lm_head = 0;
  int64_t attention = 0;       // projections, biases and q/k/MLA norms
  int64_t norms = 0;           // layer norms and the final norm
  int64_t router = 0;          // gate weights and V3's correction bias
  int64_t routed_experts = 0;
  int64_t shared_experts = 0;  // including Qwen2-MoE's shared_expert_gate
  int64_t dense_mlp = 0;
  int64_t routed_experts_active = 0;  // top-k experts per MoE layer
  int64_t mtp = 0;                    // DeepSeek-V3 MTP module, not in total
};

// Counts over the main-model specs (`tensors` = expected_tensors(c)) and the MTP specs.
ParamCounts count_params(const ModelConfig& c, const std::vector<TensorSpec>& tensors,
                         const std::vector<TensorSpec>& mtp = {});

struct WeightBytes {
  int64_t bf16 = 0;
  int64_t fp8 = 0;  // FP8 linear weights + f32 block scales + BF16 rest
};

// FP8 block shape used for sizing: the config's weight_block_size, else 128x128.
std::pair<int64_t, int64_t> fp8_block(const ModelConfig& c);
// Bytes of one tensor stored in FP8 with block scales (fp8_linear) or in BF16 (others).
int64_t fp8_tensor_bytes(const TensorSpec& t, int64_t block_n, int64_t block_k);
WeightBytes weight_bytes(const ModelConfig& c, const std::vector<TensorSpec>& tensors);

struct KvBytes {
  int64_t bf16 = 0;
  int64_t fp8 = 0;
};
KvBytes kv_bytes_per_token(const ModelConfig& c);

// --------------------------------------------------------------------------------------
// Fit on GPUs

struct GpuSpec {
  std::string name;       // "H100-80GB"
  std::string key;        // "h100"
  int64_t memory_bytes;   // total device memory as nvidia-smi reports it
};
const GpuSpec& gpu_h100();
const GpuSpec& gpu_h200();

// Memory model for one GPU (documented here so every number is reproducible):
//   usable  = memory * kGpuMemoryFraction      (0.90, vLLM's default gpu_memory_utilization:
//                                               CUDA context, cuBLAS/NCCL workspaces, fragmentation)
//   kv room = usable - kActivationReserveBytes - weight shard
//   (4 GiB reserve: activations of an 8k-token prefill chunk, MoE permute buffers, CUDA graphs)
constexpr double kGpuMemoryFraction = 0.90;
constexpr int64_t kActivationReserveBytes = int64_t(4) << 30;

// Serving precisions compared in the fit table.
enum class Precision { kBf16, kFp8Weights, kFp8WeightsFp8Kv };
const char* precision_name(Precision p);  // "bf16", "fp8", "fp8+kv8"

// The parallel layout for N GPUs: attention tensor-parallel over heads (TP = N), routed
// experts expert-parallel (EP = N, whole experts per GPU), shared experts / dense MLPs /
// embeddings tensor-parallel. GQA KV heads are replicated when TP > kv_heads; MLA's latent
// cache is replicated on every TP rank (it has no head dimension).
struct FitResult {
  int gpus = 1;
  Precision precision = Precision::kBf16;
  int64_t weight_bytes_per_gpu = 0;  // largest shard
  int64_t kv_room_per_gpu = 0;       // may be negative: weights do not fit
  int64_t kv_bytes_per_token_per_gpu = 0;
  int64_t kv_tokens = 0;             // tokens of KV cache that fit (batch x context)
  int64_t max_batch = 0;             // sequences of `ctx` tokens
  bool fits = false;                 // weights fit and at least one full-context sequence
};

FitResult fit_on_gpus(const ModelConfig& c, const std::vector<TensorSpec>& tensors, const GpuSpec& gpu,
                      int gpus, Precision p, int64_t ctx);

// Per-GPU bytes of the weights under the layout above (largest shard).
int64_t weight_bytes_per_gpu(const ModelConfig& c, const std::vector<TensorSpec>& tensors, int gpus,
                             Precision p);

struct LayoutRecommendation {
  bool fits = false;
  std::string gpu;          // GpuSpec::name
  int gpus = 0;
  Precision precision = Precision::kBf16;
  int tp_attention = 1;
  int ep_experts = 1;       // 1 for dense models
  int64_t max_batch = 0;    // at ctx
  std::string summary;      // one line, e.g. "1 x H100-80GB, BF16, TP1 attention, 28 x 8192 tokens"
  std::vector<std::string> warnings;
};

// Sequences of `ctx` tokens the recommendation aims to hold (a useful serving batch).
constexpr int64_t kTargetBatch = 16;

// Smallest GPU count (1, 2, 4, 8) that holds kTargetBatch sequences of ctx tokens in BF16,
// else with FP8 weights, else with FP8 weights and KV; failing that, the configuration
// holding the most sequences; `fits` false when nothing holds even one.
LayoutRecommendation recommend_layout(const ModelConfig& c, const std::vector<TensorSpec>& tensors,
                                      const GpuSpec& gpu, int64_t ctx);

// Warnings for FP8 block quantization when the tensor-parallel shards of N GPUs are not
// multiples of the block (e.g. Qwen3-30B-A3B: 768-wide experts split TP=4 are 192 wide).
// `experts_tp` says whether routed experts are split by TP (rather than EP).
std::vector<std::string> fp8_tp_warnings(const ModelConfig& c, int tp, bool experts_tp);

// --------------------------------------------------------------------------------------
// Checkpoint cross-check

// What a checkpoint's safetensors headers say, once checked against the config.
struct CheckpointCheck {
  int64_t tensors = 0;        // tensors in the files
  int64_t files = 0;
  int64_t bytes = 0;          // sum of tensor data bytes
  bool has_mtp = false;       // DeepSeek-V3 MTP layers present (optional)
  bool has_fp8_scales = false;
  ParamCounts params;         // counted from the header shapes (same conventions as above)
};

// Checks every tensor of a checkpoint against checkpoint_tensors(c): each header tensor must
// be one the config implies, with the same shape; each tensor of the main model (and each
// FP8 scale when the config is FP8) must be present. MTP tensors (and their scales) are
// optional; rotary
// `inv_freq` buffers some exporters write are ignored. The first mismatch is a kCorruptData
// error naming `source` and the tensor.
Result<CheckpointCheck> check_checkpoint_tensors(const ModelConfig& c,
                                                 const std::vector<SafetensorsTensorInfo>& tensors,
                                                 const std::string& source);

// The whole report as one JSON object (`moeopt inspect --json`): the config summary keys
// (model_type, is_moe, num_layers, num_moe_layers, hidden_size, num_experts,
// num_shared_experts, experts_per_token, moe_intermediate_size, attention, routing, ...),
// params_total, params_active, params (breakdown), weight_bytes {bf16, fp8},
// kv_bytes_per_token {bf16, fp8}, fit (per GPU kind and count), recommended (per GPU kind)
// and fp8_tp_warnings (per TP degree, experts split by TP).
nlohmann::json model_report_json(const ModelConfig& c, const std::vector<TensorSpec>& tensors,
                              const ParamCounts& params, const std::vector<const GpuSpec*>& gpus,
                              int64_t ctx);

}  // namespace moeopt
