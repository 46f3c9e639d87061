// safetensors: reading (mmap'd, zero-copy views) and writing (streamed, constant memory) of
// Hugging Face checkpoints, single-file or sharded with model.safetensors.index.json.
//
// File layout (https://huggingface.co/docs/safetensors):
//
//   [ 8 bytes: N, little-endian u64 ][ N bytes: JSON header ][ data section ]
//
// The header is a JSON object: "__metadata__" (optional, string -> string) and one entry per
// tensor: {"dtype": "BF16", "shape": [4096, 2048], "data_offsets": [begin, end]} where the
// offsets are relative to the start of the data section. The header is untrusted input; the
// checks applied (all of them mirror the official Rust crate's `validate`, plus a few extra
// ones, see safetensors_header.cpp) are:
//   - file at least 8 bytes; N <= kSafetensorsMaxHeaderBytes (100 MB); 8 + N <= file size
//   - header is UTF-8 JSON, an object, no duplicate keys, nesting depth <= 4
//   - "__metadata__" is an object of string -> string (or null)
//   - every tensor: a known dtype, shape = array of non-negative integers whose product
//     (and byte size) does not overflow, data_offsets = [begin, end] with begin <= end,
//     end - begin == numel * dtype size
//   - sorted by offset, the tensors tile the data section exactly: the first starts at 0,
//     each starts where the previous ended (no overlaps, no holes), and the last ends at
//     the end of the file (no trailing bytes)
// Every failure is a kCorruptData error naming the file (and tensor when there is one).
//
// Views returned by SafetensorsFile / Checkpoint point into a read-only mapping: never
// write through them. They stay valid as long as any copy of the owning object lives.
// A tensor's data pointer is aligned to its element size when the file was written with
// the header padded to 8 bytes and tensors sorted by decreasing element size (as both this
// writer and the Python/Rust writers do); `SafetensorsTensorInfo::aligned` says so per tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "moeopt/core/dtype.h"
#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"

namespace moeopt {

// Largest JSON header accepted (the Rust crate's MAX_HEADER_SIZE).
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// One tensor as described by a header.
struct SafetensorsTensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t data_begin = 0;  // byte offsets relative to the start of the data section
  uint64_t data_end = 0;
  uint64_t nbytes = 0;      // data_end - data_begin == numel * dtype_size(dtype)
  uint64_t file_offset = 0; // absolute offset of the first byte in the file (8 + N + begin)
  bool aligned = true;      // file_offset % dtype_size(dtype) == 0
  std::string file;         // path of the file holding it (as given to open())

  int64_t numel() const;
};

// A parsed and validated header.
struct SafetensorsHeader {
  uint64_t header_bytes = 0;  // N
  uint64_t data_offset = 0;   // 8 + N: where the data section starts in the file
  uint64_t data_bytes = 0;    // size of the data section
  std::vector<SafetensorsTensorInfo> tensors;  // sorted by data offset
  std::map<std::string, std::string> metadata; // "__metadata__"
};

// Parses and validates the header of a complete safetensors file image held in memory
// (`size` is the whole file size; the data section is not read, only its extent is
// checked). `source` names the file in error messages. This is the fuzzed entry point.
Result<SafetensorsHeader> parse_safetensors_header(const uint8_t* data, size_t size,
                                                   const std::string& source);

// A parsed sharded-checkpoint index (model.safetensors.index.json):
//   {"metadata": {"total_size": 123, ...}, "weight_map": {"tensor name": "shard file", ...}}
struct SafetensorsIndex {
  std::map<std::string, std::string> metadata;    // values kept as JSON text unless strings
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  std::vector<std::string> shards;                // distinct shard names, sorted
};

// Parses and checks an index held in memory: a JSON object with an object "weight_map" of
// strings (and optionally an object or null "metadata"); every shard must be a plain file
// name (no "/", "\\", NUL, "." or "..", so it cannot point outside the index's directory).
// `source` names the index in errors. Fuzzed like the header parser.
Result<SafetensorsIndex> parse_safetensors_index(std::string_view json_text,
                                                 const std::string& source);

// A read-only, mmap'd safetensors file. Cheap to copy (the mapping is shared).
class SafetensorsFile {
 public:
  // Maps `path` and validates its header. An empty file or bad header is kCorruptData,
  // a missing file kNotFound.
  static Result<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  uint64_t file_size() const;
  const std::vector<SafetensorsTensorInfo>& tensors() const { return header_->tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_->metadata; }
  // nullptr when absent.
  const SafetensorsTensorInfo* find(std::string_view name) const;
  // Zero-copy view of a tensor (contiguous, device CPU). kNotFound for an unknown name;
  // kUnsupported for more than kMaxDims dims. A 0-d tensor gets a 0-d view (numel 1).
  Result<TensorView> view(std::string_view name) const;
  Result<TensorView> view(const SafetensorsTensorInfo& info) const;
  // Raw bytes of a tensor (any rank).
  std::span<const uint8_t> bytes(const SafetensorsTensorInfo& info) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<const Mapping> map_;
  std::shared_ptr<const SafetensorsHeader> header_;
  std::shared_ptr<const std::unordered_map<std::string, size_t>> index_;  // name -> tensors()[i]
};

// A whole checkpoint: one file, or shards tied together by an index.
class Checkpoint {
 public:
  // `path` may be:
  //   - a directory: uses model.safetensors.index.json if present, else the single
  //     *.safetensors.index.json if there is exactly one, else model.safetensors, else all
  //     *.safetensors files in it (sorted by name);
  //   - a *.safetensors.index.json file: {"metadata": {...}, "weight_map": {tensor: shard}};
  //     shards must be plain file names inside the index's directory (no "/" or ".."),
  //     each listed tensor must exist in its shard, and every tensor in a shard must be
  //     listed for that shard (so no tensor lives in two shards);
  //   - a *.safetensors file.
  // A tensor name found in two files is an error naming both.
  static Result<Checkpoint> open(const std::string& path);

  // Every tensor, in file order then data-offset order; info.file says which file.
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }
  // The index's "metadata" object (values kept as JSON text, e.g. total_size "123"), empty
  // for unsharded checkpoints.
  const std::map<std::string, std::string>& index_metadata() const { return index_metadata_; }
  // Sum of all tensor byte sizes.
  uint64_t total_bytes() const;

  const SafetensorsTensorInfo* find(std::string_view name) const;
  // The file holding `name` (nullptr when absent).
  const SafetensorsFile* file_of(std::string_view name) const;
  Result<TensorView> view(std::string_view name) const;

 private:
  std::vector<SafetensorsFile> files_;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::unordered_map<std::string, std::pair<size_t, size_t>> where_;  // name -> (file, tensor)
  std::map<std::string, std::string> index_metadata_;
};

// ----------------------------------------------------------------------------------------
// Writing

struct SafetensorsTensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  uint64_t nbytes() const;  // numel * dtype size
};

// Streams one safetensors file with constant memory. The header must come first, so every
// tensor is declared up front; then the bytes of each tensor are written, in the order the
// specs were given (that order is the data layout), possibly in several pieces each.
// The file is written to `path + ".tmp"` and renamed to `path` by finish(), so a crashed
// write never leaves a truncated file under the final name.
class SafetensorsWriter {
 public:
  static Result<SafetensorsWriter> create(const std::string& path,
                                          std::vector<SafetensorsTensorSpec> tensors,
                                          const std::map<std::string, std::string>& metadata = {});
  SafetensorsWriter(SafetensorsWriter&&) noexcept;
  SafetensorsWriter& operator=(SafetensorsWriter&&) noexcept;
  ~SafetensorsWriter();  // an unfinished writer removes its temp file

  // Appends `n` bytes to the current tensor (moving on to the next when it is full). Writing
  // more bytes than declared is kInvalidArgument.
  Status write(const void* data, size_t n);
  // Writes the whole next tensor; `name` and `n` must match its spec.
  Status write_tensor(std::string_view name, const void* data, size_t n);
  // Index of the tensor the next write() goes to (== count when all are written).
  size_t current_tensor() const;
  // Checks that every declared byte was written, closes and renames into place.
  Status finish();

 private:
  SafetensorsWriter() = default;
  static Result<SafetensorsWriter> create_unchecked(const std::string& path,
                                                    std::vector<SafetensorsTensorSpec> tensors,
                                                    const std::map<std::string, std::string>& metadata);
  struct State;
  std::unique_ptr<State> s_;
};

// Fills `out` with bytes [offset, offset + out.size()) of one tensor. Called in increasing
// offset order, with chunks of at most the writer's chunk size; chunks always hold whole
// elements (offsets and sizes are multiples of the element size).
using SafetensorsFillFn = std::function<Status(uint64_t offset, std::span<uint8_t> out)>;

struct SafetensorsTensorSource {
  SafetensorsTensorSpec spec;
  SafetensorsFillFn fill;
};

// Orders specs as the reference writers do: decreasing element size, then name; with the
// 8-byte header padding every tensor is then aligned to its element size.
void sort_for_alignment(std::vector<SafetensorsTensorSource>& tensors);

// Writes one file from fill callbacks (sorted with sort_for_alignment first), holding at
// most `chunk_bytes` (rounded down to a multiple of 8, at least 8) of tensor data in memory.
Status write_safetensors(const std::string& path, std::vector<SafetensorsTensorSource> tensors,
                         const std::map<std::string, std::string>& metadata = {},
                         size_t chunk_bytes = size_t(16) << 20);

struct ShardedWriteOptions {
  // Hugging Face's default max_shard_size "5GB" (decimal, as transformers parses it).
  uint64_t max_shard_bytes = 5'000'000'000ull;
  // Per-file "__metadata__" ({"format": "pt"} is what transformers writes).
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  // File stem: model.safetensors / model-00001-of-00003.safetensors.
  std::string stem = "model";
  size_t chunk_bytes = size_t(16) << 20;
};

struct ShardedWriteResult {
  std::vector<std::string> files;  // file names (relative to the directory), in shard order
  std::string index_file;          // empty when a single file was written
  uint64_t total_bytes = 0;        // sum of tensor byte sizes ("total_size" in the index)
};

// Splits `tensors` (kept in the given order) into shards of at most max_shard_bytes of
// tensor data the way huggingface_hub does (a tensor larger than the limit gets a shard of
// its own) and writes them into `dir` (created if needed). One shard: `<stem>.safetensors`,
// no index (a stale index is removed), as transformers does. Several:
// `<stem>-0000i-of-0000n.safetensors` plus `<stem>.safetensors.index.json` =
// {"metadata": {"total_size": T}, "weight_map": {name: file}}. No tensors: one empty file.
Result<ShardedWriteResult> write_sharded_safetensors(const std::string& dir,
                                                     std::vector<SafetensorsTensorSource> tensors,
                                                     const ShardedWriteOptions& options = {});

}  // namespace moeopt
