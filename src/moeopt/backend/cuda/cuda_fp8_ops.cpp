// CudaBackend's FP8 ops (ops/fp8.h, ops/linear.h): the W8A8 linear, the activation quantiser
// and the weight block quantiser of online quantisation.
//
// linear_fp8 (x [M, K] bf16 rows strided, W [N, K] e4m3 contiguous, scale f32, bias bf16
// optional, y bf16 or f32 rows strided): when K % 16 == 0, N % 8 == 0 and x's rows and W are
// 16-byte aligned, x is quantised once (fp8_quantize_act_kernel: x_q [M, K] e4m3 and x_s
// [M, ceil(K/128)] f32 in scratch()) and the dense mode of the FP8 grouped GEMM
// (kernels/fp8_moe_gemm.cuh) streams both operands, its first weight stages issued while
// the quantiser runs (programmatic dependent launch; the quantiser itself is launched so too
// and waits for its predecessor before it writes), or for M <= kGemvMaxRows the FP8 GEMV
// (kernels/fp8_gemv.cuh, a weight stream on m16n8k32, same quantised x); otherwise
// kernels/fp8_linear_fallback.cuh (any shape, slow). The tile: choose_fp8_linear_tile.
// The scratch is ctx.workspace or the backend's buffer, so a call is CUDA-graph capturable
// once an eager call of the same size has run. Tests: tests/unit/cuda_fp8_test.cpp (op cases
// kLinearFp8, engine-sized shapes and every tile against the CPU reference; the activation
// quantiser bit for bit).
#include <cuda_runtime.h>

#include <cstdint>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/cuda_check.h"
#include "moeopt/backend/cuda/fp8_launch.h"
#include "moeopt/backend/cuda/kernels/dense_params.cuh"
#include "moeopt/backend/cuda/moe_heuristics.h"
#include "moeopt/backend/cuda/moe_launch.h"
#include "moeopt/core/align.h"
#include "moeopt/ops/fp8.h"
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
  // The wgmma tiles store bf16 y in 16-byte row chunks.
  const bool wgmma_out_ok = y.dtype == DType::kF32 || (ldy % 8 == 0 && aligned16(y.data));
  const MoeFp8Tile tile = choose_fp8_linear_tile(m, n, sm_count(), wgmma_out_ok);
  if (shaped && detail::moe_fp8_gemm_smem_bytes(tile, int(k)) <= detail::kMaxSmemPerBlock) {
    // Scratch: x_q [M, K] e4m3, then x_s [M, ceil(K/128)] f32 (256-byte aligned).
    const size_t q_bytes = align_up(size_t(m * k)), s_bytes = size_t(m * ops::fp8_blocks(k)) * 4;
    MOEOPT_ASSIGN_OR_RETURN(void* ws, scratch(ctx, q_bytes + s_bytes, op));
    auto* x_q = static_cast<unsigned char*>(ws);
    auto* x_s = reinterpret_cast<float*>(x_q + q_bytes);
    kn::Fp8QuantActParams qp{};
    qp.x = x.data;
    qp.x_dtype = DT::kBF16;
    qp.rows = m;
    qp.k = k;
    qp.x_stride = ldx;
    qp.x_q = x_q;
    qp.q_stride = k;
    qp.x_scale = x_s;
    MOEOPT_RETURN_IF_ERROR(
        cuda_status(detail::launch_fp8_quantize_act(qp, true, stream), op, "quantiser launch"));
    kn::Fp8GroupedGemmParams p{};
    p.act_q = x_q;
    p.act_scale = x_s;
    p.ld_act = int(k);
    p.weight = weight.ptr<const unsigned char>();
    p.weight_scale = weight_scale.ptr<const float>();
    p.K = int(k);
    p.N_out = int(n);
    p.num_tokens = int(m);
    p.num_rows = int(m);
    p.dense = 1;
    p.ld_out = int(ldy);
    p.bias = bias ? bias->ptr<const __nv_bfloat16>() : nullptr;
    if (y.dtype == DType::kF32) p.out_f32 = y.ptr<float>();
    else p.out_bf16 = y.ptr<__nv_bfloat16>();
    if (m <= kn::kGemvMaxRows)  // decode: a weight stream (kernels/fp8_gemv.cuh)
      return cuda_status(
          detail::launch_fp8_gemv(p, (n + 15) / 16 >= 2 * int64_t(sm_count()) ? 4 : 8, stream), op,
          "fp8 GEMV launch");
    return cuda_status(detail::launch_fp8_dense_linear(tile, p, true, stream), op,
                       "fp8 GEMM launch");
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

Status CudaBackend::quantize_fp8_activations(const ops::Context& ctx, const TensorView& x,
                                             const TensorView& x_q, const TensorView& x_scale) {
  constexpr const char* op = "quantize_fp8_activations";
  if (x.shape[1] % 8 != 0 || ops::row_stride(x) % 8 != 0 ||
      (reinterpret_cast<uintptr_t>(x.data) & 31u) != 0)
    return make_error(ErrorCode::kUnsupported,
                      "{}: the CUDA quantiser takes K and x's row stride in multiples of 8 and "
                      "32-byte aligned rows, got K = {}", op, x.shape[1]);
  kn::Fp8QuantActParams p{};
  p.x = x.data;
  p.x_dtype = elem_dtype_of(x.dtype);
  p.rows = x.shape[0];
  p.k = x.shape[1];
  p.x_stride = ops::row_stride(x);
  p.x_q = x_q.ptr<unsigned char>();
  p.q_stride = x.shape[1];
  p.x_scale = x_scale.ptr<float>();
  return cuda_status(detail::launch_fp8_quantize_act(p, false, stream_of(ctx)), op,
                     "kernel launch");
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
