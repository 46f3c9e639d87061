#include "moeopt/core/tensor.h"

#include <cassert>
#include <cstdlib>
#include <cstring>
#include <new>

#include <fmt/format.h>

namespace moeopt {

Shape::Shape(std::initializer_list<int64_t> d) {
  assert(d.size() <= size_t(kMaxDims));
  for (int64_t v : d) dims[ndim++] = v;
}

Shape Shape::from(const std::vector<int64_t>& d) {
  assert(d.size() <= size_t(kMaxDims));
  Shape s;
  for (int64_t v : d) s.dims[s.ndim++] = v;
  return s;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= dims[i];
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += fmt::format("{}{}", i ? ", " : "", dims[i]);
  return s + "]";
}

bool Shape::operator==(const Shape& o) const {
  if (ndim != o.ndim) return false;
  for (int i = 0; i < ndim; ++i)
    if (dims[i] != o.dims[i]) return false;
  return true;
}

TensorView TensorView::contiguous(void* data, DType dtype, const Shape& shape, Device device) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = device;
  v.shape = shape;
  int64_t s = 1;
  for (int i = shape.ndim - 1; i >= 0; --i) {
    v.strides[i] = s;
    s *= shape.dims[i];
  }
  return v;
}

bool TensorView::is_contiguous() const {
  int64_t s = 1;
  for (int i = shape.ndim - 1; i >= 0; --i) {
    if (shape.dims[i] != 1 && strides[i] != s) return false;
    s *= shape.dims[i];
  }
  return true;
}

TensorView TensorView::select0(int64_t i) const {
  assert(shape.ndim >= 1 && i >= 0 && i < shape[0]);
  TensorView v;
  v.data = static_cast<char*>(data) + i * strides[0] * int64_t(dtype_size(dtype));
  v.dtype = dtype;
  v.device = device;
  v.shape.ndim = shape.ndim - 1;
  for (int d = 1; d < shape.ndim; ++d) {
    v.shape.dims[d - 1] = shape.dims[d];
    v.strides[d - 1] = strides[d];
  }
  return v;
}

TensorView TensorView::slice0(int64_t begin, int64_t end) const {
  assert(shape.ndim >= 1 && 0 <= begin && begin <= end && end <= shape[0]);
  TensorView v = *this;
  v.data = static_cast<char*>(data) + begin * strides[0] * int64_t(dtype_size(dtype));
  v.shape.dims[0] = end - begin;
  return v;
}

TensorView TensorView::slice1(int64_t begin, int64_t end) const {
  assert(shape.ndim == 2 && 0 <= begin && begin <= end && end <= shape[1]);
  TensorView v = *this;
  v.data = static_cast<char*>(data) + begin * strides[1] * int64_t(dtype_size(dtype));
  v.shape.dims[1] = end - begin;
  return v;
}

TensorView TensorView::reshaped(const Shape& s) const {
  assert(is_contiguous() && s.numel() == numel());
  return contiguous(data, dtype, s, device);
}

void HostTensor::Free::operator()(void* p) const { std::free(p); }

HostTensor::HostTensor(DType dtype, const Shape& shape) : dtype_(dtype), shape_(shape) {
  size_t bytes = size_t(shape.numel()) * dtype_size(dtype);
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, rounded ? rounded : 64);
  buf_.reset(p);
}

}  // namespace moeopt
