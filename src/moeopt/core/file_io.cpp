#include "moeopt/core/file_io.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <zlib.h>

namespace moeopt {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Result<std::string> read_gz(const std::string& path, size_t max_bytes) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return make_error(ErrorCode::kIoError, "{}: cannot open: {}", path, std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      return make_error(ErrorCode::kCorruptData, "{}: gzip error: {}", path, msg);
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
    if (out.size() > max_bytes) {
      gzclose(f);
      return make_error(ErrorCode::kInvalidArgument, "{}: larger than {} bytes", path, max_bytes);
    }
  }
  gzclose(f);
  return out;
}

}  // namespace

Result<std::string> read_file(const std::string& path, size_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return make_error(ErrorCode::kNotFound, "{}: no such file", path);
  if (std::filesystem::is_directory(path, ec))
    return make_error(ErrorCode::kInvalidArgument, "{}: is a directory, expected a file", path);
  if (ends_with(path, ".gz")) return read_gz(path, max_bytes);
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIoError, "{}: cannot open: {}", path, std::strerror(errno));
  auto size = std::filesystem::file_size(path, ec);
  if (ec) return make_error(ErrorCode::kIoError, "{}: cannot stat: {}", path, ec.message());
  if (size > max_bytes)
    return make_error(ErrorCode::kInvalidArgument, "{}: larger than {} bytes", path, max_bytes);
  if (size == 0) {
    // Files whose size stat cannot tell (/proc, pipes): read until EOF, still capped.
    std::string out;
    char buf[1 << 16];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
      out.append(buf, size_t(in.gcount()));
      if (out.size() > max_bytes)
        return make_error(ErrorCode::kInvalidArgument, "{}: larger than {} bytes", path, max_bytes);
    }
    return out;
  }
  std::string out(size, '\0');
  if (!in.read(out.data(), std::streamsize(size)))
    return make_error(ErrorCode::kIoError, "{}: read failed", path);
  return out;
}

Result<std::string> read_file_or_gz(const std::string& path, size_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec) && std::filesystem::exists(path + ".gz", ec))
    return read_file(path + ".gz", max_bytes);
  return read_file(path, max_bytes);
}

Status write_file(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return make_error(ErrorCode::kIoError, "{}: cannot write: {}", path, std::strerror(errno));
    out.write(data.data(), std::streamsize(data.size()));
    if (!out) return make_error(ErrorCode::kIoError, "{}: write failed", path);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return make_error(ErrorCode::kIoError, "{}: rename failed: {}", path, ec.message());
  return {};
}

}  // namespace moeopt
