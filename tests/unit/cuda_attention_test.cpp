// The CUDA attention ops (paged_attention in backend/cuda/cuda_attention_ops.cpp, and the
// kv_cache_write that fills the cache) against the CPU op oracle (backend/cpu via
// ops/attention.h) run on the same bf16 inputs (q converted to f32, caches bf16 on both).
//
// Cases: the op-case table's kv_cache_write and paged_attention cases (caches as bf16, the
// only cache dtype the CUDA backend takes), then GPU cases at Qwen3-30B-A3B's shape (Hq 32,
// Hkv 4, D 128, block_size 16): decode batches of 1, 8 and 64 sequences with contexts 1..4096,
// prefills of 1, 17, 512 and 2048 tokens, chunked prefill, a mixed decode + prefill batch,
// sliding windows; D 64 with 8 q heads per kv head; block sizes 1, 7, 32; strided q / out
// rows (aligned and not); tiny odd shapes (D 8/12/16/24/32/256, Hq 3..7) on the general path.
// Every block table is shuffled with garbage past each sequence's last block, and every
// cache slot no sequence owns holds NaN, so a kernel that reads outside the visible keys
// fails. Outputs start as NaN (poison) and padding of strided rows must stay untouched.
//
// Tolerance: two bf16 roundings separate the GPU from the CPU's fp32: the output, and the
// softmax weights P fed to the tensor cores (the sum of P stays fp32). Each has relative error
// <= u = 2^-8 (RMS u/sqrt(3)), so each adds about u^2/3 = 5e-6 of normalised MSE; measured on
// an H200: <= 6e-6 in all. kNmse = 2e-5. Values are in +-[0.05, 1], so |out| < 1: output
// rounding adds <= 2^-9 absolute, P rounding <= u * max|v| = 2^-8: kMaxAbs = 6e-3 (measured
// <= 3.1e-3).
// FP8 caches (CudaAttnFp8, and the table's fp8 cases): the same instances with each (slot,
// kv head) row quantised by the CPU's ops::fp8_quantize_group (codes NaN and scales NaN in
// unowned slots); both sides read those codes and scales, so the tolerance is the bf16 one
// (the GPU applies the scale to q . code instead of to each element: one more f32 rounding).
// kv_cache_write into fp8 caches must give the CPU's codes and scales bit for bit.
// Also: hints larger than needed (or 0 = unknown) give the same result within tolerance, a
// launch captured in a CUDA graph replays correctly for new metadata within its bounds, a
// sequence with context 0 and new tokens gets zero rows, unsupported dtypes answer cleanly.
// Every test skips without a CUDA device. Run: build/tests/test_cuda --gtest_filter='CudaAttn*'
#include <gtest/gtest.h>

#if MOEOPT_HAVE_CUDA

#include <cuda_runtime.h>

#include "cuda_test_support.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/ops/attention.h"
#include "moeopt/ops/fp8.h"
#include "moeopt/ops/op_cases.h"

namespace moeopt::ops {
namespace {

constexpr double kNmse = 2e-5;
constexpr double kMaxAbs = 6e-3;
constexpr uint16_t kBf16Nan = 0x7fc0;
constexpr uint8_t kFp8Nan = 0x7f;

ThreadPool& pool() {
  static ThreadPool p(0);
  return p;
}

// Owning device buffer.
class DevBuf {
 public:
  explicit DevBuf(size_t bytes) : bytes_(std::max<size_t>(bytes, 16)) {
    if (cudaMalloc(&p_, bytes_) != cudaSuccess) p_ = nullptr;
  }
  template <class T>
  explicit DevBuf(const std::vector<T>& host) : DevBuf(host.size() * sizeof(T)) {
    upload(host);
  }
  ~DevBuf() { cudaFree(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T>
  void upload(const std::vector<T>& host) {
    if (p_ != nullptr) cudaMemcpy(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  template <class T>
  std::vector<T> download() const {
    std::vector<T> h(bytes_ / sizeof(T));
    cudaMemcpy(h.data(), p_, h.size() * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }
  void* get() const { return p_; }
  size_t bytes() const { return bytes_; }
  bool ok() const { return p_ != nullptr; }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

// A device view of `shape`, with dim-0 stride `row_stride` (elements; 0 = contiguous).
TensorView dev_view(const DevBuf& b, DType dtype, const Shape& shape, int64_t row_stride = 0) {
  TensorView v = TensorView::contiguous(b.get(), dtype, shape, Device::kCuda);
  if (row_stride > 0) v.strides[0] = row_stride;
  return v;
}

Context gpu_context(cuda::CudaBackend& backend, cudaStream_t stream = nullptr) {
  Context ctx;
  ctx.pool = &pool();
  ctx.stream = stream;
  ctx.device_backend = &backend;
  return ctx;
}

std::string case_name(const std::string& n) { return n; }

// ---------------------------------------------------------------- attention instances

struct AttnSpec {
  std::string name;
  int hq = 0, hkv = 0, d = 0, bs = 16;
  int window = 0;
  std::vector<int> q_lens{}, ctx_lens{};
  int q_pad = 0, out_pad = 0;  // extra elements per token row (strided rows)
  float scale = 0.0f;
  int max_blocks = 0;  // block-table row length (0: the longest sequence's blocks + 2)
  bool fp8 = false;    // e4m3 caches with per (slot, kv head) scales
  // fp8 specs: which codes the owned rows hold. kQuantised: the quantised random values;
  // kEveryCode: all 254 finite codes, cycled (signs, subnormals, +-448); kSubnormal: only zero
  // and the 14 subnormal codes, so a conversion that flushed them would zero the output.
  enum class Codes { kQuantised, kEveryCode, kSubnormal } codes = Codes::kQuantised;
};

// Host side of one batch: bf16 q rows (with padding), bf16 caches, metadata.
struct Instance {
  int64_t tokens = 0, seqs = 0, num_blocks = 0, max_blocks = 0, q_stride = 0, out_stride = 0;
  std::vector<uint16_t> q;                 // [T, q_stride] bf16 bits
  std::vector<uint16_t> k_cache, v_cache;  // [num_blocks, bs, hkv, d] bf16 bits
  std::vector<uint8_t> k8, v8;             // fp8 specs: the caches as e4m3 codes
  std::vector<float> k_scale, v_scale;     // fp8 specs: [num_blocks, bs, hkv]
  std::vector<int32_t> block_table, context_lens, query_start_loc;
};

// The fp8 cache of a bf16 one: every (slot, kv head) row of d values quantised as
// kv_cache_write does (ops::fp8_quantize_group); rows holding NaN (unowned slots) get NaN
// codes and scales.
void quantize_cache(const std::vector<uint16_t>& bf16, int64_t d, std::vector<uint8_t>& codes,
                    std::vector<float>& scales) {
  const size_t rows = bf16.size() / size_t(d);
  codes.assign(bf16.size(), kFp8Nan);
  scales.assign(rows, NAN);
  std::vector<float> x(static_cast<size_t>(d));
  for (size_t r = 0; r < rows; ++r) {
    bool nan = false;
    for (int64_t e = 0; e < d; ++e) nan |= std::isnan(x[size_t(e)] = bf16_to_f32(bf16[r * size_t(d) + size_t(e)]));
    if (!nan) scales[r] = fp8_quantize_group(x.data(), d, codes.data() + r * size_t(d));
  }
}

uint16_t bf16_bits(double v) { return f32_to_bf16(float(v)); }

Instance make_instance(const AttnSpec& c, uint64_t seed_salt = 0) {
  CaseRng rng(c.name + std::to_string(seed_salt));
  Instance in;
  in.seqs = int64_t(c.ctx_lens.size());
  int64_t used = 0;
  for (int ctx : c.ctx_lens) {
    const int64_t need = (ctx + c.bs - 1) / c.bs;
    used += need;
    in.max_blocks = std::max(in.max_blocks, need + 2);
  }
  if (c.max_blocks > 0) in.max_blocks = c.max_blocks;
  in.num_blocks = used + 5;  // pages nobody owns
  std::vector<int32_t> order(size_t(in.num_blocks));
  std::iota(order.begin(), order.end(), 0);
  for (size_t i = order.size(); i > 1; --i)
    std::swap(order[i - 1], order[size_t(rng.below(int64_t(i)))]);
  const int64_t row = int64_t(c.hkv) * c.d;
  in.k_cache.assign(size_t(in.num_blocks * c.bs * row), kBf16Nan);
  in.v_cache.assign(in.k_cache.size(), kBf16Nan);
  in.block_table.assign(size_t(in.seqs * in.max_blocks), 0);
  in.query_start_loc.push_back(0);
  size_t next = 0;
  for (int64_t s = 0; s < in.seqs; ++s) {
    const int ctx = c.ctx_lens[size_t(s)];
    const int64_t need = (ctx + c.bs - 1) / c.bs;
    for (int64_t b = 0; b < in.max_blocks; ++b)
      in.block_table[size_t(s * in.max_blocks + b)] =
          b < need ? order[next++] : (b % 2 ? -1 : 1000000 + int32_t(b));
    for (int64_t j = 0; j < ctx; ++j) {
      const int64_t slot = int64_t(in.block_table[size_t(s * in.max_blocks + j / c.bs)]) * c.bs +
                           j % c.bs;
      for (int64_t e = 0; e < row; ++e) {
        in.k_cache[size_t(slot * row + e)] = bf16_bits(rng.nonzero(0.05, 1.0));
        in.v_cache[size_t(slot * row + e)] = bf16_bits(rng.nonzero(0.05, 1.0));
      }
    }
    in.context_lens.push_back(ctx);
    in.query_start_loc.push_back(in.query_start_loc.back() + c.q_lens[size_t(s)]);
  }
  in.tokens = in.query_start_loc.back();
  in.q_stride = int64_t(c.hq) * c.d + c.q_pad;
  in.out_stride = int64_t(c.hq) * c.d + c.out_pad;
  in.q.assign(size_t(std::max<int64_t>(in.tokens, 1) * in.q_stride), kBf16Nan);
  for (int64_t t = 0; t < in.tokens; ++t)
    for (int64_t e = 0; e < int64_t(c.hq) * c.d; ++e)
      in.q[size_t(t * in.q_stride + e)] = bf16_bits(rng.nonzero(0.05, 1.0));
  if (c.fp8) {
    quantize_cache(in.k_cache, c.d, in.k8, in.k_scale);
    quantize_cache(in.v_cache, c.d, in.v8, in.v_scale);
    if (c.codes != AttnSpec::Codes::kQuantised) {
      std::vector<uint8_t> pool;
      for (int code = 0; code < 256; ++code) {
        const int mag = code & 0x7f;
        if (mag == 0x7f) continue;  // NaN
        if (c.codes == AttnSpec::Codes::kSubnormal && mag > 0x07) continue;
        if (c.codes == AttnSpec::Codes::kSubnormal && code == 0x80) continue;  // -0: one zero
        pool.push_back(uint8_t(code));
      }
      for (std::vector<uint8_t>* codes : {&in.k8, &in.v8}) {
        const std::vector<float>& scales = codes == &in.k8 ? in.k_scale : in.v_scale;
        for (size_t i = 0; i < codes->size(); ++i)
          if (!std::isnan(scales[i / size_t(c.d)]))  // owned rows only
            (*codes)[i] = pool[(i * 37 + i / size_t(c.d)) % pool.size()];
      }
    }
  }
  return in;
}

// The CPU oracle on the same values: [T, Hq, D] f32.
std::vector<double> cpu_attention(const AttnSpec& c, const Instance& in) {
  const int64_t t = in.tokens, hq = c.hq, d = c.d;
  HostTensor q(DType::kF32, {t, hq, d});
  for (int64_t i = 0; i < t; ++i)
    for (int64_t e = 0; e < hq * d; ++e)
      q.ptr<float>()[i * hq * d + e] = bf16_to_f32(in.q[size_t(i * in.q_stride + e)]);
  const Shape cs{in.num_blocks, c.bs, c.hkv, d};
  const DType cdt = c.fp8 ? DType::kF8E4M3 : DType::kBF16;
  HostTensor kc(cdt, cs), vc(cdt, cs), ks(DType::kF32, {in.num_blocks, c.bs, c.hkv}),
      vs(DType::kF32, {in.num_blocks, c.bs, c.hkv});
  std::memcpy(kc.ptr<void>(), c.fp8 ? (const void*)in.k8.data() : in.k_cache.data(), kc.nbytes());
  std::memcpy(vc.ptr<void>(), c.fp8 ? (const void*)in.v8.data() : in.v_cache.data(), vc.nbytes());
  KvScales scales;
  if (c.fp8) {
    std::memcpy(ks.ptr<void>(), in.k_scale.data(), ks.nbytes());
    std::memcpy(vs.ptr<void>(), in.v_scale.data(), vs.nbytes());
    scales = {ks.view(), vs.view()};
  }
  HostTensor bt(DType::kI32, {in.seqs, in.max_blocks}), cl(DType::kI32, {in.seqs}),
      qsl(DType::kI32, {in.seqs + 1});
  std::memcpy(bt.ptr<void>(), in.block_table.data(), bt.nbytes());
  std::memcpy(cl.ptr<void>(), in.context_lens.data(), cl.nbytes());
  std::memcpy(qsl.ptr<void>(), in.query_start_loc.data(), qsl.nbytes());
  HostTensor out(DType::kF32, {t, hq, d});
  AttentionParams params{.scale = c.scale, .sliding_window = c.window};
  Context ctx;
  ctx.pool = &pool();
  Status st = paged_attention(ctx, q, kc, vc, bt, cl, qsl, params, out, scales);
  EXPECT_TRUE(st.ok()) << st.message();
  return to_doubles(out);
}

// Device copies of an instance; out starts as all-ones bits (NaN).
struct DeviceInstance {
  DevBuf q, k_cache, v_cache, k8, v8, k_scale, v_scale, block_table, context_lens,
      query_start_loc, out;
  explicit DeviceInstance(const Instance& in)
      : q(in.q), k_cache(in.k_cache), v_cache(in.v_cache), k8(in.k8), v8(in.v8),
        k_scale(in.k_scale), v_scale(in.v_scale), block_table(in.block_table),
        context_lens(in.context_lens), query_start_loc(in.query_start_loc),
        out(size_t(std::max<int64_t>(in.tokens, 1) * in.out_stride) * 2) {
    poison_out();
  }
  // Both wait for the device, so work on any stream sees the new contents.
  void poison_out() {
    cudaMemset(out.get(), 0xff, out.bytes());
    cudaDeviceSynchronize();
  }
  void upload(const Instance& in) {
    q.upload(in.q);
    k_cache.upload(in.k_cache);
    v_cache.upload(in.v_cache);
    k8.upload(in.k8);
    v8.upload(in.v8);
    k_scale.upload(in.k_scale);
    v_scale.upload(in.v_scale);
    block_table.upload(in.block_table);
    context_lens.upload(in.context_lens);
    query_start_loc.upload(in.query_start_loc);
    cudaDeviceSynchronize();
  }
  bool ok() const {
    return q.ok() && k_cache.ok() && v_cache.ok() && block_table.ok() && context_lens.ok() &&
           query_start_loc.ok() && out.ok();
  }
};

Status gpu_attention(const AttnSpec& c, const Instance& in, DeviceInstance& dev,
                     const Context& ctx, int max_ctx_hint, int max_q_hint) {
  const Shape cs{in.num_blocks, c.bs, c.hkv, c.d}, ss{in.num_blocks, c.bs, c.hkv};
  AttentionParams params{.scale = c.scale, .sliding_window = c.window,
                         .max_context_len = max_ctx_hint, .max_query_len = max_q_hint};
  KvScales scales;
  if (c.fp8) scales = {dev_view(dev.k_scale, DType::kF32, ss), dev_view(dev.v_scale, DType::kF32, ss)};
  const DType cdt = c.fp8 ? DType::kF8E4M3 : DType::kBF16;
  return paged_attention(ctx, dev_view(dev.q, DType::kBF16, {in.tokens, c.hq, c.d}, in.q_stride),
                         dev_view(c.fp8 ? dev.k8 : dev.k_cache, cdt, cs),
                         dev_view(c.fp8 ? dev.v8 : dev.v_cache, cdt, cs),
                         dev_view(dev.block_table, DType::kI32, {in.seqs, in.max_blocks}),
                         dev_view(dev.context_lens, DType::kI32, {in.seqs}),
                         dev_view(dev.query_start_loc, DType::kI32, {in.seqs + 1}), params,
                         dev_view(dev.out, DType::kBF16, {in.tokens, c.hq, c.d}, in.out_stride),
                         scales);
}

// Downloads out, checks row padding is untouched and returns the [T, Hq, D] values.
std::vector<float> gpu_result(const AttnSpec& c, const Instance& in, const DeviceInstance& dev) {
  const std::vector<uint16_t> raw = dev.out.download<uint16_t>();
  const int64_t row = int64_t(c.hq) * c.d;
  std::vector<float> got(size_t(in.tokens * row));
  for (int64_t t = 0; t < in.tokens; ++t) {
    for (int64_t e = 0; e < row; ++e)
      got[size_t(t * row + e)] = bf16_to_f32(raw[size_t(t * in.out_stride + e)]);
    for (int64_t e = row; e < in.out_stride; ++e)
      EXPECT_EQ(raw[size_t(t * in.out_stride + e)], 0xffff) << "row padding of token " << t;
  }
  return got;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& ref,
                  const std::string& what) {
  ASSERT_EQ(got.size(), ref.size());
  const Comparison cmp =
      compare_values(got.data(), ref.data(), int64_t(got.size()), Metric::kNormalizedMse, kNmse);
  EXPECT_TRUE(cmp.ok) << what << ": " << cmp.detail;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(double(got[i]) - ref[i]);
    if (std::isnan(e) || e > worst) {
      worst = e;
      at = i;
    }
  }
  EXPECT_LE(worst, kMaxAbs) << what << ": element " << at << " got " << got[at] << " want "
                            << ref[at];
  // The margins, for --gtest_output=xml.
  testing::Test::RecordProperty("nmse", std::to_string(cmp.value));
  testing::Test::RecordProperty("max_abs", std::to_string(worst));
}

int max_of(const std::vector<int>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

// Runs a spec with exact hints, checks it against the CPU; returns the GPU values.
void run_spec(const AttnSpec& c) {
  const Instance in = make_instance(c);
  const std::vector<double> ref = cpu_attention(c, in);
  cuda::CudaBackend backend;
  DeviceInstance dev(in);
  ASSERT_TRUE(dev.ok());
  const Context ctx = gpu_context(backend);
  Status st = gpu_attention(c, in, dev, ctx, max_of(c.ctx_lens), max_of(c.q_lens));
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  expect_close(gpu_result(c, in, dev), ref, c.name + " (exact hints)");
}

// Random context lengths in [1, max] with the extremes included.
std::vector<int> random_contexts(const std::string& seed, int n, int max) {
  CaseRng rng(seed);
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(1 + int(rng.below(max)));
  v[0] = max;
  if (n > 1) v[1] = 1;
  if (n > 2) v[2] = 17;
  return v;
}

std::vector<AttnSpec> table_specs() {
  std::vector<AttnSpec> v;
  for (const OpCase& c : op_cases_for(OpKind::kPagedAttention))
    v.push_back({.name = c.name, .hq = c.heads, .hkv = c.kv_heads, .d = c.head_dim,
                 .bs = c.block_size, .window = c.sliding_window, .q_lens = c.q_lens,
                 .ctx_lens = c.ctx_lens, .fp8 = c.cache_dtype == DType::kF8E4M3});
  return v;
}

std::vector<AttnSpec> gpu_specs() {
  std::vector<AttnSpec> v;
  auto qwen3 = [&](std::string name, std::vector<int> q, std::vector<int> ctx, int window = 0,
                   int bs = 16) {
    v.push_back({.name = std::move(name), .hq = 32, .hkv = 4, .d = 128, .bs = bs,
                 .window = window, .q_lens = std::move(q), .ctx_lens = std::move(ctx)});
  };
  for (int b : {1, 8, 64}) {
    const std::string name = "gpu_qwen3_decode_b" + std::to_string(b);
    qwen3(name, std::vector<int>(size_t(b), 1), random_contexts(name, b, 4096));
  }
  for (int n : {1, 17, 512, 2048}) qwen3("gpu_qwen3_prefill_" + std::to_string(n), {n}, {n});
  qwen3("gpu_qwen3_chunked_300_of_1500", {300}, {1500});
  qwen3("gpu_qwen3_chunked_two", {64, 200, 3}, {4096, 200, 999});
  qwen3("gpu_qwen3_mixed", {1, 1, 37, 1, 0, 128, 1, 5}, {4096, 17, 37, 900, 50, 1000, 1, 2000});
  qwen3("gpu_qwen3_window256", {1, 1, 700, 100}, {3000, 200, 700, 1200}, 256);
  qwen3("gpu_qwen3_window1", {5, 1}, {5, 40}, 1);
  qwen3("gpu_qwen3_window100_decode_b8", std::vector<int>(8, 1),
        random_contexts("gpu_qwen3_window100_decode_b8", 8, 3000), 100);
  qwen3("gpu_qwen3_bs1", {3, 1}, {50, 300}, 0, 1);
  qwen3("gpu_qwen3_bs7", {40, 1, 1}, {90, 700, 6}, 0, 7);
  qwen3("gpu_qwen3_bs32_window50", {70, 1}, {200, 1000}, 50, 32);
  v.push_back({.name = "gpu_d64_gqa8_mixed", .hq = 16, .hkv = 2, .d = 64, .bs = 16,
               .q_lens = {333, 1, 1, 20}, .ctx_lens = {333, 2500, 64, 100}});
  v.push_back({.name = "gpu_d64_gqa8_decode_b32", .hq = 16, .hkv = 2, .d = 64, .bs = 16,
               .q_lens = std::vector<int>(32, 1),
               .ctx_lens = random_contexts("gpu_d64_gqa8_decode_b32", 32, 2048)});
  v.push_back({.name = "gpu_d64_mha_prefill", .hq = 4, .hkv = 4, .d = 64, .bs = 8,
               .q_lens = {129, 3}, .ctx_lens = {129, 77}});
  // Strided rows: a q slice of a fused QKV buffer (aligned: tensor cores), and misaligned
  // row strides (the general kernel at D = 128).
  v.push_back({.name = "gpu_qwen3_qkv_slice", .hq = 32, .hkv = 4, .d = 128, .bs = 16,
               .q_lens = {1, 70}, .ctx_lens = {600, 70}, .q_pad = 2 * 4 * 128, .out_pad = 8});
  v.push_back({.name = "gpu_qwen3_misaligned_rows", .hq = 32, .hkv = 4, .d = 128, .bs = 16,
               .q_lens = {1, 20}, .ctx_lens = {300, 40}, .q_pad = 3, .out_pad = 5});
  v.push_back({.name = "gpu_qwen3_scale", .hq = 32, .hkv = 4, .d = 128, .bs = 16,
               .q_lens = {1, 9}, .ctx_lens = {500, 9}, .scale = 0.3f});
  // Tiny odd shapes (general path).
  v.push_back({.name = "gpu_tiny_d8_h3", .hq = 3, .hkv = 1, .d = 8, .bs = 3,
               .q_lens = {4, 1, 9}, .ctx_lens = {4, 30, 12}});
  v.push_back({.name = "gpu_tiny_d12_h5", .hq = 5, .hkv = 5, .d = 12, .bs = 7,
               .q_lens = {6, 1}, .ctx_lens = {6, 45}});
  v.push_back({.name = "gpu_tiny_d24_h7", .hq = 7, .hkv = 7, .d = 24, .bs = 16,
               .window = 5, .q_lens = {11, 1}, .ctx_lens = {11, 33}});
  v.push_back({.name = "gpu_tiny_d16_h4_bs1", .hq = 4, .hkv = 2, .d = 16, .bs = 1,
               .q_lens = {2, 1, 0}, .ctx_lens = {9, 20, 3}});
  v.push_back({.name = "gpu_tiny_d32_h6", .hq = 6, .hkv = 3, .d = 32, .bs = 5,
               .q_lens = {1, 25}, .ctx_lens = {100, 25}});
  v.push_back({.name = "gpu_d256_general", .hq = 4, .hkv = 2, .d = 256, .bs = 16,
               .q_lens = {1, 30}, .ctx_lens = {400, 30}});
  return v;
}

// FP8 caches on both paths (tensor cores at D 64 / 128, the general kernel elsewhere):
// long decode batches, long and chunked prefill, mixed batches, windows, odd block sizes,
// strided q rows.
std::vector<AttnSpec> fp8_specs() {
  std::vector<AttnSpec> v;
  for (const char* name :
       {"gpu_qwen3_decode_b1", "gpu_qwen3_decode_b64", "gpu_qwen3_prefill_17",
        "gpu_qwen3_prefill_2048", "gpu_qwen3_chunked_two", "gpu_qwen3_mixed",
        "gpu_qwen3_window256", "gpu_qwen3_bs7", "gpu_qwen3_bs1", "gpu_d64_gqa8_mixed",
        "gpu_d64_gqa8_decode_b32", "gpu_qwen3_qkv_slice", "gpu_qwen3_misaligned_rows",
        "gpu_tiny_d24_h7", "gpu_d256_general"})
    for (AttnSpec s : gpu_specs())
      if (s.name == name) {
        s.name = "fp8_" + s.name;
        s.fp8 = true;
        v.push_back(s);
      }
  // The code-to-bf16 conversions (tensor-core decode and prefill, general kernel) over every
  // finite code, and over the subnormal ones alone.
  for (const char* name : {"gpu_qwen3_decode_b8", "gpu_qwen3_prefill_17", "gpu_d256_general"})
    for (AttnSpec s : gpu_specs())
      if (s.name == name) {
        s.fp8 = true;
        for (auto [tag, codes] : {std::pair{"fp8_every_code_", AttnSpec::Codes::kEveryCode},
                                  std::pair{"fp8_subnormal_codes_", AttnSpec::Codes::kSubnormal}}) {
          AttnSpec t = s;
          t.name = tag + s.name;
          t.codes = codes;
          v.push_back(t);
        }
      }
  return v;
}

AttnSpec spec_named(const std::string& name) {
  for (const AttnSpec& s : gpu_specs())
    if (s.name == name) return s;
  ADD_FAILURE() << "no spec " << name;
  return {};
}

// ---------------------------------------------------------------- paged_attention

class CudaAttnTable : public testing::TestWithParam<AttnSpec> {};

TEST_P(CudaAttnTable, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  run_spec(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaAttnTable, testing::ValuesIn(table_specs()),
                         [](const auto& info) { return case_name(info.param.name); });

class CudaAttnGpu : public testing::TestWithParam<AttnSpec> {};

TEST_P(CudaAttnGpu, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  run_spec(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaAttnGpu, testing::ValuesIn(gpu_specs()),
                         [](const auto& info) { return case_name(info.param.name); });

class CudaAttnFp8 : public testing::TestWithParam<AttnSpec> {};

TEST_P(CudaAttnFp8, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  run_spec(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaAttnFp8, testing::ValuesIn(fp8_specs()),
                         [](const auto& info) { return case_name(info.param.name); });

TEST(CudaAttnFp8Spec, CoversEveryListedName) { EXPECT_EQ(fp8_specs().size(), 21u); }

// Hints larger than needed (and 0 = unknown) change the launch (row tiles, splits), not the
// result.
TEST(CudaAttnHints, LargerOrUnknownBoundsGiveTheSameResult) {
  SKIP_WITHOUT_GPU();
  for (const AttnSpec& c : {spec_named("gpu_qwen3_decode_b8"), spec_named("gpu_qwen3_mixed"),
                            spec_named("gpu_tiny_d8_h3")}) {
    const Instance in = make_instance(c);
    const std::vector<double> ref = cpu_attention(c, in);
    cuda::CudaBackend backend;
    DeviceInstance dev(in);
    ASSERT_TRUE(dev.ok());
    const int mc = max_of(c.ctx_lens), mq = max_of(c.q_lens);
    const int cap = int(in.max_blocks) * c.bs;
    for (auto [hc, hqn] : {std::pair{mc, mq}, {cap, mq}, {0, 0}, {mc, int(in.tokens)},
                           {std::max(mc, cap / 2), 0}}) {
      dev.poison_out();
      Status st = gpu_attention(c, in, dev, gpu_context(backend), hc, hqn);
      ASSERT_TRUE(st.ok()) << st.message();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      expect_close(gpu_result(c, in, dev), ref,
                   c.name + " hints ctx " + std::to_string(hc) + " q " + std::to_string(hqn));
    }
  }
}

// A decode launch captured once (bounds: 4096 context, 1 query per sequence) and replayed on
// new contexts, queries and cache contents, as the engine's CUDA-graph decode does.
TEST(CudaAttnGraph, CapturedLaunchReplaysForNewMetadata) {
  SKIP_WITHOUT_GPU();
  for (int d : {128, 24}) {
    AttnSpec c{.name = "gpu_graph_d" + std::to_string(d), .hq = 32, .hkv = 4, .d = d, .bs = 16,
               .q_lens = std::vector<int>(6, 1)};
    c.max_blocks = 4096 / 16;
    c.ctx_lens = random_contexts(c.name + "a", 6, 2500);
    AttnSpec c2 = c;
    c2.ctx_lens = random_contexts(c.name + "b", 6, 4096);
    Instance a = make_instance(c), b = make_instance(c2, 1);
    // Same buffer sizes for both: the larger page count.
    const int64_t pages = std::max(a.num_blocks, b.num_blocks);
    for (Instance* in : {&a, &b}) {
      const size_t per_page = size_t(c.bs) * c.hkv * c.d;
      in->k_cache.resize(size_t(pages) * per_page, kBf16Nan);
      in->v_cache.resize(size_t(pages) * per_page, kBf16Nan);
      in->num_blocks = pages;
    }
    const std::vector<double> ref_a = cpu_attention(c, a), ref_b = cpu_attention(c2, b);
    cuda::CudaBackend backend;
    DeviceInstance dev(a);
    ASSERT_TRUE(dev.ok());
    DevBuf ws(cuda::CudaBackend::paged_attention_workspace_bytes(a.tokens, c.hq, c.d));
    ASSERT_TRUE(ws.ok());
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    Context ctx = gpu_context(backend, stream);
    ctx.workspace = {ws.get(), cuda::CudaBackend::paged_attention_workspace_bytes(
                                   a.tokens, c.hq, c.d)};
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    Status st = gpu_attention(c, a, dev, ctx, 4096, 1);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_TRUE(st.ok()) << st.message();
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    expect_close(gpu_result(c, a, dev), ref_a, c.name + " first replay");
    dev.upload(b);
    dev.poison_out();
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    expect_close(gpu_result(c2, b, dev), ref_b, c.name + " replay on new metadata");
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

// Context 0 with a new token is a caller bug: that row is zeros, the others are computed.
TEST(CudaAttnEdge, ZeroContextRowsAreZeros) {
  SKIP_WITHOUT_GPU();
  for (int d : {128, 24}) {
    for (int q_hint : {1, 0}) {
      AttnSpec c{.name = "gpu_zero_ctx", .hq = 8, .hkv = 2, .d = d, .bs = 16,
                 .q_lens = {1, 1}, .ctx_lens = {300, 0}};
      const Instance in = make_instance(c);
      AttnSpec valid = c;  // the CPU oracle for the valid sequence alone
      valid.q_lens = {1};
      valid.ctx_lens = {300};
      Instance vin = make_instance(c);  // same seed: same values
      vin.seqs = 1;
      vin.tokens = 1;
      vin.block_table.resize(size_t(vin.max_blocks));
      vin.context_lens.resize(1);
      vin.query_start_loc.resize(2);
      const std::vector<double> ref = cpu_attention(valid, vin);
      cuda::CudaBackend backend;
      DeviceInstance dev(in);
      ASSERT_TRUE(dev.ok());
      Status st = gpu_attention(c, in, dev, gpu_context(backend), 300, q_hint);
      ASSERT_TRUE(st.ok()) << st.message();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<float> got = gpu_result(c, in, dev);
      const size_t row = size_t(c.hq) * c.d;
      for (size_t e = row; e < 2 * row; ++e) ASSERT_EQ(got[e], 0.0f) << "D " << d << " elem " << e;
      got.resize(row);
      expect_close(got, ref, "valid row next to a zero-context row");
    }
  }
}

TEST(CudaAttnEdge, UnsupportedDtypesAnswerCleanly) {
  SKIP_WITHOUT_GPU();
  cuda::CudaBackend backend;
  const Context ctx = gpu_context(backend);
  DevBuf q(4 * 64 * 4), kc(2 * 16 * 2 * 64 * 4), bt(64), cl(64), qsl(64), out(4 * 64 * 4);
  const TensorView bt_v = dev_view(bt, DType::kI32, {1, 2});
  const TensorView cl_v = dev_view(cl, DType::kI32, {1});
  const TensorView qsl_v = dev_view(qsl, DType::kI32, {2});
  const TensorView kc_bf = dev_view(kc, DType::kBF16, {2, 16, 2, 64});
  const TensorView kc_f16 = dev_view(kc, DType::kF16, {2, 16, 2, 64});
  const TensorView q_bf = dev_view(q, DType::kBF16, {1, 4, 64});
  const TensorView q_f32 = dev_view(q, DType::kF32, {1, 4, 64});
  const TensorView out_bf = dev_view(out, DType::kBF16, {1, 4, 64});
  const TensorView out_f32 = dev_view(out, DType::kF32, {1, 4, 64});
  Status st = paged_attention(ctx, q_f32, kc_bf, kc_bf, bt_v, cl_v, qsl_v, {}, out_f32);
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported) << st.message();
  st = paged_attention(ctx, q_bf, kc_f16, kc_f16, bt_v, cl_v, qsl_v, {}, out_bf);
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported) << st.message();
  const TensorView kc_big = dev_view(kc, DType::kBF16, {1, 16, 1, 512});
  const TensorView q_big = dev_view(q, DType::kBF16, {1, 1, 512});
  st = paged_attention(ctx, q_big, kc_big, kc_big, bt_v, cl_v, qsl_v, {},
                       dev_view(out, DType::kBF16, {1, 1, 512}));
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported) << st.message();
}

// ---------------------------------------------------------------- kv_cache_write

struct KvSpec {
  std::string name;
  int hkv = 0, d = 0, bs = 0;
  std::vector<int> ctx_lens{};
  int row_pad = 0;  // extra elements per k / v token row
  bool fp8 = false;
};

std::vector<KvSpec> kv_specs() {
  std::vector<KvSpec> v;
  for (const OpCase& c : op_cases_for(OpKind::kKvCacheWrite))
    for (int pad : {0, 8, 3})
      v.push_back({.name = std::string(c.name) + "_pad" + std::to_string(pad), .hkv = c.kv_heads,
                   .d = c.head_dim, .bs = c.block_size, .ctx_lens = c.ctx_lens, .row_pad = pad,
                   .fp8 = c.cache_dtype == DType::kF8E4M3});
  v.push_back({.name = "gpu_kv_qwen3_pad1024", .hkv = 4, .d = 128, .bs = 16,
               .ctx_lens = {700, 1, 33}, .row_pad = 1024});
  v.push_back({.name = "gpu_kv_fp8_qwen3_pad1024", .hkv = 4, .d = 128, .bs = 16,
               .ctx_lens = {700, 1, 33}, .row_pad = 1024, .fp8 = true});
  v.push_back({.name = "gpu_kv_fp8_d256", .hkv = 2, .d = 256, .bs = 5, .ctx_lens = {9, 4},
               .fp8 = true});
  v.push_back({.name = "gpu_kv_fp8_d8", .hkv = 3, .d = 8, .bs = 3, .ctx_lens = {5}, .fp8 = true});
  return v;
}

class CudaAttnKvWrite : public testing::TestWithParam<KvSpec> {};

TEST_P(CudaAttnKvWrite, SameCacheBytesAsCpu) {
  SKIP_WITHOUT_GPU();
  const KvSpec& c = GetParam();
  CaseRng rng(c.name);
  const int64_t row = int64_t(c.hkv) * c.d, stride = row + c.row_pad;
  int64_t tokens = 0;
  for (int n : c.ctx_lens) tokens += n;
  const int64_t num_blocks = (tokens + c.bs - 1) / c.bs + 3;
  const int64_t num_slots = num_blocks * c.bs;
  std::vector<int32_t> slots(static_cast<size_t>(num_slots));
  std::iota(slots.begin(), slots.end(), 0);
  for (size_t i = slots.size(); i > 1; --i)
    std::swap(slots[i - 1], slots[size_t(rng.below(int64_t(i)))]);
  slots.resize(size_t(tokens));
  // Two extra tokens: padding (-1) and one past the cache (skipped on the GPU).
  slots.push_back(-1);
  slots.push_back(int32_t(num_slots + 3));
  const int64_t t = tokens + 2;
  std::vector<uint16_t> k(size_t(t * stride), kBf16Nan), v(k.size(), kBf16Nan);
  HostTensor kf(DType::kF32, {t, c.hkv, c.d}), vf(DType::kF32, {t, c.hkv, c.d});
  for (int64_t i = 0; i < t; ++i)
    for (int64_t e = 0; e < row; ++e) {
      k[size_t(i * stride + e)] = bf16_bits(rng.nonzero(0.05, 1.0));
      v[size_t(i * stride + e)] = bf16_bits(rng.nonzero(0.05, 1.0));
      kf.ptr<float>()[i * row + e] = bf16_to_f32(k[size_t(i * stride + e)]);
      vf.ptr<float>()[i * row + e] = bf16_to_f32(v[size_t(i * stride + e)]);
    }
  // CPU: the out-of-range slot is an error there, so it gets -1.
  HostTensor cpu_slots(DType::kI32, {t});
  std::memcpy(cpu_slots.ptr<void>(), slots.data(), size_t(t) * 4);
  cpu_slots.ptr<int32_t>()[t - 1] = -1;
  const Shape cs{num_blocks, c.bs, c.hkv, c.d}, ss{num_blocks, c.bs, c.hkv};
  const DType cdt = c.fp8 ? DType::kF8E4M3 : DType::kBF16;
  HostTensor kc(cdt, cs), vc(cdt, cs), ks(DType::kF32, ss), vs(DType::kF32, ss);
  poison(kc);
  poison(vc);
  poison(ks);
  poison(vs);
  DevBuf dkc(kc.nbytes()), dvc(vc.nbytes()), dks(ks.nbytes()), dvs(vs.nbytes());
  cudaMemcpy(dkc.get(), kc.ptr<void>(), kc.nbytes(), cudaMemcpyHostToDevice);
  cudaMemcpy(dvc.get(), vc.ptr<void>(), vc.nbytes(), cudaMemcpyHostToDevice);
  cudaMemcpy(dks.get(), ks.ptr<void>(), ks.nbytes(), cudaMemcpyHostToDevice);
  cudaMemcpy(dvs.get(), vs.ptr<void>(), vs.nbytes(), cudaMemcpyHostToDevice);
  Context cpu_ctx;
  cpu_ctx.pool = &pool();
  const KvScales cpu_scales = c.fp8 ? KvScales{ks.view(), vs.view()} : KvScales{};
  Status st = kv_cache_write(cpu_ctx, kf, vf, cpu_slots, kc, vc, cpu_scales);
  ASSERT_TRUE(st.ok()) << st.message();

  DevBuf dk(k), dv(v), ds(slots);
  cuda::CudaBackend backend;
  st = kv_cache_write(gpu_context(backend), dev_view(dk, DType::kBF16, {t, c.hkv, c.d}, stride),
                      dev_view(dv, DType::kBF16, {t, c.hkv, c.d}, stride),
                      dev_view(ds, DType::kI32, {t}), dev_view(dkc, cdt, cs),
                      dev_view(dvc, cdt, cs),
                      c.fp8 ? KvScales{dev_view(dks, DType::kF32, ss), dev_view(dvs, DType::kF32, ss)}
                            : KvScales{});
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  // Byte-equal caches (and scales): codes/values, and the poison of unwritten slots.
  auto same_bytes = [](const DevBuf& dev, const HostTensor& host, const char* what) {
    const std::vector<uint8_t> got = dev.download<uint8_t>();
    const uint8_t* want = host.ptr<uint8_t>();
    for (size_t i = 0; i < host.nbytes(); ++i)
      ASSERT_EQ(got[i], want[i]) << what << " byte " << i;
  };
  same_bytes(dkc, kc, "k_cache");
  same_bytes(dvc, vc, "v_cache");
  if (c.fp8) {
    same_bytes(dks, ks, "k_scale");
    same_bytes(dvs, vs, "v_scale");
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaAttnKvWrite, testing::ValuesIn(kv_specs()),
                         [](const auto& info) { return case_name(info.param.name); });

}  // namespace
}  // namespace moeopt::ops

#endif  // MOEOPT_HAVE_CUDA
