// CudaBackend's FP8 ops (ops/fp8.h, ops/linear.h): the W8A8 linear and the weight block
// quantiser of online quantisation.
//
// linear_fp8 (x [M, K] bf16 rows strided, W [N, K] e4m3 contiguous, scale f32, bias bf16
// optional, y bf16 or f32 rows strided): the dense mode of the FP8 grouped GEMM
// (kernels/fp8_moe_gemm.cuh: weights streamed through shared memory, x quantised per token in
// groups of 128 as it is loaded, block scales applied per K group) when K % 16 == 0,
// N % 8 == 0, x's rows and W are 16-byte aligned and the token tile fits in shared memory;
// otherwise kernels/fp8_linear_fallback.cuh (any shape, slow). The tile is the MoE
// heuristic's for one expert holding all M rows. No allocation, no synchronisation: the
// call is CUDA-graph capturable. Tests: tests/unit/cuda_fp8_test.cpp (op cases kLinearFp8
// and engine-sized shapes against the CPU reference).
#include <cuda_runtime.h>

#include <cstdint>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/cuda_check.h"
#include "moeopt/backend/cuda/fp8_launch.h"
#include "moeopt/backend/cuda/moe_heuristics.h"
#include "moeopt/backend/cuda/moe_launch.h"
#include "moeopt/ops/check.h"

namespace moeopt::cuda {
namespace {

namespace kn = kernels;
using DT = kn::ElemDType;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

Status CudaBackend::linear_fp8(const ops::Context& ctx, const TensorView& x,
                               const TensorView& weight, const TensorView& weight_scale,
                               const std::optional<TensorView>& bias, const TensorView& y) {
  constexpr const char* op = "linear (fp8 weight)";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "x", x, DType::kBF16));
  if (y.dtype != DType::kBF16 && y.dtype != DType::kF32)
    return make_error(ErrorCode::kUnsupported, "{}: y is {}, the CUDA backend takes bf16 or f32",
                      op, dtype_name(y.dtype));
  if (bias) MOEOPT_RETURN_IF_ERROR(need_dtype(op, "bias", *bias, DType::kBF16));
  if (!weight.is_contiguous())
    return make_error(ErrorCode::kUnsupported, "{}: the fp8 weight must be contiguous", op);
  const int64_t m = x.shape[0], k = x.shape[1], n = weight.shape[0];
  if (m == 0 || n == 0) return Status::ok_status();
  const cudaStream_t stream = stream_of(ctx);
  const int64_t ldx = ops::row_stride(x), ldy = ops::row_stride(y);

  const bool shaped = k > 0 && k % 16 == 0 && n % 8 == 0 && ldx % 8 == 0 && aligned16(x.data) &&
                      aligned16(weight.data) && m <= INT32_MAX && n <= INT32_MAX &&
                      k <= INT32_MAX && ldx <= INT32_MAX && ldy <= INT32_MAX;
  // Fewer token rows per tile where the token tile of this K does not fit.
  MoeFp8Tile tile = choose_moe_fp8_tile(m, 1, 1);
  while (shaped && tile != MoeFp8Tile::kBm32Bn8 &&
         detail::moe_fp8_gemm_smem_bytes(tile, int(k)) > detail::kMaxSmemPerBlock)
    tile = MoeFp8Tile(int(tile) - 1);
  const bool fast =
      shaped && detail::moe_fp8_gemm_smem_bytes(tile, int(k)) <= detail::kMaxSmemPerBlock;
  if (fast) {
    kn::Fp8GroupedGemmParams p{};
    p.act_bf16 = x.ptr<const __nv_bfloat16>();
    p.weight = weight.ptr<const unsigned char>();
    p.weight_scale = weight_scale.ptr<const float>();
    p.K = int(k);
    p.N_out = int(n);
    p.num_tokens = int(m);
    p.num_rows = int(m);
    p.dense = 1;
    p.ld_act = int(ldx);
    p.ld_out = int(ldy);
    p.bias = bias ? bias->ptr<const __nv_bfloat16>() : nullptr;
    if (y.dtype == DType::kF32) p.out_f32 = y.ptr<float>();
    else p.out_bf16 = y.ptr<__nv_bfloat16>();
    return cuda_status(detail::launch_fp8_dense_linear(tile, p, stream), op, "fp8 GEMM launch");
  }
  if (detail::fp8_fallback_smem_bytes(k) > detail::kMaxSmemPerBlock)
    return make_error(ErrorCode::kUnsupported, "{}: K = {} with unaligned or odd-sized operands "
                      "exceeds the fallback kernel's shared memory", op, k);
  kn::Fp8LinearFallbackParams p{};
  p.x = x.data;
  p.x_dtype = DT::kBF16;
  p.w = weight.ptr<const unsigned char>();
  p.w_scale = weight_scale.ptr<const float>();
  p.bias = bias ? bias->data : nullptr;
  p.bias_dtype = DT::kBF16;
  p.y = y.data;
  p.y_dtype = elem_dtype_of(y.dtype);
  p.m = m;
  p.n = n;
  p.k = k;
  p.x_stride = ldx;
  p.y_stride = ldy;
  return cuda_status(detail::launch_fp8_linear_fallback(p, stream), op, "fallback launch");
}

Status CudaBackend::quantize_fp8_weight_blocks(const ops::Context& ctx, const TensorView& w,
                                               const TensorView& w_q,
                                               const TensorView& w_scale) {
  kn::Fp8QuantWeightParams p{};
  p.w = w.data;
  p.w_dtype = elem_dtype_of(w.dtype);
  p.n = w.shape[0];
  p.k = w.shape[1];
  p.w_q = w_q.ptr<unsigned char>();
  p.q_stride = ops::row_stride(w_q);
  p.w_scale = w_scale.ptr<float>();
  return cuda_status(detail::launch_fp8_quantize_weight(p, stream_of(ctx)),
                     "quantize_fp8_weight_blocks", "kernel launch");
}

}  // namespace moeopt::cuda
