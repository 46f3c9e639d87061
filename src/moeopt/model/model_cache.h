// Where a --model argument's weights come from. The embedded default is the trained demo
// model, a checkpoint in the repository (models/tiny-qwen3-moe-novels). Synthetic checkpoints
// are materialised on demand in the cache directory: models/tiny-qwen3-moe (the Qwen3
// vocabulary and chat template with random weights, seed 0) and random-weight copies of
// catalog configs.
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

// Name of the embedded default model: a trained checkpoint, models/<name>/ under the data root.
constexpr const char* kDefaultModelName = "tiny-qwen3-moe-novels";
// Name of the random-weight model with Qwen3's tokenizer (models/<name>/config.json under the
// data root, materialised with seed 0): every code path, meaningless text.
constexpr const char* kRandomModelName = "tiny-qwen3-moe";

// The default model's checkpoint directory under the data root.
std::string default_model_dir(const std::string& data_root);

// Returns a checkpoint directory for `config_path` with random weights (seed), writing it
// on first use. `num_layers` overrides the depth when set. `tokenizer_root` is
// models/tokenizers under the data root.
Result<std::string> materialize_random_checkpoint(const std::string& config_path, uint64_t seed,
                                                  std::optional<int64_t> num_layers,
                                                  const std::string& tokenizer_root);

// Resolves a --model argument: a checkpoint directory is used as is; empty or the default's
// name gives the default's directory; kRandomModelName or a catalog name gives a materialised
// random checkpoint.
Result<std::string> resolve_runnable_model(const std::string& arg, const std::string& data_root,
                                           std::optional<int64_t> num_layers = std::nullopt);

}  // namespace moeopt
