// `moeopt bench quality [--model DIR|name] [--random-weights] [--prompts N] [--len L]
//                       [--seed S] [--text FILE [--window W] [--max-tokens T]]
//                       [--lossy fp8-weights,fp8-kv-cache,sparsity-2-4|sparsity-2-4-wanda]
//                       [--calibration-tokens N] [--perplexity-only] [--device cpu|cuda] [--json]`
//
// With --perplexity-only (needs --text): only the perplexity of the model as stored on the
// text, no comparison (model/quality.h perplexity; the number the demo model's test checks
// against transformers).
//
// The measured cost of the lossy options in --lossy (default fp8-weights): the same tokens
// through the reference (the BF16 checkpoint, or an FP8 checkpoint's weights dequantised to
// f32, with an f32 KV cache) and the test model, reporting KL divergence and top-1 agreement
// of the next-token distributions at every position (model/quality.h). fp8-weights: FP8 W8A8
// (ops/fp8.h; the BF16 checkpoint quantised at load, or the FP8 checkpoint as stored);
// fp8-kv-cache: e4m3 KV pages with per token and kv head scales (ops/attention.h);
// sparsity-2-4: the routed experts pruned 2:4 by magnitude along K at load (ops/sparsity.h;
// the pruned dense weights, the reference of a sparse kernel); sparsity-2-4-wanda: the same
// with |w| * ||x_k|| as the criterion (activation-aware, model/quality.h expert_importance),
// calibrated on the first --calibration-tokens tokens of --text. With either 2:4 criterion
// those tokens are not scored, so the two criteria are compared on the same positions.
// Any combination, one of the two 2:4 criteria.
// The tokens are random prompts, or with --text the file's tokens (the model's tokenizer, no
// special tokens) in non-overlapping windows of W, and then both models' perplexity of the
// text too. On random weights (--random-weights, tiny-qwen3-moe, catalog configs) the output
// says so: the numbers then bound the numerics, not task quality; the default model is trained.
//
// --device cuda runs both models on the GPU (comparison and --perplexity-only): the same
// checkpoint directory (--random-weights materialises the random checkpoint in the cache, as
// on the CPU), uploaded; fp8-weights quantised on the device (bit-equal to the CPU's codes),
// 2:4 pruned on the host before the upload, sparsity-2-4-wanda calibrated on the CPU. The GPU
// runs bf16 activations and its reference's KV cache is bf16 (its attention reads bf16 or
// fp8 pages, not f32); the output says so. FP8 checkpoints are refused there (their
// reference, the dequantised f32 weights, runs on the CPU only), and so is a machine without
// a GPU (exit 2). The CPU reference defines the numerics; tests/unit/cuda_quality_test.cpp
// checks the GPU harness against it on the demo model (GPU machine only).
#include <algorithm>
#include <cstdio>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_commands.h"
#include "model_setup.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/model/device_weights.h"
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
  std::vector<std::string> lossy{"fp8-weights"};
  int calibration_tokens = 512;  // sparsity-2-4-wanda: the text's first tokens calibrate
  bool perplexity_only = false;
  bool json = false;
};

// The lossy options a test model applies (--lossy).
struct Lossy {
  bool fp8_weights = false, fp8_kv = false, sparsity_2_4 = false, wanda = false;
};

Result<Lossy> parse_lossy(const std::vector<std::string>& names) {
  Lossy l;
  for (const std::string& n : names) {
    if (n == "fp8-weights") l.fp8_weights = true;
    else if (n == "fp8-kv-cache") l.fp8_kv = true;
    else if (n == "sparsity-2-4") l.sparsity_2_4 = true;
    else if (n == "sparsity-2-4-wanda") l.sparsity_2_4 = l.wanda = true;
    else
      return make_error(ErrorCode::kInvalidArgument,
                        "--lossy: '{}' is not fp8-weights, fp8-kv-cache, sparsity-2-4 or "
                        "sparsity-2-4-wanda", n);
  }
  if (l.wanda && std::count(names.begin(), names.end(), "sparsity-2-4"))
    return make_error(ErrorCode::kInvalidArgument,
                      "--lossy: sparsity-2-4 and sparsity-2-4-wanda are two criteria for one pruning");
  if (!l.fp8_weights && !l.fp8_kv && !l.sparsity_2_4)
    return make_error(ErrorCode::kInvalidArgument, "--lossy: name at least one lossy option");
  return l;
}

// The prompts: random token ids, or the text file's tokens in windows. With `calibration`
// > 0 the text's first `calibration` tokens go to *calibration_windows (same windows) and the
// prompts start after them.
Result<std::vector<std::vector<int32_t>>> quality_prompts(
    const QualityArgs& a, const LoadedModel& lm, int64_t vocab, int calibration = 0,
    std::vector<std::vector<int32_t>>* calibration_windows = nullptr) {
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
  if (calibration > 0) {
    if (int64_t(ids.size()) < int64_t(calibration) + 2)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: {} tokens of text, need --calibration-tokens {} + 2 to calibrate and score",
                        a.text, ids.size(), calibration);
    *calibration_windows = token_windows({ids.begin(), ids.begin() + calibration}, a.window);
    ids.erase(ids.begin(), ids.begin() + calibration);
  }
  if (int64_t(ids.size()) > a.max_tokens) ids.resize(size_t(a.max_tokens));
  prompts = token_windows(ids, a.window);
  if (prompts.empty())
    return make_error(ErrorCode::kInvalidArgument, "{}: fewer than 2 tokens of text", a.text);
  return prompts;
}

// Perplexity of `model` (the checkpoint as stored, on the device of --device) on the text
// (--perplexity-only).
int run_perplexity_only(const QualityArgs& a, const LoadedModel& lm, Model& model, const ops::Context& ctx,
                        bool gpu) {
  const char* cmd = "bench quality";
  auto prompts = quality_prompts(a, lm, model.config().vocab_size);
  if (!prompts.ok()) return report_error(cmd, prompts.status());
  std::vector<int32_t> ids;
  for (const auto& w : *prompts) ids.insert(ids.end(), w.begin(), w.end());
  auto r = perplexity(model, ctx, ids, a.window);
  if (!r.ok()) return report_error(cmd, r.status());
  if (a.json) {
    nlohmann::json j = {{"model", lm.source},    {"text", a.text},
                        {"window", a.window},    {"scored_tokens", r->scored_tokens},
                        {"mean_nll_nats", r->mean_nll}, {"perplexity", r->perplexity}};
    if (gpu) j.update({{"device", "cuda"}, {"kv_cache", "bf16"}, {"activations", "bf16"}});
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("perplexity of %s on %s (%lld scored tokens, windows of %d): %.4f (%.4f nats per token)%s\n",
                lm.source.c_str(), a.text.c_str(), (long long)r->scored_tokens, a.window,
                r->perplexity, r->mean_nll, gpu ? "; on the GPU: bf16 activations, bf16 KV cache" : "");
  }
  return 0;
}

int run_bench_quality(QualityArgs& a) {
  const char* cmd = "bench quality";
  const bool gpu = a.m.device == "cuda";
  if (a.perplexity_only && a.text.empty())
    return report_error(cmd, Status(ErrorCode::kInvalidArgument, "--perplexity-only needs --text FILE"));
  auto lossy = parse_lossy(a.lossy);
  if (!lossy.ok()) return report_error(cmd, lossy.status());
  if (lossy->wanda && a.text.empty())
    return report_error(cmd, Status(ErrorCode::kInvalidArgument,
                                    "sparsity-2-4-wanda calibrates on --text FILE: give one"));
  // The GPU first: without one, one line and exit 2 before anything is loaded. Declared
  // before the models so it outlives their device memory.
  std::unique_ptr<ops::DeviceBackend> backend;
  if (gpu) {
    auto b = make_gpu_backend();
    if (!b.ok()) return report_error(cmd, b.status());
    backend = std::move(*b);
  }
  const int set_aside = lossy->sparsity_2_4 && !a.text.empty() ? a.calibration_tokens : 0;
  // The checkpoint directory: load_model_for resolves names and --random-weights on the CPU
  // (a random checkpoint is materialised in the cache, on either device, so both devices read
  // the same weights and 2:4 pruning has a checkpoint to prune); its model is mmap'd.
  ModelArgs host_args = a.m;
  host_args.device = "cpu";
  auto base = load_model_for(host_args, cmd);
  if (!base.ok()) return report_error(cmd, base.status());
  const std::string dir = base->source;
  ThreadPool pool(0);
  const ops::Context ctx{.pool = &pool, .device_backend = backend.get()};
  // One loader for both devices: the LoadOptions on the CPU; on the GPU the same choices as
  // DeviceWeightsOptions (fp8: quantised on the device, bit-equal to the CPU's; 2:4: pruned
  // on the host before the upload).
  auto load = [&](const LoadOptions& lo) -> Result<std::unique_ptr<Model>> {
    if (!gpu) return load_model(dir, lo);
    DeviceWeightsOptions wo;
    wo.ctx = &ctx;
    wo.fp8 = lo.format == WeightFormat::kFp8;
    wo.sparsity_2_4 = lo.sparsity_2_4;
    wo.sparsity_importance = lo.sparsity_importance;
    return load_model_to_device(dir, wo);
  };
  if (a.perplexity_only) {
    if (!gpu) return run_perplexity_only(a, *base, *base->model, ctx, false);
    auto on_gpu = load(LoadOptions{});
    if (!on_gpu.ok()) return report_error(cmd, on_gpu.status());
    return run_perplexity_only(a, *base, **on_gpu, ctx, true);
  }
  const bool fp8_ckpt = base->model->config().fp8.has_value();
  if (gpu && fp8_ckpt)
    return report_error(cmd, Status(ErrorCode::kUnsupported,
                                    fmt::format("--device cuda: {} is an FP8 checkpoint, whose reference (its "
                                                "weights dequantised to f32) runs on the CPU only: use --device cpu",
                                                dir)));
  LoadOptions ref_opt, test_opt;
  ref_opt.ctx.pool = test_opt.ctx.pool = &pool;
  ref_opt.format = fp8_ckpt ? WeightFormat::kDequantized : WeightFormat::kAsStored;
  test_opt.format = !lossy->fp8_weights ? ref_opt.format
                    : fp8_ckpt          ? WeightFormat::kAsStored
                                        : WeightFormat::kFp8;
  test_opt.sparsity_2_4 = lossy->sparsity_2_4;
  std::vector<std::vector<int32_t>> calibration;
  auto prompts = quality_prompts(a, *base, base->model->config().vocab_size, set_aside,
                                 &calibration);
  if (!prompts.ok()) return report_error(cmd, prompts.status());
  ExpertImportance importance;
  if (lossy->wanda) {
    // On the CPU on either device (the CPU MoE collects the statistics).
    auto imp = expert_importance(dir, ops::Context{.pool = &pool}, calibration);
    if (!imp.ok()) return report_error(cmd, imp.status());
    importance = std::move(*imp);
    test_opt.sparsity_importance = &importance;
  }
  auto ref = load(ref_opt);
  if (!ref.ok()) return report_error(cmd, ref.status());
  // With the reference's weights (only fp8-kv-cache) the test model is the reference model
  // with another cache.
  const bool own_weights = lossy->fp8_weights || lossy->sparsity_2_4;
  Result<std::unique_ptr<Model>> test_loaded = std::unique_ptr<Model>();
  if (own_weights) {
    test_loaded = load(test_opt);
    if (!test_loaded.ok()) return report_error(cmd, test_loaded.status());
  }
  Model& test = own_weights ? **test_loaded : **ref;
  // The test model's cache: FP8, or the reference cache of its device (f32 on the CPU, bf16
  // on the GPU: the CUDA attention reads no f32 pages).
  const std::optional<DType> test_kv =
      lossy->fp8_kv ? std::optional<DType>(DType::kF8E4M3) : std::nullopt;
  auto r = compare_models(**ref, test, ctx, *prompts, test_kv);
  if (!r.ok()) return report_error(cmd, r.status());
  // Materialised random checkpoints live in the cache; a checkpoint directory (the trained
  // default included) has real weights.
  const bool random = a.m.random_weights || dir.rfind(cache_root(), 0) == 0;
  const char* plain_kv = gpu ? "bf16 KV cache" : "f32 KV cache";
  const std::string ref_name = fmt::format(
      "{}, {}", fp8_ckpt ? "f32 on the dequantised FP8 weights" : "the checkpoint's own weights (bf16)", plain_kv);
  const std::string test_name = fmt::format(
      "{}{}, {}",
      !lossy->fp8_weights ? "the reference's weights"
      : fp8_ckpt          ? "FP8 W8A8 as stored"
                          : "FP8 W8A8, quantised at load (128x128 blocks)",
      !lossy->sparsity_2_4 ? ""
      : lossy->wanda       ? fmt::format(", routed experts pruned 2:4 by |w| * ||x|| (calibrated on the text's "
                                         "first {} tokens, not scored; {} projections seen)",
                                         a.calibration_tokens, importance.by_tensor.size())
                           : fmt::format(", routed experts pruned 2:4 by magnitude{}",
                                         set_aside ? fmt::format(" (the text's first {} tokens not scored)", set_aside)
                                                   : std::string()),
      lossy->fp8_kv ? "FP8 KV cache (e4m3, a scale per token and kv head)" : plain_kv);
  std::string lossy_names;
  for (const std::string& n : a.lossy) lossy_names += (lossy_names.empty() ? "" : "+") + n;
  const char* note = random ? "random init-random weights: these numbers bound the numerics of the format, "
                              "not its task quality"
                            : "the checkpoint's weights";
  const std::string tokens =
      a.text.empty() ? fmt::format("{} random prompts of {} tokens", a.prompts, a.len)
                     : fmt::format("{}: {} windows of up to {} tokens", a.text, prompts->size(), a.window);
  if (a.json) {
    nlohmann::json j = {{"model", dir}, {"lossy", a.lossy}, {"reference", ref_name}, {"test", test_name},
                        {"test_kv_cache", lossy->fp8_kv ? "fp8_e4m3" : gpu ? "bf16" : "f32"},
                        {"weights", random ? "random" : "checkpoint"}, {"note", note},
                        {"tokens", tokens}, {"positions", r->positions},
                        {"mean_kl_nats", r->mean_kl}, {"max_kl_nats", r->max_kl},
                        {"top1_agreement", r->top1_agreement}};
    if (gpu) j.update({{"device", "cuda"}, {"reference_kv_cache", "bf16"}, {"activations", "bf16"}});
    if (!a.text.empty())
      j.update({{"scored_tokens", r->scored_tokens}, {"reference_perplexity", r->reference_perplexity},
                {"test_perplexity", r->test_perplexity}});
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("quality of %s on %s\n  reference: %s\n  test:      %s\n  weights:   %s\n"
                "  %lld positions (%s): KL mean %.3g nats, max %.3g; top-1 agreement %.4f\n",
                lossy_names.c_str(), dir.c_str(), ref_name.c_str(), test_name.c_str(), note,
                (long long)r->positions, tokens.c_str(),
                r->mean_kl, r->max_kl, r->top1_agreement);
    if (gpu)
      std::printf("  device:    the GPU, both models: bf16 activations, f32 logits; the reference's KV cache is "
                  "bf16 (the GPU has no f32 cache)\n");
    if (!a.text.empty())
      std::printf("  perplexity of the text (%lld scored tokens): reference %.4f, test %.4f (%+.2f%%)\n",
                  (long long)r->scored_tokens, r->reference_perplexity, r->test_perplexity,
                  100.0 * (r->test_perplexity / r->reference_perplexity - 1.0));
  }
  return 0;
}

RunFn setup_bench_quality(CLI::App& bench) {
  auto a = std::make_shared<QualityArgs>();
  CLI::App* sub = bench.add_subcommand(
      "quality", "KL divergence, top-1 agreement and perplexity of FP8 weights / FP8 KV cache / 2:4 experts against BF16");
  add_model_flags(sub, &a->m);
  sub->add_option("--prompts", a->prompts, "random prompts (default 4)")->check(CLI::Range(1, 1000));
  sub->add_option("--len", a->len, "tokens per prompt (default 32)")->check(CLI::Range(1, 4096));
  sub->add_option("--seed", a->seed, "seed of the prompts (default 0)");
  sub->add_option("--text", a->text, "score this text file (its tokens in windows) instead of random prompts");
  sub->add_option("--window", a->window, "tokens per window of --text (default 256)")->check(CLI::Range(2, 4096));
  sub->add_option("--max-tokens", a->max_tokens, "tokens of --text used (default 4096)")->check(CLI::Range(2, 1 << 20));
  sub->add_option("--lossy", a->lossy,
                  "lossy options of the test model, comma-separated: fp8-weights, fp8-kv-cache, sparsity-2-4 "
                  "(default fp8-weights); sparsity-2-4-wanda instead of sparsity-2-4 for the activation-aware criterion")
      ->delimiter(',');
  sub->add_option("--calibration-tokens", a->calibration_tokens,
                  "sparsity-2-4(-wanda): the first N tokens of --text calibrate and are not scored (default 512)")
      ->check(CLI::Range(2, 1 << 20));
  sub->add_flag("--perplexity-only", a->perplexity_only,
                "only the perplexity of the model as stored on --text (no comparison)");
  sub->add_flag("--json", a->json, "print one JSON object");
  return [a] { return run_bench_quality(*a); };
}

}  // namespace

MOEOPT_REGISTER_BENCH(setup_bench_quality);

}  // namespace moeopt::cli
