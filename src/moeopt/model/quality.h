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
// every position what it costs a decode step that reads those keys; the reference's cache is
// f32. On text, the prompts are the text's tokens in non-overlapping
// windows (token_windows) and both models' perplexity of the actual next tokens is reported
// as well. CPU models; `moeopt bench quality` prints it. Tests: tests/unit/model_fp8_test.cpp,
// tests/unit/model_demo_perplexity_test.cpp (against transformers on the trained demo model).
#pragma once

#include <cstdint>
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

// Logits of every position of `prompt` ([len, vocab] row-major), one prefill step, through
// a host KV cache of `kv_dtype`: kF32, or kF8E4M3 (not for MLA's latent cache).
Result<std::vector<float>> prompt_logits(Model& model, const ops::Context& ctx,
                                         const std::vector<int32_t>& prompt,
                                         DType kv_dtype = DType::kF32);

// Activation-aware 2:4 pruning's calibration (ops/sparsity.h ExpertInputStats): the checkpoint
// in `dir` as stored (unquantised experts) runs `calibration` (one prefill per prompt), and
// every routed expert projection gets the importance sqrt(sum of squares) of each input
// channel over the rows it multiplied. Experts no calibration token reached get none (they
// are pruned by magnitude).
Result<ExpertImportance> expert_importance(const std::string& dir, const ops::Context& ctx,
                                           const std::vector<std::vector<int32_t>>& calibration);

// `test` runs with a `test_kv` cache, `reference` with an f32 one; they may be one model.
Result<QualityReport> compare_models(Model& reference, Model& test, const ops::Context& ctx,
                                     const std::vector<std::vector<int32_t>>& prompts,
                                     DType test_kv = DType::kF32);

}  // namespace moeopt
