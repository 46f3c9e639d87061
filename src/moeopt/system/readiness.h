// Readiness: given what the probes found and what the chosen profile/backend needs, decide
// which backend runs and whether anything required is missing.
//
// This is the only place that decides `moeopt verify`'s exit status: it fails (a kFail
// check) only when something the chosen backend/profile *requires* is missing, e.g.
// `--backend cuda` with no usable GPU, or an FP8 profile on GPUs without FP8. Things that
// only reduce what can be used (no NCCL for expert parallelism, no peer access) are
// warnings, and so are GPUs this build cannot use. One exception to "required": a GPU of a
// supported architecture that fails the kernel self-test fails verify even when `auto`
// falls back to the CPU, because it means the machine is broken. Everything else is
// information. It takes plain values, never probes itself, so
// each rule is tested with fake probe results.
#pragma once

#include <string>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/system/gpu_probe.h"

namespace moeopt::system {

enum class Backend { kAuto, kCpu, kCuda };

const char* backend_name(Backend b);
// "auto" | "cpu" | "cuda"; anything else is kInvalidArgument naming the value.
Result<Backend> parse_backend(const std::string& s);

// What the run would need. The CLI fills it from the loaded profile (engine/profile.h); the
// system layer does not depend on the engine.
struct Requirements {
  Backend backend = Backend::kAuto;
  std::string profile = "conservative";
  bool fp8 = false;                 // profile turns on fp8_weights or fp8_kv_cache
  bool expert_parallel = false;     // profile turns on expert_parallel
  bool dual_batch_overlap = false;  // profile turns on dual_batch_overlap
  bool cuda_built = false;          // this binary contains the CUDA backend
  // SM versions this build's kernels run on. The CUDA backend is compiled for sm_90a only
  // (see the top CMakeLists.txt), and arch-specific "a" code runs on that exact family.
  std::vector<int> kernel_sms = {90};
};

enum class CheckLevel { kPass, kFail, kWarn, kInfo };
const char* check_level_name(CheckLevel l);  // "pass" | "fail" | "warn" | "info"

struct Check {
  std::string name;    // "backend", "gpu 1", "fp8", "nccl", ...
  CheckLevel level = CheckLevel::kInfo;
  std::string detail;  // one line
};

struct Readiness {
  Backend resolved = Backend::kCpu;  // kCpu or kCuda, never kAuto
  std::vector<int> usable_gpus;      // CUDA ordinals the GPU backend would use
  std::vector<Check> checks;
  bool ready() const;                // no kFail check
};

// GPUs the CUDA backend can use: queried without error, an SM the kernels are built for,
// and (when the self-test ran) a passing self-test.
std::vector<int> usable_gpus(const GpuProbe& gpu, const Requirements& req);

Readiness evaluate_readiness(const GpuProbe& gpu, const Requirements& req);

}  // namespace moeopt::system
