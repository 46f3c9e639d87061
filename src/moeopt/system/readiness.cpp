// Readiness rules for `moeopt verify`. See readiness.h for the policy.
#include "moeopt/system/readiness.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace moeopt::system {
namespace {

const GpuSelftestResult* selftest_for(const GpuProbe& gpu, int device) {
  for (const auto& r : gpu.selftest)
    if (r.device == device) return &r;
  return nullptr;
}

bool sm_supported(const Requirements& req, int sm) {
  return std::find(req.kernel_sms.begin(), req.kernel_sms.end(), sm) != req.kernel_sms.end();
}

std::string sm_list(const Requirements& req) {
  std::vector<std::string> names;
  for (int sm : req.kernel_sms) names.push_back(fmt::format("sm_{}", sm));
  return fmt::format("{}", fmt::join(names, ", "));
}

// Why the GPU backend cannot run; empty when at least one GPU is usable.
std::string why_no_gpu(const GpuProbe& gpu, const Requirements& req, const std::vector<int>& usable) {
  if (!req.cuda_built) return "this binary was built without the CUDA backend (MOEOPT_CUDA=OFF)";
  if (!gpu.driver_loaded) return "no NVIDIA driver (" + gpu.driver_error + ")";
  if (gpu.devices.empty())
    return gpu.driver_error.empty() ? "the driver reports no GPU" : "no GPU (" + gpu.driver_error + ")";
  if (!usable.empty()) return {};
  return fmt::format("none of the {} GPU(s) is usable: each needs {} and a passing self-test",
                     gpu.devices.size(), sm_list(req));
}

// One check per GPU the backend cannot use, saying why. A GPU of a supported architecture
// that fails the self-test is broken (driver, hardware, or this build), which the user must
// know about even if other GPUs work: that is a failure, the rest are warnings.
void add_device_checks(const GpuProbe& gpu, const Requirements& req, Readiness& r) {
  for (const auto& d : gpu.devices) {
    std::string name = fmt::format("gpu {}", d.index);
    if (!d.error.empty()) {
      r.checks.push_back({name, CheckLevel::kWarn, "query failed, not used: " + d.error});
    } else if (!sm_supported(req, d.sm())) {
      r.checks.push_back({name, CheckLevel::kWarn,
                          fmt::format("{} is sm_{}; this build's kernels need {}: not used", d.name, d.sm(),
                                      sm_list(req))});
    } else if (gpu.selftest_ran) {
      const GpuSelftestResult* t = selftest_for(gpu, d.index);
      if (!t) r.checks.push_back({name, CheckLevel::kFail, "no self-test result"});
      else if (!t->passed) r.checks.push_back({name, CheckLevel::kFail, "self-test failed: " + t->detail});
    }
  }
}

}  // namespace

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::kAuto: return "auto";
    case Backend::kCpu: return "cpu";
    case Backend::kCuda: return "cuda";
  }
  return "?";
}

Result<Backend> parse_backend(const std::string& s) {
  if (s == "auto") return Backend::kAuto;
  if (s == "cpu") return Backend::kCpu;
  if (s == "cuda") return Backend::kCuda;
  return make_error(ErrorCode::kInvalidArgument, "--backend: unknown value '{}' (expected auto, cpu or cuda)", s);
}

const char* check_level_name(CheckLevel l) {
  switch (l) {
    case CheckLevel::kPass: return "pass";
    case CheckLevel::kFail: return "fail";
    case CheckLevel::kWarn: return "warn";
    case CheckLevel::kInfo: return "info";
  }
  return "?";
}

bool Readiness::ready() const {
  return std::none_of(checks.begin(), checks.end(),
                      [](const Check& c) { return c.level == CheckLevel::kFail; });
}

std::vector<int> usable_gpus(const GpuProbe& gpu, const Requirements& req) {
  std::vector<int> out;
  if (!req.cuda_built) return out;
  for (const auto& d : gpu.devices) {
    if (!d.error.empty() || !sm_supported(req, d.sm())) continue;
    if (gpu.selftest_ran) {
      const GpuSelftestResult* r = selftest_for(gpu, d.index);
      if (!r || !r->passed) continue;
    }
    out.push_back(d.index);
  }
  return out;
}

Readiness evaluate_readiness(const GpuProbe& gpu, const Requirements& req) {
  Readiness r;
  auto add = [&](std::string name, CheckLevel level, std::string detail) {
    r.checks.push_back({std::move(name), level, std::move(detail)});
  };
  r.usable_gpus = usable_gpus(gpu, req);
  const std::string no_gpu = why_no_gpu(gpu, req, r.usable_gpus);

  // 1. Which backend runs.
  switch (req.backend) {
    case Backend::kCpu:
      r.resolved = Backend::kCpu;
      break;
    case Backend::kAuto:
      r.resolved = no_gpu.empty() ? Backend::kCuda : Backend::kCpu;
      if (!no_gpu.empty()) add("gpu backend", CheckLevel::kInfo, "not used: " + no_gpu);
      break;
    case Backend::kCuda:
      r.resolved = Backend::kCuda;
      if (!no_gpu.empty()) {
        add("backend", CheckLevel::kFail, "--backend cuda: " + no_gpu);
        if (req.cuda_built) add_device_checks(gpu, req, r);
        return r;
      }
      break;
  }

  if (r.resolved == Backend::kCpu) {
    // GPUs present but unusable are worth knowing about even when the CPU backend runs.
    if (req.backend == Backend::kAuto && req.cuda_built) add_device_checks(gpu, req, r);
    add("backend", CheckLevel::kPass, "CPU reference backend ready");
    if (req.fp8 || req.expert_parallel || req.dual_batch_overlap)
      add("profile", CheckLevel::kInfo,
          fmt::format("profile {}: {}{}", req.profile,
                      req.fp8 ? "FP8 runs on the CPU reference (W8A8 emulated in f32)" : "",
                      req.expert_parallel || req.dual_batch_overlap
                          ? std::string(req.fp8 ? "; " : "") +
                                "its multi-GPU features (expert parallelism, dual-batch overlap) "
                                "do not apply to the CPU backend"
                          : std::string()));
    return r;
  }

  // 2. The GPU backend: every GPU either usable or explained.
  add("backend", CheckLevel::kPass, fmt::format("CUDA backend ready on {} GPU(s)", r.usable_gpus.size()));
  add_device_checks(gpu, req, r);
  if (!gpu.selftest_ran)
    add("self-test", CheckLevel::kInfo, "GPU self-test not run");

  // 3. Profile requirements on the usable GPUs.
  if (req.fp8) {
    std::vector<std::string> lacking;
    for (const auto& d : gpu.devices)
      if (std::find(r.usable_gpus.begin(), r.usable_gpus.end(), d.index) != r.usable_gpus.end() && !d.fp8())
        lacking.push_back(fmt::format("gpu {} (sm_{})", d.index, d.sm()));
    if (lacking.empty())
      add("fp8", CheckLevel::kPass, fmt::format("profile {} uses FP8: every GPU supports it (sm_89+)", req.profile));
    else
      add("fp8", CheckLevel::kFail,
          fmt::format("profile {} needs FP8 (sm_89+), missing on {}; use --profile conservative",
                      req.profile, fmt::join(lacking, ", ")));
  }
  const size_t n = r.usable_gpus.size();
  if (req.expert_parallel && n >= 2) {
    if (!gpu.nccl_loaded)
      add("nccl", CheckLevel::kWarn,
          fmt::format("expert parallelism over {} GPUs wants NCCL, not available ({}); experts stay on one GPU",
                      n, gpu.nccl_error));
    else
      add("nccl", CheckLevel::kPass,
          fmt::format("NCCL {} for expert parallelism over {} GPUs", format_nccl_version(gpu.nccl_version_code), n));
    std::vector<std::string> missing;
    for (const auto& p : gpu.peers) {
      bool both = std::find(r.usable_gpus.begin(), r.usable_gpus.end(), p.from) != r.usable_gpus.end() &&
                  std::find(r.usable_gpus.begin(), r.usable_gpus.end(), p.to) != r.usable_gpus.end();
      if (both && !p.can_access) missing.push_back(fmt::format("{}->{}", p.from, p.to));
    }
    if (missing.empty())
      add("peer access", CheckLevel::kPass, "every GPU pair has peer access");
    else
      add("peer access", CheckLevel::kWarn,
          fmt::format("no peer access for {}: transfers go through host memory", fmt::join(missing, ", ")));
  } else if (req.expert_parallel) {
    add("expert parallel", CheckLevel::kInfo, "one GPU: expert parallelism needs at least 2, experts stay local");
  }
  if (req.dual_batch_overlap && !(req.expert_parallel && n >= 2))
    add("dual-batch overlap", CheckLevel::kInfo, "inactive: it needs expert parallelism over at least 2 GPUs");
  return r;
}

}  // namespace moeopt::system
