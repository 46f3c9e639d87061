#include "moeopt/model/model_cache.h"

#include <cstdlib>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "moeopt/core/file_io.h"
#include "moeopt/core/hash.h"
#include "moeopt/core/logging.h"
#include "moeopt/model/catalog.h"
#include "moeopt/model/config.h"
#include "moeopt/model/random_init.h"

namespace fs = std::filesystem;

namespace moeopt {
namespace {

// Bump when init-random's values or file layout change: old cache entries then stop matching.
constexpr int kRandomInitFormat = 1;

}  // namespace

std::string cache_root() {
  if (const char* c = std::getenv("MOEOPT_CACHE"); c && *c) return c;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return (fs::path(x) / "moeopt").string();
  if (const char* h = std::getenv("HOME"); h && *h) return (fs::path(h) / ".cache" / "moeopt").string();
  return (fs::temp_directory_path() / "moeopt-cache").string();
}

Result<std::string> materialize_random_checkpoint(const std::string& config_path, uint64_t seed,
                                                  std::optional<int64_t> num_layers,
                                                  const std::string& tokenizer_root) {
  MOEOPT_ASSIGN_OR_RETURN(std::string text, read_file_or_gz(config_path, 16 << 20));
  MOEOPT_ASSIGN_OR_RETURN(ModelConfig config, parse_model_config_text(text, config_path));
  if (num_layers) {
    if (*num_layers <= 0)
      return make_error(ErrorCode::kInvalidArgument, "--layers must be > 0, got {}", *num_layers);
    config.num_hidden_layers = *num_layers;
  }
  std::string key = fmt::format("{}|{}|{}|{}", text, seed, config.num_hidden_layers, kRandomInitFormat);
  std::string stem = fs::path(config_path).parent_path().filename().string();
  fs::path dir = fs::path(cache_root()) / fmt::format("{}-s{}-L{}-{:016x}", stem, seed,
                                                       config.num_hidden_layers, fnv1a64(key));
  std::error_code ec;
  if (fs::exists(dir / "config.json", ec)) return dir.string();
  fs::create_directories(dir.parent_path(), ec);
  if (ec) return make_error(ErrorCode::kIoError, "{}: cannot create cache: {}", dir.parent_path().string(), ec.message());
  fs::path tmp = dir.string() + fmt::format(".tmp{}", std::random_device{}());
  log::info("writing random checkpoint of {} to {}", config_path, dir.string());
  RandomInitOptions opt;
  opt.seed = seed;
  opt.tokenizer_root = tokenizer_root;
  auto res = write_random_checkpoint(config, tmp.string(), opt);
  if (!res.ok()) {
    fs::remove_all(tmp, ec);
    return res.status();
  }
  fs::rename(tmp, dir, ec);
  if (ec) {
    fs::remove_all(tmp, ec);  // another process won the race; use its copy
    if (!fs::exists(dir / "config.json"))
      return make_error(ErrorCode::kIoError, "{}: cannot move checkpoint into place", dir.string());
  }
  return dir.string();
}

std::string default_model_dir(const std::string& data_root) {
  return (fs::path(data_root) / "models" / kDefaultModelName).string();
}

Result<std::string> resolve_runnable_model(const std::string& arg, const std::string& data_root,
                                           std::optional<int64_t> num_layers) {
  std::string tokenizers = (fs::path(data_root) / "models" / "tokenizers").string();
  std::error_code ec;
  if (arg.empty() || arg == kDefaultModelName) {
    if (num_layers)
      return make_error(ErrorCode::kInvalidArgument, "--layers applies to catalog models, not to the "
                        "trained default {}", kDefaultModelName);
    const std::string dir = default_model_dir(data_root);
    if (!fs::exists(fs::path(dir) / "model.safetensors", ec))
      return make_error(ErrorCode::kNotFound, "{}: the default model's weights (model.safetensors) are "
                        "missing", dir);
    return dir;
  }
  if (arg == kRandomModelName) {
    fs::path cfg = fs::path(data_root) / "models" / kRandomModelName / "config.json";
    return materialize_random_checkpoint(cfg.string(), 0, num_layers, tokenizers);
  }
  if (fs::is_directory(arg, ec)) {
    if (num_layers)
      return make_error(ErrorCode::kInvalidArgument, "--layers applies to catalog models, not to checkpoint {}", arg);
    return arg;
  }
  MOEOPT_ASSIGN_OR_RETURN(ModelSource src, resolve_model_source(arg, data_root));
  if (src.kind == ModelSourceKind::kCheckpointDir) return src.checkpoint_dir;
  return materialize_random_checkpoint(src.config_path, 0, num_layers, tokenizers);
}

}  // namespace moeopt
