// Shared helpers of the CudaBackend op files: CUDA error -> Status, the context's stream, the
// kernels' element-type tag of a DType, and the argument checks every CUDA op repeats (dtype,
// dense 16-byte aligned tensors).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "moeopt/backend/cuda/kernels/elem_dtype.cuh"
#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/check.h"
#include "moeopt/ops/context.h"

namespace moeopt::cuda {

inline cudaStream_t stream_of(const ops::Context& ctx) {
  return static_cast<cudaStream_t>(ctx.stream);
}

inline Status cuda_status(cudaError_t e, const char* op, const char* what) {
  if (e == cudaSuccess) return Status::ok_status();
  return make_error(ErrorCode::kInternal, "{}: {} failed: {}", op, what, cudaGetErrorString(e));
}

// The kernels' tag of a float dtype the caller has already checked (f32, bf16, f16); any
// other dtype reads as f32, which no validated call passes.
// Streaming multiprocessors of the current device (132 if it cannot be asked: the callers
// only tune grid sizes with it).
inline int sm_count() {
  int dev = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) {
    cudaGetLastError();  // clear the error: nothing failed that the caller must know
    return 132;
  }
  return n;
}

inline kernels::ElemDType elem_dtype_of(DType t) {
  switch (t) {
    case DType::kBF16: return kernels::ElemDType::kBF16;
    case DType::kF16: return kernels::ElemDType::kF16;
    case DType::kF32:
    case DType::kF8E4M3:
    case DType::kF64:
    case DType::kI8:
    case DType::kU8:
    case DType::kI16:
    case DType::kI32:
    case DType::kI64:
    case DType::kBool: return kernels::ElemDType::kF32;
  }
  return kernels::ElemDType::kF32;
}

inline Status need_dtype(const char* op, const char* name, const TensorView& t, DType want) {
  if (t.dtype == want) return Status::ok_status();
  return make_error(ErrorCode::kUnsupported, "{}: {} is {}, the CUDA backend takes {}", op, name,
                    dtype_name(t.dtype), dtype_name(want));
}

// Contiguous, 16-byte aligned (the kernels move 16-byte chunks).
inline Status need_dense(const char* op, const char* name, const TensorView& t) {
  MOEOPT_RETURN_IF_ERROR(ops::expect_contiguous(op, name, t));
  if (t.numel() > 0 && (reinterpret_cast<uintptr_t>(t.data) & 15u) != 0)
    return make_error(ErrorCode::kUnsupported, "{}: {} is not 16-byte aligned", op, name);
  return Status::ok_status();
}

inline Status need_on_gpu(const char* op, const char* name, const TensorView& t) {
  if (t.device == Device::kCuda) return Status::ok_status();
  return make_error(ErrorCode::kInvalidArgument, "{}: {} is not on the GPU", op, name);
}

}  // namespace moeopt::cuda
