// `moeopt bench decode` and `moeopt bench prefill`: end-to-end engine throughput against a
// roofline, with the model flags of generate/serve (model_setup.h).
//
//   bench decode [--batch-sizes 1,8,32,64,128,256,max] [--input-lens 1024,4096]
//                [--output-len 128] [--kv-cache-gib G] [--json FILE]
//     One engine whose KV pool holds the largest case; for each (input, batch) `batch`
//     random prompts (fixed seed), greedy, EOS ignored, all submitted at once. The engine
//     schedules prompts first (EngineOptions::prefill_first), so every prompt is prefilled
//     before any sequence decodes and each of the output_len - 1 decode steps that follow is
//     one step of exactly `batch` sequences; the bench checks both and fails otherwise (an
//     earlier version timed from the last prefill while the first sequences had long been
//     decoding — and finishing —, so its "batch" shrank towards 1 and its rate counted
//     tokens made outside the window it timed). Each decode step is timed on its own;
//     every kProbeEvery-th step and the last one are routing probes instead
//     (Engine::count_expert_tokens: eager, the routing copied back per layer, not timed)
//     that measure the distinct experts each MoE layer reads. decode tok/s = batch * timed
//     steps / their seconds. `max` is the largest batch whose KV cache of input + output
//     tokens fits the KV budget (--kv-cache-gib; default: free GPU memory after the weights
//     minus 2 GiB, or 4 GiB on the CPU); cases beyond the budget are skipped and listed.
//     Memory-bound roofline per decode step (decode_step_bytes): non-expert weights + the
//     measured distinct experts of each MoE layer + the KV of the timed steps' contexts. On
//     the GPU a step whose bytes over its time exceed the card's measured device copy
//     bandwidth is an error, not a row: the byte model or the timing would be wrong.
//     With --fp8-weights on (or an FP8 checkpoint) the weights run FP8 W8A8 and the bound
//     counts them as the engine holds them: one byte per fp8 weight plus f32 block scales.
//   bench prefill [--prompt-lens 512,1024,2048,4096,8192] [--repeats 5] [--json FILE]
//     Batch 1, output 1, the whole prompt in one step (no chunking); one warm-up then
//     --repeats timed runs per length, median. Compute roofline (see prefill_flops) against
//     the dense BF16 tensor peak.
//
// Peaks: on the GPU the card's nominal HBM bandwidth and BF16 tensor peak (the card table
// shared with `bench moe`), the card named by the driver probe (system/gpu_probe.h); on the
// CPU both are measured in-process (threaded read of a 256 MiB buffer; threaded independent
// f32 multiply-add chains), so the CPU numbers are ceilings of this build on this machine.
// --hbm-gbps / --peak-tflops override either. JSON (same schema as bench/peers/hf_decode.py,
// read by bench/plot_decode.py): {engine, model, layers, device, card, hbm_GBps, peak_tflops,
// peaks_source, commit, date, command, decode: [rows] | prefill: [rows], skipped: [...]}.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_commands.h"
#include "commands.h"
#include "model_setup.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/engine/engine.h"
#include "moeopt/engine/kv_cache.h"
#include "moeopt/model/model_cache.h"
#include "moeopt/model/sizing.h"
#include "moeopt/model/tensor_specs.h"
#include "moeopt/system/gpu_probe.h"

// The card table of `bench moe` (nominal HBM and BF16 tensor peaks by device name).
#include "moeopt/backend/cuda/card_peaks.h"

namespace moeopt::cli {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kGiB = double(int64_t(1) << 30);

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- Arguments shared by both subcommands.

struct CommonArgs {
  ModelArgs m;
  int threads = 0;
  uint64_t seed = 0;
  double hbm_gbps = 0;     // 0: the card's nominal / measured on the CPU
  double peak_tflops = 0;  // 0: the card's nominal / measured on the CPU
  std::string json;
};

void add_common_flags(CLI::App* sub, CommonArgs* a) {
  add_model_flags(sub, &a->m);
  add_fp8_weights_flag(sub, &a->m);
  add_fp8_kv_cache_flag(sub, &a->m);
  sub->add_option("--threads", a->threads, "CPU threads (default: all)");
  sub->add_option("--seed", a->seed, "seed of the random prompts (default 0)");
  sub->add_option("--hbm-gbps", a->hbm_gbps,
                  "memory bandwidth of the roofline, GB/s (default: the card's nominal; "
                  "measured on the CPU)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--peak-tflops", a->peak_tflops,
                  "compute peak of the roofline, TFLOP/s (default: the card's dense BF16 "
                  "nominal; measured f32 on the CPU)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--json", a->json, "also write the results as JSON to FILE");
}

// "1,8,max" -> {1, 8, -1}; `max` only where allowed. Duplicates dropped, order kept.
Result<std::vector<int64_t>> parse_list(const std::string& s, const char* flag, bool allow_max) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    int64_t v = -1;
    if (item != "max" || !allow_max) {
      char* end = nullptr;
      const long long n = std::strtoll(item.c_str(), &end, 10);
      if (end == item.c_str() || *end != '\0' || n < 1)
        return make_error(ErrorCode::kInvalidArgument, "{}: '{}' is not a positive integer{}",
                          flag, item, allow_max ? " or max" : "");
      v = n;
    }
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  }
  if (out.empty()) return make_error(ErrorCode::kInvalidArgument, "{} is empty", flag);
  return out;
}

// ---- Peaks.

struct Peaks {
  std::string card;
  double hbm_Bps = 0;
  double flops = 0;
  std::string source;       // how each number was obtained
  int64_t free_bytes = -1;  // GPU: free device memory now (-1: unknown)
};

// Bytes/s of a threaded read of a buffer much larger than the caches (best of 5 passes).
double measure_cpu_read_Bps(ThreadPool& pool) {
  const int64_t n = (int64_t(256) << 20) / 8;
  std::vector<uint64_t> buf(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = uint64_t(i) * 0x9E3779B97F4A7C15ull;
  std::vector<uint64_t> sums(size_t(pool.size()) * 8, 0);  // one cache line per chunk slot
  double best = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const auto t0 = Clock::now();
    const int64_t chunk = (n + pool.size() - 1) / pool.size();
    pool.parallel_for(
        pool.size(),
        [&](int64_t b, int64_t e) {
          for (int64_t p = b; p < e; ++p) {
            uint64_t s = 0;
            const int64_t lo = p * chunk, hi = std::min(n, lo + chunk);
            for (int64_t i = lo; i < hi; ++i) s += buf[size_t(i)];
            sums[size_t(p) * 8] += s;
          }
        },
        1);
    const double sec = seconds_since(t0);
    if (sec > 0) best = std::max(best, double(n) * 8 / sec);
  }
  volatile uint64_t sink = 0;
  for (uint64_t s : sums) sink = sink + s;
  return best;
}

// FLOP/s of threaded f32 multiply-add chains (32 independent lanes per thread, which the
// compiler vectorises with the ISA this build targets; best of 3).
double measure_cpu_flops(ThreadPool& pool) {
  constexpr int kLanes = 32;
  constexpr int64_t kIters = 4'000'000;
  std::vector<float> out(size_t(pool.size()) * kLanes, 0.f);
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const auto t0 = Clock::now();
    pool.parallel_for(
        pool.size(),
        [&](int64_t b, int64_t e) {
          for (int64_t p = b; p < e; ++p) {
            float acc[kLanes];
            for (int j = 0; j < kLanes; ++j) acc[j] = float(j + p);
            const float m = 0.999f, c = 0.001f * float(pass + 1);
            for (int64_t it = 0; it < kIters; ++it)
              for (int j = 0; j < kLanes; ++j) acc[j] = acc[j] * m + c;
            for (int j = 0; j < kLanes; ++j) out[size_t(p) * kLanes + j] = acc[j];
          }
        },
        1);
    const double sec = seconds_since(t0);
    if (sec > 0) best = std::max(best, 2.0 * kLanes * double(kIters) * pool.size() / sec);
  }
  volatile float sink = 0;
  for (float v : out) sink = sink + v;
  return best;
}

Result<Peaks> find_peaks(const CommonArgs& a) {
  Peaks p;
  if (a.m.device == "cpu") {
    p.card = "cpu";
    if (a.hbm_gbps <= 0 || a.peak_tflops <= 0) {
      ThreadPool pool(a.threads);
      p.card = fmt::format("cpu ({} threads)", pool.size());
      if (a.hbm_gbps <= 0) p.hbm_Bps = measure_cpu_read_Bps(pool);
      if (a.peak_tflops <= 0) p.flops = measure_cpu_flops(pool);
    }
    p.source = "cpu: measured read bandwidth and f32 multiply-add peak (best of before and after the runs)";
  } else {
    system::GpuProbe probe = system::probe_gpus();
    if (!probe.has_gpu())
      return make_error(ErrorCode::kUnsupported, "no GPU found ({})",
                        probe.driver_error.empty() ? "no device" : probe.driver_error);
    const system::GpuDevice& d = probe.devices.front();
    p.card = d.name;
    if (d.memory_used_bytes >= 0)
      p.free_bytes = int64_t(d.memory_total_bytes) - d.memory_used_bytes;
    p.hbm_Bps = cuda::nominal_hbm_Bps(p.card);
    p.flops = cuda::nominal_tensor_flops(p.card);
    p.source = "nominal (card table)";
  }
  if (a.hbm_gbps > 0) p.hbm_Bps = a.hbm_gbps * 1e9;
  if (a.peak_tflops > 0) p.flops = a.peak_tflops * 1e12;
  if (a.hbm_gbps > 0 || a.peak_tflops > 0) p.source += "; overridden by flags";
  if (p.hbm_Bps <= 0 || p.flops <= 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "no nominal peaks for '{}': pass --hbm-gbps and --peak-tflops", p.card);
  return p;
}

// The CPU's peaks are measured, and a core another process held during the measurement makes
// them low: a bound below what the run then achieves. So they are measured again after the
// timed runs and the larger value kept (the bound is the best the machine showed).
void remeasure_cpu_peaks(const CommonArgs& a, Peaks& p) {
  if (a.m.device != "cpu") return;
  ThreadPool pool(a.threads);
  if (a.hbm_gbps <= 0) p.hbm_Bps = std::max(p.hbm_Bps, measure_cpu_read_Bps(pool));
  if (a.peak_tflops <= 0) p.flops = std::max(p.flops, measure_cpu_flops(pool));
}

// ---- Model sizes for the rooflines (sizing.h conventions; bf16 weights, fp8 ones one byte
// plus their f32 block scales, as the engine holds them).

struct Sizes {
  int64_t layers = 0, moe_layers = 0, experts = 0, top_k = 0, q_heads = 0, head_dim = 0;
  double non_expert_weight_bytes = 0;  // read every decode step
  double expert_bytes = 0;             // one routed expert of one layer (3*H*I*2 for SwiGLU)
  double kv_bytes_per_token = 0;       // all layers, K and V
  double linear_params = 0;            // matmul parameters one token goes through (no head)
  double head_params = 0;              // LM head [V, H]
};

// fp8: the weights run FP8 W8A8 (an FP8 checkpoint, or --fp8-weights on); fp8_kv: the KV
// cache is FP8 (--fp8-kv-cache on: codes + per token-head scales).
Result<Sizes> model_sizes(const ModelConfig& c, bool on_device, bool fp8, bool fp8_kv) {
  MOEOPT_ASSIGN_OR_RETURN(std::vector<TensorSpec> specs, expected_tensors(c));
  const ParamCounts pc = count_params(c, specs);
  MOEOPT_ASSIGN_OR_RETURN(std::vector<TensorSpec> held,
                          c.fp8 ? checkpoint_tensors(c, false) : Result<std::vector<TensorSpec>>(specs));
  if (fp8) mark_fp8_quantized(held);
  Sizes s;
  s.layers = c.num_hidden_layers;
  s.moe_layers = c.num_moe_layers();
  s.experts = c.num_experts;
  s.top_k = c.num_experts_per_tok;
  s.q_heads = c.num_attention_heads;
  s.head_dim = c.qk_head_dim();
  s.head_params = double(c.vocab_size) * double(c.hidden_size);
  // Everything but the routed experts and the embedding table (one row per token is read);
  // the LM head [V, H] (bf16, never quantised) is read whole, tied to the embedding or not.
  double experts_total = 0;
  s.non_expert_weight_bytes = 2.0 * s.head_params;
  for (const TensorSpec& t : held) {
    const double bytes =
        double(t.numel()) * (t.fp8_quantized ? 1.0 : t.role == TensorRole::kFp8Scale ? 4.0 : 2.0);
    if (t.expert >= 0) experts_total += bytes;  // routed expert weights and their scales
    else if (t.role != TensorRole::kEmbedding && t.role != TensorRole::kLmHead) s.non_expert_weight_bytes += bytes;
  }
  if (s.moe_layers > 0 && s.experts > 0) s.expert_bytes = experts_total / double(s.moe_layers * s.experts);
  // The engine keeps KV in bf16 on the GPU and in f32 on the CPU, or in fp8 with its scales.
  s.kv_bytes_per_token = fp8_kv ? double(kv_bytes_per_token(c).fp8)
                                : double(kv_bytes_per_token(c).bf16) * (on_device ? 1.0 : 2.0);
  s.linear_params = double(pc.active - pc.embedding - pc.lm_head - pc.norms);
  return s;
}

// Expected distinct experts of one MoE layer touched by B tokens under uniform routing: a
// token picks k of the E experts, so a given expert is missed by one token with probability
// (1 - k/E) and by all B (independent) tokens with probability (1 - k/E)^B; by linearity of
// expectation the number touched is E * (1 - (1 - k/E)^B). Printed next to the measured
// count, to show how far the random weights' routing is from uniform.
double expected_experts_touched(const Sizes& s, int64_t batch) {
  if (s.experts <= 0) return 0;
  const double e = double(s.experts), k = double(s.top_k);
  return e * (1.0 - std::pow(1.0 - k / e, double(batch)));
}

// Bytes one decode step of `batch` sequences must read at least: non-expert weights (LM head
// included) + the distinct experts its MoE layers touched (summed over layers) x expert
// bytes + the KV cache of every sequence at its context: batch * ctx * layers * 2 * Hkv * D *
// dtype bytes.
double decode_step_bytes(const Sizes& s, int64_t batch, double experts_all_layers,
                         double mean_context) {
  return s.non_expert_weight_bytes + experts_all_layers * s.expert_bytes +
         double(batch) * mean_context * s.kv_bytes_per_token;
}

// FLOPs of a T-token prefill with one output: 2 * (matmul parameters a token goes through:
// attention projections, router, k routed + shared experts; no embedding lookup) * T + the LM
// head on the last position only (2 * V * H) + causal attention per layer: QK^T and PV over
// the T^2/2 causal pairs, 2 * 2 * T^2 / 2 * Hq * D.
double prefill_flops(const Sizes& s, int64_t t) {
  const double tt = double(t);
  return 2.0 * s.linear_params * tt + 2.0 * s.head_params +
         double(s.layers) * 2.0 * 2.0 * tt * tt / 2.0 * double(s.q_heads) * double(s.head_dim);
}

// ---- Provenance.

std::string run_output(const char* cmd) {
  std::string out;
  if (FILE* f = popen(cmd, "r")) {
    char buf[256];
    while (fgets(buf, sizeof buf, f)) out += buf;
    if (pclose(f) != 0) out.clear();
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// MOEOPT_COMMIT first: a tree copied to a GPU machine may carry a stale .git.
std::string commit_id() {
  if (const char* env = std::getenv("MOEOPT_COMMIT"); env && *env) return env;
  std::string c = run_output(
      fmt::format("git -C '{}' rev-parse --short HEAD 2>/dev/null", data_root()).c_str());
  return c.empty() ? "unknown" : c;
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The process's own command line (Linux /proc), arguments joined by spaces.
std::string command_line() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::replace(raw.begin(), raw.end(), '\0', ' ');
  while (!raw.empty() && raw.back() == ' ') raw.pop_back();
  return raw;
}

nlohmann::json json_header(const CommonArgs& a, const ModelConfig& c, const Peaks& p) {
  return {{"engine", "moeopt"},
          {"model", a.m.model.empty() ? std::string(kDefaultModelName) : a.m.model},
          {"layers", c.num_hidden_layers},
          {"weights", a.m.fp8_weights || c.fp8 ? "fp8_w8a8_128x128" : "bf16"},
          {"kv_cache", a.m.fp8_kv_cache ? "fp8_e4m3_per_token_head" : "bf16"},
          {"device", a.m.device},
          {"card", p.card},
          {"hbm_GBps", p.hbm_Bps / 1e9},
          {"peak_tflops", p.flops / 1e12},
          {"peaks_source", p.source},
          {"commit", commit_id()},
          {"date", utc_now()},
          {"command", command_line()}};
}

Status write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream f(path);
  if (!f) return make_error(ErrorCode::kIoError, "{}: cannot open for writing", path);
  f << j.dump(2) << "\n";
  if (!f) return make_error(ErrorCode::kIoError, "{}: write failed", path);
  return {};
}

std::vector<int32_t> random_prompt(std::mt19937_64& rng, int64_t vocab, int64_t len) {
  std::uniform_int_distribution<int32_t> tok(0, int32_t(std::min<int64_t>(vocab, 100000) - 1));
  std::vector<int32_t> p(static_cast<size_t>(len));
  for (auto& t : p) t = tok(rng);
  return p;
}

Request greedy_request(std::vector<int32_t> prompt, int32_t max_tokens) {
  Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  return r;
}

// ---- bench decode.

struct DecodeArgs {
  CommonArgs c;
  std::string batch_sizes = "1,8,32,64,128,256,max";
  std::string input_lens = "1024,4096";
  int output_len = 128;
  double kv_cache_gib = 0;  // 0: the default budget (file comment)
  int max_num_batched_tokens = 0;
};

struct DecodeCase {
  int64_t input = 0, batch = 0;
};

struct DecodeRow {
  int64_t batch = 0, input = 0, output = 0, steps = 0, probe_steps = 0, preemptions = 0;
  double prefill_s = 0, decode_s = 0, decode_tps = 0, ms_per_step = 0, prefill_tps = 0;
  double mean_context = 0;      // context length of the timed steps, averaged
  double experts = 0;           // distinct experts per MoE layer, mean over layers and probes
  double experts_min = 0, experts_max = 0;  // the least and most touched layer (probe mean)
  double experts_uniform = 0;   // expected_experts_touched: what uniform routing would touch
  double bytes = 0, achieved_Bps = 0, bound_tps = 0, pct = 0;
};

// Every kProbeEvery-th decode step (and the last) counts routing instead of being timed.
constexpr int64_t kProbeEvery = 16;

// Runs `batch` requests to completion; times the decode steps and probes routing (file
// comment). The engine must schedule prompts first.
Result<DecodeRow> run_decode_case(Engine& e, const DecodeCase& dc, int output_len,
                                  std::mt19937_64& rng) {
  const int64_t vocab = e.config().vocab_size;
  for (int64_t i = 0; i < dc.batch; ++i)
    MOEOPT_RETURN_IF_ERROR(
        e.add_request(greedy_request(random_prompt(rng, vocab, dc.input), output_len)).status());
  const int64_t preempted0 = e.scheduler().num_preemptions();
  auto fail = [&](const std::string& why) {
    return make_error(ErrorCode::kInternal, "batch {} x input {}: {}", dc.batch, dc.input, why);
  };

  // Prefill: until every request has its first token; nobody may decode meanwhile.
  const auto t0 = Clock::now();
  int64_t with_first = 0;
  while (with_first < dc.batch) {
    if (!e.has_unfinished()) return fail("finished before every prompt was prefilled");
    MOEOPT_ASSIGN_OR_RETURN(std::vector<RequestOutput> outs, e.step());
    for (const RequestOutput& o : outs) {
      if (o.generated_tokens != 1) return fail("a sequence decoded while prompts were waiting");
      ++with_first;
    }
  }
  const double prefill_s = seconds_since(t0);

  // Decode: output_len - 1 steps of exactly `batch` sequences each.
  const std::vector<int64_t>& counts = e.expert_token_counts();
  const int64_t E = e.config().num_experts, L = e.config().num_hidden_layers;
  std::vector<double> layer_experts(size_t(L), 0.0);  // summed over probes
  int64_t decode_steps = 0, probes = 0, timed = 0;
  double timed_s = 0, context_sum = 0;
  for (int64_t i = 0; e.has_unfinished(); ++i) {
    const bool probe = !counts.empty() && (i % kProbeEvery == kProbeEvery - 1 ||
                                           i == output_len - 2);
    std::vector<int64_t> before;
    const bool counting = e.counts_expert_tokens();  // always on a CPU engine
    if (probe) {
      before = counts;
      e.count_expert_tokens(true);
    }
    const auto s0 = Clock::now();
    auto outs = e.step();
    const double sec = seconds_since(s0);
    e.count_expert_tokens(counting);
    if (!outs.ok()) return outs.status();
    ++decode_steps;
    if (int64_t(outs->size()) != dc.batch)
      return fail(fmt::format("decode step {} ran {} sequences, not a steady batch", i,
                              outs->size()));
    for (const RequestOutput& o : *outs)
      if (o.new_tokens.size() != 1 || o.generated_tokens != i + 2)
        return fail(fmt::format("decode step {}: a sequence is out of step", i));
    if (probe) {
      ++probes;
      for (int64_t l = 0; l < L; ++l) {
        int64_t touched = 0;
        for (int64_t x = 0; x < E; ++x)
          touched += counts[size_t(l * E + x)] != before[size_t(l * E + x)];
        layer_experts[size_t(l)] += double(touched);
      }
      continue;
    }
    ++timed;
    timed_s += sec;
    context_sum += double(dc.input + i + 2);  // keys read: the prompt and tokens 1..i+2
  }
  if (decode_steps != output_len - 1) return fail("wrong number of decode steps");
  if (timed == 0) return fail("no decode step was timed");

  DecodeRow r;
  r.batch = dc.batch;
  r.input = dc.input;
  r.output = output_len;
  r.steps = timed;
  r.probe_steps = probes;
  r.preemptions = e.scheduler().num_preemptions() - preempted0;  // 0 unless the pool is short
  r.prefill_s = prefill_s;
  r.decode_s = timed_s;
  r.decode_tps = double(dc.batch) * double(timed) / timed_s;
  r.ms_per_step = 1e3 * timed_s / double(timed);
  r.prefill_tps = double(dc.batch) * double(dc.input) / prefill_s;
  r.mean_context = context_sum / double(timed);
  if (probes > 0) {
    double sum = 0, lo = 1e300, hi = 0;
    int64_t moe_layers = 0;
    for (int64_t l = 0; l < L; ++l) {
      const double m = layer_experts[size_t(l)] / double(probes);
      if (m == 0) continue;  // dense layer
      ++moe_layers;
      sum += m;
      lo = std::min(lo, m);
      hi = std::max(hi, m);
    }
    if (moe_layers > 0) {
      r.experts = sum / double(moe_layers);
      r.experts_min = lo;
      r.experts_max = hi;
    }
  }
  return r;
}

// Bytes/s of device-to-device copies of a 1 GiB buffer (read + write counted), best of 3
// rounds of 8 copies: the bandwidth ceiling a decode step can be held to.
Result<double> measure_device_copy_Bps(ops::DeviceBackend& backend) {
  const size_t bytes = size_t(1) << 30;
  ops::Context ctx;
  ctx.device_backend = &backend;
  MOEOPT_ASSIGN_OR_RETURN(void* stream, backend.create_stream());
  ctx.stream = stream;
  auto a = backend.allocate(bytes);
  auto b = a.ok() ? backend.allocate(bytes) : Result<void*>(a.status());
  double best = 0;
  Status st = a.ok() && b.ok() ? backend.fill_zero(ctx, *a, bytes)
                               : (a.ok() ? b.status() : a.status());
  for (int round = 0; st.ok() && round < 4; ++round) {
    st = backend.synchronize(ctx);
    const auto t0 = Clock::now();
    for (int i = 0; st.ok() && i < 8; ++i)
      st = i % 2 ? backend.copy_on_device(ctx, *a, *b, bytes)
                 : backend.copy_on_device(ctx, *b, *a, bytes);
    if (st.ok()) st = backend.synchronize(ctx);
    const double sec = seconds_since(t0);
    if (round > 0 && sec > 0) best = std::max(best, 2.0 * 8.0 * double(bytes) / sec);
  }
  if (b.ok()) backend.release(*b);
  if (a.ok()) backend.release(*a);
  backend.destroy_stream(stream);
  MOEOPT_RETURN_IF_ERROR(st);
  return best;
}

int run_bench_decode(const DecodeArgs& a) {
  const char* cmd = "bench decode";
  auto batches = parse_list(a.batch_sizes, "--batch-sizes", true);
  if (!batches.ok()) return report_error(cmd, batches.status());
  auto inputs = parse_list(a.input_lens, "--input-lens", false);
  if (!inputs.ok()) return report_error(cmd, inputs.status());
  if (a.output_len < 3)
    return report_error(cmd, make_error(ErrorCode::kInvalidArgument,
                                        "--output-len must be at least 3 (a timed decode step "
                                        "and a routing probe)"));
  auto lm = load_model_for(a.c.m, cmd);
  if (!lm.ok()) return report_error(cmd, lm.status());
  const ModelConfig cfg = lm->model->config();
  const bool on_device = a.c.m.device == "cuda";
  const int64_t max_in = *std::max_element(inputs->begin(), inputs->end());
  if (max_in + a.output_len > cfg.max_position_embeddings)
    return report_error(cmd, make_error(ErrorCode::kInvalidArgument,
                                        "input {} + output {} exceeds the model's context {}",
                                        max_in, a.output_len, cfg.max_position_embeddings));
  auto peaks = find_peaks(a.c);
  if (!peaks.ok()) return report_error(cmd, peaks.status());
  auto sizes = model_sizes(cfg, on_device, a.c.m.fp8_weights || cfg.fp8.has_value(), a.c.m.fp8_kv_cache);
  if (!sizes.ok()) return report_error(cmd, sizes.status());

  // KV budget and the cases it holds.
  double budget = 4.0 * kGiB;
  std::string budget_from = "fixed CPU budget";
  if (a.kv_cache_gib > 0) {
    budget = a.kv_cache_gib * kGiB;
    budget_from = "--kv-cache-gib";
  } else if (on_device) {
    if (peaks->free_bytes < 0)
      return report_error(cmd, make_error(ErrorCode::kUnsupported,
                                          "free GPU memory is unknown (no NVML): pass "
                                          "--kv-cache-gib"));
    budget = double(peaks->free_bytes) - 2.0 * kGiB;
    budget_from = "free GPU memory after the weights - 2 GiB";
  }
  const int32_t block_size = EngineOptions{}.block_size;
  const double block_bytes = double(KvCache::bytes_per_block(
      lm->model->kv_layout(), block_size,
      a.c.m.fp8_kv_cache ? DType::kF8E4M3 : on_device ? DType::kBF16 : DType::kF32));
  auto blocks_per_seq = [&](int64_t input) {
    return (input + a.output_len + block_size - 1) / block_size;
  };
  std::vector<DecodeCase> cases;
  nlohmann::json skipped = nlohmann::json::array();
  int64_t max_batch = 0, pool_blocks = 0;
  for (int64_t in : *inputs) {
    const int64_t fit = budget > 0 ? int64_t(budget / (double(blocks_per_seq(in)) * block_bytes))
                                   : 0;
    for (int64_t b : *batches) {
      const int64_t batch = b < 0 ? fit : b;
      if (batch < 1 || batch > fit) {
        std::fprintf(stderr, "bench decode: skipping batch %s x input %lld: %lld sequences fit "
                     "the %.4g GiB KV budget (%s)\n",
                     b < 0 ? "max" : std::to_string(b).c_str(), (long long)in, (long long)fit,
                     budget / kGiB, budget_from.c_str());
        skipped.push_back({{"batch", b < 0 ? nlohmann::json("max") : nlohmann::json(b)},
                           {"input_len", in}, {"fit", fit}});
        continue;
      }
      if (std::none_of(cases.begin(), cases.end(),
                       [&](const DecodeCase& x) { return x.input == in && x.batch == batch; }))
        cases.push_back({in, batch});
      max_batch = std::max(max_batch, batch);
      pool_blocks = std::max(pool_blocks, batch * blocks_per_seq(in));
    }
  }
  if (cases.empty())
    return report_error(cmd, make_error(ErrorCode::kResourceExhausted,
                                        "no case fits the {:.4g} GiB KV budget ({})",
                                        budget / kGiB, budget_from));

  EngineOptions eo;
  eo.num_threads = a.c.threads;
  eo.block_size = block_size;
  eo.num_kv_blocks = int32_t(pool_blocks);
  eo.max_num_seqs = int32_t(max_batch);
  eo.max_model_len = int32_t(max_in + a.output_len);
  eo.prefill_first = true;  // a steady decode batch (file comment)
  eo.max_num_batched_tokens = a.max_num_batched_tokens > 0
                                  ? a.max_num_batched_tokens
                                  : int32_t(std::max<int64_t>(2048, max_in));
  use_device(*lm, eo);
  std::fprintf(stderr, "bench decode: KV pool %.4g GiB (%lld blocks), up to %lld sequences\n",
               double(pool_blocks) * block_bytes / kGiB, (long long)pool_blocks,
               (long long)max_batch);
  // The ceiling no step may beat (GPU), measured before the KV pool takes the memory.
  double copy_Bps = 0;
  if (on_device) {
    auto bw = measure_device_copy_Bps(*lm->backend);
    if (!bw.ok()) return report_error(cmd, bw.status());
    copy_Bps = *bw;
  }

  auto engine = Engine::create(std::move(lm->model), eo);
  if (!engine.ok()) return report_error(cmd, engine.status());
  Engine& e = **engine;

  std::mt19937_64 rng(a.c.seed);
  // Warm-up: first-use costs (library handles, lazily sized buffers) stay out of the cases.
  auto warm = run_decode_case(e, {std::min<int64_t>(max_in, 16), 1}, 3, rng);
  if (!warm.ok()) return report_error(cmd, warm.status());

  std::vector<DecodeRow> rows;
  for (const DecodeCase& dc : cases) {
    auto r = run_decode_case(e, dc, a.output_len, rng);
    if (!r.ok()) return report_error(cmd, r.status());
    r->experts_uniform = expected_experts_touched(*sizes, dc.batch);
    r->bytes = decode_step_bytes(*sizes, dc.batch, r->experts * double(sizes->moe_layers),
                                 r->mean_context);
    r->achieved_Bps = r->bytes / (r->ms_per_step / 1e3);
    if (on_device && r->achieved_Bps > copy_Bps)
      return report_error(
          cmd, make_error(ErrorCode::kInternal,
                          "batch {} x input {}: {:.3g} GB per step in {:.3f} ms is {:.0f} GB/s, "
                          "above the card's measured copy bandwidth {:.0f} GB/s: the byte "
                          "model or the timing is wrong",
                          dc.batch, dc.input, r->bytes / 1e9, r->ms_per_step,
                          r->achieved_Bps / 1e9, copy_Bps / 1e9));
    rows.push_back(*r);
    std::fprintf(stderr, "bench decode: batch %lld x input %lld: %.1f tok/s\n",
                 (long long)dc.batch, (long long)dc.input, r->decode_tps);
  }
  remeasure_cpu_peaks(a.c, *peaks);
  for (DecodeRow& r : rows) {
    r.bound_tps = double(r.batch) / (r.bytes / peaks->hbm_Bps);
    r.pct = 100.0 * r.decode_tps / r.bound_tps;
  }

  std::printf("moeopt bench decode: %s, %lld layers, %s; %s\n",
              a.c.m.model.empty() ? kDefaultModelName : a.c.m.model.c_str(),
              (long long)cfg.num_hidden_layers, peaks->card.c_str(), lm->source.c_str());
  std::printf("roofline: %.0f GB/s (%s); output %d tokens; KV budget %.4g GiB (%s)\n",
              peaks->hbm_Bps / 1e9, peaks->source.c_str(), a.output_len, budget / kGiB,
              budget_from.c_str());
  if (on_device)
    std::printf("measured device copy bandwidth: %.0f GB/s (no step may exceed it)\n",
                copy_Bps / 1e9);
  std::printf("experts/layer: distinct experts a decode step reads per MoE layer (probe steps; "
              "mean [least..most touched layer]; uniform = what uniform routing would touch)\n");
  std::printf("%6s %6s %12s %9s %22s %8s %8s %9s %12s %8s %13s\n", "batch", "input",
              "decode tok/s", "ms/step", "experts/layer", "uniform", "GB/step", "GB/s",
              "bound tok/s", "% bound", "prefill tok/s");
  for (const DecodeRow& r : rows)
    std::printf("%6lld %6lld %12.1f %9.3f %8.1f [%5.1f..%5.1f] %8.1f %8.3f %9.0f %12.1f %8.1f "
                "%13.1f\n",
                (long long)r.batch, (long long)r.input, r.decode_tps, r.ms_per_step, r.experts,
                r.experts_min, r.experts_max, r.experts_uniform, r.bytes / 1e9,
                r.achieved_Bps / 1e9, r.bound_tps, r.pct, r.prefill_tps);

  if (!a.c.json.empty()) {
    nlohmann::json j = json_header(a.c, cfg, *peaks);
    j["output_len"] = a.output_len;
    j["kv_budget_gib"] = budget / kGiB;
    j["kv_budget_source"] = budget_from;
    if (on_device) j["copy_GBps_measured"] = copy_Bps / 1e9;
    j["decode"] = nlohmann::json::array();
    for (const DecodeRow& r : rows)
      j["decode"].push_back({{"batch", r.batch},
                             {"input_len", r.input},
                             {"output_len", r.output},
                             {"decode_tokens_per_s", r.decode_tps},
                             {"ms_per_step", r.ms_per_step},
                             {"decode_steps", r.steps},
                             {"probe_steps", r.probe_steps},
                             {"mean_context", r.mean_context},
                             {"achieved_GBps", r.achieved_Bps / 1e9},
                             {"decode_seconds", r.decode_s},
                             {"preemptions", r.preemptions},
                             {"bound_tokens_per_s", r.bound_tps},
                             {"pct_of_bound", r.pct},
                             {"bytes_per_step", r.bytes},
                             {"experts_touched_per_layer", r.experts},
                             {"experts_touched_min_layer", r.experts_min},
                             {"experts_touched_max_layer", r.experts_max},
                             {"experts_touched_uniform", r.experts_uniform},
                             {"prefill_tokens_per_s", r.prefill_tps},
                             {"prefill_seconds", r.prefill_s}});
    j["skipped"] = skipped;
    Status st = write_json(a.c.json, j);
    if (!st.ok()) return report_error(cmd, st);
  }
  return 0;
}

RunFn setup_bench_decode(CLI::App& bench) {
  auto a = std::make_shared<DecodeArgs>();
  CLI::App* sub = bench.add_subcommand(
      "decode", "Decode tokens/s per (input length, batch) against the memory-bound roofline");
  add_common_flags(sub, &a->c);
  sub->add_option("--batch-sizes", a->batch_sizes,
                  "comma-separated batches; max: the largest that fits the KV budget "
                  "(default 1,8,32,64,128,256,max)");
  sub->add_option("--input-lens", a->input_lens, "comma-separated prompt lengths (default "
                  "1024,4096)");
  sub->add_option("--output-len", a->output_len, "generated tokens per sequence (default 128)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--kv-cache-gib", a->kv_cache_gib,
                  "KV budget for max and for the cases (default: free GPU memory after the "
                  "weights - 2 GiB; 4 GiB on the CPU)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-num-batched-tokens", a->max_num_batched_tokens,
                  "prefill chunk, tokens per step (default max(2048, longest input))")
      ->check(CLI::PositiveNumber);
  return [a] { return run_bench_decode(*a); };
}

// ---- bench prefill.

struct PrefillArgs {
  CommonArgs c;
  std::string prompt_lens = "512,1024,2048,4096,8192";
  int repeats = 5;
};

struct PrefillRow {
  int64_t len = 0;
  double median_s = 0, tps = 0, flops = 0, tflops = 0, pct = 0;
  std::vector<double> times;
};

// One prompt of `len` tokens, one output token: the seconds until it finished.
Result<double> time_prefill(Engine& e, int64_t len, std::mt19937_64& rng) {
  MOEOPT_RETURN_IF_ERROR(
      e.add_request(greedy_request(random_prompt(rng, e.config().vocab_size, len), 1)).status());
  const int64_t steps0 = e.num_steps();
  const auto t0 = Clock::now();
  while (e.has_unfinished()) MOEOPT_RETURN_IF_ERROR(e.step().status());
  const double s = seconds_since(t0);
  if (e.num_steps() - steps0 != 1)
    return make_error(ErrorCode::kInternal, "prompt of {} tokens took {} steps, expected 1", len,
                      e.num_steps() - steps0);
  return s;
}

int run_bench_prefill(const PrefillArgs& a) {
  const char* cmd = "bench prefill";
  auto lens = parse_list(a.prompt_lens, "--prompt-lens", false);
  if (!lens.ok()) return report_error(cmd, lens.status());
  auto lm = load_model_for(a.c.m, cmd);
  if (!lm.ok()) return report_error(cmd, lm.status());
  const ModelConfig cfg = lm->model->config();
  const int64_t max_len = *std::max_element(lens->begin(), lens->end());
  if (max_len + 1 > cfg.max_position_embeddings)
    return report_error(cmd, make_error(ErrorCode::kInvalidArgument,
                                        "--prompt-lens: {} + 1 exceeds the model's context {}",
                                        max_len, cfg.max_position_embeddings));
  auto peaks = find_peaks(a.c);
  if (!peaks.ok()) return report_error(cmd, peaks.status());
  auto sizes = model_sizes(cfg, a.c.m.device == "cuda", a.c.m.fp8_weights || cfg.fp8.has_value(),
                           a.c.m.fp8_kv_cache);
  if (!sizes.ok()) return report_error(cmd, sizes.status());

  EngineOptions eo;
  eo.num_threads = a.c.threads;
  eo.max_num_seqs = 1;
  eo.max_model_len = int32_t(max_len + 1);
  eo.max_num_batched_tokens = eo.max_model_len;  // the whole prompt in one step
  eo.enable_chunked_prefill = false;
  eo.num_kv_blocks = int32_t((max_len + 1 + eo.block_size - 1) / eo.block_size);
  use_device(*lm, eo);
  auto engine = Engine::create(std::move(lm->model), eo);
  if (!engine.ok()) return report_error(cmd, engine.status());
  Engine& e = **engine;

  std::mt19937_64 rng(a.c.seed);
  std::vector<PrefillRow> rows;
  for (int64_t len : *lens) {
    PrefillRow r;
    r.len = len;
    for (int i = 0; i <= a.repeats; ++i) {  // run 0 is the warm-up
      auto s = time_prefill(e, len, rng);
      if (!s.ok()) return report_error(cmd, s.status());
      if (i > 0) r.times.push_back(*s);
    }
    std::vector<double> sorted = r.times;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();
    r.median_s = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    r.tps = double(len) / r.median_s;
    r.flops = prefill_flops(*sizes, len);
    r.tflops = r.flops / r.median_s / 1e12;
    rows.push_back(r);
    std::fprintf(stderr, "bench prefill: %lld tokens: %.1f tok/s\n", (long long)len, r.tps);
  }

  remeasure_cpu_peaks(a.c, *peaks);
  for (PrefillRow& r : rows) r.pct = 100.0 * (r.flops / r.median_s) / peaks->flops;

  std::printf("moeopt bench prefill: %s, %lld layers, %s; %s\n",
              a.c.m.model.empty() ? kDefaultModelName : a.c.m.model.c_str(),
              (long long)cfg.num_hidden_layers, peaks->card.c_str(), lm->source.c_str());
  std::printf("roofline: %.1f TFLOP/s (%s); batch 1, output 1, median of %d\n",
              peaks->flops / 1e12, peaks->source.c_str(), a.repeats);
  std::printf("%7s %13s %10s %10s %8s %8s\n", "prompt", "prefill tok/s", "ms", "TFLOP", "TFLOP/s",
              "% peak");
  for (const PrefillRow& r : rows)
    std::printf("%7lld %13.1f %10.3f %10.3f %8.2f %8.2f\n", (long long)r.len, r.tps,
                1e3 * r.median_s, r.flops / 1e12, r.tflops, r.pct);

  if (!a.c.json.empty()) {
    nlohmann::json j = json_header(a.c, cfg, *peaks);
    j["repeats"] = a.repeats;
    j["prefill"] = nlohmann::json::array();
    for (const PrefillRow& r : rows)
      j["prefill"].push_back({{"prompt_len", r.len},
                              {"batch", 1},
                              {"prefill_tokens_per_s", r.tps},
                              {"median_seconds", r.median_s},
                              {"seconds", r.times},
                              {"flops", r.flops},
                              {"tflops_per_s", r.tflops},
                              {"pct_of_peak", r.pct}});
    Status st = write_json(a.c.json, j);
    if (!st.ok()) return report_error(cmd, st);
  }
  return 0;
}

RunFn setup_bench_prefill(CLI::App& bench) {
  auto a = std::make_shared<PrefillArgs>();
  CLI::App* sub = bench.add_subcommand(
      "prefill", "Prefill tokens/s per prompt length (batch 1) against the compute roofline");
  add_common_flags(sub, &a->c);
  sub->add_option("--prompt-lens", a->prompt_lens,
                  "comma-separated prompt lengths (default 512,1024,2048,4096,8192)");
  sub->add_option("--repeats", a->repeats, "timed runs after one warm-up, median (default 5)")
      ->check(CLI::PositiveNumber);
  return [a] { return run_bench_prefill(*a); };
}

}  // namespace

MOEOPT_REGISTER_BENCH(setup_bench_decode);
MOEOPT_REGISTER_BENCH(setup_bench_prefill);

}  // namespace moeopt::cli
