// Shared by the GPU tests (tests/unit/cuda_*_test.cpp): whether a CUDA device is present, and
// the skip every GPU test starts with, so test_cuda passes cleanly on machines without one.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

namespace moeopt {

inline bool have_gpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" / "no device" error
    return false;
  }
  return n > 0;
}

}  // namespace moeopt

#define SKIP_WITHOUT_GPU() \
  if (!::moeopt::have_gpu()) GTEST_SKIP() << "no CUDA device"
