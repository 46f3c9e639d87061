// Device self-test: y[i] = a * x[i] + i over 1M floats per device, checked on the host, then
// a few op cases against the CPU reference (selftest_ops.h).
// A failure here means the driver, the runtime or the sm_90a build does not work on this GPU.
#include "moeopt/backend/cuda/selftest.h"
#include "moeopt/backend/cuda/selftest_ops.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace moeopt::cuda {
namespace {

__global__ void axpi_kernel(const float* __restrict__ x,  // [n] f32
                            float* __restrict__ y,        // [n] f32
                            float a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + float(i);
}

std::string err_str(cudaError_t e) { return std::string(cudaGetErrorString(e)); }

}  // namespace

int runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : 0;
}

std::vector<DeviceSelftest> run_selftest() {
  std::vector<DeviceSelftest> out;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver"/"no device" error
    return out;
  }
  constexpr int n = 1 << 20;
  std::vector<float> hx(n), hy(n);
  for (int i = 0; i < n; ++i) hx[i] = float((int64_t(i) * 7919) % 1013) * 0.5f;
  for (int d = 0; d < count; ++d) {
    DeviceSelftest r;
    r.device = d;
    float *x = nullptr, *y = nullptr;
    cudaError_t e = cudaSetDevice(d);
    if (e == cudaSuccess) e = cudaMalloc(&x, n * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc(&y, n * sizeof(float));
    if (e == cudaSuccess) e = cudaMemcpy(x, hx.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemset(y, 0xff, n * sizeof(float));  // poison: NaN
    if (e == cudaSuccess) {
      axpi_kernel<<<(n + 255) / 256, 256>>>(x, y, 3.0f, n);
      e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpy(hy.data(), y, n * sizeof(float), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) {
      int bad = 0;
      for (int i = 0; i < n; ++i)
        if (!(hy[i] == 3.0f * hx[i] + float(i))) ++bad;
      r.passed = bad == 0;
      r.detail = r.passed ? "axpy kernel on 1M floats: exact"
                          : "axpy kernel: " + std::to_string(bad) + " wrong elements";
      if (r.passed) {
        std::string ops_detail;
        r.passed = run_op_selftest(&ops_detail);
        r.detail += "; " + ops_detail;
      }
    } else {
      r.detail = "CUDA error: " + err_str(e);
    }
    cudaFree(x);
    cudaFree(y);
    out.push_back(r);
  }
  return out;
}

}  // namespace moeopt::cuda
