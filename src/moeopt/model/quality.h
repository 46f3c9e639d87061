// Quality of a lossy weight format: the same tokens through a reference model and a test
// model (e.g. BF16 vs its FP8 W8A8 quantisation), compared position by position.
//
//   KL(p_ref || p_test) = sum_v p_ref(v) (log p_ref(v) - log p_test(v)), in nats, per position
//   top-1 agreement     = share of positions whose argmax logits agree
// Each prompt is prefilled in one step and every position's next-token logits are compared
// (double-precision softmax). CPU models; `moeopt bench quality` prints it.
#pragma once

#include <cstdint>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/model/model.h"

namespace moeopt {

struct QualityReport {
  int64_t positions = 0;
  double mean_kl = 0.0, max_kl = 0.0;  // nats
  double top1_agreement = 0.0;         // [0, 1]
};

// Logits of every position of `prompt` ([len, vocab] row-major), one prefill step.
Result<std::vector<float>> prompt_logits(Model& model, const ops::Context& ctx,
                                         const std::vector<int32_t>& prompt);

Result<QualityReport> compare_models(Model& reference, Model& test, const ops::Context& ctx,
                                     const std::vector<std::vector<int32_t>>& prompts);

}  // namespace moeopt
