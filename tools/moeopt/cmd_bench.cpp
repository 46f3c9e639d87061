// `moeopt bench [--model DIR|name] [--batch-size N] [--input-len N] [--output-len N] [--json]`
// and the parent of `moeopt bench <name>` subcommands (bench_commands.h).
//
// Alone, `bench` measures the engine itself, with no HTTP: N random prompts of input-len
// tokens, each generating exactly output-len tokens (EOS ignored), all submitted at once.
// It reports the prefill time (first step to every sequence's first token), the decode rate
// and overall tokens/s. Without --model the embedded default (tiny-qwen3-moe) is used.
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_commands.h"
#include "commands.h"
#include "model_setup.h"
#include "moeopt/engine/engine.h"
#include "moeopt/model/model.h"
#include "moeopt/model/model_cache.h"

namespace moeopt::cli {

std::vector<BenchSetupFn>& BenchRegistry::all() {
  static std::vector<BenchSetupFn> fns;
  return fns;
}

namespace {

struct OfflineArgs {
  ModelArgs m;
  int batch_size = 8;
  int input_len = 128;
  int output_len = 128;
  int threads = 0;
  uint64_t seed = 0;
  bool json = false;
};

int run_offline(const OfflineArgs& a) {
  const char* cmd = "bench";
  auto lm = load_model_for(a.m, cmd);
  if (!lm.ok()) return report_error(cmd, lm.status());
  const std::string* dir = &lm->source;
  const int64_t vocab = lm->model->config().vocab_size;
  EngineOptions eo;
  eo.num_threads = a.threads;
  eo.max_num_seqs = std::max(a.batch_size, 1);
  eo.max_num_batched_tokens = std::max(2048, a.input_len);
  use_device(*lm, eo);
  auto engine = Engine::create(std::move(lm->model), eo);
  if (!engine.ok()) return report_error(cmd, engine.status());
  Engine& e = **engine;

  std::mt19937_64 rng(a.seed);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(std::min<int64_t>(vocab, 100000) - 1));
  for (int i = 0; i < a.batch_size; ++i) {
    Request r;
    for (int t = 0; t < a.input_len; ++t) r.prompt.push_back(tok(rng));
    r.params.temperature = 0;
    r.params.max_tokens = a.output_len;
    r.params.ignore_eos = true;
    auto id = e.add_request(std::move(r));
    if (!id.ok()) return report_error(cmd, id.status());
  }
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  std::optional<Clock::time_point> prefilled;
  int64_t generated = 0, with_first = 0;
  while (e.has_unfinished()) {
    auto outs = e.step();
    if (!outs.ok()) return report_error(cmd, outs.status());
    for (const auto& o : *outs) {
      if (o.generated_tokens == 1 && !o.new_tokens.empty()) ++with_first;
      generated += int64_t(o.new_tokens.size());
    }
    if (!prefilled && with_first == a.batch_size) prefilled = Clock::now();
  }
  auto t1 = Clock::now();
  double total = std::chrono::duration<double>(t1 - t0).count();
  double prefill = prefilled ? std::chrono::duration<double>(*prefilled - t0).count() : total;
  double decode = total - prefill;
  int64_t decode_tokens = generated - a.batch_size;
  nlohmann::json j = {{"model", *dir},
                      {"batch_size", a.batch_size},
                      {"input_len", a.input_len},
                      {"output_len", a.output_len},
                      {"seconds", total},
                      {"prefill_seconds", prefill},
                      {"prefill_tokens_per_s", double(a.batch_size) * a.input_len / prefill},
                      {"decode_tokens_per_s", decode > 0 ? double(decode_tokens) / decode : 0.0},
                      {"output_tokens_per_s", double(generated) / total},
                      {"total_tokens_per_s", double(generated + int64_t(a.batch_size) * a.input_len) / total},
                      {"steps", e.num_steps()}};
  if (a.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("moeopt bench (offline engine, CPU backend): %s\n", dir->c_str());
  std::printf("  batch %d x (input %d + output %d) tokens, %lld steps\n", a.batch_size, a.input_len,
              a.output_len, (long long)e.num_steps());
  std::printf("  %-22s %10.3f s\n", "total time", total);
  std::printf("  %-22s %10.3f s  (%.1f prompt tokens/s)\n", "prefill", prefill,
              j["prefill_tokens_per_s"].get<double>());
  std::printf("  %-22s %10.1f tokens/s\n", "decode", j["decode_tokens_per_s"].get<double>());
  std::printf("  %-22s %10.1f tokens/s\n", "output", j["output_tokens_per_s"].get<double>());
  std::printf("  %-22s %10.1f tokens/s\n", "total (in + out)", j["total_tokens_per_s"].get<double>());
  return 0;
}

RunFn setup_bench(CLI::App& app) {
  auto a = std::make_shared<OfflineArgs>();
  CLI::App* sub =
      app.add_subcommand("bench", "Benchmarks: the engine offline, or `bench <name>` (see below)");
  sub->require_subcommand(0, 1);
  add_model_flags(sub, &a->m);
  sub->add_option("--batch-size", a->batch_size, "sequences run together (default 8)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--input-len", a->input_len, "prompt tokens per sequence (default 128)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--output-len", a->output_len, "generated tokens per sequence (default 128)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--threads", a->threads, "CPU threads (default: all)");
  sub->add_option("--seed", a->seed, "seed of the random prompts (default 0)");
  sub->add_flag("--json", a->json, "print JSON");
  auto runs = std::make_shared<std::vector<std::pair<CLI::App*, RunFn>>>();
  for (BenchSetupFn fn : BenchRegistry::all()) {
    size_t before = sub->get_subcommands({}).size();
    RunFn run = fn(*sub);
    auto subs = sub->get_subcommands({});
    if (subs.size() > before) runs->emplace_back(subs.back(), std::move(run));
  }
  return [a, runs] {
    for (auto& [s, run] : *runs)
      if (s->parsed()) return run();
    return run_offline(*a);
  };
}

}  // namespace

MOEOPT_REGISTER_COMMAND(setup_bench);

}  // namespace moeopt::cli
