// MoE layer benchmark (cmd_bench_moe_run.h): inputs made on the host with a fixed seed, uploaded once;
// each M is timed as replays of a CUDA graph holding `inner` layer calls.
#include "cmd_bench_moe_run.h"

#if MOEOPT_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <optional>
#include <random>

#include "moeopt/backend/cuda/card_peaks.h"
#include "moeopt/backend/cuda/moe.h"
#include "moeopt/core/dtype.h"

namespace moeopt::cli {
namespace {

using cuda::MoeDims;

Status cuda_ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::ok_status();
  return make_error(ErrorCode::kInternal, "bench moe: {} failed: {}", what, cudaGetErrorString(e));
}

// Device allocation freed on scope exit.
struct DevMem {
  void* p = nullptr;
  ~DevMem() {
    if (p != nullptr) cudaFree(p);
  }
  Status alloc(size_t bytes, const char* what) { return cuda_ok(cudaMalloc(&p, bytes), what); }
};

struct StreamAndEvents {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  ~StreamAndEvents() {
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    if (stream) cudaStreamDestroy(stream);
  }
};

// bf16 values ~ N(0, 1) * scale from a fixed seed (a fast generator: ~1e9 values at the
// Qwen3-235B shape).
std::vector<uint16_t> random_bf16(size_t n, uint64_t seed, float scale) {
  std::vector<uint16_t> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  for (size_t i = 0; i < n; ++i) {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    const uint64_t r = s * 0x2545F4914F6CDD1Dull;
    // Sum of 4 uniforms ~ roughly normal, mean 0, variance 1/3 -> scale by sqrt(3).
    float u = 0.f;
    for (int j = 0; j < 4; ++j) u += float((r >> (16 * j)) & 0xffff) / 65535.f - 0.5f;
    v[i] = f32_to_bf16(u * 1.7320508f * scale);
  }
  return v;
}

// e4m3 codes from a fixed seed: any byte but the two NaN codes (0x7f, 0xff).
std::vector<uint8_t> random_fp8_codes(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  for (size_t i = 0; i < n; i += 8) {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    const uint64_t r = s * 0x2545F4914F6CDD1Dull;
    for (size_t j = 0; j < 8 && i + j < n; ++j) {
      uint8_t b = uint8_t(r >> (8 * j));
      if ((b & 0x7f) == 0x7f) b ^= 1;
      v[i + j] = b;
    }
  }
  return v;
}

// Routing for M tokens: k distinct experts per token, uniform or Zipf (s = 1 over a random
// permutation of the experts, drawn without replacement); weights a softmax of k normals.
void make_routing(int64_t m, int64_t e, int64_t k, bool zipf, std::mt19937_64& rng,
                  std::vector<int32_t>& ids, std::vector<float>& weights) {
  ids.assign(size_t(m * k), 0);
  weights.assign(size_t(m * k), 0.f);
  std::vector<double> p(static_cast<size_t>(e));
  std::vector<int32_t> perm(static_cast<size_t>(e));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int64_t i = 0; i < e; ++i) p[size_t(perm[size_t(i)])] = 1.0 / double(i + 1);
  std::normal_distribution<double> normal;
  for (int64_t t = 0; t < m; ++t) {
    std::vector<double> w = p;
    if (!zipf) std::fill(w.begin(), w.end(), 1.0);
    double sum = 0;
    std::vector<double> logits(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) {
      std::discrete_distribution<int32_t> pick(w.begin(), w.end());
      const int32_t id = pick(rng);
      w[size_t(id)] = 0.0;  // without replacement
      ids[size_t(t * k + j)] = id;
      logits[size_t(j)] = std::exp(normal(rng));
      sum += logits[size_t(j)];
    }
    for (int64_t j = 0; j < k; ++j) weights[size_t(t * k + j)] = float(logits[size_t(j)] / sum);
  }
}

// Median microseconds per call of `fn` (which enqueues one layer call on `se.stream`),
// timed as `reps` replays of a graph of `inner` calls.
template <class Fn>
Result<double> time_graph(StreamAndEvents& se, int inner, int reps, Fn fn) {
  MOEOPT_RETURN_IF_ERROR(fn());  // warm-up, and argument errors surface here
  MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaStreamSynchronize(se.stream), "warm-up"));
  cudaGraph_t graph = nullptr;
  MOEOPT_RETURN_IF_ERROR(cuda_ok(
      cudaStreamBeginCapture(se.stream, cudaStreamCaptureModeThreadLocal), "graph capture"));
  Status captured = Status::ok_status();
  for (int i = 0; i < inner && captured.ok(); ++i) captured = fn();
  const cudaError_t end = cudaStreamEndCapture(se.stream, &graph);
  MOEOPT_RETURN_IF_ERROR(captured);
  MOEOPT_RETURN_IF_ERROR(cuda_ok(end, "graph capture"));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  MOEOPT_RETURN_IF_ERROR(cuda_ok(inst, "graph instantiate"));
  std::vector<double> times;
  Status st = cuda_ok(cudaGraphLaunch(exec, se.stream), "graph launch");  // warm replay
  for (int r = 0; r < reps && st.ok(); ++r) {
    cudaEventRecord(se.start, se.stream);
    st = cuda_ok(cudaGraphLaunch(exec, se.stream), "graph launch");
    cudaEventRecord(se.stop, se.stream);
    if (st.ok()) st = cuda_ok(cudaEventSynchronize(se.stop), "graph replay");
    float ms = 0.f;
    if (st.ok()) st = cuda_ok(cudaEventElapsedTime(&ms, se.start, se.stop), "event timing");
    times.push_back(double(ms) * 1e3 / inner);
  }
  cudaGraphExecDestroy(exec);
  MOEOPT_RETURN_IF_ERROR(st);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

Result<MoeBenchReport> run_moe_bench(const MoeBenchOptions& o) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    return make_error(ErrorCode::kUnsupported, "bench moe: no CUDA device");
  }
  if (o.ms.empty() || o.routings.empty() || o.reps < 1)
    return make_error(ErrorCode::kInvalidArgument, "bench moe: empty --ms/--routing or reps < 1");
  for (const std::string& t : o.dtypes)
    if (t != "bf16" && t != "fp8")
      return make_error(ErrorCode::kInvalidArgument,
                        "bench moe: dtype '{}' (expected bf16 or fp8)", t);
  if (o.dtypes.empty())
    return make_error(ErrorCode::kInvalidArgument, "bench moe: empty --dtype");
  for (const std::string& r : o.routings)
    if (r != "uniform" && r != "zipf")
      return make_error(ErrorCode::kInvalidArgument,
                        "bench moe: routing '{}' (expected uniform or zipf)", r);
  const int64_t max_m = *std::max_element(o.ms.begin(), o.ms.end());
  for (int64_t m : o.ms)
    if (m < 1) return make_error(ErrorCode::kInvalidArgument, "bench moe: M must be >= 1");

  MoeBenchReport rep;
  rep.options = o;
  cudaDeviceProp prop{};
  MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaGetDeviceProperties(&prop, 0), "device query"));
  rep.card = prop.name;
  rep.sms = prop.multiProcessorCount;
  rep.hbm_nominal_Bps = cuda::nominal_hbm_Bps(rep.card);
  rep.tensor_nominal_flops = cuda::nominal_tensor_flops(rep.card);

  StreamAndEvents se;
  MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaStreamCreateWithFlags(&se.stream, cudaStreamNonBlocking), "stream"));
  MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaEventCreate(&se.start), "event"));
  MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaEventCreate(&se.stop), "event"));

  // Copy bandwidth: 512 MiB device to device, bytes read + written, as plain stream calls
  // (not a graph: captured memcpy nodes ran on the copy engines at 2.43 TB/s on an H100
  // where the stream copy, as PyTorch's copy_ does it, gave 2.98 TB/s). Median of 5.
  {
    const size_t bytes = size_t(512) << 20;
    DevMem a, b;
    MOEOPT_RETURN_IF_ERROR(a.alloc(bytes, "copy buffer"));
    MOEOPT_RETURN_IF_ERROR(b.alloc(bytes, "copy buffer"));
    std::vector<double> us;
    for (int r = 0; r < 6; ++r) {
      cudaEventRecord(se.start, se.stream);
      for (int i = 0; i < 3; ++i)
        MOEOPT_RETURN_IF_ERROR(cuda_ok(
            cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice, se.stream), "copy"));
      cudaEventRecord(se.stop, se.stream);
      MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaEventSynchronize(se.stop), "copy"));
      float ms = 0.f;
      MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaEventElapsedTime(&ms, se.start, se.stop), "copy timing"));
      if (r > 0) us.push_back(double(ms) * 1e3 / 3);  // r = 0 warms up
    }
    std::sort(us.begin(), us.end());
    rep.copy_Bps = 2.0 * double(bytes) / (us[us.size() / 2] * 1e-6);
  }

  const int64_t H = o.hidden, I = o.inter, E = o.experts, K = o.top_k;
  const bool want_bf16 = std::count(o.dtypes.begin(), o.dtypes.end(), "bf16") > 0;
  const bool want_fp8 = std::count(o.dtypes.begin(), o.dtypes.end(), "fp8") > 0;
  const int64_t IB = (I + 127) / 128, HB = (H + 127) / 128;
  DevMem w13, w2, w13q, w2q, w13s, w2s, x, out, ids, wts, ws;
  {
    const auto hx = random_bf16(size_t(max_m * H), o.seed + 3, 1.0f);
    MOEOPT_RETURN_IF_ERROR(x.alloc(hx.size() * 2, "x"));
    MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(x.p, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice), "upload"));
  }
  if (want_bf16) {
    const auto h13 = random_bf16(size_t(E * 2 * I * H), o.seed + 1, float(1.0 / std::sqrt(double(H))));
    const auto h2 = random_bf16(size_t(E * H * I), o.seed + 2, float(1.0 / std::sqrt(double(I))));
    MOEOPT_RETURN_IF_ERROR(w13.alloc(h13.size() * 2, "w13"));
    MOEOPT_RETURN_IF_ERROR(w2.alloc(h2.size() * 2, "w2"));
    MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(w13.p, h13.data(), h13.size() * 2, cudaMemcpyHostToDevice), "upload"));
    MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(w2.p, h2.data(), h2.size() * 2, cudaMemcpyHostToDevice), "upload"));
  }
  if (want_fp8) {
    // Any finite e4m3 codes (timing does not depend on the values) and scales ~ 1/(448 sqrt K).
    const auto q13 = random_fp8_codes(size_t(E * 2 * I * H), o.seed + 4);
    const auto q2 = random_fp8_codes(size_t(E * H * I), o.seed + 5);
    const std::vector<float> s13(size_t(E * 2 * IB * HB), float(1.0 / (448.0 * std::sqrt(double(H)))));
    const std::vector<float> s2(size_t(E * HB * IB), float(1.0 / (448.0 * std::sqrt(double(I)))));
    MOEOPT_RETURN_IF_ERROR(w13q.alloc(q13.size(), "w13 fp8"));
    MOEOPT_RETURN_IF_ERROR(w2q.alloc(q2.size(), "w2 fp8"));
    MOEOPT_RETURN_IF_ERROR(w13s.alloc(s13.size() * 4, "w13 scales"));
    MOEOPT_RETURN_IF_ERROR(w2s.alloc(s2.size() * 4, "w2 scales"));
    MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(w13q.p, q13.data(), q13.size(), cudaMemcpyHostToDevice), "upload"));
    MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(w2q.p, q2.data(), q2.size(), cudaMemcpyHostToDevice), "upload"));
    MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(w13s.p, s13.data(), s13.size() * 4, cudaMemcpyHostToDevice), "upload"));
    MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(w2s.p, s2.data(), s2.size() * 4, cudaMemcpyHostToDevice), "upload"));
  }
  MOEOPT_RETURN_IF_ERROR(out.alloc(size_t(max_m * H) * 2, "out"));
  MOEOPT_RETURN_IF_ERROR(ids.alloc(size_t(max_m * K) * 4, "expert_ids"));
  MOEOPT_RETURN_IF_ERROR(wts.alloc(size_t(max_m * K) * 4, "expert_weights"));
  // The fp8 tile choices to time ("auto": the plan's own; "A" or "A/B": GEMM 1 [/ GEMM 2]).
  auto tile_named = [](const std::string& name) -> std::optional<cuda::MoeFp8Tile> {
    for (int t = 0; t < cuda::kNumMoeFp8Tiles; ++t)
      if (name == cuda::moe_fp8_tile_name(cuda::MoeFp8Tile(t))) return cuda::MoeFp8Tile(t);
    return std::nullopt;
  };
  std::vector<std::optional<cuda::MoeTileChoice>> fp8_tiles;
  for (const std::string& name : o.fp8_tiles) {
    if (name == "auto") {
      fp8_tiles.push_back(std::nullopt);
      continue;
    }
    const size_t slash = name.find('/');
    cuda::MoeTileChoice c;
    c.fp8_tile = tile_named(name.substr(0, slash));
    if (slash != std::string::npos) c.fp8_tile2 = tile_named(name.substr(slash + 1));
    if (!c.fp8_tile || (slash != std::string::npos && !c.fp8_tile2))
      return make_error(ErrorCode::kInvalidArgument, "bench moe: unknown fp8 tile '{}'", name);
    fp8_tiles.push_back(c);
  }
  auto fp8_choice = [](const std::optional<cuda::MoeTileChoice>& c) {
    return c ? *c : cuda::MoeTileChoice{};
  };
  size_t ws_bytes = 0;
  for (bool fp8 : {false, true}) {
    if (fp8 ? !want_fp8 : !want_bf16) continue;
    MoeDims d{max_m, o.hidden, o.inter, o.experts, o.top_k};
    d.fp8 = fp8;
    for (const auto& t : fp8 ? fp8_tiles : std::vector<std::optional<cuda::MoeTileChoice>>{{}}) {
      MOEOPT_ASSIGN_OR_RETURN(const cuda::MoeLayerPlan p,
                              cuda::moe_layer_plan(d, fp8_choice(t)));
      ws_bytes = std::max(ws_bytes, p.bytes);
    }
  }
  MOEOPT_RETURN_IF_ERROR(ws.alloc(ws_bytes, "workspace"));

  const double bytes_per_expert_bf16 = 3.0 * double(H) * double(I) * 2.0;
  const double bytes_per_expert_fp8 =
      3.0 * double(H) * double(I) + double(3 * IB * HB) * 4.0;  // codes + f32 block scales
  std::mt19937_64 rng(o.seed);
  for (const std::string& routing : o.routings) {
    for (int64_t m : o.ms) {
      std::vector<int32_t> hid;
      std::vector<float> hw;
      make_routing(m, E, K, routing == "zipf", rng, hid, hw);
      MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(ids.p, hid.data(), hid.size() * 4, cudaMemcpyHostToDevice), "upload"));
      MOEOPT_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(wts.p, hw.data(), hw.size() * 4, cudaMemcpyHostToDevice), "upload"));
      std::vector<char> used(static_cast<size_t>(E), 0);
      for (int32_t id : hid) used[size_t(id)] = 1;
      const int64_t touched = std::count(used.begin(), used.end(), 1);

      double bf16_us = 0;
      for (bool fp8 : {false, true}) {
        if (fp8 ? !want_fp8 : !want_bf16) continue;
        for (const auto& fp8_tile :
             fp8 ? fp8_tiles : std::vector<std::optional<cuda::MoeTileChoice>>{{}}) {
        MoeDims d{m, H, I, E, K};
        d.fp8 = fp8;
        MOEOPT_ASSIGN_OR_RETURN(const cuda::MoeLayerPlan plan,
                                cuda::moe_layer_plan(d, fp8_choice(fp8_tile)));
        cuda::MoeLayerArgs a;
        a.x = x.p;
        a.expert_ids = static_cast<const int32_t*>(ids.p);
        a.expert_weights = static_cast<const float*>(wts.p);
        a.w13 = fp8 ? w13q.p : w13.p;
        a.w2 = fp8 ? w2q.p : w2.p;
        a.w13_scale = fp8 ? static_cast<const float*>(w13s.p) : nullptr;
        a.w2_scale = fp8 ? static_cast<const float*>(w2s.p) : nullptr;
        a.out = out.p;
        a.workspace = ws.p;
        a.stream = se.stream;
        const int inner = m <= 512 ? 20 : 5;
        MOEOPT_ASSIGN_OR_RETURN(double us, time_graph(se, inner, o.reps,
                                                      [&] { return cuda::moe_layer_run(plan, a); }));
        MoeBenchRow row;
        row.m = m;
        row.routing = routing;
        row.dtype = fp8 ? "fp8" : "bf16";
        row.experts_touched = touched;
        row.tile = fp8 ? std::string(cuda::moe_fp8_tile_name(plan.fp8_tile)) + "/" +
                             cuda::moe_fp8_tile_name(plan.fp8_tile2)
                       : cuda::moe_gemm_tile_name(plan.tile);
        row.us = us;
        row.weight_bytes = double(touched) * (fp8 ? bytes_per_expert_fp8 : bytes_per_expert_bf16);
        row.gbps = row.weight_bytes / us * 1e-3;
        if (rep.hbm_nominal_Bps > 0)
          row.pct_hbm_nominal = 100.0 * (row.weight_bytes / rep.hbm_nominal_Bps * 1e6) / us;
        row.pct_hbm_copy = 100.0 * (row.weight_bytes / rep.copy_Bps * 1e6) / us;
        const double flops = 6.0 * double(m) * double(K) * double(H) * double(I);
        row.tflops = flops / us * 1e-6;
        const double peak = rep.tensor_nominal_flops * (fp8 ? 2.0 : 1.0);
        if (peak > 0) row.pct_tensor = 100.0 * (flops / peak * 1e6) / us;
        if (!fp8) bf16_us = us;
        if (fp8 && bf16_us > 0) row.speedup_vs_bf16 = bf16_us / us;
        if (fp8 && fp8_tile) row.tile += " (forced)";
        // A bound describes the work done: a time under the nominal one means the count is
        // wrong (the copy bandwidth, read + write, can be beaten by a pure read stream).
        if (row.pct_hbm_nominal > 100.0)
          return make_error(ErrorCode::kInternal,
                            "bench moe: {} M {} ran at {:.1f}% of the nominal HBM bound "
                            "(over 100%: the byte count is wrong)",
                            row.dtype, m, row.pct_hbm_nominal);
        rep.rows.push_back(row);
        }
      }
    }
  }
  return rep;
}

}  // namespace moeopt::cli

#endif  // MOEOPT_HAVE_CUDA
