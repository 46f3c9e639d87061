// CudaBackend::sample (cuda_backend.h): argument checks, the workspace layout and the launch
// sequence of batched sampling (ops/sampling.h). Plain C++ (no nvcc); kernels are launched
// through sampling_launch.h. There is no ops-level wrapper (the engine calls the backend
// directly), so every shape, dtype and device is checked here.
//
// Workspace of the general path (256-byte aligned pieces):
//   raw_lse [R] f32 | row_max [R] f32 | row_sum [R] f64 | raw_pen [P] f32 |
//   seg_begin [R] i32 | seg_end [R] i32 |
//   keys_alt [G*V] f32 | ids [G*V] i32 | ids_alt [G*V] i32 | CUB sort temp
// where G, the rows sorted per chunk, keeps G*V <= kSortElems (G >= 1): at V = 151936 that is
// 110 rows, ~200 MB of sort buffers. The sort buffers are left out when no row is sampled
// (all_greedy). The first key buffer of the sort is the logits tensor itself (overwritten,
// as ops/sampling.h allows).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/cuda_check.h"
#include "moeopt/backend/cuda/kernels/sampling_params.cuh"
#include "moeopt/backend/cuda/sampling_launch.h"
#include "moeopt/core/align.h"
#include "moeopt/ops/check.h"

namespace moeopt::cuda {
namespace {

namespace k = kernels;

constexpr const char* kOp = "sample";
constexpr int64_t kInt32Limit = int64_t(1) << 31;
constexpr int64_t kSortElems = int64_t(1) << 24;

unsigned char* at(void* base, size_t off) { return static_cast<unsigned char*>(base) + off; }

struct SampleLayout {
  int chunk_rows = 1;
  size_t raw_lse, row_max, row_sum, raw_pen, seg_begin, seg_end;
  size_t keys_alt, ids, ids_alt, sort_temp, sort_temp_bytes = 0;
  size_t total = 0;
};

int chunk_rows_for(int64_t rows, int64_t vocab) {
  return int(std::clamp<int64_t>(kSortElems / std::max<int64_t>(vocab, 1), 1,
                                 std::max<int64_t>(rows, 1)));
}

Result<SampleLayout> sample_layout(int64_t rows, int64_t vocab, int64_t penalties,
                                   bool need_sort) {
  SampleLayout l;
  l.chunk_rows = chunk_rows_for(rows, vocab);
  const size_t r = size_t(std::max<int64_t>(rows, 1)), p = size_t(std::max<int64_t>(penalties, 1));
  size_t off = 0;
  auto take = [&](size_t bytes) {
    const size_t o = off;
    off += align_up(bytes);
    return o;
  };
  l.raw_lse = take(r * 4);
  l.row_max = take(r * 4);
  l.row_sum = take(r * 8);
  l.raw_pen = take(p * 4);
  l.seg_begin = take(r * 4);
  l.seg_end = take(r * 4);
  if (need_sort) {
    const size_t elems = size_t(l.chunk_rows) * size_t(vocab);
    l.keys_alt = take(elems * 4);
    l.ids = take(elems * 4);
    l.ids_alt = take(elems * 4);
    MOEOPT_RETURN_IF_ERROR(cuda_status(
        detail::sample_sort_temp_bytes(l.chunk_rows, int(vocab), &l.sort_temp_bytes), kOp,
        "sort workspace query"));
    l.sort_temp = take(l.sort_temp_bytes);
  }
  l.total = off;
  return l;
}

// A [R] per-row tensor on the GPU of one of the given dtypes.
Status need_row_vector(const char* name, const TensorView& t, int64_t rows,
                       std::initializer_list<DType> dtypes) {
  MOEOPT_RETURN_IF_ERROR(need_on_gpu(kOp, name, t));
  MOEOPT_RETURN_IF_ERROR(ops::expect_dtype(kOp, name, t, dtypes));
  MOEOPT_RETURN_IF_ERROR(ops::expect_shape(kOp, name, t, {rows}));
  return ops::expect_contiguous(kOp, name, t);
}

Status need_matrix(const char* name, const TensorView& t, int64_t rows, int64_t cols,
                   DType dtype) {
  MOEOPT_RETURN_IF_ERROR(need_on_gpu(kOp, name, t));
  MOEOPT_RETURN_IF_ERROR(ops::expect_dtype(kOp, name, t, {dtype}));
  MOEOPT_RETURN_IF_ERROR(ops::expect_shape(kOp, name, t, {rows, cols}));
  return ops::expect_contiguous(kOp, name, t);
}

Status check_batch(const ops::SamplingBatch& b, const ops::SamplingOutput& o) {
  const TensorView& l = b.logits;
  MOEOPT_RETURN_IF_ERROR(need_on_gpu(kOp, "logits", l));
  MOEOPT_RETURN_IF_ERROR(ops::expect_dtype(kOp, "logits", l, {DType::kF32}));
  MOEOPT_RETURN_IF_ERROR(ops::expect_ndim(kOp, "logits", l, 2));
  MOEOPT_RETURN_IF_ERROR(ops::expect_contiguous(kOp, "logits", l));
  const int64_t rows = l.shape[0], vocab = l.shape[1];
  if (vocab < 1 && rows > 0)
    return make_error(ErrorCode::kInvalidArgument, "{}: logits has an empty vocabulary", kOp);
  if (rows * vocab >= kInt32Limit)
    return make_error(ErrorCode::kUnsupported, "{}: logits [{}, {}] must have < 2^31 elements",
                      kOp, rows, vocab);
  if (b.num_logprobs < 0 || b.num_logprobs > k::kSampleMaxLogprobs)
    return make_error(ErrorCode::kInvalidArgument, "{}: num_logprobs {} must be in [0, {}]", kOp,
                      b.num_logprobs, k::kSampleMaxLogprobs);
  const std::initializer_list<DType> f32 = {DType::kF32};
  MOEOPT_RETURN_IF_ERROR(need_row_vector("temperature", b.temperature, rows, f32));
  MOEOPT_RETURN_IF_ERROR(need_row_vector("top_k", b.top_k, rows, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(need_row_vector("top_p", b.top_p, rows, f32));
  MOEOPT_RETURN_IF_ERROR(need_row_vector("min_p", b.min_p, rows, f32));
  MOEOPT_RETURN_IF_ERROR(need_row_vector("repetition_penalty", b.repetition_penalty, rows, f32));
  MOEOPT_RETURN_IF_ERROR(need_row_vector("presence_penalty", b.presence_penalty, rows, f32));
  MOEOPT_RETURN_IF_ERROR(need_row_vector("frequency_penalty", b.frequency_penalty, rows, f32));
  MOEOPT_RETURN_IF_ERROR(
      need_row_vector("uniform", b.uniform, rows, {DType::kF32, DType::kF64}));
  if (b.any_penalty) {
    MOEOPT_RETURN_IF_ERROR(
        need_row_vector("penalty_offsets", b.penalty_offsets, rows + 1, {DType::kI32}));
    MOEOPT_RETURN_IF_ERROR(need_on_gpu(kOp, "penalty_tokens", b.penalty_tokens));
    MOEOPT_RETURN_IF_ERROR(
        ops::expect_dtype(kOp, "penalty_tokens", b.penalty_tokens, {DType::kI32}));
    MOEOPT_RETURN_IF_ERROR(ops::expect_ndim(kOp, "penalty_tokens", b.penalty_tokens, 1));
    MOEOPT_RETURN_IF_ERROR(ops::expect_contiguous(kOp, "penalty_tokens", b.penalty_tokens));
    const int64_t p = b.penalty_tokens.shape[0];
    if (p >= kInt32Limit)
      return make_error(ErrorCode::kUnsupported, "{}: {} penalty entries must be < 2^31", kOp, p);
    MOEOPT_RETURN_IF_ERROR(need_row_vector("penalty_counts", b.penalty_counts, p, {DType::kI32}));
  }
  MOEOPT_RETURN_IF_ERROR(need_row_vector("tokens", o.tokens, rows, {DType::kI32}));
  MOEOPT_RETURN_IF_ERROR(need_row_vector("logprob", o.logprob, rows, f32));
  if (b.num_logprobs > 0) {
    MOEOPT_RETURN_IF_ERROR(need_matrix("top_ids", o.top_ids, rows, b.num_logprobs, DType::kI32));
    MOEOPT_RETURN_IF_ERROR(
        need_matrix("top_logprobs", o.top_logprobs, rows, b.num_logprobs, DType::kF32));
  }
  return Status::ok_status();
}

}  // namespace

Result<size_t> CudaBackend::sample_workspace_bytes(int64_t rows, int64_t vocab,
                                                   int64_t penalty_entries) {
  if (rows < 0 || vocab < 1 || rows * vocab >= kInt32Limit)
    return make_error(ErrorCode::kInvalidArgument, "{}: no workspace for logits [{}, {}]", kOp,
                      rows, vocab);
  MOEOPT_ASSIGN_OR_RETURN(SampleLayout l, sample_layout(rows, vocab, penalty_entries, true));
  return l.total;
}

Status CudaBackend::sample(const ops::Context& ctx, const ops::SamplingBatch& batch,
                           const ops::SamplingOutput& out) {
  MOEOPT_RETURN_IF_ERROR(check_batch(batch, out));
  const int64_t rows = batch.logits.shape[0], vocab = batch.logits.shape[1];
  if (rows == 0) return Status::ok_status();
  const cudaStream_t stream = stream_of(ctx);

  if (batch.all_greedy && !batch.any_penalty && batch.num_logprobs == 0) {
    k::GreedyParams gp{};
    gp.logits = batch.logits.ptr<const float>();
    gp.tokens = out.tokens.ptr<int32_t>();
    gp.logprob = out.logprob.ptr<float>();
    gp.rows = int(rows);
    gp.vocab = int(vocab);
    gp.vec4 = vocab % 4 == 0 && (reinterpret_cast<uintptr_t>(batch.logits.data) & 15u) == 0;
    return cuda_status(detail::launch_sample_greedy(gp, stream), kOp, "greedy launch");
  }

  const int64_t penalties = batch.any_penalty ? batch.penalty_tokens.shape[0] : 0;
  const bool need_sort = !batch.all_greedy;
  MOEOPT_ASSIGN_OR_RETURN(SampleLayout l, sample_layout(rows, vocab, penalties, need_sort));
  MOEOPT_ASSIGN_OR_RETURN(void* ws, scratch(ctx, l.total, kOp));

  k::SampleParams p{};
  p.logits = batch.logits.ptr<float>();
  p.rows = int(rows);
  p.vocab = int(vocab);
  p.temperature = batch.temperature.ptr<const float>();
  p.top_k = batch.top_k.ptr<const int32_t>();
  p.top_p = batch.top_p.ptr<const float>();
  p.min_p = batch.min_p.ptr<const float>();
  p.repetition_penalty = batch.repetition_penalty.ptr<const float>();
  p.presence_penalty = batch.presence_penalty.ptr<const float>();
  p.frequency_penalty = batch.frequency_penalty.ptr<const float>();
  if (batch.uniform.dtype == DType::kF64)
    p.uniform_f64 = batch.uniform.ptr<const double>();
  else
    p.uniform_f32 = batch.uniform.ptr<const float>();
  if (batch.any_penalty) {
    p.penalty_offsets = batch.penalty_offsets.ptr<const int32_t>();
    p.penalty_tokens = batch.penalty_tokens.ptr<const int32_t>();
    p.penalty_counts = batch.penalty_counts.ptr<const int32_t>();
    p.num_penalty_entries = int(penalties);
  }
  p.num_logprobs = batch.num_logprobs;
  p.all_greedy = batch.all_greedy;
  p.tokens = out.tokens.ptr<int32_t>();
  p.logprob = out.logprob.ptr<float>();
  if (batch.num_logprobs > 0) {
    p.top_ids = out.top_ids.ptr<int32_t>();
    p.top_logprobs = out.top_logprobs.ptr<float>();
  }
  p.raw_lse = reinterpret_cast<float*>(at(ws, l.raw_lse));
  p.row_max = reinterpret_cast<float*>(at(ws, l.row_max));
  p.row_sum = reinterpret_cast<double*>(at(ws, l.row_sum));
  p.raw_pen = reinterpret_cast<float*>(at(ws, l.raw_pen));
  p.seg_begin = reinterpret_cast<int32_t*>(at(ws, l.seg_begin));
  p.seg_end = reinterpret_cast<int32_t*>(at(ws, l.seg_end));
  p.chunk_rows = l.chunk_rows;
  MOEOPT_RETURN_IF_ERROR(
      cuda_status(detail::launch_sample_prepare(p, stream), kOp, "prepare launch"));
  if (!need_sort) return Status::ok_status();

  auto* keys_alt = reinterpret_cast<float*>(at(ws, l.keys_alt));
  auto* ids = reinterpret_cast<int32_t*>(at(ws, l.ids));
  auto* ids_alt = reinterpret_cast<int32_t*>(at(ws, l.ids_alt));
  for (int64_t c0 = 0; c0 < rows; c0 += l.chunk_rows) {
    p.chunk_begin = int(c0);
    const int chunk = int(std::min<int64_t>(l.chunk_rows, rows - c0));
    MOEOPT_RETURN_IF_ERROR(cuda_status(
        detail::launch_sample_chunk(p, chunk, keys_alt, ids, ids_alt, at(ws, l.sort_temp),
                                    l.sort_temp_bytes, stream),
        kOp, "sort/walk launch"));
  }
  return Status::ok_status();
}

}  // namespace moeopt::cuda
