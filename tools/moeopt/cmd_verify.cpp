// `moeopt verify [--json] [--profile NAME|FILE] [--set KEY=VALUE]... [--backend auto|cpu|cuda]
//                [--model-dir DIR]`:
// is this machine ready to run moeopt? Probing, the verdict and both renderings live in
// src/moeopt/system; this file only wires flags, the profile and the GPU self-test together.
// Exit 0 when ready, 1 when something the chosen profile/backend requires is missing, 2 for
// bad flags or an invalid profile.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "moeopt/engine/profile.h"
#include "moeopt/system/verify_report.h"

#ifdef MOEOPT_HAVE_CUDA
#include "moeopt/backend/cuda/selftest.h"
#endif

namespace moeopt::cli {
namespace {

struct VerifyOptions {
  bool json = false;
  std::string profile = "balanced";
  std::string backend = "auto";
  std::string model_dir;
  std::vector<std::string> overrides;  // --set KEY=VALUE, applied in order
};

// Runs the CUDA runtime part of the probe: the compiled-in runtime version and the kernel
// self-test on every GPU the driver reported. Without CUDA in the build both stay empty.
void run_cuda_checks(system::GpuProbe& gpu) {
#ifdef MOEOPT_HAVE_CUDA
  gpu.runtime_built = true;
  gpu.runtime_version = moeopt::cuda::runtime_version();
  if (!gpu.has_gpu()) return;  // nothing to test; avoids initialising the runtime for nothing
  gpu.selftest_ran = true;
  for (const auto& r : moeopt::cuda::run_selftest()) gpu.selftest.push_back({r.device, r.passed, r.detail});
#else
  (void)gpu;
#endif
}

int run_verify(const VerifyOptions& opt) {
  auto backend = system::parse_backend(opt.backend);
  if (!backend.ok()) return report_error("verify", backend.status());
  auto profile = engine::load_profile(opt.profile, data_root() + "/configs");
  if (!profile.ok()) return report_error("verify", profile.status());
  for (const auto& kv : opt.overrides) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos)
      return report_error("verify", make_error(ErrorCode::kInvalidArgument, "--set: expected KEY=VALUE, got '{}'", kv));
    Status st = engine::apply_override(*profile, kv.substr(0, eq), kv.substr(eq + 1));
    if (!st.ok()) return report_error("verify", st.with_context("--set"));
  }

  system::SystemReport report =
      system::probe_system(opt.model_dir.empty() ? system::default_model_dir() : opt.model_dir);
  run_cuda_checks(report.gpu);

  const engine::ProfileFeatures& f = profile->features;
  system::Requirements req;
  req.backend = *backend;
  req.profile = profile->name;
  req.fp8 = f.fp8_weights || f.fp8_kv_cache;
  req.expert_parallel = f.expert_parallel;
  req.dual_batch_overlap = f.dual_batch_overlap;
  req.cuda_built = report.gpu.runtime_built;

  const system::Readiness readiness = system::evaluate_readiness(report.gpu, req);
  // Features as the backend that would run them implements them.
  const Device device = readiness.resolved == system::Backend::kCuda ? Device::kCuda : Device::kCpu;
  system::ProfileSummary summary;
  summary.name = profile->name;
  summary.source = profile->source;
  for (const auto& s : engine::feature_states(*profile, device))
    summary.features.push_back({s.key, s.requested, s.implemented});

  if (opt.json)
    std::printf("%s\n", system::report_to_json(report, summary, req, readiness).dump(2).c_str());
  else
    std::fputs(system::render_report_text(report, summary, req, readiness).c_str(), stdout);
  return readiness.ready() ? 0 : 1;
}

RunFn setup_verify(CLI::App& app) {
  auto opt = std::make_shared<VerifyOptions>();
  CLI::App* sub = app.add_subcommand("verify", "Check that this machine is ready: OS, CPU, memory, disk, "
                                               "CUDA driver and runtime, GPUs, NCCL, GPU self-test");
  sub->add_flag("--json", opt->json, "Print one JSON object");
  sub->add_option("--profile", opt->profile, "conservative | balanced | aggressive | path to a profile YAML")
      ->capture_default_str();
  sub->add_option("--set", opt->overrides,
                  "Override a profile key, e.g. --set fp8_weights=false (repeatable; keys as in configs/*.yaml)");
  sub->add_option("--backend", opt->backend, "auto | cpu | cuda")->capture_default_str();
  sub->add_option("--model-dir", opt->model_dir,
                  "Where models go, for the free-disk check (default: $MOEOPT_MODEL_DIR, $HF_HOME or "
                  "~/.cache/huggingface)");
  return [opt] { return run_verify(*opt); };
}

MOEOPT_REGISTER_COMMAND(setup_verify);

}  // namespace
}  // namespace moeopt::cli
