// model_setup.h.
#include "model_setup.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "moeopt/model/catalog.h"
#include "moeopt/model/config.h"
#include "moeopt/model/device_weights.h"
#include "moeopt/model/model_cache.h"
#include "moeopt/model/random_init.h"
#include "moeopt/system/gpu_probe.h"
#include "commands.h"

#if MOEOPT_HAVE_CUDA
#include "moeopt/backend/cuda/cuda_backend.h"
#endif

namespace fs = std::filesystem;

namespace moeopt::cli {

void add_model_flags(CLI::App* sub, ModelArgs* a) {
  sub->add_option("--model", a->model, "checkpoint directory, catalog name or tiny-qwen3-moe (default)");
  sub->add_option("--layers", a->layers, "override the depth of a catalog model")->check(CLI::PositiveNumber);
  sub->add_option("--device", a->device, "cpu (default) or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_flag("--random-weights", a->random_weights,
                "synthetic init-random weights of the config (generated on the GPU with --device cuda)");
  sub->add_option("--weights-seed", a->seed, "seed of --random-weights (default 0)");
}

void add_fp8_weights_flag(CLI::App* sub, ModelArgs* a) {
  sub->add_option_function<std::string>(
         "--fp8-weights", [a](const std::string& v) { a->fp8_weights = v == "on"; },
         "on: quantise the weights to FP8 W8A8 (128x128 blocks) at load, on the device that runs "
         "them (default off)")
      ->check(CLI::IsMember({"on", "off"}));
}

void add_fp8_kv_cache_flag(CLI::App* sub, ModelArgs* a) {
  sub->add_option_function<std::string>(
         "--fp8-kv-cache", [a](const std::string& v) { a->fp8_kv_cache = v == "on"; },
         "on: keep the KV cache in FP8 e4m3 with a scale per token and kv head (about half the "
         "bytes of bf16; lossy, default off)")
      ->check(CLI::IsMember({"on", "off"}));
}

namespace {

// The config a --model argument names, without materialising anything.
Result<std::pair<ModelConfig, std::string>> config_of(const ModelArgs& a) {
  std::string path;
  std::error_code ec;
  if (a.model.empty() || a.model == kDefaultModelName || a.model == kRandomModelName) {
    const std::string name = a.model.empty() ? kDefaultModelName : a.model;
    path = (fs::path(data_root()) / "models" / name / "config.json").string();
  } else if (fs::is_directory(a.model, ec)) {
    path = (fs::path(a.model) / "config.json").string();
  } else {
    MOEOPT_ASSIGN_OR_RETURN(path, catalog_config_path(data_root(), a.model));
  }
  MOEOPT_ASSIGN_OR_RETURN(ModelConfig c, load_model_config(path));
  if (a.layers > 0) c.num_hidden_layers = a.layers;
  return std::make_pair(std::move(c), path);
}

Result<std::unique_ptr<ops::DeviceBackend>> make_backend() {
#if MOEOPT_HAVE_CUDA
  return std::unique_ptr<ops::DeviceBackend>(std::make_unique<cuda::CudaBackend>());
#else
  return make_error(ErrorCode::kUnsupported, "--device cuda: this build of moeopt has no CUDA support "
                    "(configure with -DMOEOPT_CUDA=ON where nvcc is installed)");
#endif
}

// "placing weights: 12.3 / 61.1 GB (5.2 GB/s)" on stderr, at most a few times a second.
std::function<void(uint64_t, uint64_t)> progress_printer() {
  using Clock = std::chrono::steady_clock;
  auto start = std::make_shared<Clock::time_point>(Clock::now());
  auto last = std::make_shared<Clock::time_point>(Clock::time_point{});
  return [start, last](uint64_t done, uint64_t total) {
    auto now = Clock::now();
    if (done < total && now - *last < std::chrono::milliseconds(250)) return;
    *last = now;
    double s = std::chrono::duration<double>(now - *start).count();
    std::fprintf(stderr, "\rplacing weights on the GPU: %.2f / %.2f GB (%.2f GB/s)%s", done / 1e9,
                 total / 1e9, s > 0 ? done / 1e9 / s : 0.0, done >= total ? "\n" : "");
  };
}

}  // namespace

Result<LoadedModel> load_model_for(const ModelArgs& a, const char* cmd) {
  LoadedModel m;
  m.fp8_kv_cache = a.fp8_kv_cache;
  const std::optional<int64_t> layers = a.layers > 0 ? std::optional<int64_t>(a.layers) : std::nullopt;
  if (a.device == "cpu") {
    std::string dir;
    if (a.random_weights) {
      MOEOPT_ASSIGN_OR_RETURN(auto cfg, config_of(a));
      MOEOPT_ASSIGN_OR_RETURN(dir, materialize_random_checkpoint(
                                       cfg.second, a.seed, layers,
                                       (fs::path(data_root()) / "models" / "tokenizers").string()));
    } else {
      MOEOPT_ASSIGN_OR_RETURN(dir, resolve_runnable_model(a.model, data_root(), layers));
    }
    LoadOptions lo;
    lo.format = a.fp8_weights ? WeightFormat::kFp8 : WeightFormat::kAsStored;
    MOEOPT_ASSIGN_OR_RETURN(m.model, load_model(dir, lo));
    m.source = dir;
    m.tokenizer_dir = dir;
    return m;
  }
  MOEOPT_ASSIGN_OR_RETURN(m.backend, make_backend());
  ops::Context ctx;
  ctx.device_backend = m.backend.get();
  DeviceWeightsOptions wo;
  wo.ctx = &ctx;
  wo.progress = progress_printer();
  wo.fp8 = a.fp8_weights;
  std::error_code ec;
  const bool is_default = a.model.empty() || a.model == kDefaultModelName;
  const bool checkpoint = !a.random_weights && (is_default || fs::is_directory(a.model, ec));
  if (checkpoint) {
    std::string dir = a.model;
    if (is_default) {
      MOEOPT_ASSIGN_OR_RETURN(dir, resolve_runnable_model("", data_root()));
    }
    MOEOPT_ASSIGN_OR_RETURN(m.model, load_model_to_device(dir, wo));
    m.source = dir;
    m.tokenizer_dir = dir;
    return m;
  }
  if (!a.random_weights && a.model != kRandomModelName)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: '{}' is a config without weights: add --random-weights to run it on the GPU",
                      cmd, a.model);
  MOEOPT_ASSIGN_OR_RETURN(auto cfg, config_of(a));
  const std::string family = tokenizer_family(cfg.first);
  MOEOPT_ASSIGN_OR_RETURN(m.model, random_model_on_device(std::move(cfg.first), a.seed, wo));
  m.source = "random:" + cfg.second;
  if (!family.empty()) m.tokenizer_dir = (fs::path(data_root()) / "models" / "tokenizers" / family).string();
  return m;
}

Result<std::unique_ptr<ops::DeviceBackend>> make_gpu_backend() {
#if MOEOPT_HAVE_CUDA
  const system::GpuProbe probe = system::probe_gpus();
  if (!probe.has_gpu())
    return make_error(ErrorCode::kUnsupported, "--device cuda: no GPU found ({})",
                      probe.driver_error.empty() ? "the driver reports no device" : probe.driver_error);
#endif
  return make_backend();
}

void use_device(const LoadedModel& m, EngineOptions& eo) {
  eo.device = m.backend.get();
  eo.fp8_kv_cache = m.fp8_kv_cache;
}

}  // namespace moeopt::cli
