// GPU probes for `moeopt verify`: the CUDA driver (libcuda.so.1), NVML (libnvidia-ml.so.1)
// and NCCL (libnccl.so.2), all loaded with dlopen so that the binary starts and answers on
// machines with no NVIDIA driver at all.
//
// The probe logic is written against small tables of function pointers (CudaDriverApi,
// NvmlApi, NcclApi). load_*_api() fills them from the shared libraries; tests fill them with
// fakes, which is how the multi-GPU, no-device and error paths are tested without a GPU.
// Only the few entry points we call are declared, with the C ABI types of the driver
// headers spelled out as plain ints/pointers (CUresult and nvmlReturn_t are ints; CUdevice is
// an int; nvmlDevice_t is an opaque pointer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moeopt::system {

// --- driver entry points ------------------------------------------------------------------

struct CudaDriverApi {
  int (*cuInit)(unsigned int flags) = nullptr;
  int (*cuDriverGetVersion)(int* version) = nullptr;
  int (*cuDeviceGetCount)(int* count) = nullptr;
  int (*cuDeviceGet)(int* device, int ordinal) = nullptr;
  int (*cuDeviceGetName)(char* name, int len, int device) = nullptr;
  int (*cuDeviceTotalMem_v2)(size_t* bytes, int device) = nullptr;
  int (*cuDeviceGetAttribute)(int* value, int attribute, int device) = nullptr;
  int (*cuDeviceCanAccessPeer)(int* can, int device, int peer) = nullptr;
  // Optional: used for the PCI bus id (to match NVML devices) and error names.
  int (*cuDeviceGetPCIBusId)(char* bus_id, int len, int device) = nullptr;
  int (*cuGetErrorName)(int error, const char** name) = nullptr;
};

// The NVML memory record (nvmlMemory_t): three unsigned long longs.
struct NvmlMemory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

// nvmlMemory_v2_t: `used` excludes memory the driver reserves for itself (which the v1
// record counts as used), matching what nvidia-smi shows.
struct NvmlMemoryV2 {
  unsigned int version;  // sizeof(NvmlMemoryV2) | (2 << 24)
  unsigned long long total;
  unsigned long long reserved;
  unsigned long long free;
  unsigned long long used;
};
static_assert(sizeof(NvmlMemoryV2) == 40, "nvmlMemory_v2_t is 40 bytes on LP64");

struct NvmlApi {
  int (*nvmlInit_v2)() = nullptr;
  int (*nvmlShutdown)() = nullptr;
  int (*nvmlSystemGetDriverVersion)(char* version, unsigned int len) = nullptr;
  int (*nvmlDeviceGetHandleByPciBusId_v2)(const char* bus_id, void** device) = nullptr;
  int (*nvmlDeviceGetMemoryInfo)(void* device, NvmlMemory* memory) = nullptr;
  // Optional (drivers >= 510); preferred when present.
  int (*nvmlDeviceGetMemoryInfo_v2)(void* device, NvmlMemoryV2* memory) = nullptr;
};

struct NcclApi {
  int (*ncclGetVersion)(int* version) = nullptr;
};

// Attribute ids from cuda.h (CUdevice_attribute) that the probe reads.
inline constexpr int kCuAttrMultiprocessorCount = 16;
inline constexpr int kCuAttrComputeCapabilityMajor = 75;
inline constexpr int kCuAttrComputeCapabilityMinor = 76;
// CUresult values the probe tells apart.
inline constexpr int kCudaSuccess = 0;
inline constexpr int kCudaErrorNoDevice = 100;
inline constexpr int kCudaErrorInsufficientDriver = 35;

// A loaded library's table, or why it could not be loaded ("libcuda.so.1: cannot open
// shared object file: No such file or directory", "missing symbol cuDeviceGet").
template <typename Api>
struct Loaded {
  bool ok = false;
  Api api;
  std::string error;
};

// dlopen the library (default name when `library` is empty) and resolve every required
// symbol. Handles stay open for the life of the process: the statically linked CUDA runtime
// opens the same driver library, and unloading a driver while it is in use is unsafe.
Loaded<CudaDriverApi> load_cuda_driver_api(const std::string& library = "libcuda.so.1");
Loaded<NvmlApi> load_nvml_api(const std::string& library = "libnvidia-ml.so.1");
Loaded<NcclApi> load_nccl_api(const std::string& library = "libnccl.so.2");

// --- probe results ------------------------------------------------------------------------

struct GpuDevice {
  int index = 0;                    // CUDA ordinal (after CUDA_VISIBLE_DEVICES)
  std::string name;                 // "NVIDIA H100 80GB HBM3"
  std::string pci_bus_id;           // "0000:3B:00.0", empty if unknown
  uint64_t memory_total_bytes = 0;
  int64_t memory_used_bytes = -1;   // from NVML; -1 when NVML is absent
  int cc_major = 0, cc_minor = 0;   // compute capability
  int sm_count = 0;
  std::string error;                // non-empty when a query for this device failed

  int sm() const { return cc_major * 10 + cc_minor; }  // 90 for sm_90
  // FP8 (e4m3/e5m2) tensor-core MMA exists from Ada (sm_89) on.
  bool fp8() const { return sm() >= 89; }
  // wgmma (warpgroup MMA) exists on Hopper only (sm_90a); Blackwell replaced it with tcgen05.
  bool wgmma() const { return cc_major == 9; }
};

struct PeerAccess {
  int from = 0, to = 0;
  bool can_access = false;
};

// Result of the GPU kernel self-test (filled by the CLI from moeopt::cuda::run_selftest when
// the build has CUDA; the system layer does not link the CUDA backend).
struct GpuSelftestResult {
  int device = 0;
  bool passed = false;
  std::string detail;
};

struct GpuProbe {
  // Driver.
  bool driver_loaded = false;      // libcuda.so.1 found and all symbols resolved
  std::string driver_error;        // why not / why cuInit failed; empty when all is well
  int driver_init_result = -1;     // CUresult of cuInit(0), -1 when not called
  int driver_version = 0;          // cuDriverGetVersion: 12040 for CUDA 12.4
  std::vector<GpuDevice> devices;  // empty when no driver or no device
  std::vector<PeerAccess> peers;   // every ordered pair (i, j), i != j
  // NVML.
  bool nvml_loaded = false;
  std::string nvml_error;
  std::string nvml_driver_version;  // "560.35.03"
  // NCCL.
  bool nccl_loaded = false;
  std::string nccl_error;
  int nccl_version_code = 0;        // ncclGetVersion: 22105 for 2.21.5
  // CUDA runtime compiled into this binary (0 when built without CUDA or no driver).
  bool runtime_built = false;
  int runtime_version = 0;
  // Kernel self-test; `selftest_ran` is false when the build has no CUDA.
  bool selftest_ran = false;
  std::vector<GpuSelftestResult> selftest;

  bool has_gpu() const { return !devices.empty(); }
};

// Probes with the given tables (any may be unloaded: its part is then reported missing).
GpuProbe probe_gpus(const Loaded<CudaDriverApi>& cuda, const Loaded<NvmlApi>& nvml,
                    const Loaded<NcclApi>& nccl);
// Loads the real libraries and probes. Never fails: missing pieces are recorded as such.
GpuProbe probe_gpus();

// "12.4" from 12040; "-" for 0.
std::string format_cuda_version(int code);
// "2.21.5" from 22105 (NCCL >= 2.9 encodes major*10000 + minor*100 + patch; older releases
// used major*1000 + minor*100 + patch); "-" for 0.
std::string format_nccl_version(int code);

}  // namespace moeopt::system
