// `moeopt bench moe [--ms LIST] [--routing uniform,zipf] [--dtype bf16,fp8] [--fp8-tiles LIST] [--hidden H]
//                   [--inter I] [--experts E] [--topk K] [--reps N] [--seed S] [--json]`
//
// Times the CUDA MoE layer (permutation, both grouped GEMMs, combine) at each token count M,
// as CUDA-graph replays, and prints one row per (routing, M, dtype): microseconds, GB/s of
// expert weights touched (fp8: 1 byte per weight + the block scales), % of the HBM bound
// (nominal bandwidth of the card and a copy bandwidth measured in the same run), TFLOP/s,
// % of the tensor bound, and for fp8 the speedup over the bf16 row of the same M. Defaults: the
// Qwen3-30B-A3B shape and the M list of the fused-MoE benchmark. The same-process PyTorch
// peer lives in bench/moe_layer.py (docs/perf.md); this command times our kernels only.
// Needs a build with MOEOPT_CUDA and a GPU; otherwise exits 1 with one line saying why.
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_commands.h"
#include "commands.h"

#include "cmd_bench_moe_run.h"

namespace moeopt::cli {
namespace {

struct BenchMoeArgs {
  std::string ms = "1,8,32,64,128,256,512,1024,2048,4096,8192";
  std::string routing = "uniform,zipf";
  std::string dtype = "bf16";
  std::string fp8_tiles = "auto";
  int64_t hidden = 2048, inter = 768, experts = 128, topk = 8;
  int reps = 7;
  uint64_t seed = 0;
  bool json = false;
};

Result<std::vector<std::string>> split_list(const std::string& s, const char* flag) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  if (out.empty())
    return make_error(ErrorCode::kInvalidArgument, "{} is empty", flag);
  return out;
}

int run_bench_moe(const BenchMoeArgs& a) {
  const char* cmd = "bench moe";
#if MOEOPT_HAVE_CUDA
  MoeBenchOptions o;
  auto ms = split_list(a.ms, "--ms");
  if (!ms.ok()) return report_error(cmd, ms.status());
  o.ms.clear();
  for (const std::string& v : *ms) {
    char* end = nullptr;
    const long long m = std::strtoll(v.c_str(), &end, 10);
    if (end == v.c_str() || *end != '\0' || m < 1)
      return report_error(cmd, make_error(ErrorCode::kInvalidArgument,
                                          "--ms: '{}' is not a positive integer", v));
    o.ms.push_back(m);
  }
  auto routings = split_list(a.routing, "--routing");
  if (!routings.ok()) return report_error(cmd, routings.status());
  o.routings = *routings;
  auto dtypes = split_list(a.dtype, "--dtype");
  if (!dtypes.ok()) return report_error(cmd, dtypes.status());
  o.dtypes = *dtypes;
  auto fp8_tiles = split_list(a.fp8_tiles, "--fp8-tiles");
  if (!fp8_tiles.ok()) return report_error(cmd, fp8_tiles.status());
  o.fp8_tiles = *fp8_tiles;
  o.hidden = a.hidden;
  o.inter = a.inter;
  o.experts = a.experts;
  o.top_k = a.topk;
  o.reps = a.reps;
  o.seed = a.seed;
  auto rep = run_moe_bench(o);
  if (!rep.ok()) return report_error(cmd, rep.status());

  if (a.json) {
    nlohmann::json j;
    j["card"] = rep->card;
    j["sms"] = rep->sms;
    j["hbm_nominal_Bps"] = rep->hbm_nominal_Bps;
    j["copy_Bps"] = rep->copy_Bps;
    j["tensor_nominal_flops"] = rep->tensor_nominal_flops;
    j["shape"] = {{"H", o.hidden}, {"I", o.inter}, {"E", o.experts}, {"k", o.top_k}};
    j["rows"] = nlohmann::json::array();
    for (const auto& r : rep->rows)
      j["rows"].push_back({{"M", r.m}, {"routing", r.routing}, {"dtype", r.dtype},
                           {"experts_touched", r.experts_touched}, {"tile", r.tile},
                           {"us", r.us}, {"weight_bytes", r.weight_bytes}, {"GBps", r.gbps},
                           {"pct_hbm_nominal", r.pct_hbm_nominal},
                           {"pct_hbm_copy", r.pct_hbm_copy}, {"tflops", r.tflops},
                           {"pct_tensor", r.pct_tensor}, {"speedup_vs_bf16", r.speedup_vs_bf16}});
    std::printf("%s\n", j.dump(1).c_str());
    return 0;
  }
  std::printf("card: %s (%d SMs); HBM nominal %.2f TB/s, copy measured %.2f TB/s; "
              "BF16 dense nominal %.0f TFLOP/s\n",
              rep->card.c_str(), rep->sms, rep->hbm_nominal_Bps / 1e12, rep->copy_Bps / 1e12,
              rep->tensor_nominal_flops / 1e12);
  std::printf("shape: H %lld, I %lld, E %lld, k %lld\n", (long long)o.hidden, (long long)o.inter,
              (long long)o.experts, (long long)o.top_k);
  std::printf("%6s %8s %5s %5s %30s %9s %7s %8s %9s %8s %8s %8s\n", "M", "routing", "dtype",
              "exp", "tile", "us", "GB/s", "%HBMnom", "%HBMcopy", "TFLOP/s", "%tensor", "vs_bf16");
  for (const auto& r : rep->rows)
    std::printf("%6lld %8s %5s %5lld %30s %9.1f %7.0f %8.1f %9.1f %8.1f %8.1f %8.2f\n",
                (long long)r.m, r.routing.c_str(), r.dtype.c_str(), (long long)r.experts_touched,
                r.tile.c_str(), r.us, r.gbps, r.pct_hbm_nominal, r.pct_hbm_copy, r.tflops,
                r.pct_tensor, r.speedup_vs_bf16);
  return 0;
#else
  (void)a;
  return report_error(cmd, make_error(ErrorCode::kUnsupported,
                                      "this moeopt was built without CUDA (MOEOPT_CUDA=OFF)"));
#endif
}

RunFn setup_bench_moe(CLI::App& bench) {
  auto a = std::make_shared<BenchMoeArgs>();
  CLI::App* sub = bench.add_subcommand(
      "moe", "Time the CUDA MoE layer per token count against the card's HBM and tensor bounds");
  sub->add_option("--ms", a->ms, "comma-separated token counts M (default 1,8,...,8192)");
  sub->add_option("--routing", a->routing, "uniform and/or zipf (default uniform,zipf)");
  sub->add_option("--dtype", a->dtype,
                  "bf16 and/or fp8 experts (W8A8, 128x128 block scales; default bf16)");
  sub->add_option("--fp8-tiles", a->fp8_tiles,
                  "fp8 rows per tile choice: auto (the plan's) and/or GEMM1[/GEMM2] tile names "
                  "such as fp8_bm32_bn8/fp8_bm128_bn8 (default auto)");
  sub->add_option("--hidden", a->hidden, "hidden size H (default 2048)")->check(CLI::PositiveNumber);
  sub->add_option("--inter", a->inter, "expert width I (default 768)")->check(CLI::PositiveNumber);
  sub->add_option("--experts", a->experts, "experts E (default 128)")->check(CLI::PositiveNumber);
  sub->add_option("--topk", a->topk, "experts per token k (default 8)")->check(CLI::PositiveNumber);
  sub->add_option("--reps", a->reps, "timed graph replays, median (default 7)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--seed", a->seed, "seed for weights, inputs and routing (default 0)");
  sub->add_flag("--json", a->json, "print JSON instead of the table");
  return [a] { return run_bench_moe(*a); };
}

}  // namespace

MOEOPT_REGISTER_BENCH(setup_bench_moe);

}  // namespace moeopt::cli
