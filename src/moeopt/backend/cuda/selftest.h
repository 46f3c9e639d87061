// GPU self-test used by `moeopt verify`: allocates on each device, runs a small kernel,
// copies back and checks every element. Only built with MOEOPT_CUDA.
#pragma once

#include <string>
#include <vector>

namespace moeopt::cuda {

struct DeviceSelftest {
  int device = 0;
  bool passed = false;
  std::string detail;  // what ran, or what failed
};

// Runtime version as reported by the statically linked CUDA runtime (e.g. 13000), 0 if none.
int runtime_version();
// Runs the self-test on every visible device. Empty when no device/driver is present.
std::vector<DeviceSelftest> run_selftest();

}  // namespace moeopt::cuda
