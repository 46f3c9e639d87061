// selftest_ops.h. Each case draws bf16 inputs, runs the op through ops:: on CUDA tensors
// (CudaBackend) and on f32 host copies (the CPU reference), and compares with a normalised
// MSE bound of 1e-4: bf16 outputs carry ~1e-6 of rounding, so a wrong kernel (wrong row,
// head, page or expert) lands orders of magnitude above it.
#include "moeopt/backend/cuda/selftest_ops.h"

#include <cuda_runtime.h>

#include <fmt/format.h>

#include <memory>
#include <vector>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/ops/attention.h"
#include "moeopt/ops/linear.h"
#include "moeopt/ops/moe.h"
#include "moeopt/ops/norm.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::cuda {
namespace {

constexpr double kNmseBound = 1e-4;

// f32 host copy of a host tensor (any float dtype).
HostTensor to_f32(const HostTensor& t) {
  HostTensor out(DType::kF32, t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) out.ptr<float>()[i] = load_as_f32(t.ptr<void>(), t.dtype(), i);
  return out;
}

// Device copies owned for the duration of the test.
class DeviceCopies {
 public:
  explicit DeviceCopies(CudaBackend& be) : be_(be) {}
  ~DeviceCopies() {
    for (void* p : owned_) be_.release(p);
  }
  Result<TensorView> upload(const HostTensor& t) {
    MOEOPT_ASSIGN_OR_RETURN(TensorView v, empty(t.dtype(), t.shape()));
    if (cudaMemcpy(v.data, t.ptr<void>(), t.nbytes(), cudaMemcpyHostToDevice) != cudaSuccess)
      return make_error(ErrorCode::kInternal, "self-test: copy to the GPU failed");
    return v;
  }
  Result<TensorView> empty(DType dt, const Shape& s) {
    MOEOPT_ASSIGN_OR_RETURN(void* p, be_.allocate(std::max<size_t>(16, size_t(s.numel()) * dtype_size(dt))));
    owned_.push_back(p);
    return TensorView::contiguous(p, dt, s, Device::kCuda);
  }
  Result<std::vector<float>> download_f32(const TensorView& v) {
    std::vector<uint8_t> raw(v.nbytes());
    if (cudaMemcpy(raw.data(), v.data, raw.size(), cudaMemcpyDeviceToHost) != cudaSuccess)
      return make_error(ErrorCode::kInternal, "self-test: copy from the GPU failed");
    std::vector<float> out(size_t(v.numel()));
    for (int64_t i = 0; i < v.numel(); ++i) out[size_t(i)] = load_as_f32(raw.data(), v.dtype, i);
    return out;
  }

 private:
  CudaBackend& be_;
  std::vector<void*> owned_;
};

// Compares and appends "name nmse" to the report; false when out of bounds.
Result<bool> judge(const char* name, const std::vector<float>& got, const HostTensor& ref,
                   std::string* report) {
  std::vector<double> r = ops::to_doubles(ref.view());
  ops::Comparison c = ops::compare_values(got.data(), r.data(), int64_t(r.size()),
                                          ops::Metric::kNormalizedMse, kNmseBound);
  *report += fmt::format("{}{} {:.1e}", report->empty() ? "" : ", ", name, c.value);
  if (!c.ok) *report += fmt::format(" (FAILED: {})", c.detail);
  return c.ok;
}

Result<bool> run_cases(std::string* report) {
  CudaBackend be;
  DeviceCopies dev(be);
  const ops::Context gpu{.device_backend = &be};
  const ops::Context cpu{};
  ops::CaseRng rng("moeopt verify op self-test");
  bool ok = true;

  // RMSNorm [8, 512] and a [8, 512] x [768, 512]^T projection (cuBLASLt), f32 out.
  {
    HostTensor x = ops::random_tensor(DType::kBF16, {8, 512}, rng);
    HostTensor w = ops::random_tensor(DType::kBF16, {512}, rng, 0.5, 1.5);
    HostTensor wl = ops::random_tensor(DType::kBF16, {768, 512}, rng, 0.01, 0.05);
    HostTensor xf = to_f32(x), ref(DType::kF32, {8, 512}), refl(DType::kF32, {8, 768});
    MOEOPT_RETURN_IF_ERROR(ops::rms_norm(cpu, xf, w, 1e-6f, ref));
    MOEOPT_RETURN_IF_ERROR(ops::linear(cpu, xf, wl, std::nullopt, refl));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dx, dev.upload(x));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dw, dev.upload(w));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dwl, dev.upload(wl));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dout, dev.empty(DType::kBF16, {8, 512}));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dy, dev.empty(DType::kF32, {8, 768}));
    MOEOPT_RETURN_IF_ERROR(ops::rms_norm(gpu, dx, dw, 1e-6f, dout));
    MOEOPT_RETURN_IF_ERROR(ops::linear(gpu, dx, dwl, std::nullopt, dy));
    MOEOPT_ASSIGN_OR_RETURN(auto got, dev.download_f32(dout));
    MOEOPT_ASSIGN_OR_RETURN(bool a, judge("rms_norm", got, ref, report));
    MOEOPT_ASSIGN_OR_RETURN(auto goty, dev.download_f32(dy));
    MOEOPT_ASSIGN_OR_RETURN(bool b, judge("linear", goty, refl, report));
    ok = ok && a && b;
  }
  // Paged attention, GQA 8 q heads on 2 kv heads of 128, two sequences (a 3-token chunk on a
  // context of 40, a decode row on 17) over shuffled pages of 16.
  {
    const int64_t hq = 8, hkv = 2, d = 128, bs = 16, blocks = 8;
    HostTensor q = ops::random_tensor(DType::kBF16, {4, hq, d}, rng);
    HostTensor kc = ops::random_tensor(DType::kBF16, {blocks, bs, hkv, d}, rng);
    HostTensor vc = ops::random_tensor(DType::kBF16, {blocks, bs, hkv, d}, rng);
    HostTensor table(DType::kI32, {2, 3}), lens(DType::kI32, {2}), qsl(DType::kI32, {3});
    const int32_t tab[] = {5, 2, 7, 1, 6, 0};
    std::copy(std::begin(tab), std::end(tab), table.ptr<int32_t>());
    lens.ptr<int32_t>()[0] = 40;
    lens.ptr<int32_t>()[1] = 17;
    const int32_t starts[] = {0, 3, 4};
    std::copy(std::begin(starts), std::end(starts), qsl.ptr<int32_t>());
    HostTensor qf = to_f32(q), ref(DType::kF32, {4, hq, d});
    ops::AttentionParams ap;
    MOEOPT_RETURN_IF_ERROR(ops::paged_attention(cpu, qf, kc, vc, table, lens, qsl, ap, ref));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dq, dev.upload(q));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dk, dev.upload(kc));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dv, dev.upload(vc));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dt, dev.upload(table));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dl, dev.upload(lens));
    MOEOPT_ASSIGN_OR_RETURN(TensorView ds, dev.upload(qsl));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dout, dev.empty(DType::kBF16, {4, hq, d}));
    MOEOPT_RETURN_IF_ERROR(ops::paged_attention(gpu, dq, dk, dv, dt, dl, ds, ap, dout));
    MOEOPT_ASSIGN_OR_RETURN(auto got, dev.download_f32(dout));
    MOEOPT_ASSIGN_OR_RETURN(bool a, judge("paged_attention", got, ref, report));
    ok = ok && a;
  }
  // The MoE layer: 6 tokens, 16 experts of width 64 over hidden 256, top-4, renormalised.
  {
    const int64_t m = 6, h = 256, inter = 64, e = 16;
    HostTensor x = ops::random_tensor(DType::kBF16, {m, h}, rng);
    HostTensor logits = ops::random_tensor(DType::kF32, {m, e}, rng, 0.05, 3.0);
    HostTensor w13 = ops::random_tensor(DType::kBF16, {e, 2 * inter, h}, rng, 0.005, 0.1);
    HostTensor w2 = ops::random_tensor(DType::kBF16, {e, h, inter}, rng, 0.01, 0.2);
    ops::MoeParams mp;
    mp.route.top_k = 4;
    mp.route.renormalize = true;
    HostTensor xf = to_f32(x), ref(DType::kF32, {m, h});
    MOEOPT_RETURN_IF_ERROR(
        ops::moe_forward(cpu, xf, logits, ops::ExpertWeights::stacked(w13, w2), mp, ref));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dx, dev.upload(x));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dlg, dev.upload(logits));
    MOEOPT_ASSIGN_OR_RETURN(TensorView d13, dev.upload(w13));
    MOEOPT_ASSIGN_OR_RETURN(TensorView d2, dev.upload(w2));
    MOEOPT_ASSIGN_OR_RETURN(TensorView dout, dev.empty(DType::kBF16, {m, h}));
    MOEOPT_RETURN_IF_ERROR(
        ops::moe_forward(gpu, dx, dlg, ops::ExpertWeights::stacked(d13, d2), mp, dout));
    MOEOPT_ASSIGN_OR_RETURN(auto got, dev.download_f32(dout));
    MOEOPT_ASSIGN_OR_RETURN(bool a, judge("moe_forward", got, ref, report));
    ok = ok && a;
  }
  if (cudaDeviceSynchronize() != cudaSuccess)
    return make_error(ErrorCode::kInternal, "self-test: a kernel failed");
  return ok;
}

}  // namespace

bool run_op_selftest(std::string* detail) {
  std::string report;
  Result<bool> r = run_cases(&report);
  if (!r.ok()) {
    *detail = "op cases: error: " + r.status().message();
    return false;
  }
  *detail = fmt::format("op cases vs the CPU reference (normalised MSE, bound {:.0e}): {}", kNmseBound,
                        report);
  return *r;
}

}  // namespace moeopt::cuda
