// Launch geometry of the persistent small-M MoE kernel (moe_persistent.h): the counter reset
// (one block) and the layer kernel on every SM, as many blocks as are co-resident (at most 2
// per SM), cached per device so that calls made under stream capture query nothing new.
#include "moeopt/backend/cuda/moe_persistent.h"

#include <algorithm>
#include <atomic>

#include "moeopt/backend/cuda/kernels/moe_persistent.cuh"
#include "moeopt/backend/cuda/launch_ex.cuh"

namespace moeopt::cuda::detail {
namespace k = moeopt::cuda::kernels;

namespace {

constexpr int kMaxDevices = 64;
constexpr int kMaxBlocksPerSm = 2;
constexpr int kResetThreads = 256;
std::atomic<int> g_grid_blocks[kMaxDevices];  // 0 = not computed yet

cudaError_t grid_blocks(int* out) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  if (dev >= 0 && dev < kMaxDevices) {
    const int cached = g_grid_blocks[dev].load(std::memory_order_relaxed);
    if (cached > 0) {
      *out = cached;
      return cudaSuccess;
    }
  }
  int sms = 0, per_sm = 0;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k::moe_persistent_kernel,
                                                    k::kPersistentThreads, 0);
  if (e != cudaSuccess) return e;
  const int blocks = sms * std::min(per_sm, kMaxBlocksPerSm);
  if (blocks <= 0) return cudaErrorInvalidConfiguration;
  if (dev >= 0 && dev < kMaxDevices) g_grid_blocks[dev].store(blocks, std::memory_order_relaxed);
  *out = blocks;
  return cudaSuccess;
}

}  // namespace

int moe_persistent_grid_blocks() {
  int blocks = 0;
  if (grid_blocks(&blocks) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return blocks;
}

cudaError_t launch_moe_persistent(const k::PersistentParams& p, bool pdl, cudaStream_t stream) {
  int blocks = 0;
  cudaError_t e = grid_blocks(&blocks);
  if (e != cudaSuccess) return e;
  const int64_t counters =
      persistent_num_counters(int64_t(p.num_tokens) * p.top_k, int64_t(p.hidden));
  e = launch_ex(k::moe_persistent_reset_kernel, dim3(1), dim3(kResetThreads), 0, pdl, stream,
             p.expert_done, int(counters));
  if (e != cudaSuccess) return e;
  return launch_ex(k::moe_persistent_kernel, dim3(blocks), dim3(k::kPersistentThreads), 0,
                pdl, stream,
                p);
}

}  // namespace moeopt::cuda::detail
