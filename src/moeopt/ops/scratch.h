// ScratchArena: where a forward pass takes its temporaries (activations, index tensors).
//
// A bump allocator over chunks of host memory (CPU) or device memory (through a
// DeviceBackend). reset() rewinds to the start, so a step that asks for the same sequence of
// sizes gets the same addresses every time: that is what lets a CUDA graph captured on one
// step be replayed on the next. A request that does not fit the current chunk opens a new,
// larger one (never while a CUDA stream is capturing: allocating then is an error, so warm
// the arena up with an eager step of the same shape first). Chunks live until destruction.
// Not thread-safe: one forward pass at a time.
#pragma once

#include <cstddef>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"

namespace moeopt::ops {

class DeviceBackend;

class ScratchArena {
 public:
  // Host arena when backend is null, device arena otherwise.
  explicit ScratchArena(DeviceBackend* backend = nullptr, size_t min_chunk_bytes = size_t(64) << 20);
  ~ScratchArena();
  ScratchArena(const ScratchArena&) = delete;
  ScratchArena& operator=(const ScratchArena&) = delete;

  // A contiguous tensor, 256-byte aligned, valid until reset(). Contents are undefined.
  Result<TensorView> alloc(DType dtype, const Shape& shape);
  void reset();

  Device device() const { return backend_ ? Device::kCuda : Device::kCpu; }
  size_t used_bytes() const;       // since the last reset
  size_t reserved_bytes() const;   // all chunks

 private:
  struct Chunk {
    char* data = nullptr;
    size_t bytes = 0;
  };
  Status add_chunk(size_t at_least);

  DeviceBackend* backend_;
  size_t min_chunk_;
  std::vector<Chunk> chunks_;
  size_t chunk_ = 0;   // current chunk index
  size_t offset_ = 0;  // bytes used in the current chunk
  size_t used_before_ = 0;  // bytes used in chunks before the current one
};

}  // namespace moeopt::ops
