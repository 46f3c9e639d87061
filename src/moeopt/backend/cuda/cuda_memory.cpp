// CudaBackend's memory side (cuda_backend.h): allocation, copies, synthetic weights and
// dtype conversion.
//
// Host-to-device copies stream through two pinned staging buffers of kStagingBytes: the host
// memcpy into one half overlaps the DMA of the other, and an event per half says when it may
// be refilled. So a pageable source (an mmap'd safetensors file) still copies at close to
// PCIe speed and the caller may reuse its memory as soon as the call returns.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/cuda_check.h"
#include "moeopt/backend/cuda/memory_launch.h"

namespace moeopt::cuda {

struct CudaBackend::Staging {
  static constexpr size_t kBytes = size_t(16) << 20;
  void* host[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
  int next = 0;
  std::mutex mu;

  ~Staging() {
    for (int i = 0; i < 2; ++i) {
      if (done[i]) {
        cudaEventSynchronize(done[i]);
        cudaEventDestroy(done[i]);
      }
      if (host[i]) cudaFreeHost(host[i]);
    }
  }
};

namespace {

Result<kernels::ElemDType> elem_type(const char* op, DType t) {
  switch (t) {
    case DType::kF32: return kernels::ElemDType::kF32;
    case DType::kF16: return kernels::ElemDType::kF16;
    case DType::kBF16: return kernels::ElemDType::kBF16;
    case DType::kF8E4M3:
    case DType::kF64:
    case DType::kI8:
    case DType::kU8:
    case DType::kI16:
    case DType::kI32:
    case DType::kI64:
    case DType::kBool: break;
  }
  return make_error(ErrorCode::kUnsupported, "{}: dtype {} is not a float type the GPU fills",
                    op, dtype_name(t));
}

}  // namespace

Result<void*> CudaBackend::allocate(size_t bytes) {
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    return make_error(ErrorCode::kResourceExhausted,
                      "GPU allocation of {:.2f} GiB failed ({}); {:.2f} of {:.2f} GiB free",
                      double(bytes) / (1 << 30), cudaGetErrorString(e),
                      double(free_b) / (1 << 30), double(total_b) / (1 << 30));
  }
  return p;
}

void CudaBackend::release(void* ptr) {
  if (ptr) cudaFree(ptr);
}

Status CudaBackend::copy_to_device(const ops::Context& ctx, void* dst, const void* host_src,
                                   size_t bytes) {
  constexpr const char* op = "copy_to_device";
  if (bytes == 0) return {};
  cudaStream_t s = stream_of(ctx);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!staging_) {
      auto st = std::make_shared<Staging>();
      for (int i = 0; i < 2; ++i) {
        MOEOPT_RETURN_IF_ERROR(cuda_status(cudaMallocHost(&st->host[i], Staging::kBytes), op,
                                           "pinned staging allocation"));
        MOEOPT_RETURN_IF_ERROR(cuda_status(
            cudaEventCreateWithFlags(&st->done[i], cudaEventDisableTiming), op, "event create"));
      }
      staging_ = std::move(st);
    }
  }
  Staging& st = *staging_;
  std::lock_guard<std::mutex> lock(st.mu);
  const char* src = static_cast<const char*>(host_src);
  char* out = static_cast<char*>(dst);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(Staging::kBytes, bytes - done);
    const int h = st.next;
    st.next ^= 1;
    MOEOPT_RETURN_IF_ERROR(cuda_status(cudaEventSynchronize(st.done[h]), op, "staging wait"));
    std::memcpy(st.host[h], src + done, n);
    MOEOPT_RETURN_IF_ERROR(cuda_status(
        cudaMemcpyAsync(out + done, st.host[h], n, cudaMemcpyHostToDevice, s), op, "copy"));
    MOEOPT_RETURN_IF_ERROR(cuda_status(cudaEventRecord(st.done[h], s), op, "event record"));
    done += n;
  }
  return {};
}

Status CudaBackend::copy_to_host(const ops::Context& ctx, void* host_dst, const void* src,
                                 size_t bytes) {
  if (bytes == 0) return {};
  cudaStream_t s = stream_of(ctx);
  MOEOPT_RETURN_IF_ERROR(cuda_status(
      cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, s), "copy_to_host", "copy"));
  return cuda_status(cudaStreamSynchronize(s), "copy_to_host", "synchronize");
}

Status CudaBackend::copy_on_device(const ops::Context& ctx, void* dst, const void* src,
                                   size_t bytes) {
  if (bytes == 0) return {};
  return cuda_status(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_of(ctx)),
                     "copy_on_device", "copy");
}

Status CudaBackend::fill_zero(const ops::Context& ctx, void* dst, size_t bytes) {
  if (bytes == 0) return {};
  return cuda_status(cudaMemsetAsync(dst, 0, bytes, stream_of(ctx)), "fill_zero", "memset");
}

Status CudaBackend::synchronize(const ops::Context& ctx) {
  return cuda_status(cudaStreamSynchronize(stream_of(ctx)), "synchronize", "stream");
}

Status CudaBackend::memory_info(size_t* free_bytes, size_t* total_bytes) {
  return cuda_status(cudaMemGetInfo(free_bytes, total_bytes), "memory_info", "cudaMemGetInfo");
}

Status CudaBackend::random_fill(const ops::Context& ctx, const TensorView& t,
                                const ops::RandomFill& fill) {
  constexpr const char* op = "random_fill";
  MOEOPT_RETURN_IF_ERROR(need_on_gpu(op, "tensor", t));
  MOEOPT_RETURN_IF_ERROR(ops::expect_contiguous(op, "tensor", t));
  MOEOPT_ASSIGN_OR_RETURN(kernels::ElemDType et, elem_type(op, t.dtype));
  return cuda_status(detail::launch_random_fill(t.data, et, t.numel(), fill.key, int(fill.rule),
                                                fill.fan_in, stream_of(ctx)),
                     op, "launch");
}

Status CudaBackend::convert(const ops::Context& ctx, const TensorView& src, const TensorView& dst) {
  constexpr const char* op = "convert";
  MOEOPT_RETURN_IF_ERROR(need_on_gpu(op, "src", src));
  MOEOPT_RETURN_IF_ERROR(need_on_gpu(op, "dst", dst));
  MOEOPT_RETURN_IF_ERROR(ops::expect_contiguous(op, "src", src));
  MOEOPT_RETURN_IF_ERROR(ops::expect_contiguous(op, "dst", dst));
  if (src.numel() != dst.numel())
    return make_error(ErrorCode::kInvalidArgument, "convert: src has {} elements, dst {}",
                      src.numel(), dst.numel());
  MOEOPT_ASSIGN_OR_RETURN(kernels::ElemDType st, elem_type(op, src.dtype));
  MOEOPT_ASSIGN_OR_RETURN(kernels::ElemDType dt, elem_type(op, dst.dtype));
  return cuda_status(detail::launch_convert(src.data, st, dst.data, dt, src.numel(), stream_of(ctx)),
                     op, "launch");
}

}  // namespace moeopt::cuda
