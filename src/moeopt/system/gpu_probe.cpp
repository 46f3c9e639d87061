// GPU probes through dlopen'ed CUDA driver, NVML and NCCL. See gpu_probe.h.
#include "moeopt/system/gpu_probe.h"

#include <dlfcn.h>

#include <cstring>

#include <fmt/format.h>

namespace moeopt::system {
namespace {

// Opens `library` and resolves each named symbol into its slot; the first failure wins.
class SymbolLoader {
 public:
  explicit SymbolLoader(const std::string& library) : library_(library) {
    dlerror();
    handle_ = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle_) {
      const char* e = dlerror();
      error_ = e ? e : (library + ": cannot be loaded");
    }
  }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

  template <typename Fn>
  void get(Fn& slot, const char* name, bool required = true) {
    if (!handle_) return;
    void* sym = dlsym(handle_, name);
    if (!sym && required && error_.empty()) error_ = fmt::format("{}: missing symbol {}", library_, name);
    // POSIX guarantees object and function pointers convert through void* for dlsym.
    slot = reinterpret_cast<Fn>(sym);
  }

 private:
  std::string library_;
  void* handle_ = nullptr;
  std::string error_;
};

std::string cu_error(const CudaDriverApi& api, int code) {
  const char* name = nullptr;
  if (api.cuGetErrorName && api.cuGetErrorName(code, &name) == kCudaSuccess && name)
    return fmt::format("{} ({})", name, code);
  switch (code) {
    case kCudaErrorNoDevice: return "CUDA_ERROR_NO_DEVICE (100)";
    case kCudaErrorInsufficientDriver: return "CUDA_ERROR_INSUFFICIENT_DRIVER (35)";
    default: return fmt::format("CUresult {}", code);
  }
}

// Copies a C string the library wrote into a fixed buffer, never reading past it.
std::string from_buffer(const char* buf, size_t cap) {
  return std::string(buf, strnlen(buf, cap));
}

void probe_devices(const CudaDriverApi& api, GpuProbe& out) {
  int count = 0;
  int rc = api.cuDeviceGetCount(&count);
  if (rc != kCudaSuccess) {
    out.driver_error = "cuDeviceGetCount failed: " + cu_error(api, rc);
    return;
  }
  if (count < 0 || count > 1024) {  // a driver never reports this; refuse to loop on it
    out.driver_error = fmt::format("cuDeviceGetCount returned {}", count);
    return;
  }
  std::vector<int> handles(size_t(count), -1);
  for (int i = 0; i < count; ++i) {
    GpuDevice d;
    d.index = i;
    int dev = -1;
    if ((rc = api.cuDeviceGet(&dev, i)) != kCudaSuccess) {
      d.error = "cuDeviceGet failed: " + cu_error(api, rc);
      out.devices.push_back(d);
      continue;
    }
    handles[size_t(i)] = dev;
    char name[256] = {};
    if ((rc = api.cuDeviceGetName(name, int(sizeof name) - 1, dev)) == kCudaSuccess)
      d.name = from_buffer(name, sizeof name);
    else
      d.error = "cuDeviceGetName failed: " + cu_error(api, rc);
    size_t bytes = 0;
    if ((rc = api.cuDeviceTotalMem_v2(&bytes, dev)) == kCudaSuccess)
      d.memory_total_bytes = bytes;
    else if (d.error.empty())
      d.error = "cuDeviceTotalMem failed: " + cu_error(api, rc);
    struct { int attr; int* dst; const char* what; } attrs[] = {
        {kCuAttrComputeCapabilityMajor, &d.cc_major, "compute capability major"},
        {kCuAttrComputeCapabilityMinor, &d.cc_minor, "compute capability minor"},
        {kCuAttrMultiprocessorCount, &d.sm_count, "multiprocessor count"},
    };
    for (auto& a : attrs) {
      if ((rc = api.cuDeviceGetAttribute(a.dst, a.attr, dev)) != kCudaSuccess && d.error.empty())
        d.error = fmt::format("cuDeviceGetAttribute({}) failed: {}", a.what, cu_error(api, rc));
    }
    if (api.cuDeviceGetPCIBusId) {
      char bus[64] = {};
      if (api.cuDeviceGetPCIBusId(bus, int(sizeof bus) - 1, dev) == kCudaSuccess)
        d.pci_bus_id = from_buffer(bus, sizeof bus);
    }
    out.devices.push_back(d);
  }
  for (int i = 0; i < count; ++i) {
    for (int j = 0; j < count; ++j) {
      if (i == j) continue;
      PeerAccess p{i, j, false};
      int can = 0;
      if (handles[size_t(i)] >= 0 && handles[size_t(j)] >= 0 &&
          api.cuDeviceCanAccessPeer(&can, handles[size_t(i)], handles[size_t(j)]) == kCudaSuccess)
        p.can_access = can != 0;
      out.peers.push_back(p);
    }
  }
}

// NVML numbers devices in PCI order regardless of CUDA_VISIBLE_DEVICES, so devices are
// matched by PCI bus id, never by index.
void probe_nvml(const NvmlApi& api, GpuProbe& out) {
  int rc = api.nvmlInit_v2();
  if (rc != 0) {
    out.nvml_loaded = false;
    out.nvml_error = fmt::format("nvmlInit failed (nvmlReturn {})", rc);
    return;
  }
  char version[96] = {};
  if (api.nvmlSystemGetDriverVersion(version, sizeof version - 1) == 0)
    out.nvml_driver_version = from_buffer(version, sizeof version);
  for (auto& d : out.devices) {
    if (d.pci_bus_id.empty()) continue;
    void* handle = nullptr;
    if (api.nvmlDeviceGetHandleByPciBusId_v2(d.pci_bus_id.c_str(), &handle) != 0) continue;
    NvmlMemoryV2 mem2{};
    mem2.version = unsigned(sizeof(NvmlMemoryV2)) | (2u << 24);
    NvmlMemory mem{};
    if (api.nvmlDeviceGetMemoryInfo_v2 && api.nvmlDeviceGetMemoryInfo_v2(handle, &mem2) == 0)
      d.memory_used_bytes = int64_t(mem2.used);
    else if (api.nvmlDeviceGetMemoryInfo(handle, &mem) == 0)
      d.memory_used_bytes = int64_t(mem.used);
  }
  api.nvmlShutdown();
}

}  // namespace

Loaded<CudaDriverApi> load_cuda_driver_api(const std::string& library) {
  Loaded<CudaDriverApi> out;
  SymbolLoader l(library);
  auto& a = out.api;
  l.get(a.cuInit, "cuInit");
  l.get(a.cuDriverGetVersion, "cuDriverGetVersion");
  l.get(a.cuDeviceGetCount, "cuDeviceGetCount");
  l.get(a.cuDeviceGet, "cuDeviceGet");
  l.get(a.cuDeviceGetName, "cuDeviceGetName");
  l.get(a.cuDeviceTotalMem_v2, "cuDeviceTotalMem_v2");
  l.get(a.cuDeviceGetAttribute, "cuDeviceGetAttribute");
  l.get(a.cuDeviceCanAccessPeer, "cuDeviceCanAccessPeer");
  l.get(a.cuDeviceGetPCIBusId, "cuDeviceGetPCIBusId", /*required=*/false);
  l.get(a.cuGetErrorName, "cuGetErrorName", /*required=*/false);
  out.ok = l.ok();
  out.error = l.error();
  return out;
}

Loaded<NvmlApi> load_nvml_api(const std::string& library) {
  Loaded<NvmlApi> out;
  SymbolLoader l(library);
  auto& a = out.api;
  l.get(a.nvmlInit_v2, "nvmlInit_v2");
  l.get(a.nvmlShutdown, "nvmlShutdown");
  l.get(a.nvmlSystemGetDriverVersion, "nvmlSystemGetDriverVersion");
  l.get(a.nvmlDeviceGetHandleByPciBusId_v2, "nvmlDeviceGetHandleByPciBusId_v2");
  l.get(a.nvmlDeviceGetMemoryInfo, "nvmlDeviceGetMemoryInfo");
  l.get(a.nvmlDeviceGetMemoryInfo_v2, "nvmlDeviceGetMemoryInfo_v2", /*required=*/false);
  out.ok = l.ok();
  out.error = l.error();
  return out;
}

Loaded<NcclApi> load_nccl_api(const std::string& library) {
  Loaded<NcclApi> out;
  SymbolLoader l(library);
  l.get(out.api.ncclGetVersion, "ncclGetVersion");
  out.ok = l.ok();
  out.error = l.error();
  return out;
}

GpuProbe probe_gpus(const Loaded<CudaDriverApi>& cuda, const Loaded<NvmlApi>& nvml,
                    const Loaded<NcclApi>& nccl) {
  GpuProbe out;
  out.driver_loaded = cuda.ok;
  if (!cuda.ok) {
    out.driver_error = cuda.error.empty() ? "CUDA driver not loaded" : cuda.error;
  } else {
    const CudaDriverApi& api = cuda.api;
    int v = 0;
    if (api.cuDriverGetVersion(&v) == kCudaSuccess) out.driver_version = v;
    out.driver_init_result = api.cuInit(0);
    if (out.driver_init_result == kCudaSuccess)
      probe_devices(api, out);
    else
      out.driver_error = "cuInit failed: " + cu_error(api, out.driver_init_result);
  }
  out.nvml_loaded = nvml.ok;
  if (!nvml.ok)
    out.nvml_error = nvml.error;
  else
    probe_nvml(nvml.api, out);
  out.nccl_loaded = nccl.ok;
  if (!nccl.ok) {
    out.nccl_error = nccl.error;
  } else {
    int v = 0;
    int rc = nccl.api.ncclGetVersion(&v);
    if (rc == 0) {
      out.nccl_version_code = v;
    } else {
      out.nccl_loaded = false;
      out.nccl_error = fmt::format("ncclGetVersion failed (ncclResult {})", rc);
    }
  }
  return out;
}

GpuProbe probe_gpus() {
  return probe_gpus(load_cuda_driver_api(), load_nvml_api(), load_nccl_api());
}

std::string format_cuda_version(int code) {
  if (code <= 0) return "-";
  return fmt::format("{}.{}", code / 1000, (code % 1000) / 10);
}

std::string format_nccl_version(int code) {
  if (code <= 0) return "-";
  if (code >= 10000) return fmt::format("{}.{}.{}", code / 10000, (code % 10000) / 100, code % 100);
  return fmt::format("{}.{}.{}", code / 1000, (code % 1000) / 100, code % 100);
}

}  // namespace moeopt::system
