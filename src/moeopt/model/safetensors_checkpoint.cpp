// Checkpoint: the set of safetensors files making up a model, found from a directory, an
// index file (model.safetensors.index.json) or a single .safetensors file.
//
// The index is untrusted input too: shard names must be plain file names in the index's
// directory (no path components, so "../x" or "/etc/x" cannot point elsewhere), each
// listed tensor must be in its shard, and each shard may only hold tensors the index
// assigns to it, which also rules out a tensor stored in two shards.
#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/core/json_limits.h"
#include "moeopt/model/safetensors.h"

namespace moeopt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Index files are small (a line per tensor); DeepSeek-V3's is ~9 MB.
constexpr size_t kMaxIndexBytes = size_t(256) << 20;

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// A shard name from the index must be a plain file name.
bool is_plain_file_name(const std::string& n) {
  if (n.empty() || n == "." || n == "..") return false;
  for (char c : n)
    if (c == '/' || c == '\\' || c == '\0') return false;
  return true;
}

}  // namespace

Result<SafetensorsIndex> parse_safetensors_index(std::string_view json_text,
                                                 const std::string& source) {
  json root;
  try {
    Status bounded = check_json_text(json_text);  // nesting and size limits (core/json_limits.h)
    if (!bounded.ok()) return Status(ErrorCode::kCorruptData, source + ": " + bounded.message());
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    std::string what = e.what();
    auto close = what.find("] ");
    what = close == std::string::npos ? what : what.substr(close + 2);
    // Parse errors may quote raw bytes: keep the message printable and one line.
    for (char& c : what)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    return make_error(ErrorCode::kCorruptData, "{}: not valid JSON: {}", source, what);
  }
  if (!root.is_object())
    return make_error(ErrorCode::kCorruptData, "{}: not a JSON object", source);
  SafetensorsIndex index;
  if (auto m = root.find("metadata"); m != root.end() && !m->is_null()) {
    if (!m->is_object())
      return make_error(ErrorCode::kCorruptData, "{}: 'metadata' is not an object", source);
    for (auto it = m->begin(); it != m->end(); ++it)
      index.metadata[it.key()] =
          it->is_string() ? it->get<std::string>()
                          : it->dump(-1, ' ', false, json::error_handler_t::replace);
  }
  auto wm = root.find("weight_map");
  if (wm == root.end() || !wm->is_object())
    return make_error(ErrorCode::kCorruptData, "{}: missing or non-object 'weight_map'", source);
  std::set<std::string> shards;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it->is_string())
      return make_error(ErrorCode::kCorruptData, "{}: weight_map['{}'] is not a string", source,
                        it.key());
    const std::string& shard = it->get_ref<const std::string&>();
    if (!is_plain_file_name(shard))
      return make_error(ErrorCode::kCorruptData,
                        "{}: weight_map['{}'] = '{}' is not a file name in the index's directory",
                        source, it.key(), shard);
    shards.insert(shard);
    index.weight_map.emplace(it.key(), shard);
  }
  index.shards.assign(shards.begin(), shards.end());
  return index;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors_) n += t.nbytes;
  return n;
}

const SafetensorsTensorInfo* Checkpoint::find(std::string_view name) const {
  auto it = where_.find(std::string(name));
  if (it == where_.end()) return nullptr;
  return files_[it->second.first].find(name);
}

const SafetensorsFile* Checkpoint::file_of(std::string_view name) const {
  auto it = where_.find(std::string(name));
  return it == where_.end() ? nullptr : &files_[it->second.first];
}

Result<TensorView> Checkpoint::view(std::string_view name) const {
  auto it = where_.find(std::string(name));
  if (it == where_.end())
    return make_error(ErrorCode::kNotFound, "checkpoint has no tensor named '{}'", name);
  return files_[it->second.first].view(name);
}

Result<Checkpoint> Checkpoint::open(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return make_error(ErrorCode::kNotFound, "{}: no such file or directory", path);

  Checkpoint ck;
  // Adds a file's tensors; a name already seen in another file is an error.
  auto add_file = [&ck](SafetensorsFile f) -> Status {
    size_t fi = ck.files_.size();
    for (size_t ti = 0; ti < f.tensors().size(); ++ti) {
      const auto& t = f.tensors()[ti];
      auto [it, inserted] = ck.where_.emplace(t.name, std::make_pair(fi, ti));
      if (!inserted)
        return make_error(ErrorCode::kCorruptData, "tensor '{}' is in both {} and {}", t.name,
                          ck.files_[it->second.first].path(), f.path());
      ck.tensors_.push_back(t);
    }
    ck.files_.push_back(std::move(f));
    return Status::ok_status();
  };

  std::string index_path;
  if (fs::is_directory(path, ec)) {
    fs::path dir(path);
    std::vector<std::string> indexes, singles;
    for (const auto& de : fs::directory_iterator(dir, ec)) {
      if (!de.is_regular_file(ec)) continue;
      std::string name = de.path().filename().string();
      if (ends_with(name, ".safetensors.index.json")) indexes.push_back(name);
      else if (ends_with(name, ".safetensors")) singles.push_back(name);
    }
    if (ec) return make_error(ErrorCode::kIoError, "{}: cannot list directory: {}", path, ec.message());
    std::sort(indexes.begin(), indexes.end());
    std::sort(singles.begin(), singles.end());
    if (fs::exists(dir / "model.safetensors.index.json", ec)) {
      index_path = (dir / "model.safetensors.index.json").string();
    } else if (indexes.size() == 1) {
      index_path = (dir / indexes[0]).string();
    } else if (indexes.size() > 1) {
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: several *.safetensors.index.json files and no "
                        "model.safetensors.index.json; pass the index file to use",
                        path);
    } else if (fs::exists(dir / "model.safetensors", ec)) {
      MOEOPT_ASSIGN_OR_RETURN(auto f, SafetensorsFile::open((dir / "model.safetensors").string()));
      MOEOPT_RETURN_IF_ERROR(add_file(std::move(f)));
      return ck;
    } else if (!singles.empty()) {
      for (const auto& s : singles) {
        MOEOPT_ASSIGN_OR_RETURN(auto f, SafetensorsFile::open((dir / s).string()));
        MOEOPT_RETURN_IF_ERROR(add_file(std::move(f)));
      }
      return ck;
    } else {
      return make_error(ErrorCode::kNotFound, "{}: no *.safetensors files in directory", path);
    }
  } else if (ends_with(path, ".json")) {
    index_path = path;
  } else {
    MOEOPT_ASSIGN_OR_RETURN(auto f, SafetensorsFile::open(path));
    MOEOPT_RETURN_IF_ERROR(add_file(std::move(f)));
    return ck;
  }

  // Sharded: read and check the index.
  MOEOPT_ASSIGN_OR_RETURN(std::string text, read_file(index_path, kMaxIndexBytes));
  MOEOPT_ASSIGN_OR_RETURN(SafetensorsIndex index, parse_safetensors_index(text, index_path));
  ck.index_metadata_ = index.metadata;
  const auto& wm = index.weight_map;
  fs::path dir = fs::path(index_path).parent_path();
  // Shards in name order (model-00001-of-... sorts by shard number).
  for (const auto& shard : index.shards) {
    fs::path p = dir / shard;
    if (!fs::is_regular_file(p, ec))
      return make_error(ErrorCode::kNotFound, "{}: shard {} listed in the weight_map does not exist",
                        index_path, p.string());
    MOEOPT_ASSIGN_OR_RETURN(auto f, SafetensorsFile::open(p.string()));
    for (const auto& t : f.tensors()) {
      auto e = wm.find(t.name);
      if (e == wm.end())
        return make_error(ErrorCode::kCorruptData,
                          "{}: shard {} holds tensor '{}' that the weight_map does not list",
                          index_path, shard, t.name);
      if (e->second != shard)
        return make_error(ErrorCode::kCorruptData,
                          "{}: tensor '{}' is in shard {} but the weight_map assigns it to {}",
                          index_path, t.name, shard, e->second);
    }
    MOEOPT_RETURN_IF_ERROR(add_file(std::move(f)));
  }
  for (const auto& [name, shard] : wm)
    if (!ck.where_.count(name))
      return make_error(ErrorCode::kCorruptData,
                        "{}: tensor '{}' is listed in the weight_map for {} but that shard lacks it",
                        index_path, name, shard);
  return ck;
}

}  // namespace moeopt
