// The `moeopt verify` report: everything the probes found, the readiness verdict, and its
// two renderings (a human table with ✓/✗/!/- markers, and one JSON object).
//
// JSON shape (keys always present; unknown numbers are null):
//   { "os": {kernel, release, machine, name, id, version_id},
//     "cpu": {model, logical_cores, physical_cores, sockets, avx2, fma, f16c, avx512f,
//             avx512bw, avx512_bf16, amx_bf16} | null,
//     "memory": {total_bytes, available_bytes} | null,
//     "disk": {path, probed_path, free_bytes, total_bytes} | null,
//     "cuda": {driver_loaded, driver_error, driver_version, driver_version_code,
//              runtime_built, runtime_version, runtime_version_code},
//     "nvml": {loaded, error, driver_version},
//     "nccl": {available, error, version, version_code},
//     "gpus": [{index, name, pci_bus_id, memory_total_bytes, memory_used_bytes,
//               compute_capability, sm_count, fp8, wgmma, error, selftest}],
//     "peer_access": [{from, to, ok}],
//     "selftest": {ran, passed},
//     "profile": {name, source, features: [{name, requested, implemented}]},
//     "backend": {requested, resolved, usable_gpus},
//     "checks": [{name, status, detail}],
//     "ready": bool }
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/system/gpu_probe.h"
#include "moeopt/system/host_info.h"
#include "moeopt/system/readiness.h"

namespace moeopt::system {

struct SystemReport {
  OsInfo os;
  std::optional<CpuInfo> cpu;
  std::string cpu_error;
  std::optional<MemInfo> memory;
  std::string memory_error;
  std::optional<DiskInfo> disk;
  std::string disk_error;
  GpuProbe gpu;
};

// The profile as verify shows it (filled by the CLI from engine/profile.h).
struct ProfileFeatureLine {
  std::string name;          // "fp8_weights"
  bool requested = false;    // the profile turns it on
  bool implemented = false;  // this build has it
};
struct ProfileSummary {
  std::string name;
  std::string source;  // the YAML file it was loaded from
  std::vector<ProfileFeatureLine> features;
};

// Probes the host (OS, CPU, memory, disk at `model_dir`) and the GPUs. The GPU self-test
// and runtime version are not filled here (they live in the CUDA backend).
SystemReport probe_system(const std::string& model_dir);

nlohmann::json report_to_json(const SystemReport& report, const ProfileSummary& profile,
                              const Requirements& req, const Readiness& readiness);
std::string render_report_text(const SystemReport& report, const ProfileSummary& profile,
                               const Requirements& req, const Readiness& readiness);

// "79.6 GiB" style sizes for the text report.
std::string format_bytes(uint64_t bytes);

}  // namespace moeopt::system
