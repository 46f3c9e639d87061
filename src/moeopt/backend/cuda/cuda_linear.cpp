// CudaBackend::linear (ops/linear.h): y[M, N] = x[M, K] W[N, K]^T (+ bias), for M <=
// kGemvMaxRows (decode) our weight-streaming GEMV (kernels/dense_gemv.cuh, no state, so
// graph-capturable from the first call), above it cuBLASLt,
// x bf16 (rows strided), W bf16 contiguous (nn.Linear.weight), bias bf16 [N] optional,
// y bf16 or f32 (rows strided), fp32 accumulation (CUBLAS_COMPUTE_32F). Other weight dtypes
// answer kUnsupported; the engine keeps its CUDA weights in bf16.
//
// Layout: cuBLASLt is column-major. A row-major [R, C] matrix with row stride ld is the
// column-major [C, R] matrix with leading dimension ld, so the row-major y = x W^T is the
// column-major product y^T [N, M] = W [N, K] . x^T [K, M] with these operands:
//   A = W   as column-major [K, N], ld K,     op T  -> [N, K]
//   B = x   as column-major [K, M], ld ldx,   op N  -> [K, M]
//   D = y   as column-major [N, M], ld ldy           (C = D, beta = 0)
// i.e. cuBLAS's (m, n, k) = (N, M, K), with no copies or transposes in memory. The bias
// epilogue (CUBLASLT_EPILOGUE_BIAS) adds a vector of D's row count = N, one per output
// feature, which is what nn.Linear's bias is; cuBLASLt wants it in D's dtype, so it is used
// for bf16 y (with a 16-byte aligned bias) and a small bias kernel follows the GEMM for f32 y.
//
// State (LinearState, created by the first call and kept by the backend): one cublasLt
// handle, a fixed 32 MiB workspace, and a plan per (shape, strides, dtype, epilogue, pointer
// alignments) holding the descriptors and the heuristic's algorithm. The alignments are part
// of the key because cuBLASLt assumes 256-byte aligned operands unless told otherwise (the
// preferences below say what the pointers really are, which keeps odd K / N and column
// slices of fused buffers legal). After the first call with a shape, a call only sets the
// bias pointer and enqueues the matmul: no allocation, no synchronisation, so it may be
// captured into a CUDA graph. The first call of all must not be captured (it allocates the
// workspace); it answers an error if it is. Where cuBLASLt offers no algorithm for a plan,
// a simple tiled kernel (kernels/dense_gemm_fallback.cuh) computes the same product.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/backend/cuda/cuda_check.h"
#include "moeopt/backend/cuda/dense_launch.h"
#include "moeopt/ops/check.h"

namespace moeopt::cuda {
namespace {

namespace kn = kernels;

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
constexpr size_t kMaxPlans = 4096;  // distinct M values of a long run: start over past this

Status lt_status(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::ok_status();
  return make_error(ErrorCode::kInternal, "linear: {} failed: {}", what,
                    cublasLtGetStatusString(s));
}

// Largest power of two <= 256 that divides the address (256 for null).
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

struct PlanKey {
  int64_t m, n, k, ldx, ldy;
  int32_t y_bf16;
  int32_t bias_epilogue;
  uint32_t align_x, align_w, align_y, align_bias;
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = 0;
    auto mix = [&h](uint64_t v) {
      h ^= std::hash<uint64_t>{}(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    };
    mix(uint64_t(k.m));
    mix(uint64_t(k.n));
    mix(uint64_t(k.k));
    mix(uint64_t(k.ldx));
    mix(uint64_t(k.ldy));
    mix(uint64_t(k.y_bf16) | uint64_t(k.bias_epilogue) << 1);
    mix(uint64_t(k.align_x) | uint64_t(k.align_w) << 16 | uint64_t(k.align_y) << 32 |
        uint64_t(k.align_bias) << 48);
    return h;
  }
};

// Descriptors and the chosen algorithm of one GEMM shape.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool has_algo = false;  // false: cuBLASLt offers none; the fallback kernel runs instead

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (d != nullptr) cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

template <class T>
Status set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& v,
                const char* what) {
  return lt_status(cublasLtMatmulDescSetAttribute(desc, attr, &v, sizeof(v)), what);
}

template <class T>
Status set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
                const T& v) {
  return lt_status(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof(v)),
                   "matmul preference");
}

Result<std::unique_ptr<Plan>> make_plan(cublasLtHandle_t handle, const PlanKey& key,
                                        const void* bias) {
  auto plan = std::make_unique<Plan>();
  MOEOPT_RETURN_IF_ERROR(lt_status(
      cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc"));
  MOEOPT_RETURN_IF_ERROR(
      set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T, "transa attribute"));
  MOEOPT_RETURN_IF_ERROR(
      set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N, "transb attribute"));
  if (key.bias_epilogue) {
    MOEOPT_RETURN_IF_ERROR(set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                    CUBLASLT_EPILOGUE_BIAS, "epilogue attribute"));
    MOEOPT_RETURN_IF_ERROR(set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                    int32_t(CUDA_R_16BF), "bias dtype attribute"));
    // The heuristic reads the pointer's alignment from it.
    MOEOPT_RETURN_IF_ERROR(
        set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias, "bias attribute"));
  }
  const cudaDataType_t y_type = key.y_bf16 ? CUDA_R_16BF : CUDA_R_32F;
  MOEOPT_RETURN_IF_ERROR(lt_status(
      cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, uint64_t(key.k), uint64_t(key.n), key.k),
      "weight layout"));
  MOEOPT_RETURN_IF_ERROR(lt_status(
      cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, uint64_t(key.k), uint64_t(key.m), key.ldx),
      "x layout"));
  MOEOPT_RETURN_IF_ERROR(lt_status(
      cublasLtMatrixLayoutCreate(&plan->d, y_type, uint64_t(key.n), uint64_t(key.m), key.ldy),
      "y layout"));

  cublasLtMatmulPreference_t pref = nullptr;
  MOEOPT_RETURN_IF_ERROR(lt_status(cublasLtMatmulPreferenceCreate(&pref), "matmul preference"));
  std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>,
                  decltype(&cublasLtMatmulPreferenceDestroy)>
      pref_guard(pref, &cublasLtMatmulPreferenceDestroy);
  MOEOPT_RETURN_IF_ERROR(
      set_pref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(kWorkspaceBytes)));
  MOEOPT_RETURN_IF_ERROR(set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_w));
  MOEOPT_RETURN_IF_ERROR(set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_x));
  MOEOPT_RETURN_IF_ERROR(set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_y));
  MOEOPT_RETURN_IF_ERROR(set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_y));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->a, plan->b,
                                                          plan->d, plan->d, pref, 1, &result,
                                                          &returned);
  // NOT_SUPPORTED (no algorithm for this shape / alignment) is an answer, not a failure.
  if (s != CUBLAS_STATUS_SUCCESS && s != CUBLAS_STATUS_NOT_SUPPORTED)
    return lt_status(s, "matmul heuristic");
  plan->has_algo = s == CUBLAS_STATUS_SUCCESS && returned > 0 &&
                   result.state == CUBLAS_STATUS_SUCCESS;
  if (plan->has_algo) plan->algo = result.algo;
  return plan;
}

}  // namespace

struct CudaBackend::LinearState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans;

  LinearState() = default;
  LinearState(const LinearState&) = delete;
  LinearState& operator=(const LinearState&) = delete;
  ~LinearState() {
    plans.clear();
    if (workspace != nullptr) cudaFree(workspace);
    if (handle != nullptr) cublasLtDestroy(handle);
  }
};

Status CudaBackend::linear(const ops::Context& ctx, const TensorView& x, const TensorView& weight,
                           const std::optional<TensorView>& bias, const TensorView& y) {
  constexpr const char* op = "linear";
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "weight", weight, DType::kBF16));
  MOEOPT_RETURN_IF_ERROR(need_dtype(op, "x", x, DType::kBF16));
  if (y.dtype != DType::kBF16 && y.dtype != DType::kF32)
    return make_error(ErrorCode::kUnsupported, "{}: y is {}, the CUDA backend takes bf16 or f32",
                      op, dtype_name(y.dtype));
  if (bias) MOEOPT_RETURN_IF_ERROR(need_dtype(op, "bias", *bias, DType::kBF16));
  const int64_t m = x.shape[0], k = x.shape[1], n = weight.shape[0];
  if (m == 0 || n == 0) return Status::ok_status();
  const cudaStream_t stream = stream_of(ctx);
  const int64_t ldx = ops::row_stride(x), ldy = ops::row_stride(y);
  const bool y_bf16 = y.dtype == DType::kBF16;
  const bool bias_epilogue =
      bias && y_bf16 && (reinterpret_cast<uintptr_t>(bias->data) & 15u) == 0;

  // The operands, as the fallback GEMM and the GEMV (which extends them) take them.
  kn::GemmFallbackParams ops_p{};
  ops_p.x = x.data;
  ops_p.w = weight.data;
  ops_p.bias = bias ? bias->data : nullptr;
  ops_p.y = y.data;
  ops_p.m = m;
  ops_p.n = n;
  ops_p.k = k;
  ops_p.x_stride = ldx;
  ops_p.y_stride = ldy;
  ops_p.y_dtype = y_bf16 ? kn::ElemDType::kBF16 : kn::ElemDType::kF32;
  auto fallback = [&]() -> Status {
    return cuda_status(detail::launch_dense_gemm_fallback(ops_p, stream), op,
                       "fallback GEMM launch");
  };
  if (k == 0) return fallback();  // y = bias (or 0): no GEMM to describe
  if (m <= kn::kGemvMaxRows) {
    kn::GemvParams p{};
    static_cast<kn::GemmFallbackParams&>(p) = ops_p;
    p.vec = k % 8 == 0 && ldx % 8 == 0 && (reinterpret_cast<uintptr_t>(x.data) & 15u) == 0 &&
            (reinterpret_cast<uintptr_t>(weight.data) & 15u) == 0;
    // 4 warps per 16 columns once there are two blocks per SM, else 8 (dense_gemv.cuh).
    p.split_k = (n + 15) / 16 >= 2 * int64_t(sm_count()) ? 4 : 8;
    return cuda_status(detail::launch_dense_gemv(p, stream), op, "GEMV launch");
  }

  std::lock_guard<std::mutex> lock(linear_mu_);
  if (!linear_) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) == cudaSuccess &&
        capture != cudaStreamCaptureStatusNone)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: the first call creates the cuBLASLt handle and workspace and cannot "
                        "be captured; call linear once before capturing",
                        op);
    auto state = std::make_shared<LinearState>();
    MOEOPT_RETURN_IF_ERROR(lt_status(cublasLtCreate(&state->handle), "cublasLtCreate"));
    MOEOPT_RETURN_IF_ERROR(
        cuda_status(cudaMalloc(&state->workspace, kWorkspaceBytes), op, "workspace cudaMalloc"));
    linear_ = std::move(state);
  }
  LinearState& st = *linear_;

  PlanKey key{};
  key.m = m;
  key.n = n;
  key.k = k;
  key.ldx = ldx;
  key.ldy = ldy;
  key.y_bf16 = y_bf16;
  key.bias_epilogue = bias_epilogue;
  key.align_x = alignment_of(x.data);
  key.align_w = alignment_of(weight.data);
  key.align_y = alignment_of(y.data);
  key.align_bias = bias_epilogue ? alignment_of(bias->data) : 0;
  auto it = st.plans.find(key);
  if (it == st.plans.end()) {
    if (st.plans.size() >= kMaxPlans) st.plans.clear();
    MOEOPT_ASSIGN_OR_RETURN(std::unique_ptr<Plan> plan,
                            make_plan(st.handle, key, bias_epilogue ? bias->data : nullptr));
    it = st.plans.emplace(key, std::move(plan)).first;
  }
  Plan& plan = *it->second;

  if (!plan.has_algo) return fallback();
  if (bias_epilogue)
    MOEOPT_RETURN_IF_ERROR(
        set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias->data, "bias attribute"));
  const float alpha = 1.0f, beta = 0.0f;
  MOEOPT_RETURN_IF_ERROR(lt_status(
      cublasLtMatmul(st.handle, plan.desc, &alpha, weight.data, plan.a, x.data, plan.b, &beta,
                     y.data, plan.d, y.data, plan.d, &plan.algo, st.workspace, kWorkspaceBytes,
                     stream),
      "cublasLtMatmul"));
  if (!bias || bias_epilogue) return Status::ok_status();
  kn::BiasAddParams p{};
  p.y = y.data;
  p.bias = bias->data;
  p.rows = m;
  p.n = n;
  p.y_stride = ldy;
  p.y_dtype = y_bf16 ? kn::ElemDType::kBF16 : kn::ElemDType::kF32;
  p.vec = n % 8 == 0 && ldy % 8 == 0 && (reinterpret_cast<uintptr_t>(y.data) & 15u) == 0 &&
          (reinterpret_cast<uintptr_t>(bias->data) & 15u) == 0;
  return cuda_status(detail::launch_dense_bias_add(p, stream), op, "bias kernel launch");
}

}  // namespace moeopt::cuda
