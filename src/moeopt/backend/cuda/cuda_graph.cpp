// CudaBackend's streams and CUDA graphs (cuda_backend.h). Capture uses the thread-local mode,
// so another thread's unrelated CUDA calls (a server thread, say) do not break it.
#include <cuda_runtime.h>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/cuda_check.h"

namespace moeopt::cuda {

Result<void*> CudaBackend::create_stream() {
  cudaStream_t s = nullptr;
  MOEOPT_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking),
                                     "create_stream", "cudaStreamCreate"));
  return static_cast<void*>(s);
}

void CudaBackend::destroy_stream(void* stream) {
  if (stream) cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

Status CudaBackend::begin_capture(const ops::Context& ctx) {
  if (!ctx.stream)
    return make_error(ErrorCode::kInvalidArgument, "begin_capture: the legacy default stream "
                      "cannot be captured; create a stream first");
  return cuda_status(cudaStreamBeginCapture(stream_of(ctx), cudaStreamCaptureModeThreadLocal),
                     "begin_capture", "cudaStreamBeginCapture");
}

Result<void*> CudaBackend::end_capture(const ops::Context& ctx) {
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(stream_of(ctx), &graph);
  if (e != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    return cuda_status(e, "end_capture", "cudaStreamEndCapture");
  }
  cudaGraphExec_t exec = nullptr;
  e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  MOEOPT_RETURN_IF_ERROR(cuda_status(e, "end_capture", "cudaGraphInstantiate"));
  return static_cast<void*>(exec);
}

Status CudaBackend::launch_graph(const ops::Context& ctx, void* graph) {
  return cuda_status(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), stream_of(ctx)),
                     "launch_graph", "cudaGraphLaunch");
}

void CudaBackend::destroy_graph(void* graph) {
  if (graph) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph));
}

}  // namespace moeopt::cuda
