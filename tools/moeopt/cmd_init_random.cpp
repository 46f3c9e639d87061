// `moeopt init-random --config <catalog-name|config.json> --out DIR [--seed N] [--layers N]
//                     [--dtype bf16|f16|f32] [--fp8 [--fp8-scale-dtype f32|bf16|f16]]`
//
// Writes a complete Hugging Face checkpoint with deterministic synthetic weights
// (model/random_init.h): config.json, safetensors shards of <= 5 GB with an index, the
// family's tokenizer files where we ship a matching one. --fp8 writes the hub's FP8 layout
// (Qwen/Qwen3-30B-A3B-FP8: F8_E4M3 weights + weight_scale_inv per 128x128 block, an fp8
// quantization_config); an FP8 config (e.g. qwen3-30b-a3b-fp8) is written that way anyway.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "commands.h"
#include "moeopt/model/catalog.h"
#include "moeopt/model/config.h"
#include "moeopt/model/random_init.h"

namespace moeopt::cli {
namespace {

struct InitArgs {
  std::string config, out, dtype = "bf16", fp8_scale_dtype = "f32";
  bool fp8 = false;
  uint64_t seed = 0;
  int64_t layers = 0;
  double max_shard_gb = 5.0;
};

int run_init_random(const InitArgs& a) {
  const char* cmd = "init-random";
  auto src = resolve_model_source(a.config, data_root());
  if (!src.ok()) return report_error(cmd, src.status());
  auto config = load_model_config(src->config_path);
  if (!config.ok()) return report_error(cmd, config.status());
  if (a.layers > 0) config->num_hidden_layers = a.layers;
  RandomInitOptions opt;
  opt.seed = a.seed;
  opt.dtype = a.dtype == "f32" ? DType::kF32 : a.dtype == "f16" ? DType::kF16 : DType::kBF16;
  opt.max_shard_bytes = uint64_t(a.max_shard_gb * 1e9);
  opt.fp8 = a.fp8;
  opt.fp8_scale_dtype = a.fp8_scale_dtype == "bf16" ? DType::kBF16
                        : a.fp8_scale_dtype == "f16" ? DType::kF16 : DType::kF32;
  opt.tokenizer_root = data_root() + "/models/tokenizers";
  opt.progress = [](uint64_t done, uint64_t total) {
    std::fprintf(stderr, "\rinit-random: %.2f / %.2f GB", double(done) / 1e9, double(total) / 1e9);
  };
  auto res = write_random_checkpoint(*config, a.out, opt);
  std::fprintf(stderr, "\n");
  if (!res.ok()) return report_error(cmd, res.status());
  std::printf("wrote %s: %zu tensors, %.3f GB in %zu shard(s)%s%s\n", a.out.c_str(), res->num_tensors,
              double(res->total_bytes) / 1e9, res->num_shards,
              (a.fp8 || config->fp8)
                  ? fmt::format(", fp8 e4m3 weights with {} 128x128 block scales", a.fp8_scale_dtype).c_str()
                  : "",
              res->tokenizer.empty() ? "" : fmt::format(", {} tokenizer", res->tokenizer).c_str());
  return 0;
}

RunFn setup_init_random(CLI::App& app) {
  auto a = std::make_shared<InitArgs>();
  CLI::App* sub = app.add_subcommand("init-random", "Write a synthetic checkpoint (random weights) of any config");
  sub->add_option("--config", a->config, "catalog name or config.json")->required();
  sub->add_option("--out", a->out, "output directory")->required();
  sub->add_option("--seed", a->seed, "random seed (default 0)");
  sub->add_option("--layers", a->layers, "override num_hidden_layers")->check(CLI::PositiveNumber);
  sub->add_option("--dtype", a->dtype, "weight dtype (default bf16)")->check(CLI::IsMember({"bf16", "f16", "f32"}));
  sub->add_flag("--fp8", a->fp8, "write an FP8 checkpoint (hub layout: F8_E4M3 + weight_scale_inv, 128x128 blocks)");
  sub->add_option("--fp8-scale-dtype", a->fp8_scale_dtype, "dtype of weight_scale_inv (default f32; Qwen uses bf16)")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  sub->add_option("--max-shard-gb", a->max_shard_gb, "largest shard in GB (default 5)")->check(CLI::PositiveNumber);
  return [a] { return run_init_random(*a); };
}

}  // namespace

MOEOPT_REGISTER_COMMAND(setup_init_random);

}  // namespace moeopt::cli
