#include "moeopt/ops/scratch.h"

#include <algorithm>
#include <cstdlib>

#include "moeopt/core/align.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {
ScratchArena::ScratchArena(DeviceBackend* backend, size_t min_chunk_bytes)
    : backend_(backend), min_chunk_(std::max(min_chunk_bytes, kDeviceAlign)) {}

ScratchArena::~ScratchArena() {
  for (Chunk& c : chunks_) {
    if (backend_) backend_->release(c.data);
    else std::free(c.data);
  }
}

Status ScratchArena::add_chunk(size_t at_least) {
  const size_t bytes = align_up(std::max(at_least, min_chunk_));
  Chunk c;
  c.bytes = bytes;
  if (backend_) {
    MOEOPT_ASSIGN_OR_RETURN(void* p, backend_->allocate(bytes));
    c.data = static_cast<char*>(p);
  } else {
    c.data = static_cast<char*>(std::aligned_alloc(kDeviceAlign, bytes));
    if (!c.data)
      return make_error(ErrorCode::kResourceExhausted, "scratch: cannot allocate {} bytes", bytes);
  }
  chunks_.push_back(c);
  // Later chunks are at least twice the size of all before, so a growing workload settles
  // into few chunks.
  min_chunk_ = std::max(min_chunk_, bytes * 2);
  return {};
}

Result<TensorView> ScratchArena::alloc(DType dtype, const Shape& shape) {
  if (shape.numel() < 0)
    return make_error(ErrorCode::kInternal, "scratch: negative size {}", shape.str());
  const size_t bytes = align_up(std::max<size_t>(1, size_t(shape.numel()) * dtype_size(dtype)));
  while (chunk_ < chunks_.size() && offset_ + bytes > chunks_[chunk_].bytes) {
    used_before_ += offset_;
    ++chunk_;
    offset_ = 0;
  }
  if (chunk_ == chunks_.size()) {
    MOEOPT_RETURN_IF_ERROR(add_chunk(bytes));
    offset_ = 0;
  }
  TensorView v = TensorView::contiguous(chunks_[chunk_].data + offset_, dtype, shape, device());
  offset_ += bytes;
  return v;
}

void ScratchArena::reset() {
  chunk_ = 0;
  offset_ = 0;
  used_before_ = 0;
}

size_t ScratchArena::used_bytes() const { return used_before_ + offset_; }

size_t ScratchArena::reserved_bytes() const {
  size_t n = 0;
  for (const Chunk& c : chunks_) n += c.bytes;
  return n;
}

}  // namespace moeopt::ops
