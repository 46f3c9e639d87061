// `moeopt bench quality [--model DIR|name] [--random-weights] [--prompts N] [--len L]
//                       [--seed S] [--text FILE [--window W] [--max-tokens T]]
//                       [--perplexity-only] [--json]`
//
// With --perplexity-only (needs --text): only the perplexity of the model as stored on the
// text, no comparison (model/quality.h perplexity; the number the demo model's test checks
// against transformers).
//
// The measured cost of FP8 W8A8 weights (ops/fp8.h): the same tokens through the reference
// (the BF16 checkpoint, or an FP8 checkpoint's weights dequantised to f32) and FP8 (the BF16
// checkpoint quantised at load, or the FP8 checkpoint as stored), reporting KL divergence
// and top-1 agreement of the next-token distributions at every position (model/quality.h).
// The tokens are random prompts, or with --text the file's tokens (the model's tokenizer, no
// special tokens) in non-overlapping windows of W, and then both models' perplexity of the
// text too. CPU only: the CPU reference defines the FP8 numerics, and test_cuda checks
// the GPU's FP8 path against it (tests/unit/cuda_engine_fp8_test.cpp). On random weights
// (--random-weights, tiny-qwen3-moe, catalog configs) the output says so: the numbers then
// bound the numerics, not task quality; the default model is trained.
#include <cstdio>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_commands.h"
#include "model_setup.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/model/model_cache.h"
#include "moeopt/model/quality.h"
#include "moeopt/tokenizer/tokenizer.h"
#include "moeopt/core/file_io.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::cli {
namespace {

struct QualityArgs {
  ModelArgs m;
  int prompts = 4, len = 32;
  uint64_t seed = 0;
  std::string text;  // a text file instead of random prompts
  int window = 256, max_tokens = 4096;
  bool perplexity_only = false;
  bool json = false;
};

// The prompts: random token ids, or the text file's tokens in windows.
Result<std::vector<std::vector<int32_t>>> quality_prompts(const QualityArgs& a, const LoadedModel& lm,
                                                          int64_t vocab) {
  std::vector<std::vector<int32_t>> prompts;
  if (a.text.empty()) {
    ops::CaseRng rng(a.seed + 1);
    prompts.resize(size_t(a.prompts));
    for (auto& p : prompts)
      for (int i = 0; i < a.len; ++i) p.push_back(int32_t(rng.below(std::min<int64_t>(vocab, 100000))));
    return prompts;
  }
  MOEOPT_ASSIGN_OR_RETURN(std::string text, read_file(a.text, size_t(64) << 20));
  MOEOPT_ASSIGN_OR_RETURN(auto tok, tokenizer::Tokenizer::load(lm.tokenizer_dir));
  MOEOPT_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok.encode(text, /*add_special_tokens=*/false));
  if (int64_t(ids.size()) > a.max_tokens) ids.resize(size_t(a.max_tokens));
  prompts = token_windows(ids, a.window);
  if (prompts.empty())
    return make_error(ErrorCode::kInvalidArgument, "{}: fewer than 2 tokens of text", a.text);
  return prompts;
}

// Perplexity of the model as loaded on the text (--perplexity-only).
int run_perplexity_only(const QualityArgs& a, LoadedModel& lm) {
  const char* cmd = "bench quality";
  auto prompts = quality_prompts(a, lm, lm.model->config().vocab_size);
  if (!prompts.ok()) return report_error(cmd, prompts.status());
  std::vector<int32_t> ids;
  for (const auto& w : *prompts) ids.insert(ids.end(), w.begin(), w.end());
  ThreadPool pool(0);
  auto r = perplexity(*lm.model, ops::Context{.pool = &pool}, ids, a.window);
  if (!r.ok()) return report_error(cmd, r.status());
  if (a.json) {
    const nlohmann::json j = {{"model", lm.source},    {"text", a.text},
                              {"window", a.window},    {"scored_tokens", r->scored_tokens},
                              {"mean_nll_nats", r->mean_nll}, {"perplexity", r->perplexity}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("perplexity of %s on %s (%lld scored tokens, windows of %d): %.4f (%.4f nats per token)\n",
                lm.source.c_str(), a.text.c_str(), (long long)r->scored_tokens, a.window,
                r->perplexity, r->mean_nll);
  }
  return 0;
}

int run_bench_quality(QualityArgs& a) {
  const char* cmd = "bench quality";
  if (a.m.device != "cpu")
    return report_error(cmd, Status(ErrorCode::kUnsupported,
                                    "the quality report runs on the CPU reference (--device cpu), which "
                                    "defines the FP8 numerics; test_cuda checks the GPU's FP8 path against it"));
  if (a.perplexity_only && a.text.empty())
    return report_error(cmd, Status(ErrorCode::kInvalidArgument, "--perplexity-only needs --text FILE"));
  // The checkpoint directory: load_model_for resolves names and --random-weights.
  auto base = load_model_for(a.m, cmd);
  if (!base.ok()) return report_error(cmd, base.status());
  if (a.perplexity_only) return run_perplexity_only(a, *base);
  const std::string dir = base->source;
  const bool fp8_ckpt = base->model->config().fp8.has_value();
  ThreadPool pool(0);
  LoadOptions ref_opt, test_opt;
  ref_opt.ctx.pool = test_opt.ctx.pool = &pool;
  ref_opt.format = fp8_ckpt ? WeightFormat::kDequantized : WeightFormat::kAsStored;
  test_opt.format = fp8_ckpt ? WeightFormat::kAsStored : WeightFormat::kFp8;
  auto ref = load_model(dir, ref_opt);
  if (!ref.ok()) return report_error(cmd, ref.status());
  auto test = load_model(dir, test_opt);
  if (!test.ok()) return report_error(cmd, test.status());
  auto prompts = quality_prompts(a, *base, (*ref)->config().vocab_size);
  if (!prompts.ok()) return report_error(cmd, prompts.status());
  ops::Context ctx{.pool = &pool};
  auto r = compare_models(**ref, **test, ctx, *prompts);
  if (!r.ok()) return report_error(cmd, r.status());
  // Materialised random checkpoints live in the cache; a checkpoint directory (the trained
  // default included) has real weights.
  const bool random = a.m.random_weights || dir.rfind(cache_root(), 0) == 0;
  const char* ref_name = fp8_ckpt ? "f32 on the dequantised FP8 weights" : "the checkpoint's own weights (bf16)";
  const char* test_name = fp8_ckpt ? "FP8 W8A8 as stored" : "FP8 W8A8, quantised at load (128x128 blocks)";
  const char* note = random ? "random init-random weights: these numbers bound the numerics of the format, "
                              "not its task quality"
                            : "the checkpoint's weights";
  const std::string tokens =
      a.text.empty() ? fmt::format("{} random prompts of {} tokens", a.prompts, a.len)
                     : fmt::format("{}: {} windows of up to {} tokens", a.text, prompts->size(), a.window);
  if (a.json) {
    nlohmann::json j = {{"model", dir}, {"reference", ref_name}, {"test", test_name},
                        {"weights", random ? "random" : "checkpoint"}, {"note", note},
                        {"tokens", tokens}, {"positions", r->positions},
                        {"mean_kl_nats", r->mean_kl}, {"max_kl_nats", r->max_kl},
                        {"top1_agreement", r->top1_agreement}};
    if (!a.text.empty())
      j.update({{"scored_tokens", r->scored_tokens}, {"reference_perplexity", r->reference_perplexity},
                {"test_perplexity", r->test_perplexity}});
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("quality of FP8 weights on %s\n  reference: %s\n  test:      %s\n  weights:   %s\n"
                "  %lld positions (%s): KL mean %.3g nats, max %.3g; top-1 agreement %.4f\n",
                dir.c_str(), ref_name, test_name, note, (long long)r->positions, tokens.c_str(),
                r->mean_kl, r->max_kl, r->top1_agreement);
    if (!a.text.empty())
      std::printf("  perplexity of the text (%lld scored tokens): reference %.4f, test %.4f (%+.2f%%)\n",
                  (long long)r->scored_tokens, r->reference_perplexity, r->test_perplexity,
                  100.0 * (r->test_perplexity / r->reference_perplexity - 1.0));
  }
  return 0;
}

RunFn setup_bench_quality(CLI::App& bench) {
  auto a = std::make_shared<QualityArgs>();
  CLI::App* sub = bench.add_subcommand("quality", "KL divergence, top-1 agreement and perplexity of FP8 weights against BF16");
  add_model_flags(sub, &a->m);
  sub->add_option("--prompts", a->prompts, "random prompts (default 4)")->check(CLI::Range(1, 1000));
  sub->add_option("--len", a->len, "tokens per prompt (default 32)")->check(CLI::Range(1, 4096));
  sub->add_option("--seed", a->seed, "seed of the prompts (default 0)");
  sub->add_option("--text", a->text, "score this text file (its tokens in windows) instead of random prompts");
  sub->add_option("--window", a->window, "tokens per window of --text (default 256)")->check(CLI::Range(2, 4096));
  sub->add_option("--max-tokens", a->max_tokens, "tokens of --text used (default 4096)")->check(CLI::Range(2, 1 << 20));
  sub->add_flag("--perplexity-only", a->perplexity_only,
                "only the perplexity of the model as stored on --text (no comparison)");
  sub->add_flag("--json", a->json, "print one JSON object");
  return [a] { return run_bench_quality(*a); };
}

}  // namespace

MOEOPT_REGISTER_BENCH(setup_bench_quality);

}  // namespace moeopt::cli
