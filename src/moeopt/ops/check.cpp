// Validation helpers for op arguments (see check.h).
#include "moeopt/ops/check.h"

#include "moeopt/ops/device_backend.h"

namespace moeopt::ops {

std::string dtype_list(std::initializer_list<DType> allowed) {
  std::string s;
  size_t i = 0;
  for (DType d : allowed) {
    if (i) s += (i + 1 == allowed.size()) ? " or " : ", ";
    s += dtype_name(d);
    ++i;
  }
  return s;
}

Status expect_present(const char* op, const char* name, const TensorView& t) {
  if (t.data == nullptr && t.numel() != 0)
    return make_error(ErrorCode::kInvalidArgument, "{}: {} has no data", op, name);
  return {};
}

Status expect_dtype(const char* op, const char* name, const TensorView& t,
                    std::initializer_list<DType> allowed) {
  for (DType d : allowed)
    if (t.dtype == d) return {};
  return make_error(ErrorCode::kInvalidArgument, "{}: {} has dtype {}, expected {}", op, name,
                    dtype_name(t.dtype), dtype_list(allowed));
}

Status expect_ndim(const char* op, const char* name, const TensorView& t, int ndim) {
  if (t.ndim() != ndim)
    return make_error(ErrorCode::kInvalidArgument, "{}: {} has shape {} ({}-D), expected {}-D",
                      op, name, t.shape.str(), t.ndim(), ndim);
  return {};
}

Status expect_shape(const char* op, const char* name, const TensorView& t, const Shape& want) {
  if (t.shape != want)
    return make_error(ErrorCode::kInvalidArgument, "{}: {} has shape {}, expected {}", op, name,
                      t.shape.str(), want.str());
  return {};
}

Status expect_contiguous(const char* op, const char* name, const TensorView& t) {
  MOEOPT_RETURN_IF_ERROR(expect_present(op, name, t));
  if (!t.is_contiguous())
    return make_error(ErrorCode::kInvalidArgument, "{}: {} (shape {}) must be contiguous", op,
                      name, t.shape.str());
  return {};
}

int64_t row_elems(const TensorView& t) {
  int64_t n = 1;
  for (int i = 1; i < t.ndim(); ++i) n *= t.shape[i];
  return n;
}

int64_t row_stride(const TensorView& t) {
  if (t.ndim() <= 1) return 1;
  return t.shape[0] <= 1 ? row_elems(t) : t.strides[0];
}

Status expect_rows(const char* op, const char* name, const TensorView& t) {
  MOEOPT_RETURN_IF_ERROR(expect_present(op, name, t));
  if (t.ndim() < 1)
    return make_error(ErrorCode::kInvalidArgument, "{}: {} is a scalar", op, name);
  int64_t s = 1;
  for (int i = t.ndim() - 1; i >= 1; --i) {
    if (t.shape[i] != 1 && t.strides[i] != s)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: {} (shape {}) must be contiguous within a row (dim {} has stride "
                        "{}, expected {})",
                        op, name, t.shape.str(), i, t.strides[i], s);
    s *= t.shape[i];
  }
  if (t.ndim() >= 2 && t.shape[0] > 1 && t.strides[0] < s)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: {} (shape {}) has row stride {}, smaller than a row ({})", op, name,
                      t.shape.str(), t.strides[0], s);
  return {};
}

Status expect_same_device(const char* op, std::initializer_list<const TensorView*> ts,
                          Device* device) {
  bool first = true;
  for (const TensorView* t : ts) {
    if (first) {
      *device = t->device;
      first = false;
    } else if (t->device != *device) {
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: tensors are on different devices (cpu and cuda)", op);
    }
  }
  return {};
}

Status unsupported_device(const char* op, Device d) {
  return make_error(ErrorCode::kUnsupported, "{}: no {} backend in this context", op,
                    d == Device::kCpu ? "cpu" : "cuda");
}

Status expect_paged_metadata(const char* op, const TensorView& block_table,
                             const TensorView& context_lens, const TensorView& query_start_loc) {
  MOEOPT_RETURN_IF_ERROR(expect_ndim(op, "block_table", block_table, 2));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "block_table", block_table));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "block_table", block_table, {DType::kI32}));
  const int64_t s = block_table.shape[0];
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "context_lens", context_lens, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "context_lens", context_lens, {s}));
  MOEOPT_RETURN_IF_ERROR(expect_contiguous(op, "context_lens", context_lens));
  MOEOPT_RETURN_IF_ERROR(expect_dtype(op, "query_start_loc", query_start_loc, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(expect_shape(op, "query_start_loc", query_start_loc, {s + 1}));
  return expect_contiguous(op, "query_start_loc", query_start_loc);
}

}  // namespace moeopt::ops
