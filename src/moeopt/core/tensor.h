// Tensor views (non-owning, POD) and a small owning host tensor.
//
// A TensorView is what every op takes: dtype, device, up to kMaxDims sizes and strides (in
// elements), and a raw pointer. Views never own memory; the owner is a HostTensor, an mmap'd
// safetensors file or a device allocation. Shapes are written outermost first, e.g. an
// expert weight stack is [E, N, K] ("ENK", see docs/glossary.md).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "moeopt/core/dtype.h"

namespace moeopt {

enum class Device : uint8_t { kCpu, kCuda };

constexpr int kMaxDims = 6;

struct Shape {
  int ndim = 0;
  std::array<int64_t, kMaxDims> dims{};

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  static Shape from(const std::vector<int64_t>& d);

  int64_t operator[](int i) const { return dims[i < 0 ? i + ndim : i]; }
  int64_t& operator[](int i) { return dims[i < 0 ? i + ndim : i]; }
  int64_t numel() const;
  std::vector<int64_t> vec() const { return {dims.begin(), dims.begin() + ndim}; }
  std::string str() const;  // "[2, 3, 4]"
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
};

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  Shape shape;
  std::array<int64_t, kMaxDims> strides{};  // in elements

  // A contiguous (row-major) view.
  static TensorView contiguous(void* data, DType dtype, const Shape& shape,
                               Device device = Device::kCpu);

  int ndim() const { return shape.ndim; }
  int64_t size(int i) const { return shape[i]; }
  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  bool is_contiguous() const;

  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }

  // View of index i along dim 0 (drops that dim).
  TensorView select0(int64_t i) const;
  // Rows [begin, end) along dim 0.
  TensorView slice0(int64_t begin, int64_t end) const;
  // Columns [begin, end) along dim 1 of a 2-D view (strides kept: a column block of a
  // contiguous [rows, cols] buffer is a row-strided view).
  TensorView slice1(int64_t begin, int64_t end) const;
  // Same data, new contiguous shape (requires is_contiguous and equal numel).
  TensorView reshaped(const Shape& s) const;
};

// Owning, 64-byte aligned, contiguous host tensor. Move-only.
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, const Shape& shape);  // zero-filled
  HostTensor(HostTensor&&) noexcept = default;
  HostTensor& operator=(HostTensor&&) noexcept = default;

  TensorView view() const { return TensorView::contiguous(buf_.get(), dtype_, shape_); }
  operator TensorView() const { return view(); }  // NOLINT: views are cheap
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  template <typename T>
  T* ptr() const { return reinterpret_cast<T*>(buf_.get()); }

 private:
  struct Free { void operator()(void* p) const; };
  DType dtype_ = DType::kF32;
  Shape shape_;
  std::unique_ptr<void, Free> buf_;
};

}  // namespace moeopt
