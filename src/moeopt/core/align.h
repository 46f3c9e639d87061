// Alignment of device allocations and of the regions carved out of them.
#pragma once

#include <cstddef>

namespace moeopt {

// 256 bytes: what cudaMalloc returns and what cuBLASLt assumes of an operand unless told
// otherwise; host-side layouts of device memory (weights, workspaces, the step arena) align
// every region to it.
inline constexpr size_t kDeviceAlign = 256;

constexpr size_t align_up(size_t v, size_t alignment = kDeviceAlign) {
  return (v + alignment - 1) / alignment * alignment;
}

}  // namespace moeopt
