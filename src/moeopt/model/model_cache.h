// Synthetic checkpoints materialised on demand in the cache directory: the embedded default
// (models/tiny-qwen3-moe, seed 0) and random-weight copies of catalog configs.
//
// Cache directory: $MOEOPT_CACHE, else $XDG_CACHE_HOME/moeopt, else ~/.cache/moeopt. A
// checkpoint is written into a temporary directory and renamed into place, so a crashed or
// concurrent first use never leaves a half-written model behind. The directory name carries
// a hash of the config, seed and depth, so edits to the config make a fresh copy.
#pragma once

#include <optional>
#include <string>

#include "moeopt/core/status.h"

namespace moeopt {

std::string cache_root();

// Name of the embedded default model (models/<name>/config.json under the data root).
constexpr const char* kDefaultModelName = "tiny-qwen3-moe";

// Returns a checkpoint directory for `config_path` with random weights (seed), writing it
// on first use. `num_layers` overrides the depth when set. `tokenizer_root` is
// models/tokenizers under the data root.
Result<std::string> materialize_random_checkpoint(const std::string& config_path, uint64_t seed,
                                                  std::optional<int64_t> num_layers,
                                                  const std::string& tokenizer_root);

// Resolves a --model argument: a checkpoint directory is used as is; the default model's
// name, or a catalog name, gives a materialised random checkpoint. Empty: the default.
Result<std::string> resolve_runnable_model(const std::string& arg, const std::string& data_root,
                                           std::optional<int64_t> num_layers = std::nullopt);

}  // namespace moeopt
