// Host probes: /etc/os-release, /proc/cpuinfo, /proc/meminfo, statvfs. See host_info.h.
#include "moeopt/system/host_info.h"

#include <sys/statvfs.h>
#include <sys/utsname.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string_view>
#include <utility>


namespace moeopt::system {
namespace {

// /proc and /etc files are small; anything larger is not what we expect to read.
constexpr size_t kMaxProcFileBytes = size_t(16) << 20;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Calls fn(line) for every line of text (without the newline).
template <typename Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    fn(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

// Splits "key<sep>value" with both sides trimmed; false when sep is absent.
bool split_kv(std::string_view line, char sep, std::string_view& key, std::string_view& value) {
  size_t pos = line.find(sep);
  if (pos == std::string_view::npos) return false;
  key = trim(line.substr(0, pos));
  value = trim(line.substr(pos + 1));
  return true;
}

bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// os-release values may be "double quoted", 'single quoted' or bare; inside double quotes
// a backslash escapes the next character (the file is shell-compatible).
std::string unquote(std::string_view v) {
  if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
    char q = v.front();
    v = v.substr(1, v.size() - 2);
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (q == '"' && v[i] == '\\' && i + 1 < v.size()) ++i;
      out.push_back(v[i]);
    }
    return out;
  }
  return std::string(v);
}

bool has_word(std::string_view list, std::string_view word) {
  size_t pos = 0;
  while (pos < list.size()) {
    size_t end = list.find(' ', pos);
    if (end == std::string_view::npos) end = list.size();
    if (list.substr(pos, end - pos) == word) return true;
    pos = end + 1;
  }
  return false;
}

// Reads a /proc or /etc file. /proc files report size 0 to stat, so core's read_file (which
// sizes its buffer from the file size) would return them empty: read in chunks instead, up
// to a bound.
Result<std::string> read_small_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return make_error(ErrorCode::kIoError, "{}: cannot open: {}", path, std::strerror(errno));
  std::string out;
  char buf[8192];
  for (;;) {
    size_t n = std::fread(buf, 1, sizeof buf, f);
    out.append(buf, n);
    if (out.size() > kMaxProcFileBytes) {
      std::fclose(f);
      return make_error(ErrorCode::kCorruptData, "{}: larger than {} bytes", path, kMaxProcFileBytes);
    }
    if (n < sizeof buf) break;
  }
  bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return make_error(ErrorCode::kIoError, "{}: read failed", path);
  return out;
}

}  // namespace

OsInfo parse_os_release(const std::string& text) {
  OsInfo info;
  std::string name, version;
  for_each_line(text, [&](std::string_view line) {
    line = trim(line);
    if (line.empty() || line.front() == '#') return;
    std::string_view key, value;
    if (!split_kv(line, '=', key, value)) return;
    if (key == "PRETTY_NAME") info.pretty_name = unquote(value);
    else if (key == "ID") info.id = unquote(value);
    else if (key == "VERSION_ID") info.version_id = unquote(value);
    else if (key == "NAME") name = unquote(value);
    else if (key == "VERSION") version = unquote(value);
  });
  // PRETTY_NAME is optional in the spec; fall back to NAME VERSION.
  if (info.pretty_name.empty()) {
    info.pretty_name = name;
    if (!version.empty()) info.pretty_name += (name.empty() ? "" : " ") + version;
  }
  return info;
}

Result<CpuInfo> parse_cpuinfo(const std::string& text) {
  CpuInfo info;
  std::set<std::string> sockets;
  std::set<std::pair<std::string, std::string>> cores;
  std::string physical_id, hardware;
  bool have_topology = true;
  bool in_processor = false;
  std::string core_id;
  bool flags_seen = false;
  auto end_processor = [&] {
    if (!in_processor) return;
    if (physical_id.empty() || core_id.empty()) {
      have_topology = false;
    } else {
      sockets.insert(physical_id);
      cores.emplace(physical_id, core_id);
    }
    physical_id.clear();
    core_id.clear();
    in_processor = false;
  };
  for_each_line(text, [&](std::string_view line) {
    std::string_view key, value;
    if (!split_kv(line, ':', key, value)) return;
    if (key == "processor") {
      // A new entry starts. On ARM a trailing "Processor : AArch64 ..." line also exists;
      // only the numeric form counts as a logical CPU.
      uint64_t n = 0;
      if (!parse_u64(value, n)) return;
      end_processor();
      in_processor = true;
      ++info.logical_cores;
    } else if (key == "model name" && info.model == "unknown" && !value.empty()) {
      info.model = std::string(value);
    } else if (key == "Hardware" && !value.empty()) {
      hardware = std::string(value);
    } else if (key == "physical id") {
      physical_id = std::string(value);
    } else if (key == "core id") {
      core_id = std::string(value);
    } else if (key == "flags" && !flags_seen) {
      flags_seen = true;  // every processor lists the same flags; read the first
      info.avx2 = has_word(value, "avx2");
      info.fma = has_word(value, "fma");
      info.f16c = has_word(value, "f16c");
      info.avx512f = has_word(value, "avx512f");
      info.avx512bw = has_word(value, "avx512bw");
      info.avx512_bf16 = has_word(value, "avx512_bf16");
      info.amx_bf16 = has_word(value, "amx_bf16");
    }
  });
  end_processor();
  if (info.logical_cores == 0)
    return make_error(ErrorCode::kCorruptData, "/proc/cpuinfo: no 'processor' entry");
  if (info.model == "unknown" && !hardware.empty()) info.model = hardware;
  if (have_topology && !cores.empty()) {
    info.physical_cores = int(cores.size());
    info.sockets = int(sockets.size());
  }
  return info;
}

Result<MemInfo> parse_meminfo(const std::string& text) {
  MemInfo info;
  bool have_total = false, have_available = false;
  uint64_t free_kb = 0;
  bool have_free = false;
  Status bad;
  for_each_line(text, [&](std::string_view line) {
    std::string_view key, value;
    if (!bad.ok() || !split_kv(line, ':', key, value)) return;
    if (key != "MemTotal" && key != "MemAvailable" && key != "MemFree") return;
    // "16318412 kB": the kernel always reports these in KiB.
    std::string_view num = value;
    if (num.size() >= 2 && num.substr(num.size() - 2) == "kB") num = trim(num.substr(0, num.size() - 2));
    uint64_t kb = 0;
    // 2^54 KiB is far beyond any machine; the bound keeps the * 1024 below from overflowing.
    if (!parse_u64(num, kb) || kb >= (uint64_t(1) << 54)) {
      bad = make_error(ErrorCode::kCorruptData, "/proc/meminfo: field {}: bad value '{}'", key, value);
      return;
    }
    if (key == "MemTotal") { info.total_bytes = kb * 1024; have_total = true; }
    else if (key == "MemAvailable") { info.available_bytes = kb * 1024; have_available = true; }
    else { free_kb = kb; have_free = true; }
  });
  if (!bad.ok()) return bad;
  if (!have_total) return make_error(ErrorCode::kCorruptData, "/proc/meminfo: missing field MemTotal");
  if (!have_available && have_free) info.available_bytes = free_kb * 1024;
  return info;
}

OsInfo probe_os() {
  OsInfo info;
  auto text = read_small_file("/etc/os-release");
  if (!text.ok()) text = read_small_file("/usr/lib/os-release");
  if (text.ok()) info = parse_os_release(*text);
  struct utsname u {};
  if (uname(&u) == 0) {
    info.kernel_name = u.sysname;
    info.kernel_release = u.release;
    info.machine = u.machine;
  }
  return info;
}

Result<CpuInfo> probe_cpu() {
  MOEOPT_ASSIGN_OR_RETURN(std::string text, read_small_file("/proc/cpuinfo"));
  return parse_cpuinfo(text);
}

Result<MemInfo> probe_memory() {
  MOEOPT_ASSIGN_OR_RETURN(std::string text, read_small_file("/proc/meminfo"));
  return parse_meminfo(text);
}

Result<DiskInfo> probe_disk(const std::string& dir) {
  namespace fs = std::filesystem;
  DiskInfo info;
  info.path = dir;
  std::error_code ec;
  fs::path p = fs::absolute(dir.empty() ? fs::path(".") : fs::path(dir), ec);
  if (ec) return make_error(ErrorCode::kInvalidArgument, "{}: cannot resolve path: {}", dir, ec.message());
  // The model directory may not exist yet: measure the file system it would be created on.
  while (!fs::exists(p, ec) && p.has_parent_path() && p.parent_path() != p) p = p.parent_path();
  struct statvfs st {};
  if (statvfs(p.c_str(), &st) != 0)
    return make_error(ErrorCode::kIoError, "{}: statvfs failed", p.string());
  info.probed_path = p.string();
  info.free_bytes = uint64_t(st.f_bavail) * uint64_t(st.f_frsize);
  info.total_bytes = uint64_t(st.f_blocks) * uint64_t(st.f_frsize);
  return info;
}

std::string default_model_dir() {
  if (const char* d = std::getenv("MOEOPT_MODEL_DIR"); d && *d) return d;
  if (const char* d = std::getenv("HF_HOME"); d && *d) return d;
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/huggingface";
  return ".";
}

}  // namespace moeopt::system
