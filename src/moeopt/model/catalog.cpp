// Catalog lookup and model-argument resolution (see catalog.h).
#include "moeopt/model/catalog.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <system_error>

namespace moeopt {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// "-v0.1", "-0924", "-v2": a trailing version a user may leave out.
bool is_version_suffix(const std::string& rest) {
  if (rest.size() < 2 || rest[0] != '-') return false;
  size_t i = 1;
  if (rest[i] == 'v' || rest[i] == 'V') ++i;
  if (i >= rest.size() || !std::isdigit(static_cast<unsigned char>(rest[i]))) return false;
  for (; i < rest.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(rest[i])) && rest[i] != '.') return false;
  return true;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

std::string catalog_dir(const std::string& data_root) {
  return (fs::path(data_root) / "models" / "catalog").string();
}

Result<std::vector<std::string>> list_catalog(const std::string& data_root) {
  const fs::path dir = catalog_dir(data_root);
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return make_error(ErrorCode::kNotFound, "model catalog {} not found (set MOEOPT_HOME to the source tree)",
                      dir.string());
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_directory(ec2) && fs::is_regular_file(it->path() / "config.json", ec2))
      names.push_back(it->path().filename().string());
  }
  if (ec) return make_error(ErrorCode::kIoError, "cannot list {}: {}", dir.string(), ec.message());
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    return lower(a) < lower(b);
  });
  return names;
}

Result<std::string> catalog_config_path(const std::string& data_root, const std::string& name) {
  auto names = list_catalog(data_root);
  if (!names.ok()) return names.status();
  std::string want = lower(name);
  if (auto slash = want.rfind('/'); slash != std::string::npos) want = want.substr(slash + 1);
  auto path_of = [&](const std::string& n) {
    return (fs::path(catalog_dir(data_root)) / n / "config.json").string();
  };
  for (const auto& n : *names)
    if (lower(n) == want) return path_of(n);
  std::vector<std::string> versioned;
  for (const auto& n : *names) {
    const std::string ln = lower(n);
    if (!want.empty() && ln.size() > want.size() && ln.compare(0, want.size(), want) == 0 &&
        is_version_suffix(ln.substr(want.size())))
      versioned.push_back(n);
  }
  if (versioned.size() == 1) return path_of(versioned[0]);
  if (versioned.size() > 1)
    return make_error(ErrorCode::kInvalidArgument, "model name '{}' is ambiguous: {}", name, join(versioned));
  return make_error(ErrorCode::kNotFound,
                    "'{}' is not a file, a directory or a catalog model (catalog: {})", name, join(*names));
}

Result<ModelSource> resolve_model_source(const std::string& arg, const std::string& data_root) {
  if (arg.empty()) return make_error(ErrorCode::kInvalidArgument, "empty model argument");
  ModelSource s;
  std::error_code ec;
  const fs::path p(arg);
  if (fs::is_directory(p, ec)) {
    const fs::path cfg = p / "config.json";
    if (!fs::exists(cfg, ec) && !fs::exists(p / "config.json.gz", ec))
      return make_error(ErrorCode::kNotFound, "{}: directory has no config.json", arg);
    s.kind = ModelSourceKind::kCheckpointDir;
    s.name = arg;
    s.config_path = fs::exists(cfg, ec) ? cfg.string() : (p / "config.json.gz").string();
    s.checkpoint_dir = arg;
    return s;
  }
  if (fs::exists(p, ec)) {
    s.kind = ModelSourceKind::kConfigFile;
    s.name = arg;
    s.config_path = arg;
    return s;
  }
  // A path-looking argument that does not exist is reported as a missing file, not as an
  // unknown catalog name.
  const bool looks_like_path = arg.find('/') != std::string::npos &&
                               (arg[0] == '/' || arg[0] == '.' || arg.ends_with(".json") ||
                                arg.ends_with(".json.gz") || std::count(arg.begin(), arg.end(), '/') > 1);
  if (looks_like_path) return make_error(ErrorCode::kNotFound, "{}: no such file or directory", arg);
  auto path = catalog_config_path(data_root, arg);
  if (!path.ok()) return path.status();
  s.kind = ModelSourceKind::kCatalog;
  s.name = fs::path(*path).parent_path().filename().string();
  s.config_path = *path;
  return s;
}

}  // namespace moeopt
