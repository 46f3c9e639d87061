// Readiness rules for each backend/profile combination on fake probe results, and the
// verify report's JSON shape and text markers.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "moeopt/system/readiness.h"
#include "moeopt/system/verify_report.h"

namespace moeopt::system {
namespace {

GpuDevice gpu(int index, int major, int minor, const std::string& name = "GPU") {
  GpuDevice d;
  d.index = index;
  d.name = name;
  d.cc_major = major;
  d.cc_minor = minor;
  d.memory_total_bytes = uint64_t(80) << 30;
  d.sm_count = 132;
  return d;
}

// A probe of `devices`, all passing the self-test, with full peer access and NCCL.
GpuProbe machine(std::vector<GpuDevice> devices, bool nccl = true) {
  GpuProbe p;
  p.driver_loaded = true;
  p.driver_init_result = 0;
  p.driver_version = 12080;
  p.devices = std::move(devices);
  for (const auto& a : p.devices)
    for (const auto& b : p.devices)
      if (a.index != b.index) p.peers.push_back({a.index, b.index, true});
  p.nccl_loaded = nccl;
  if (nccl) p.nccl_version_code = 22105; else p.nccl_error = "libnccl.so.2: cannot open shared object file";
  p.runtime_built = true;
  p.runtime_version = 13000;
  p.selftest_ran = true;
  for (const auto& d : p.devices) p.selftest.push_back({d.index, true, "ok"});
  return p;
}

GpuProbe no_driver() {
  GpuProbe p;
  p.driver_error = "libcuda.so.1: cannot open shared object file: No such file or directory";
  return p;
}

Requirements req_for(const std::string& profile, Backend backend, bool cuda_built = true) {
  Requirements r;
  r.profile = profile;
  r.backend = backend;
  r.cuda_built = cuda_built;
  // The feature switches of configs/<profile>.yaml (DESIGN.md's table).
  r.fp8 = profile != "conservative";
  r.expert_parallel = true;
  r.dual_batch_overlap = profile != "conservative";
  return r;
}

const Check* find_check(const Readiness& r, const std::string& name) {
  for (const auto& c : r.checks)
    if (c.name == name) return &c;
  return nullptr;
}

int count_level(const Readiness& r, CheckLevel l) {
  return int(std::count_if(r.checks.begin(), r.checks.end(), [&](const Check& c) { return c.level == l; }));
}

TEST(Readiness, NoDriverAutoFallsBackToCpuAndIsReady) {
  for (const char* profile : {"conservative", "balanced", "aggressive"}) {
    for (bool built : {false, true}) {
      Readiness r = evaluate_readiness(no_driver(), req_for(profile, Backend::kAuto, built));
      EXPECT_TRUE(r.ready()) << profile;
      EXPECT_EQ(r.resolved, Backend::kCpu);
      const Check* b = find_check(r, "backend");
      ASSERT_NE(b, nullptr);
      EXPECT_EQ(b->level, CheckLevel::kPass);
      EXPECT_NE(b->detail.find("CPU"), std::string::npos);
      EXPECT_EQ(count_level(r, CheckLevel::kFail), 0);
    }
  }
}

TEST(Readiness, CudaBackendWithoutGpuFails) {
  Readiness r = evaluate_readiness(no_driver(), req_for("conservative", Backend::kCuda));
  EXPECT_FALSE(r.ready());
  const Check* b = find_check(r, "backend");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->level, CheckLevel::kFail);
  EXPECT_NE(b->detail.find("no NVIDIA driver"), std::string::npos) << b->detail;

  GpuProbe no_device;
  no_device.driver_loaded = true;
  no_device.driver_error = "cuInit failed: CUDA_ERROR_NO_DEVICE (100)";
  r = evaluate_readiness(no_device, req_for("conservative", Backend::kCuda));
  EXPECT_FALSE(r.ready());
  EXPECT_NE(find_check(r, "backend")->detail.find("no GPU"), std::string::npos);
}

TEST(Readiness, CudaBackendInCpuOnlyBuildFails) {
  Readiness r = evaluate_readiness(machine({gpu(0, 9, 0)}), req_for("conservative", Backend::kCuda, false));
  EXPECT_FALSE(r.ready());
  EXPECT_NE(find_check(r, "backend")->detail.find("MOEOPT_CUDA=OFF"), std::string::npos);
  // auto on the same machine: CPU, ready.
  r = evaluate_readiness(machine({gpu(0, 9, 0)}), req_for("balanced", Backend::kAuto, false));
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.resolved, Backend::kCpu);
}

TEST(Readiness, CpuBackendIgnoresGpus) {
  Readiness r = evaluate_readiness(machine({gpu(0, 8, 0)}), req_for("aggressive", Backend::kCpu));
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.resolved, Backend::kCpu);
  EXPECT_EQ(find_check(r, "fp8"), nullptr);
}

TEST(Readiness, SingleHopperReadyForEveryProfile) {
  for (const char* profile : {"conservative", "balanced", "aggressive"}) {
    for (Backend b : {Backend::kAuto, Backend::kCuda}) {
      Readiness r = evaluate_readiness(machine({gpu(0, 9, 0)}), req_for(profile, b));
      EXPECT_TRUE(r.ready()) << profile;
      EXPECT_EQ(r.resolved, Backend::kCuda);
      EXPECT_EQ(r.usable_gpus, std::vector<int>{0});
      const Check* fp8 = find_check(r, "fp8");
      if (std::string(profile) == "conservative") EXPECT_EQ(fp8, nullptr);
      else { ASSERT_NE(fp8, nullptr); EXPECT_EQ(fp8->level, CheckLevel::kPass); }
      // One GPU: EP and DBO are informational, never failures or warnings.
      EXPECT_EQ(count_level(r, CheckLevel::kWarn), 0);
    }
  }
}

TEST(Readiness, Fp8ProfileFailsOnGpuWithoutFp8) {
  // A build whose kernels also ran on sm_80 (kernel_sms lists it): FP8 is then the blocker.
  Requirements req = req_for("balanced", Backend::kCuda);
  req.kernel_sms = {80, 90};
  Readiness r = evaluate_readiness(machine({gpu(0, 8, 0, "A100")}), req);
  EXPECT_FALSE(r.ready());
  const Check* fp8 = find_check(r, "fp8");
  ASSERT_NE(fp8, nullptr);
  EXPECT_EQ(fp8->level, CheckLevel::kFail);
  EXPECT_NE(fp8->detail.find("gpu 0 (sm_80)"), std::string::npos) << fp8->detail;
  // Conservative needs no FP8: ready on the same GPU.
  req = req_for("conservative", Backend::kCuda);
  req.kernel_sms = {80, 90};
  EXPECT_TRUE(evaluate_readiness(machine({gpu(0, 8, 0)}), req).ready());
}

TEST(Readiness, GpuOutsideTheBuildsArchitecturesIsNotUsable) {
  // sm_90a kernels do not run on Ampere: auto falls back to CPU, cuda fails.
  Readiness r = evaluate_readiness(machine({gpu(0, 8, 0, "A100")}), req_for("conservative", Backend::kAuto));
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.resolved, Backend::kCpu);
  ASSERT_NE(find_check(r, "gpu 0"), nullptr);  // the unusable GPU is explained, as a warning
  EXPECT_EQ(find_check(r, "gpu 0")->level, CheckLevel::kWarn);
  EXPECT_NE(find_check(r, "gpu 0")->detail.find("sm_80"), std::string::npos);
  r = evaluate_readiness(machine({gpu(0, 8, 0, "A100")}), req_for("conservative", Backend::kCuda));
  EXPECT_FALSE(r.ready());
  ASSERT_NE(find_check(r, "gpu 0"), nullptr);
  // Mixed: the Hopper is used, the Ampere is a warning.
  r = evaluate_readiness(machine({gpu(0, 9, 0), gpu(1, 8, 0, "A100")}), req_for("conservative", Backend::kCuda));
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.usable_gpus, std::vector<int>{0});
  ASSERT_NE(find_check(r, "gpu 1"), nullptr);
  EXPECT_EQ(find_check(r, "gpu 1")->level, CheckLevel::kWarn);
}

TEST(Readiness, FailedSelftestFailsVerify) {
  GpuProbe p = machine({gpu(0, 9, 0), gpu(1, 9, 0)});
  p.selftest[1] = {1, false, "axpy kernel: 12 wrong elements"};
  Readiness r = evaluate_readiness(p, req_for("conservative", Backend::kAuto));
  EXPECT_FALSE(r.ready());
  EXPECT_EQ(r.usable_gpus, std::vector<int>{0});
  ASSERT_NE(find_check(r, "gpu 1"), nullptr);
  EXPECT_NE(find_check(r, "gpu 1")->detail.find("12 wrong elements"), std::string::npos);
}

TEST(Readiness, BrokenOnlyGpuFailsEvenWhenAutoFallsBackToCpu) {
  // The self-test is what says the machine is broken; auto must not hide that behind a
  // silent CPU fallback.
  GpuProbe p = machine({gpu(0, 9, 0)});
  p.selftest[0] = {0, false, "CUDA error: no kernel image is available for execution on the device"};
  Readiness r = evaluate_readiness(p, req_for("conservative", Backend::kAuto));
  EXPECT_EQ(r.resolved, Backend::kCpu);
  EXPECT_FALSE(r.ready());
  ASSERT_NE(find_check(r, "gpu 0"), nullptr);
  EXPECT_EQ(find_check(r, "gpu 0")->level, CheckLevel::kFail);
  // --backend cpu does not look at GPUs at all.
  EXPECT_TRUE(evaluate_readiness(p, req_for("conservative", Backend::kCpu)).ready());
}

TEST(Readiness, ExpertParallelWantsNcclAndPeerAccessButOnlyWarns) {
  Readiness r = evaluate_readiness(machine({gpu(0, 9, 0), gpu(1, 9, 0)}, /*nccl=*/false),
                                   req_for("balanced", Backend::kCuda));
  EXPECT_TRUE(r.ready());
  ASSERT_NE(find_check(r, "nccl"), nullptr);
  EXPECT_EQ(find_check(r, "nccl")->level, CheckLevel::kWarn);
  EXPECT_NE(find_check(r, "nccl")->detail.find("libnccl.so.2"), std::string::npos);

  GpuProbe p = machine({gpu(0, 9, 0), gpu(1, 9, 0)});
  p.peers[1].can_access = false;  // 1 -> 0
  r = evaluate_readiness(p, req_for("balanced", Backend::kCuda));
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(find_check(r, "nccl")->level, CheckLevel::kPass);
  ASSERT_NE(find_check(r, "peer access"), nullptr);
  EXPECT_EQ(find_check(r, "peer access")->level, CheckLevel::kWarn);
  EXPECT_NE(find_check(r, "peer access")->detail.find("1->0"), std::string::npos);
  EXPECT_EQ(find_check(r, "dual-batch overlap"), nullptr);  // active with EP over 2 GPUs
}

TEST(Readiness, ParseBackend) {
  EXPECT_EQ(*parse_backend("auto"), Backend::kAuto);
  EXPECT_EQ(*parse_backend("cpu"), Backend::kCpu);
  EXPECT_EQ(*parse_backend("cuda"), Backend::kCuda);
  auto bad = parse_backend("rocm");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("rocm"), std::string::npos);
}

ProfileSummary summary() {
  return {"balanced", "configs/balanced.yaml", {{"fused_moe", true, false}, {"fp8_kv_cache", false, false}}};
}

TEST(VerifyReport, JsonShapeWithGpus) {
  SystemReport rep;
  rep.os.kernel_name = "Linux";
  rep.cpu = CpuInfo{};
  rep.cpu->logical_cores = 16;
  rep.memory = MemInfo{uint64_t(128) << 30, uint64_t(100) << 30};
  rep.gpu = machine({gpu(0, 9, 0, "NVIDIA H100 80GB HBM3"), gpu(1, 9, 0, "NVIDIA H100 80GB HBM3")});
  rep.disk_error = "statvfs failed";
  Requirements req = req_for("balanced", Backend::kAuto);
  Readiness r = evaluate_readiness(rep.gpu, req);
  nlohmann::json j = report_to_json(rep, summary(), req, r);
  for (const char* key : {"os", "cpu", "memory", "disk", "cuda", "nvml", "nccl", "gpus", "peer_access",
                          "selftest", "profile", "backend", "checks", "ready"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_TRUE(j["disk"].is_null());
  EXPECT_EQ(j["cpu"]["logical_cores"], 16);
  EXPECT_EQ(j["cuda"]["driver_version"], "12.8");
  EXPECT_EQ(j["cuda"]["runtime_version"], "13.0");
  EXPECT_EQ(j["nccl"]["version"], "2.21.5");
  ASSERT_EQ(j["gpus"].size(), 2u);
  EXPECT_EQ(j["gpus"][0]["compute_capability"], "9.0");
  EXPECT_EQ(j["gpus"][0]["fp8"], true);
  EXPECT_EQ(j["gpus"][0]["wgmma"], true);
  EXPECT_TRUE(j["gpus"][0]["memory_used_bytes"].is_null());
  EXPECT_EQ(j["gpus"][1]["selftest"]["passed"], true);
  EXPECT_EQ(j["peer_access"].size(), 2u);
  EXPECT_EQ(j["selftest"]["passed"], true);
  EXPECT_EQ(j["backend"]["resolved"], "cuda");
  EXPECT_EQ(j["backend"]["usable_gpus"], nlohmann::json::array({0, 1}));
  EXPECT_EQ(j["profile"]["name"], "balanced");
  EXPECT_EQ(j["profile"]["source"], "configs/balanced.yaml");
  EXPECT_EQ(j["profile"]["features"][0]["name"], "fused_moe");
  EXPECT_EQ(j["profile"]["features"][0]["implemented"], false);
  EXPECT_EQ(j["ready"], true);
  for (const auto& c : j["checks"]) {
    std::string s = c["status"];
    EXPECT_TRUE(s == "pass" || s == "fail" || s == "warn" || s == "info") << s;
  }
}

TEST(VerifyReport, NoGpuTextSaysSoAndJsonIsNull) {
  SystemReport rep;
  rep.gpu = no_driver();
  Requirements req = req_for("balanced", Backend::kAuto, false);
  Readiness r = evaluate_readiness(rep.gpu, req);
  std::string text = render_report_text(rep, summary(), req, r);
  EXPECT_NE(text.find("no NVIDIA GPU found"), std::string::npos) << text;
  EXPECT_NE(text.find("✓ backend"), std::string::npos) << text;
  EXPECT_NE(text.find("CPU reference backend ready"), std::string::npos);
  EXPECT_NE(text.find("requested, unavailable in this build"), std::string::npos);
  EXPECT_NE(text.find("Ready (backend cpu)"), std::string::npos);
  nlohmann::json j = report_to_json(rep, summary(), req, r);
  EXPECT_EQ(j["gpus"], nlohmann::json::array());
  EXPECT_TRUE(j["cuda"]["driver_version"].is_null());
  EXPECT_EQ(j["cuda"]["driver_loaded"], false);
  EXPECT_EQ(j["selftest"]["ran"], false);
  EXPECT_EQ(j["backend"]["resolved"], "cpu");
  EXPECT_EQ(j["ready"], true);
}

TEST(VerifyReport, FailureIsMarked) {
  SystemReport rep;
  rep.gpu = no_driver();
  Requirements req = req_for("conservative", Backend::kCuda);
  Readiness r = evaluate_readiness(rep.gpu, req);
  std::string text = render_report_text(rep, summary(), req, r);
  EXPECT_NE(text.find("✗ backend"), std::string::npos) << text;
  EXPECT_NE(text.find("NOT ready"), std::string::npos);
  EXPECT_EQ(report_to_json(rep, summary(), req, r)["ready"], false);
}

TEST(VerifyReport, FormatBytes) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(uint64_t(3) << 20), "3.0 MiB");
  EXPECT_EQ(format_bytes(85520809984ull), "79.6 GiB");
  EXPECT_EQ(format_bytes(uint64_t(2) << 40), "2.0 TiB");
}

}  // namespace
}  // namespace moeopt::system
