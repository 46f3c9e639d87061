// CudaBackend's dense ops (cuda_backend.h) except linear (cuda_linear.cpp): the dtype checks
// for what the kernels take, the choice of the 16-byte path, and the launches (dense_launch.h).
// Plain C++ (no nvcc). Shapes, devices and row layouts were validated by ops/<family>.cpp.
//
// What the CUDA versions take (anything else is a one-line kUnsupported error):
//   embedding          table bf16 / f16 / f32, out bf16 / f32
//   rms_norm (2-D/3-D) x f32 / bf16, weight bf16 / f16 / f32, out f32 / bf16 (in place: out is
//                      the same view as x, same dtype)
//   add_rms_norm       x f32 / bf16, residual f32 (updated in place), out f32 / bf16
//   silu_and_mul       x, out bf16;  silu: x, out both bf16 or both f32
//   rope_apply         q, k bf16 (cos_sin f32, positions i32 as validated)
//   kv_cache_write     k, v bf16; caches bf16, or fp8 e4m3 with f32 scales
//   sigmoid_gated_add  x, out bf16; gate f32 / bf16
//   argmax             logits f32;  log_softmax: x, out f32
// Differences from the CPU reference, by design (a kernel cannot return an error without a
// host round trip): an embedding id outside [0, V) gives a zero row; a RoPE position outside
// the cos/sin table leaves that token unchanged; a kv slot past the cache skips the token;
// argmax never picks NaN (the CPU lets the first NaN win) and answers 0 for an all-NaN row.
// Numerics: fp32 math on bf16/f32 inputs, one rounding to the output dtype.
#include <cuda_runtime.h>

#include <cstdint>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/cuda_check.h"
#include "moeopt/backend/cuda/dense_launch.h"
#include "moeopt/ops/check.h"

namespace moeopt::cuda {
namespace {

namespace kn = kernels;
using DT = kn::ElemDType;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// The 8-element chunk path for a row-layout view whose rows hold `inner` contiguous elements
// that the kernel moves in chunks: 16-byte aligned base, inner and row stride multiples of 8.
bool chunkable(const TensorView& t, int64_t inner) {
  return aligned16(t.data) && inner % 8 == 0 && ops::row_stride(t) % 8 == 0;
}


Status need_one_of(const char* op, const char* name, const TensorView& t, DType a, DType b) {
  if (t.dtype == a || t.dtype == b) return Status::ok_status();
  return make_error(ErrorCode::kUnsupported, "{}: {} is {}, the CUDA backend takes {} or {}", op,
                    name, dtype_name(t.dtype), dtype_name(a), dtype_name(b));
}

Status launched(cudaError_t e, const char* op) { return cuda_status(e, op, "kernel launch"); }

}  // namespace

Status CudaBackend::embedding(const ops::Context& ctx, const TensorView& table,
                              const TensorView& ids, const TensorView& out) {
  constexpr const char* op = "embedding";
  if (table.dtype != DType::kBF16 && table.dtype != DType::kF16 && table.dtype != DType::kF32)
    return make_error(ErrorCode::kUnsupported, "{}: table is {}, the CUDA backend takes bf16, f16 "
                      "or f32", op, dtype_name(table.dtype));
  MOEOPT_RETURN_IF_ERROR(need_one_of(op, "out", out, DType::kBF16, DType::kF32));
  kn::EmbeddingParams p{};
  p.table = table.data;
  p.ids = ids.ptr<const int32_t>();
  p.out = out.data;
  p.tokens = ids.shape[0];
  p.vocab = table.shape[0];
  p.hidden = table.shape[1];
  p.out_stride = ops::row_stride(out);
  p.vec = aligned16(table.data) && p.hidden % 8 == 0 && chunkable(out, p.hidden);
  return launched(detail::launch_dense_embedding(p, elem_dtype_of(table.dtype),
                                                 elem_dtype_of(out.dtype),
                                                 stream_of(ctx)),
                  op);
}

Status CudaBackend::rms_norm(const ops::Context& ctx, const TensorView& x,
                             const TensorView& weight, float eps, const TensorView& out) {
  constexpr const char* op = "rms_norm";
  MOEOPT_RETURN_IF_ERROR(need_one_of(op, "x", x, DType::kF32, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_one_of(op, "out", out, DType::kF32, DType::kBF16));
  if (out.data == x.data && out.dtype != x.dtype)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: in place needs out and x of one dtype (x {}, out {})", op,
                      dtype_name(x.dtype), dtype_name(out.dtype));
  kn::NormParams p{};
  p.x = x.data;
  p.residual = nullptr;
  p.weight = weight.data;
  p.out = out.data;
  p.heads = x.ndim() == 3 ? x.shape[1] : 1;
  p.vectors = x.shape[0] * p.heads;
  p.d = x.shape[-1];
  p.x_stride = ops::row_stride(x);
  p.res_stride = 0;
  p.out_stride = ops::row_stride(out);
  p.eps = eps;
  p.w_dtype = elem_dtype_of(weight.dtype);
  // Vector i starts at row * stride + head * d: all multiples of 8 elements when these are.
  p.vec = aligned16(weight.data) && p.d % 8 == 0 && chunkable(x, p.d) && chunkable(out, p.d);
  return launched(
      detail::launch_dense_norm(p, elem_dtype_of(x.dtype), elem_dtype_of(out.dtype), false,
                                stream_of(ctx)),
      op);
}

Status CudaBackend::add_rms_norm(const ops::Context& ctx, const TensorView& x,
                                 const TensorView& residual, const TensorView& weight, float eps,
                                 const TensorView& out) {
  constexpr const char* op = "add_rms_norm";
  MOEOPT_RETURN_IF_ERROR(need_one_of(op, "x", x, DType::kF32, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "residual", residual, DType::kF32));
  MOEOPT_RETURN_IF_ERROR(need_one_of(op, "out", out, DType::kF32, DType::kBF16));
  kn::NormParams p{};
  p.x = x.data;
  p.residual = residual.ptr<float>();
  p.weight = weight.data;
  p.out = out.data;
  p.heads = 1;
  p.vectors = x.shape[0];
  p.d = x.shape[1];
  p.x_stride = ops::row_stride(x);
  p.res_stride = ops::row_stride(residual);
  p.out_stride = ops::row_stride(out);
  p.eps = eps;
  p.w_dtype = elem_dtype_of(weight.dtype);
  p.vec = aligned16(weight.data) && p.d % 8 == 0 && chunkable(x, p.d) &&
          chunkable(residual, p.d) && chunkable(out, p.d);
  return launched(
      detail::launch_dense_norm(p, elem_dtype_of(x.dtype), elem_dtype_of(out.dtype), true,
                                stream_of(ctx)),
      op);
}

Status CudaBackend::silu_and_mul(const ops::Context& ctx, const TensorView& x,
                                 const TensorView& out) {
  constexpr const char* op = "silu_and_mul";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "x", x, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "out", out, DType::kBF16));
  kn::SiluParams p{};
  p.x = x.data;
  p.out = out.data;
  p.rows = x.shape[0];
  p.n = out.shape[1];
  p.x_stride = ops::row_stride(x);
  p.out_stride = ops::row_stride(out);
  p.dtype = DT::kBF16;
  p.gated = true;
  // The up half starts n elements into the row: a multiple of 8 when n is.
  p.vec = p.n % 8 == 0 && chunkable(x, p.n) && chunkable(out, p.n);
  return launched(detail::launch_dense_silu(p, stream_of(ctx)), op);
}

Status CudaBackend::silu(const ops::Context& ctx, const TensorView& x, const TensorView& out) {
  constexpr const char* op = "silu";
  MOEOPT_RETURN_IF_ERROR(need_one_of(op, "x", x, DType::kBF16, DType::kF32));
  if (out.dtype != x.dtype)
    return make_error(ErrorCode::kUnsupported, "{}: out is {}, the CUDA backend takes x's dtype {}",
                      op, dtype_name(out.dtype), dtype_name(x.dtype));
  kn::SiluParams p{};
  p.x = x.data;
  p.out = out.data;
  p.rows = x.shape[0];
  p.n = x.shape[1];
  p.x_stride = ops::row_stride(x);
  p.out_stride = ops::row_stride(out);
  p.dtype = elem_dtype_of(x.dtype);
  p.gated = false;
  p.vec = p.n % 8 == 0 && chunkable(x, p.n) && chunkable(out, p.n);
  return launched(detail::launch_dense_silu(p, stream_of(ctx)), op);
}

Status CudaBackend::rope_apply(const ops::Context& ctx, const TensorView& q, const TensorView& k,
                               const TensorView& positions, const TensorView& cos_sin) {
  constexpr const char* op = "rope_apply";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "q", q, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "k", k, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "cos_sin", cos_sin, DType::kF32));
  kn::RopeParams p{};
  p.q = q.data;
  p.k = k.data;
  p.positions = positions.ptr<const int32_t>();
  p.cos_sin = cos_sin.ptr<const float>();
  p.tokens = q.shape[0];
  p.hq = q.shape[1];
  p.hkv = k.shape[1];
  p.d = q.shape[2];
  p.rot = cos_sin.shape[1];
  p.max_pos = cos_sin.shape[0];
  p.q_stride = ops::row_stride(q);
  p.k_stride = ops::row_stride(k);
  return launched(detail::launch_dense_rope(p, stream_of(ctx)), op);
}

Status CudaBackend::kv_cache_write(const ops::Context& ctx, const TensorView& k,
                                   const TensorView& v, const TensorView& slot_mapping,
                                   const TensorView& k_cache, const TensorView& v_cache,
                                   const ops::KvScales& scales) {
  constexpr const char* op = "kv_cache_write";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "k", k, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "v", v, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_one_of(op, "k_cache", k_cache, DType::kBF16, DType::kF8E4M3));
  const bool fp8 = k_cache.dtype == DType::kF8E4M3;  // ops/attention.cpp checked the scales
  if (fp8 && k_cache.shape[3] > kn::kKvWriteFp8MaxDim)
    return make_error(ErrorCode::kUnsupported, "{}: fp8 caches take head_dim <= {}, got {}", op,
                      kn::kKvWriteFp8MaxDim, k_cache.shape[3]);
  kn::KvWriteParams p{};
  if (fp8) {
    p.k_scale = scales.k.ptr<float>();
    p.v_scale = scales.v.ptr<float>();
  }
  p.head_dim = int(k_cache.shape[3]);
  p.k = k.data;
  p.v = v.data;
  p.slots = slot_mapping.ptr<const int32_t>();
  p.k_cache = k_cache.data;
  p.v_cache = v_cache.data;
  p.tokens = k.shape[0];
  p.row = k_cache.shape[2] * k_cache.shape[3];
  p.num_slots = k_cache.shape[0] * k_cache.shape[1];
  p.k_stride = ops::row_stride(k);
  p.v_stride = ops::row_stride(v);
  p.vec = chunkable(k, p.row) && chunkable(v, p.row) && aligned16(k_cache.data) &&
          aligned16(v_cache.data);
  return launched(detail::launch_dense_kv_write(p, stream_of(ctx)), op);
}

Status CudaBackend::sigmoid_gated_add(const ops::Context& ctx, const TensorView& x,
                                      const TensorView& gate, const TensorView& out) {
  constexpr const char* op = "sigmoid_gated_add";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "x", x, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_one_of(op, "gate", gate, DType::kF32, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "out", out, DType::kBF16));
  kn::GatedAddParams p{};
  p.x = x.data;
  p.gate = gate.data;
  p.out = out.data;
  p.rows = x.shape[0];
  p.n = x.shape[1];
  p.x_stride = ops::row_stride(x);
  p.gate_stride = gate.strides[0];
  p.out_stride = ops::row_stride(out);
  p.gate_dtype = elem_dtype_of(gate.dtype);
  p.vec = p.n % 8 == 0 && chunkable(x, p.n) && chunkable(out, p.n);
  return launched(detail::launch_dense_gated_add(p, stream_of(ctx)), op);
}

Status CudaBackend::argmax(const ops::Context& ctx, const TensorView& logits,
                           const TensorView& out) {
  constexpr const char* op = "argmax";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "logits", logits, DType::kF32));
  if (logits.shape[1] > INT32_MAX)
    return make_error(ErrorCode::kUnsupported, "{}: a row of {} logits does not fit int32 ids", op,
                      logits.shape[1]);
  kn::ArgmaxParams p{};
  p.x = logits.ptr<const float>();
  p.out = out.ptr<int32_t>();
  p.rows = logits.shape[0];
  p.v = logits.shape[1];
  p.x_stride = ops::row_stride(logits);
  p.vec = aligned16(logits.data) && p.v % 4 == 0 && p.x_stride % 4 == 0;
  return launched(detail::launch_dense_argmax(p, stream_of(ctx)), op);
}

Status CudaBackend::log_softmax(const ops::Context& ctx, const TensorView& x,
                                const TensorView& out) {
  constexpr const char* op = "log_softmax";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "x", x, DType::kF32));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "out", out, DType::kF32));
  kn::LogSoftmaxParams p{};
  p.x = x.ptr<const float>();
  p.out = out.ptr<float>();
  p.rows = x.shape[0];
  p.v = x.shape[1];
  p.x_stride = ops::row_stride(x);
  p.out_stride = ops::row_stride(out);
  p.vec = aligned16(x.data) && aligned16(out.data) && p.v % 4 == 0 && p.x_stride % 4 == 0 &&
          p.out_stride % 4 == 0;
  return launched(detail::launch_dense_log_softmax(p, stream_of(ctx)), op);
}

}  // namespace moeopt::cuda
