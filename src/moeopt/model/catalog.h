// Model catalog: the official config.json of known MoE models, shipped as data files under
// <data root>/models/catalog/<name>/config.json, and resolution of the model argument that
// commands take (a catalog name, a checkpoint directory or a config.json path).
//
// Names are matched case-insensitively ("qwen3-30b-a3b"). An "org/" prefix is ignored
// ("Qwen/Qwen3-30B-A3B"), and a name may leave out a trailing version suffix when that
// leaves exactly one match ("Mixtral-8x7B" -> Mixtral-8x7B-v0.1, "OLMoE-1B-7B" ->
// OLMoE-1B-7B-0924).
#pragma once

#include <string>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt {

// Catalog folder under a data root: <root>/models/catalog.
std::string catalog_dir(const std::string& data_root);
// Catalog names (folder names holding a config.json), sorted case-insensitively.
Result<std::vector<std::string>> list_catalog(const std::string& data_root);
// The config.json path of a catalog model. kNotFound (listing the names) when unknown,
// kInvalidArgument when a shortened name is ambiguous.
Result<std::string> catalog_config_path(const std::string& data_root, const std::string& name);

enum class ModelSourceKind { kCatalog, kCheckpointDir, kConfigFile };

struct ModelSource {
  ModelSourceKind kind = ModelSourceKind::kConfigFile;
  std::string name;            // catalog name, or the path as given
  std::string config_path;     // the config.json to read
  std::string checkpoint_dir;  // set for kCheckpointDir
};

// Resolves `arg`: an existing directory must contain config.json (checkpoint), an existing
// file is the config itself, anything else is looked up in the catalog. Errors name `arg`.
Result<ModelSource> resolve_model_source(const std::string& arg, const std::string& data_root);

}  // namespace moeopt
