// Shape / dtype / device validation shared by every op, with one-line messages of the form
//   "rms_norm: weight has shape [255], expected [256]".
//
// "Row layout" (expect_rows): the ops accept activations whose innermost dims are contiguous
// but whose rows (dim 0) may be strided, so a q/k/v slice of a fused QKV buffer, or one half
// of a [M, 2I] gate|up buffer, can be passed without a copy. stride(0) is then read from the
// view and must be >= the size of one row.
#pragma once

#include <initializer_list>
#include <string>

#include "moeopt/core/status.h"
#include "moeopt/core/tensor.h"

namespace moeopt::ops {

// "f32 or bf16" style list for messages.
std::string dtype_list(std::initializer_list<DType> allowed);

Status expect_present(const char* op, const char* name, const TensorView& t);
Status expect_dtype(const char* op, const char* name, const TensorView& t,
                    std::initializer_list<DType> allowed);
Status expect_ndim(const char* op, const char* name, const TensorView& t, int ndim);
Status expect_shape(const char* op, const char* name, const TensorView& t, const Shape& want);
// Fully contiguous (row-major).
Status expect_contiguous(const char* op, const char* name, const TensorView& t);
// Innermost ndim-1 dims contiguous, dim 0 any stride >= one row (see the file comment).
Status expect_rows(const char* op, const char* name, const TensorView& t);
// All listed tensors on the same device; writes it to *device.
Status expect_same_device(const char* op, std::initializer_list<const TensorView*> ts,
                          Device* device);

// Elements in one dim-0 row (product of dims 1..ndim-1).
int64_t row_elems(const TensorView& t);
// Stride of dim 0 in elements (row_elems for a 1-D or contiguous view).
int64_t row_stride(const TensorView& t);

Status unsupported_device(const char* op, Device d);

// The metadata of a paged batch (ops/attention.h, ops/mla.h): block_table [S, max_blocks],
// context_lens [S], query_start_loc [S + 1], all i32 and contiguous. Their values are checked
// by the backends, which read them (cpu_util.h check_paged_batch).
Status expect_paged_metadata(const char* op, const TensorView& block_table,
                             const TensorView& context_lens, const TensorView& query_start_loc);

}  // namespace moeopt::ops
