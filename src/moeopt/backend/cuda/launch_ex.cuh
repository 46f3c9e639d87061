// One kernel launch through cudaLaunchKernelEx, optionally with programmatic dependent launch
// (sm_90: the kernel may start while its predecessor in the stream drains; it must wait with
// griddepcontrol before reading what the predecessor wrote). Shared by the MoE launchers.
#pragma once

#include <cuda_runtime.h>

namespace moeopt::cuda::detail {

template <class... KArgs, class... Args>
cudaError_t launch_ex(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, bool pdl,
                      cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}

}  // namespace moeopt::cuda::detail
