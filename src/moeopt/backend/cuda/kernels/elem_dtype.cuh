// The element-type tag kernels take for a tensor they read or write in more than one dtype:
// one plain enum for every kernel family (dense, MoE routing bias, memory conversions),
// includable from host C++. The host maps core DTypes to it with elem_dtype_of
// (cuda_check.h).
#pragma once

#include <cstdint>

namespace moeopt::cuda::kernels {

enum class ElemDType : int32_t { kF32 = 0, kBF16 = 1, kF16 = 2 };

}  // namespace moeopt::cuda::kernels
