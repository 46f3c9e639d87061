// ops::Context: everything an op needs besides its tensors, passed explicitly (no globals).
//
// Every op in src/moeopt/ops takes `const Context&` first. The op validates shapes, dtypes
// and devices once (ops/<family>.cpp), then dispatches on the tensors' device:
//   - Device::kCpu  -> the CPU reference backend (backend/cpu), threaded with `pool`;
//   - Device::kCuda -> `device_backend` (implemented by backend/cuda), launched on `stream`.
// A CUDA tensor with no device backend in the context is a clean kUnsupported error.
#pragma once

#include <cstddef>

namespace moeopt {
class ThreadPool;
}

namespace moeopt::ops {

class DeviceBackend;     // ops/device_backend.h
class ScratchArena;      // ops/scratch.h
struct ExpertInputStats;  // ops/sparsity.h

// Scratch memory an op may use for temporaries (device memory on CUDA). The CPU reference
// allocates its own small temporaries and ignores it.
struct Workspace {
  void* data = nullptr;
  size_t bytes = 0;
};

struct Context {
  ThreadPool* pool = nullptr;               // CPU: worker threads; null runs on the caller
  void* stream = nullptr;                   // CUDA: the cudaStream_t to launch on
  DeviceBackend* device_backend = nullptr;  // CUDA: op implementations
  Workspace workspace{};                    // optional scratch (see above)
  ScratchArena* arena = nullptr;            // a forward pass's temporaries (model layer)
  ExpertInputStats* expert_stats = nullptr; // CPU: calibration of 2:4 pruning (ops/sparsity.h)
};

}  // namespace moeopt::ops
