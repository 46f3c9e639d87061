// SafetensorsFile: a read-only mmap of one .safetensors file plus its validated header.
//
// The whole file is mapped once (PROT_READ, MAP_PRIVATE); tensor views point straight into
// the mapping, so opening a 61 GB checkpoint costs only the header parse, and pages are
// read on first touch. The mapping is shared by copies of the SafetensorsFile and released
// with the last one. If the file is truncated by someone else while mapped, touching the
// missing pages raises SIGBUS; like every mmap-based loader we accept that.
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moeopt/model/safetensors.h"

namespace moeopt {

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr && size) munmap(addr, size);
  }
};

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return make_error(ErrorCode::kNotFound, "{}: no such file", path);
  if (std::filesystem::is_directory(path, ec))
    return make_error(ErrorCode::kInvalidArgument, "{}: is a directory, expected a .safetensors file",
                      path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(ErrorCode::kIoError, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return make_error(ErrorCode::kIoError, "{}: cannot stat: {}", path, std::strerror(err));
  }
  auto map = std::make_shared<Mapping>();
  map->size = size_t(st.st_size);
  if (map->size < 8) {
    ::close(fd);
    // Same message as the parser's (mmap cannot map an empty file, so check here).
    return make_error(ErrorCode::kCorruptData,
                      "{}: file is {} bytes, too short for the 8-byte header length", path,
                      map->size);
  }
  map->addr = mmap(nullptr, map->size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);
  if (map->addr == MAP_FAILED) {
    map->addr = nullptr;
    return make_error(ErrorCode::kIoError, "{}: mmap failed: {}", path, std::strerror(map_errno));
  }
  MOEOPT_ASSIGN_OR_RETURN(SafetensorsHeader header,
                          parse_safetensors_header(static_cast<const uint8_t*>(map->addr),
                                                   map->size, path));
  SafetensorsFile f;
  f.path_ = path;
  f.map_ = std::move(map);
  auto index = std::make_shared<std::unordered_map<std::string, size_t>>();
  index->reserve(header.tensors.size());
  for (size_t i = 0; i < header.tensors.size(); ++i) index->emplace(header.tensors[i].name, i);
  f.index_ = std::move(index);
  f.header_ = std::make_shared<const SafetensorsHeader>(std::move(header));
  return f;
}

uint64_t SafetensorsFile::file_size() const { return map_ ? map_->size : 0; }

const SafetensorsTensorInfo* SafetensorsFile::find(std::string_view name) const {
  if (!index_) return nullptr;
  auto it = index_->find(std::string(name));
  return it == index_->end() ? nullptr : &header_->tensors[it->second];
}

std::span<const uint8_t> SafetensorsFile::bytes(const SafetensorsTensorInfo& info) const {
  // info comes from this file's validated header, so the range lies inside the mapping.
  const auto* base = static_cast<const uint8_t*>(map_->addr);
  return {base + info.file_offset, size_t(info.nbytes)};
}

Result<TensorView> SafetensorsFile::view(const SafetensorsTensorInfo& info) const {
  if (info.shape.size() > size_t(kMaxDims))
    return make_error(ErrorCode::kUnsupported, "{}: tensor '{}' has {} dims, views support at most {}",
                      path_, info.name, info.shape.size(), kMaxDims);
  // Views are mutable by type (TensorView is shared with device buffers) but the mapping is
  // read-only: writing through this pointer faults.
  void* data = const_cast<uint8_t*>(bytes(info).data());
  return TensorView::contiguous(data, info.dtype, Shape::from(info.shape));
}

Result<TensorView> SafetensorsFile::view(std::string_view name) const {
  const SafetensorsTensorInfo* info = find(name);
  if (!info) return make_error(ErrorCode::kNotFound, "{}: no tensor named '{}'", path_, name);
  return view(*info);
}

}  // namespace moeopt
