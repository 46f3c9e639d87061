// Renders the `moeopt verify` report as text and JSON. See verify_report.h for the shape.
#include "moeopt/system/verify_report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace moeopt::system {
namespace {

using nlohmann::json;

const char* mark(CheckLevel l) {
  switch (l) {
    case CheckLevel::kPass: return "✓";
    case CheckLevel::kFail: return "✗";
    case CheckLevel::kWarn: return "!";
    case CheckLevel::kInfo: return "-";
  }
  return "?";
}

const char* yes_no(bool b) { return b ? "✓" : "✗"; }

json or_null(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

const GpuSelftestResult* selftest_for(const GpuProbe& gpu, int device) {
  for (const auto& r : gpu.selftest)
    if (r.device == device) return &r;
  return nullptr;
}

bool all_selftests_passed(const GpuProbe& gpu) {
  if (!gpu.selftest_ran) return false;
  for (const auto& d : gpu.devices) {
    const GpuSelftestResult* r = selftest_for(gpu, d.index);
    if (!r || !r->passed) return false;
  }
  return true;
}

// One line of the text report: "  ✓ label       detail".
void line(std::string& out, const char* m, const std::string& label, const std::string& detail) {
  out += fmt::format("  {} {:<18} {}\n", m, label, detail);
}

}  // namespace

std::string format_bytes(uint64_t bytes) {
  const double b = double(bytes);
  if (b >= double(uint64_t(1) << 40)) return fmt::format("{:.1f} TiB", b / double(uint64_t(1) << 40));
  if (b >= double(uint64_t(1) << 30)) return fmt::format("{:.1f} GiB", b / double(uint64_t(1) << 30));
  if (b >= double(uint64_t(1) << 20)) return fmt::format("{:.1f} MiB", b / double(uint64_t(1) << 20));
  return fmt::format("{} B", bytes);
}

SystemReport probe_system(const std::string& model_dir) {
  SystemReport r;
  r.os = probe_os();
  if (auto cpu = probe_cpu(); cpu.ok()) r.cpu = *cpu; else r.cpu_error = cpu.status().message();
  if (auto mem = probe_memory(); mem.ok()) r.memory = *mem; else r.memory_error = mem.status().message();
  if (auto disk = probe_disk(model_dir); disk.ok()) r.disk = *disk; else r.disk_error = disk.status().message();
  r.gpu = probe_gpus();
  return r;
}

json report_to_json(const SystemReport& report, const ProfileSummary& profile,
                    const Requirements& req, const Readiness& readiness) {
  json j;
  j["os"] = {{"kernel", report.os.kernel_name},  {"release", report.os.kernel_release},
             {"machine", report.os.machine},     {"name", report.os.pretty_name},
             {"id", report.os.id},               {"version_id", report.os.version_id}};
  if (report.cpu) {
    const CpuInfo& c = *report.cpu;
    j["cpu"] = {{"model", c.model},       {"logical_cores", c.logical_cores},
                {"physical_cores", c.physical_cores}, {"sockets", c.sockets},
                {"avx2", c.avx2},         {"fma", c.fma},         {"f16c", c.f16c},
                {"avx512f", c.avx512f},   {"avx512bw", c.avx512bw},
                {"avx512_bf16", c.avx512_bf16}, {"amx_bf16", c.amx_bf16}};
  } else {
    j["cpu"] = nullptr;
  }
  if (report.memory)
    j["memory"] = {{"total_bytes", report.memory->total_bytes},
                   {"available_bytes", report.memory->available_bytes}};
  else
    j["memory"] = nullptr;
  if (report.disk)
    j["disk"] = {{"path", report.disk->path}, {"probed_path", report.disk->probed_path},
                 {"free_bytes", report.disk->free_bytes}, {"total_bytes", report.disk->total_bytes}};
  else
    j["disk"] = nullptr;

  const GpuProbe& g = report.gpu;
  j["cuda"] = {{"driver_loaded", g.driver_loaded},
               {"driver_error", or_null(g.driver_error)},
               {"driver_version", g.driver_version ? json(format_cuda_version(g.driver_version)) : json(nullptr)},
               {"driver_version_code", g.driver_version},
               {"runtime_built", g.runtime_built},
               {"runtime_version", g.runtime_version ? json(format_cuda_version(g.runtime_version)) : json(nullptr)},
               {"runtime_version_code", g.runtime_version}};
  j["nvml"] = {{"loaded", g.nvml_loaded}, {"error", or_null(g.nvml_error)},
               {"driver_version", or_null(g.nvml_driver_version)}};
  j["nccl"] = {{"available", g.nccl_loaded}, {"error", or_null(g.nccl_error)},
               {"version", g.nccl_version_code ? json(format_nccl_version(g.nccl_version_code)) : json(nullptr)},
               {"version_code", g.nccl_version_code}};
  json gpus = json::array();
  for (const auto& d : g.devices) {
    json gj = {{"index", d.index},
               {"name", d.name},
               {"pci_bus_id", or_null(d.pci_bus_id)},
               {"memory_total_bytes", d.memory_total_bytes},
               {"memory_used_bytes", d.memory_used_bytes >= 0 ? json(d.memory_used_bytes) : json(nullptr)},
               {"compute_capability", fmt::format("{}.{}", d.cc_major, d.cc_minor)},
               {"sm_count", d.sm_count},
               {"fp8", d.fp8()},
               {"wgmma", d.wgmma()},
               {"error", or_null(d.error)}};
    if (const GpuSelftestResult* t = selftest_for(g, d.index))
      gj["selftest"] = {{"passed", t->passed}, {"detail", t->detail}};
    else
      gj["selftest"] = nullptr;
    gpus.push_back(std::move(gj));
  }
  j["gpus"] = std::move(gpus);
  json peers = json::array();
  for (const auto& p : g.peers) peers.push_back({{"from", p.from}, {"to", p.to}, {"ok", p.can_access}});
  j["peer_access"] = std::move(peers);
  j["selftest"] = {{"ran", g.selftest_ran}, {"passed", all_selftests_passed(g)}};

  json features = json::array();
  for (const auto& f : profile.features)
    features.push_back({{"name", f.name}, {"requested", f.requested}, {"implemented", f.implemented}});
  j["profile"] = {{"name", profile.name}, {"source", or_null(profile.source)}, {"features", std::move(features)}};
  j["backend"] = {{"requested", backend_name(req.backend)},
                  {"resolved", backend_name(readiness.resolved)},
                  {"usable_gpus", readiness.usable_gpus}};
  json checks = json::array();
  for (const auto& c : readiness.checks)
    checks.push_back({{"name", c.name}, {"status", check_level_name(c.level)}, {"detail", c.detail}});
  j["checks"] = std::move(checks);
  j["ready"] = readiness.ready();
  return j;
}

std::string render_report_text(const SystemReport& report, const ProfileSummary& profile,
                               const Requirements& req, const Readiness& readiness) {
  std::string out;
  out += fmt::format("moeopt verify: profile {}, backend {}\n\nSystem\n", profile.name, backend_name(req.backend));
  const OsInfo& os = report.os;
  line(out, "-", "OS", fmt::format("{}{}{} {} {}", os.pretty_name.empty() ? "unknown distribution" : os.pretty_name,
                                   ", ", os.kernel_name, os.kernel_release, os.machine));
  if (report.cpu) {
    const CpuInfo& c = *report.cpu;
    std::string cores = fmt::format("{} logical", c.logical_cores);
    if (c.physical_cores) cores += fmt::format(", {} physical, {} socket(s)", c.physical_cores, c.sockets);
    line(out, "-", "CPU", fmt::format("{} ({}), AVX2 {} AVX-512 {}", c.model, cores, yes_no(c.avx2), yes_no(c.avx512f)));
  } else {
    line(out, "!", "CPU", report.cpu_error);
  }
  if (report.memory)
    line(out, "-", "Memory", fmt::format("{} total, {} available", format_bytes(report.memory->total_bytes),
                                         format_bytes(report.memory->available_bytes)));
  else
    line(out, "!", "Memory", report.memory_error);
  if (report.disk)
    line(out, "-", "Disk", fmt::format("{} free of {} at {}", format_bytes(report.disk->free_bytes),
                                       format_bytes(report.disk->total_bytes), report.disk->probed_path));
  else
    line(out, "!", "Disk", report.disk_error);

  const GpuProbe& g = report.gpu;
  out += "\nCUDA\n";
  if (!g.driver_loaded)
    line(out, "-", "Driver", "not found: " + g.driver_error);
  else
    line(out, g.driver_init_result == kCudaSuccess ? "✓" : "-", "Driver",
         fmt::format("CUDA {}{}{}", format_cuda_version(g.driver_version),
                     g.nvml_driver_version.empty() ? "" : ", driver " + g.nvml_driver_version,
                     g.driver_error.empty() ? "" : " (" + g.driver_error + ")"));
  line(out, "-", "Runtime", g.runtime_built ? "CUDA " + format_cuda_version(g.runtime_version) + " (static)"
                                            : "this build has no CUDA backend");
  line(out, "-", "NVML", g.nvml_loaded ? "loaded" : "not available: " + g.nvml_error);
  line(out, "-", "NCCL", g.nccl_loaded ? "NCCL " + format_nccl_version(g.nccl_version_code)
                                       : "not available: " + g.nccl_error);
  out += "\nGPUs\n";
  if (g.devices.empty()) line(out, "-", "none", "no NVIDIA GPU found");
  for (const auto& d : g.devices) {
    std::string detail;
    if (!d.error.empty()) {
      detail = d.name + ": " + d.error;
    } else {
      detail = fmt::format("{}, {}", d.name, format_bytes(d.memory_total_bytes));
      if (d.memory_used_bytes >= 0) detail += fmt::format(" ({} used)", format_bytes(uint64_t(d.memory_used_bytes)));
      detail += fmt::format(", sm_{}, {} SMs, FP8 {} wgmma {}", d.sm(), d.sm_count, yes_no(d.fp8()), yes_no(d.wgmma()));
    }
    const GpuSelftestResult* t = selftest_for(g, d.index);
    if (t) detail += fmt::format(", self-test {}: {}", t->passed ? "passed" : "FAILED", t->detail);
    const char* m = !d.error.empty() ? "✗" : (t ? yes_no(t->passed) : "-");
    line(out, m, fmt::format("GPU {}", d.index), detail);
  }
  for (const auto& p : g.peers)
    line(out, yes_no(p.can_access), fmt::format("peer {}->{}", p.from, p.to),
         p.can_access ? "peer access" : "no peer access");

  out += fmt::format("\nProfile {}{}\n", profile.name, profile.source.empty() ? "" : " (" + profile.source + ")");
  for (const auto& f : profile.features) {
    const char* state = !f.requested ? "off" : (f.implemented ? "on" : "requested, unavailable in this build");
    line(out, "-", f.name, state);
  }

  out += "\nChecks\n";
  for (const auto& c : readiness.checks) line(out, mark(c.level), c.name, c.detail);
  out += fmt::format("\n{} (backend {})\n", readiness.ready() ? "Ready" : "NOT ready",
                     backend_name(readiness.resolved));
  return out;
}

}  // namespace moeopt::system
