// Quality of a lossy option: the same tokens through a reference model and a test model
// (e.g. BF16 vs its FP8 W8A8 quantisation, or the same model with an FP8 KV cache), compared
// position by position.
//
//   KL(p_ref || p_test) = sum_v p_ref(v) (log p_ref(v) - log p_test(v)), in nats, per position
//   top-1 agreement     = share of positions whose argmax logits agree
//   perplexity          = exp(mean over scored tokens of -log p(token | the tokens before it))
// Each prompt is prefilled in one step and every position's next-token logits are compared
// (double-precision softmax). The prefill attends through the paged cache it has just written
// (ops/attention.h), so an FP8 KV cache (e4m3 codes + per token and kv head scales) costs
// every position what it costs a decode step that reads those keys. On text, the prompts are
// the text's tokens in non-overlapping windows (token_windows) and both models' perplexity of
// the actual next tokens is reported as well. `moeopt bench quality` prints it.
//
// Devices: each model runs where its weights are (Model::device()), with the ops of `ctx`
// (ctx.pool for a CPU model, ctx.device_backend and ctx.stream for a GPU one; a context with
// both serves a CPU and a GPU model, so a GPU model can be compared with the CPU reference).
// A GPU model's KV pools and logits live in a device scratch arena of the call; only the
// logits come back. The reference cache of a model (reference_kv_dtype) is the most exact one
// its device has: f32 on the CPU, bf16 on the GPU (the CUDA attention reads bf16 or fp8
// pages, no f32). The GPU also runs bf16 activations where the CPU runs f32 (docs/architecture.md).
// Tests: tests/unit/model_fp8_test.cpp, tests/unit/model_demo_perplexity_test.cpp (against
// transformers on the trained demo model), tests/unit/cuda_quality_test.cpp (the GPU against
// the CPU on the demo model, GPU machine only).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/model/model.h"
#include "moeopt/model/weights.h"

namespace moeopt {

struct QualityReport {
  int64_t positions = 0;
  double mean_kl = 0.0, max_kl = 0.0;  // nats
  double top1_agreement = 0.0;         // [0, 1]
  // Perplexity of each model on the prompts' own next tokens (positions 0 .. len-2 of every
  // prompt), over scored_tokens tokens.
  int64_t scored_tokens = 0;
  double reference_perplexity = 0.0, test_perplexity = 0.0;
};

struct PerplexityReport {
  int64_t scored_tokens = 0;
  double nll_sum = 0.0;   // nats
  double mean_nll = 0.0;  // nats per scored token
  double perplexity = 0.0;
};

// `tokens` cut into non-overlapping windows of `window` tokens; a last window shorter than
// 2 tokens (nothing to score) is dropped.
std::vector<std::vector<int32_t>> token_windows(const std::vector<int32_t>& tokens, int window);

// Perplexity of `tokens` in windows of `window` tokens (token_windows): within a window,
// token i > 0 is scored given tokens [0, i) of that window, no BOS added.
Result<PerplexityReport> perplexity(Model& model, const ops::Context& ctx,
                                    const std::vector<int32_t>& tokens, int window);

// The KV cache dtype a model's reference runs use: kF32 on the CPU, kBF16 on the GPU.
DType reference_kv_dtype(const Model& model);

// Logits of every position of `prompt` ([len, vocab] row-major, on the host), one prefill
// step, through a KV cache of `kv_dtype` on the model's device (default: reference_kv_dtype):
// on the CPU kF32 or kF8E4M3, on the GPU kBF16 or kF8E4M3 (FP8 not for MLA's latent cache).
Result<std::vector<float>> prompt_logits(Model& model, const ops::Context& ctx,
                                         const std::vector<int32_t>& prompt,
                                         std::optional<DType> kv_dtype = std::nullopt);

// Activation-aware 2:4 pruning's calibration (ops/sparsity.h ExpertInputStats): the checkpoint
// in `dir` as stored (unquantised experts) runs `calibration` (one prefill per prompt), and
// every routed expert projection gets the importance sqrt(sum of squares) of each input
// channel over the rows it multiplied. Experts no calibration token reached get none (they
// are pruned by magnitude). Runs on the CPU (ctx.pool): the CPU MoE collects the statistics,
// whichever device the pruned model then runs on.
Result<ExpertImportance> expert_importance(const std::string& dir, const ops::Context& ctx,
                                           const std::vector<std::vector<int32_t>>& calibration);

// `test` runs with a `test_kv` cache (default: reference_kv_dtype(test)), `reference` with
// reference_kv_dtype(reference) (f32 on the CPU); they may be one model, or on two devices.
Result<QualityReport> compare_models(Model& reference, Model& test, const ops::Context& ctx,
                                     const std::vector<std::vector<int32_t>>& prompts,
                                     std::optional<DType> test_kv = std::nullopt);

}  // namespace moeopt
