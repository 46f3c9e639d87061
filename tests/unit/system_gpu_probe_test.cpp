// GPU probe logic against fake driver/NVML/NCCL tables (no GPU needed), and the real loader
// on a library name that cannot exist: the "no driver" path must give a clean result.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "moeopt/system/gpu_probe.h"

namespace moeopt::system {
namespace {

// The fake machine the function tables below describe. Entry points are plain functions
// (the tables hold C function pointers), so they read this test-global state.
struct FakeGpu {
  std::string name;
  std::string bus;
  size_t bytes;
  int major, minor, sms;
};
struct FakeMachine {
  int init_result = 0;
  int driver_version = 12040;
  std::vector<FakeGpu> gpus;
  std::vector<std::pair<int, int>> no_peer;  // (from, to) pairs without peer access
  int fail_name_for = -1;                    // cuDeviceGetName fails for this device
  unsigned long long used_bytes = 0;
  bool nvml_init_ok = true;
};
FakeMachine g_fake;

int fake_init(unsigned) { return g_fake.init_result; }
int fake_driver_version(int* v) { *v = g_fake.driver_version; return 0; }
int fake_count(int* n) { *n = int(g_fake.gpus.size()); return 0; }
// Device handles are ordinal + 100, so a probe that confuses handles and ordinals fails.
int fake_get(int* dev, int ordinal) { *dev = ordinal + 100; return 0; }
int fake_name(char* buf, int len, int dev) {
  if (dev - 100 == g_fake.fail_name_for) return 999;
  std::strncpy(buf, g_fake.gpus.at(size_t(dev - 100)).name.c_str(), size_t(len));
  return 0;
}
int fake_mem(size_t* b, int dev) { *b = g_fake.gpus.at(size_t(dev - 100)).bytes; return 0; }
int fake_attr(int* v, int attr, int dev) {
  const FakeGpu& g = g_fake.gpus.at(size_t(dev - 100));
  switch (attr) {
    case kCuAttrComputeCapabilityMajor: *v = g.major; return 0;
    case kCuAttrComputeCapabilityMinor: *v = g.minor; return 0;
    case kCuAttrMultiprocessorCount: *v = g.sms; return 0;
    default: return 1;
  }
}
int fake_peer(int* can, int a, int b) {
  *can = 1;
  for (auto [f, t] : g_fake.no_peer)
    if (f == a - 100 && t == b - 100) *can = 0;
  return 0;
}
int fake_bus(char* buf, int len, int dev) {
  std::strncpy(buf, g_fake.gpus.at(size_t(dev - 100)).bus.c_str(), size_t(len));
  return 0;
}

int fake_nvml_init() { return g_fake.nvml_init_ok ? 0 : 3; }
int fake_nvml_shutdown() { return 0; }
int fake_nvml_version(char* buf, unsigned len) { std::strncpy(buf, "560.35.03", len); return 0; }
int fake_nvml_by_bus(const char* bus, void** handle) {
  for (size_t i = 0; i < g_fake.gpus.size(); ++i)
    if (g_fake.gpus[i].bus == bus) { *handle = &g_fake.gpus[i]; return 0; }
  return 6;  // NVML_ERROR_NOT_FOUND
}
int fake_nvml_mem(void* handle, NvmlMemory* m) {
  auto* g = static_cast<FakeGpu*>(handle);
  m->total = g->bytes;
  m->used = g_fake.used_bytes;
  m->free = g->bytes - g_fake.used_bytes;
  return 0;
}
int fake_nccl_version(int* v) { *v = 22105; return 0; }

Loaded<CudaDriverApi> fake_cuda() {
  Loaded<CudaDriverApi> l;
  l.ok = true;
  l.api.cuInit = fake_init;
  l.api.cuDriverGetVersion = fake_driver_version;
  l.api.cuDeviceGetCount = fake_count;
  l.api.cuDeviceGet = fake_get;
  l.api.cuDeviceGetName = fake_name;
  l.api.cuDeviceTotalMem_v2 = fake_mem;
  l.api.cuDeviceGetAttribute = fake_attr;
  l.api.cuDeviceCanAccessPeer = fake_peer;
  l.api.cuDeviceGetPCIBusId = fake_bus;
  return l;
}
Loaded<NvmlApi> fake_nvml() {
  Loaded<NvmlApi> l;
  l.ok = true;
  l.api.nvmlInit_v2 = fake_nvml_init;
  l.api.nvmlShutdown = fake_nvml_shutdown;
  l.api.nvmlSystemGetDriverVersion = fake_nvml_version;
  l.api.nvmlDeviceGetHandleByPciBusId_v2 = fake_nvml_by_bus;
  l.api.nvmlDeviceGetMemoryInfo = fake_nvml_mem;
  return l;
}
Loaded<NcclApi> fake_nccl() {
  Loaded<NcclApi> l;
  l.ok = true;
  l.api.ncclGetVersion = fake_nccl_version;
  return l;
}
template <typename Api>
Loaded<Api> missing(const char* why) {
  Loaded<Api> l;
  l.error = why;
  return l;
}

class GpuProbeTest : public ::testing::Test {
 protected:
  void SetUp() override { g_fake = FakeMachine{}; }
};

TEST_F(GpuProbeTest, TwoHoppersAndAnAmpere) {
  g_fake.gpus = {{"NVIDIA H100 80GB HBM3", "00000000:18:00.0", size_t(85520809984), 9, 0, 132},
                 {"NVIDIA H100 80GB HBM3", "00000000:2A:00.0", size_t(85520809984), 9, 0, 132},
                 {"NVIDIA A100-SXM4-80GB", "00000000:3B:00.0", size_t(85899345920), 8, 0, 108}};
  g_fake.no_peer = {{0, 2}, {2, 0}};
  g_fake.used_bytes = 1u << 30;
  GpuProbe p = probe_gpus(fake_cuda(), fake_nvml(), fake_nccl());
  EXPECT_TRUE(p.driver_loaded);
  EXPECT_EQ(p.driver_error, "");
  EXPECT_EQ(p.driver_version, 12040);
  ASSERT_EQ(p.devices.size(), 3u);
  EXPECT_EQ(p.devices[0].name, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(p.devices[0].memory_total_bytes, 85520809984u);
  EXPECT_EQ(p.devices[0].sm(), 90);
  EXPECT_EQ(p.devices[0].sm_count, 132);
  EXPECT_TRUE(p.devices[0].fp8());
  EXPECT_TRUE(p.devices[0].wgmma());
  EXPECT_EQ(p.devices[2].sm(), 80);
  EXPECT_FALSE(p.devices[2].fp8());
  EXPECT_FALSE(p.devices[2].wgmma());
  EXPECT_EQ(p.devices[1].memory_used_bytes, int64_t(1) << 30);  // matched by bus id
  EXPECT_EQ(p.nvml_driver_version, "560.35.03");
  // Every ordered pair once.
  ASSERT_EQ(p.peers.size(), 6u);
  for (const auto& pa : p.peers) {
    bool expect = !((pa.from == 0 && pa.to == 2) || (pa.from == 2 && pa.to == 0));
    EXPECT_EQ(pa.can_access, expect) << pa.from << "->" << pa.to;
  }
  EXPECT_TRUE(p.nccl_loaded);
  EXPECT_EQ(format_nccl_version(p.nccl_version_code), "2.21.5");
}

TEST_F(GpuProbeTest, Fp8AndWgmmaByComputeCapability) {
  GpuDevice d;
  struct { int major, minor; bool fp8, wgmma; } cases[] = {
      {8, 0, false, false}, {8, 6, false, false}, {8, 9, true, false},  // Ada has FP8, no wgmma
      {9, 0, true, true},   {10, 0, true, false}, {12, 0, true, false}};
  for (auto c : cases) {
    d.cc_major = c.major;
    d.cc_minor = c.minor;
    EXPECT_EQ(d.fp8(), c.fp8) << c.major << "." << c.minor;
    EXPECT_EQ(d.wgmma(), c.wgmma) << c.major << "." << c.minor;
  }
}

TEST_F(GpuProbeTest, DriverWithoutDevices) {
  g_fake.init_result = kCudaErrorNoDevice;
  GpuProbe p = probe_gpus(fake_cuda(), missing<NvmlApi>("no nvml"), missing<NcclApi>("no nccl"));
  EXPECT_TRUE(p.driver_loaded);
  EXPECT_FALSE(p.has_gpu());
  EXPECT_NE(p.driver_error.find("CUDA_ERROR_NO_DEVICE"), std::string::npos) << p.driver_error;
  EXPECT_FALSE(p.nvml_loaded);
  EXPECT_FALSE(p.nccl_loaded);
  EXPECT_EQ(p.nccl_error, "no nccl");
}

TEST_F(GpuProbeTest, PerDeviceQueryFailureIsRecordedNotFatal) {
  g_fake.gpus = {{"A", "0:1", 1, 9, 0, 1}, {"B", "0:2", 2, 9, 0, 1}};
  g_fake.fail_name_for = 1;
  g_fake.nvml_init_ok = false;
  GpuProbe p = probe_gpus(fake_cuda(), fake_nvml(), fake_nccl());
  ASSERT_EQ(p.devices.size(), 2u);
  EXPECT_EQ(p.devices[0].error, "");
  EXPECT_NE(p.devices[1].error.find("cuDeviceGetName"), std::string::npos);
  EXPECT_FALSE(p.nvml_loaded);
  EXPECT_NE(p.nvml_error.find("nvmlInit"), std::string::npos);
  EXPECT_EQ(p.devices[0].memory_used_bytes, -1);
}

TEST_F(GpuProbeTest, NoDriverLibraryGivesCleanNoGpuResult) {
  // The real loader on names no system has: exactly what a machine without a driver sees.
  auto cuda = load_cuda_driver_api("libmoeopt-no-such-driver.so.1");
  auto nvml = load_nvml_api("libmoeopt-no-such-nvml.so.1");
  auto nccl = load_nccl_api("libmoeopt-no-such-nccl.so.2");
  EXPECT_FALSE(cuda.ok);
  EXPECT_NE(cuda.error.find("libmoeopt-no-such-driver.so.1"), std::string::npos) << cuda.error;
  EXPECT_EQ(cuda.api.cuInit, nullptr);
  GpuProbe p = probe_gpus(cuda, nvml, nccl);
  EXPECT_FALSE(p.driver_loaded);
  EXPECT_FALSE(p.has_gpu());
  EXPECT_TRUE(p.peers.empty());
  EXPECT_EQ(p.driver_version, 0);
  EXPECT_FALSE(p.driver_error.empty());
  EXPECT_FALSE(p.nvml_loaded);
  EXPECT_FALSE(p.nccl_loaded);
}

TEST_F(GpuProbeTest, LibraryWithoutTheSymbolsIsRejected) {
  // libm exists everywhere and exports none of the driver's entry points.
  auto cuda = load_cuda_driver_api("libm.so.6");
  EXPECT_FALSE(cuda.ok);
  EXPECT_NE(cuda.error.find("missing symbol cuInit"), std::string::npos) << cuda.error;
}

TEST_F(GpuProbeTest, RealProbeNeverCrashes) {
  // On a machine without a driver this is the no-GPU path; with one, devices are listed.
  GpuProbe p = probe_gpus();
  if (!p.driver_loaded) {
    EXPECT_FALSE(p.has_gpu());
  }
  for (const auto& d : p.devices) EXPECT_FALSE(d.name.empty());
}

TEST(VersionFormat, CudaAndNccl) {
  EXPECT_EQ(format_cuda_version(12040), "12.4");
  EXPECT_EQ(format_cuda_version(13000), "13.0");
  EXPECT_EQ(format_cuda_version(11080), "11.8");
  EXPECT_EQ(format_cuda_version(0), "-");
  EXPECT_EQ(format_nccl_version(21805), "2.18.5");
  EXPECT_EQ(format_nccl_version(2708), "2.7.8");  // pre-2.9 encoding
  EXPECT_EQ(format_nccl_version(0), "-");
}

}  // namespace
}  // namespace moeopt::system
