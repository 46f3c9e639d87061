// Streaming safetensors writer, fill-callback writer and the sharded (HF-style) writer.
//
// The header is produced the way the reference Rust/Python implementation serializes it, so
// that for the same tensors (and at most one metadata key) our files are byte-identical to
// safetensors' own save_file output (checked by tests/python):
//   {"__metadata__":{...},"name":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]},...}
// compact JSON, "__metadata__" first (omitted when empty), tensors in data order, then
// padded with spaces to a multiple of 8 bytes so that the data section starts 8-aligned.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/model/safetensors.h"

namespace moeopt {
namespace {

namespace fs = std::filesystem;

// Rank of a dtype in the reference implementation's Dtype enum, which is declared in
// increasing alignment order; files are laid out by decreasing rank, then name.
int reference_dtype_rank(DType t) {
  switch (t) {
    case DType::kBool: return 0;
    case DType::kU8: return 1;
    case DType::kI8: return 2;
    case DType::kF8E4M3: return 4;  // (3 is F8_E5M2)
    case DType::kI16: return 5;
    case DType::kF16: return 7;     // (6 is U16)
    case DType::kBF16: return 8;
    case DType::kI32: return 9;
    case DType::kF32: return 11;    // (10 is U32)
    case DType::kF64: return 12;
    case DType::kI64: return 13;
  }
  return 0;
}

// JSON string literal for `s`; throws nlohmann::json::type_error for invalid UTF-8 (caught
// in create()).
std::string json_string(const std::string& s) { return nlohmann::json(s).dump(); }

Result<uint64_t> checked_nbytes(const SafetensorsTensorSpec& s) {
  uint64_t n = dtype_size(s.dtype);
  for (int64_t d : s.shape) {
    if (d < 0)
      return make_error(ErrorCode::kInvalidArgument, "tensor '{}': negative dimension {}", s.name, d);
    if (__builtin_mul_overflow(n, uint64_t(d), &n))
      return make_error(ErrorCode::kInvalidArgument, "tensor '{}': byte size overflows", s.name);
  }
  return n;
}

}  // namespace

uint64_t SafetensorsTensorSpec::nbytes() const {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= uint64_t(d);
  return n;
}

struct SafetensorsWriter::State {
  std::string path, tmp_path;
  std::FILE* f = nullptr;
  std::vector<SafetensorsTensorSpec> specs;
  std::vector<uint64_t> sizes;
  size_t cur = 0;           // tensor being written
  uint64_t cur_written = 0; // bytes of it written so far
  bool finished = false;

  // Skip over tensors that are complete (including zero-size ones).
  void advance() {
    while (cur < specs.size() && cur_written == sizes[cur]) {
      ++cur;
      cur_written = 0;
    }
  }
  ~State() {
    if (f) std::fclose(f);
    if (!finished && !tmp_path.empty()) {
      std::error_code ec;
      fs::remove(tmp_path, ec);
    }
  }
};

SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&&) noexcept = default;
SafetensorsWriter& SafetensorsWriter::operator=(SafetensorsWriter&&) noexcept = default;
SafetensorsWriter::~SafetensorsWriter() = default;

Result<SafetensorsWriter> SafetensorsWriter::create(
    const std::string& path, std::vector<SafetensorsTensorSpec> tensors,
    const std::map<std::string, std::string>& metadata) {
  try {
    return create_unchecked(path, std::move(tensors), metadata);
  } catch (const nlohmann::json::exception& e) {
    return make_error(ErrorCode::kInvalidArgument, "{}: tensor or metadata name is not UTF-8: {}",
                      path, e.what());
  }
}

Result<SafetensorsWriter> SafetensorsWriter::create_unchecked(
    const std::string& path, std::vector<SafetensorsTensorSpec> tensors,
    const std::map<std::string, std::string>& metadata) {
  auto s = std::make_unique<State>();
  s->path = path;
  std::unordered_set<std::string> seen;
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool mfirst = true;
    for (const auto& [k, v] : metadata) {
      header += (mfirst ? "" : ",") + json_string(k) + ":" + json_string(v);
      mfirst = false;
    }
    header += "}";
    first = false;
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__")
      return make_error(ErrorCode::kInvalidArgument, "{}: '__metadata__' cannot name a tensor", path);
    if (!seen.insert(t.name).second)
      return make_error(ErrorCode::kInvalidArgument, "{}: tensor '{}' declared twice", path, t.name);
    auto nb = checked_nbytes(t);
    if (!nb.ok()) return nb.status().with_context(path);
    uint64_t end = 0;
    if (__builtin_add_overflow(offset, *nb, &end))
      return make_error(ErrorCode::kInvalidArgument, "{}: total size overflows", path);
    std::string shape = "[";
    for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? "," : "") + std::to_string(t.shape[i]);
    shape += "]";
    header += fmt::format("{}{}:{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{},{}]}}",
                          first ? "" : ",", json_string(t.name), dtype_to_safetensors(t.dtype),
                          shape, offset, end);
    first = false;
    s->sizes.push_back(*nb);
    offset = end;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > kSafetensorsMaxHeaderBytes)
    return make_error(ErrorCode::kInvalidArgument, "{}: header of {} bytes exceeds the {}-byte limit",
                      path, header.size(), kSafetensorsMaxHeaderBytes);
  s->specs = std::move(tensors);

  s->tmp_path = path + ".tmp";
  s->f = std::fopen(s->tmp_path.c_str(), "wb");
  if (!s->f) {
    std::string tmp = std::move(s->tmp_path);
    s->tmp_path.clear();  // nothing to remove
    return make_error(ErrorCode::kIoError, "{}: cannot create: {}", tmp, std::strerror(errno));
  }
  std::setvbuf(s->f, nullptr, _IOFBF, size_t(1) << 20);
  uint8_t len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
  if (std::fwrite(len, 1, 8, s->f) != 8 || std::fwrite(header.data(), 1, header.size(), s->f) != header.size())
    return make_error(ErrorCode::kIoError, "{}: write failed: {}", s->tmp_path, std::strerror(errno));
  s->advance();
  SafetensorsWriter w;
  w.s_ = std::move(s);
  return w;
}

size_t SafetensorsWriter::current_tensor() const { return s_->cur; }

Status SafetensorsWriter::write(const void* data, size_t n) {
  State& s = *s_;
  if (s.finished) return make_error(ErrorCode::kInvalidArgument, "{}: write after finish()", s.path);
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    s.advance();
    if (s.cur >= s.specs.size())
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: {} bytes written past the last declared tensor", s.path, n);
    size_t take = size_t(std::min<uint64_t>(n, s.sizes[s.cur] - s.cur_written));
    if (std::fwrite(p, 1, take, s.f) != take)
      return make_error(ErrorCode::kIoError, "{}: write failed: {}", s.tmp_path, std::strerror(errno));
    s.cur_written += take;
    p += take;
    n -= take;
  }
  s.advance();
  return Status::ok_status();
}

Status SafetensorsWriter::write_tensor(std::string_view name, const void* data, size_t n) {
  State& s = *s_;
  s.advance();
  if (s.cur >= s.specs.size())
    return make_error(ErrorCode::kInvalidArgument, "{}: tensor '{}' written after the last one",
                      s.path, name);
  const auto& spec = s.specs[s.cur];
  if (spec.name != name || s.cur_written != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: tensor '{}' written out of order, expected '{}'", s.path, name, spec.name);
  if (n != s.sizes[s.cur])
    return make_error(ErrorCode::kInvalidArgument, "{}: tensor '{}' has {} bytes, declared {}",
                      s.path, name, n, s.sizes[s.cur]);
  return write(data, n);
}

Status SafetensorsWriter::finish() {
  State& s = *s_;
  if (s.finished) return Status::ok_status();
  s.advance();
  if (s.cur < s.specs.size())
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: finish() before all data was written: tensor '{}' has {} of {} bytes",
                      s.path, s.specs[s.cur].name, s.cur_written, s.sizes[s.cur]);
  int rc = std::fclose(s.f);
  s.f = nullptr;
  if (rc != 0)
    return make_error(ErrorCode::kIoError, "{}: close failed: {}", s.tmp_path, std::strerror(errno));
  std::error_code ec;
  fs::rename(s.tmp_path, s.path, ec);
  if (ec) return make_error(ErrorCode::kIoError, "{}: rename failed: {}", s.path, ec.message());
  s.finished = true;
  return Status::ok_status();
}

void sort_for_alignment(std::vector<SafetensorsTensorSource>& tensors) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) {
    int ra = reference_dtype_rank(a.spec.dtype), rb = reference_dtype_rank(b.spec.dtype);
    if (ra != rb) return ra > rb;
    return a.spec.name < b.spec.name;
  });
}

Status write_safetensors(const std::string& path, std::vector<SafetensorsTensorSource> tensors,
                         const std::map<std::string, std::string>& metadata, size_t chunk_bytes) {
  // Whole elements per chunk: a multiple of 8 bytes (the largest element size), so fill
  // callbacks never see a split element.
  chunk_bytes = std::max<size_t>(8, chunk_bytes & ~size_t(7));
  sort_for_alignment(tensors);
  std::vector<SafetensorsTensorSpec> specs;
  specs.reserve(tensors.size());
  uint64_t largest = 0;
  for (const auto& t : tensors) {
    specs.push_back(t.spec);
    largest = std::max(largest, t.spec.nbytes());
  }
  MOEOPT_ASSIGN_OR_RETURN(SafetensorsWriter w,
                          SafetensorsWriter::create(path, std::move(specs), metadata));
  std::vector<uint8_t> buf(size_t(std::min<uint64_t>(largest, chunk_bytes)));
  for (const auto& t : tensors) {
    const uint64_t total = t.spec.nbytes();
    if (total > 0 && !t.fill)
      return make_error(ErrorCode::kInvalidArgument, "{}: tensor '{}' has no fill function", path,
                        t.spec.name);
    for (uint64_t off = 0; off < total;) {
      size_t n = size_t(std::min<uint64_t>(total - off, buf.size()));
      std::span<uint8_t> chunk(buf.data(), n);
      Status st = t.fill(off, chunk);
      if (!st.ok()) return st.with_context(fmt::format("{}: tensor '{}'", path, t.spec.name));
      MOEOPT_RETURN_IF_ERROR(w.write(chunk.data(), n));
      off += n;
    }
  }
  return w.finish();
}

Result<ShardedWriteResult> write_sharded_safetensors(const std::string& dir,
                                                     std::vector<SafetensorsTensorSource> tensors,
                                                     const ShardedWriteOptions& options) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(ErrorCode::kIoError, "{}: cannot create directory: {}", dir, ec.message());

  // Greedy split in the given order, exactly as huggingface_hub's
  // split_state_dict_into_shards_factory does: a tensor larger than the limit gets a shard
  // of its own (appended at once; the shard being filled stays open), otherwise the current
  // shard is closed when the tensor would push it over the limit.
  std::vector<std::vector<SafetensorsTensorSource>> shards;
  std::vector<SafetensorsTensorSource> current;
  uint64_t shard_bytes = 0, total = 0;
  std::unordered_set<std::string> names;
  for (auto& t : tensors) {
    if (!names.insert(t.spec.name).second)
      return make_error(ErrorCode::kInvalidArgument, "{}: tensor '{}' given twice", dir, t.spec.name);
    auto nb = checked_nbytes(t.spec);
    if (!nb.ok()) return nb.status().with_context(dir);
    total += *nb;
    if (*nb > options.max_shard_bytes) {
      shards.emplace_back();
      shards.back().push_back(std::move(t));
      continue;
    }
    if (shard_bytes + *nb > options.max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      shard_bytes = 0;
    }
    shard_bytes += *nb;
    current.push_back(std::move(t));
  }
  if (!current.empty()) shards.push_back(std::move(current));
  if (shards.empty()) shards.emplace_back();  // no tensors: one empty file

  ShardedWriteResult result;
  result.total_bytes = total;
  const fs::path d(dir);
  const std::string index_name = options.stem + ".safetensors.index.json";
  if (shards.size() == 1) {
    std::string name = options.stem + ".safetensors";
    MOEOPT_RETURN_IF_ERROR(write_safetensors((d / name).string(), std::move(shards[0]),
                                             options.metadata, options.chunk_bytes));
    // A stale index from an earlier sharded write would take precedence when reading.
    fs::remove(d / index_name, ec);
    result.files.push_back(name);
    return result;
  }

  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string name = fmt::format("{}-{:05d}-of-{:05d}.safetensors", options.stem, i + 1,
                                   shards.size());
    for (const auto& t : shards[i]) weight_map[t.spec.name] = name;
    MOEOPT_RETURN_IF_ERROR(write_safetensors((d / name).string(), std::move(shards[i]),
                                             options.metadata, options.chunk_bytes));
    result.files.push_back(name);
  }
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  MOEOPT_RETURN_IF_ERROR(write_file((d / index_name).string(), index.dump(2) + "\n"));
  result.index_file = index_name;
  return result;
}

}  // namespace moeopt
