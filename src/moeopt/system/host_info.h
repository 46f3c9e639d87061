// Host probes for `moeopt verify`: operating system, CPU, memory and free disk.
//
// Every probe is split into a reader (which touches /proc, /etc or the file system) and a
// pure parser taking the file's text, so the parsers are tested on fixed strings. The
// parsers treat their input as untrusted: unknown lines are skipped, numbers are parsed
// strictly, and a missing required field is an error naming the file and the field.
#pragma once

#include <cstdint>
#include <string>

#include "moeopt/core/status.h"

namespace moeopt::system {

struct OsInfo {
  // From uname(2).
  std::string kernel_name;     // "Linux"
  std::string kernel_release;  // "6.1.0-18-amd64"
  std::string machine;         // "x86_64"
  // From /etc/os-release (empty when that file is missing).
  std::string pretty_name;     // "Ubuntu 24.04.1 LTS"
  std::string id;              // "ubuntu"
  std::string version_id;      // "24.04"
};

struct CpuInfo {
  std::string model = "unknown";  // "model name" (x86) or "Hardware"/"CPU part" fallbacks
  int logical_cores = 0;          // "processor" entries
  int physical_cores = 0;         // distinct (physical id, core id) pairs; 0 if unknown
  int sockets = 0;                // distinct physical ids; 0 if unknown
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512_bf16 = false;
  bool amx_bf16 = false;
};

struct MemInfo {
  uint64_t total_bytes = 0;      // MemTotal
  uint64_t available_bytes = 0;  // MemAvailable (MemFree on kernels without it)
};

struct DiskInfo {
  std::string path;          // the directory that was asked about
  std::string probed_path;   // the nearest existing ancestor that statvfs saw
  uint64_t free_bytes = 0;   // available to unprivileged users
  uint64_t total_bytes = 0;
};

// Parses /etc/os-release text (KEY=value lines, values optionally quoted, # comments).
OsInfo parse_os_release(const std::string& text);
// Parses /proc/cpuinfo text. Errors when no "processor" entry is present.
Result<CpuInfo> parse_cpuinfo(const std::string& text);
// Parses /proc/meminfo text ("MemTotal:  16318412 kB"). Errors when MemTotal is missing or
// malformed.
Result<MemInfo> parse_meminfo(const std::string& text);

// Readers for the running machine.
OsInfo probe_os();
Result<CpuInfo> probe_cpu();
Result<MemInfo> probe_memory();
// Free space for `dir`; when it does not exist yet the nearest existing parent is measured.
Result<DiskInfo> probe_disk(const std::string& dir);

// Where model checkpoints go by default: $MOEOPT_MODEL_DIR, else $HF_HOME, else
// $HOME/.cache/huggingface, else the current directory.
std::string default_model_dir();

}  // namespace moeopt::system
