// MoE layer benchmark on the GPU (`moeopt bench moe`, cmd_bench_moe.cpp): times the expert
// path of the fused layer (backend/cuda/moe.h: permutation, both grouped GEMMs, combine) at a list of token
// counts M with uniform and Zipf routing, as CUDA-graph replays timed with CUDA events, and
// reports each time against the card's HBM bound (unique experts touched x expert bytes /
// bandwidth, both the nominal bandwidth and a device-to-device copy measured in the same
// run) and tensor bound (6*M*k*H*I FLOPs / nominal dense peak of the dtype).
//
// The PyTorch torch._grouped_mm peer is not part of this library benchmark: it runs in
// bench/moe_layer.py on the same kernels (docs/perf.md). Only used with MOEOPT_CUDA.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt::cli {

struct MoeBenchOptions {
  std::vector<int64_t> ms{1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};
  std::vector<std::string> routings{"uniform", "zipf"};  // "uniform" and/or "zipf"
  // "bf16" and/or "fp8" (W8A8 experts with 128x128 block scales, ops/fp8.h); with both, each
  // fp8 row also reports its speedup over the bf16 row of the same M and routing.
  std::vector<std::string> dtypes{"bf16"};
  // fp8 rows: "auto" (choose_moe_fp8_tile) and/or tile names (moe_fp8_tile_name), one row each.
  std::vector<std::string> fp8_tiles{"auto"};
  int64_t hidden = 2048;  // Qwen3-30B-A3B
  int64_t inter = 768;
  int64_t experts = 128;
  int64_t top_k = 8;
  int reps = 7;           // timed graph replays (median)
  uint64_t seed = 0;
};

struct MoeBenchRow {
  int64_t m = 0;
  std::string routing;
  std::string dtype;
  int64_t experts_touched = 0;
  std::string tile;
  double us = 0;               // median per layer call
  double weight_bytes = 0;     // unique experts touched x bytes per expert (fp8: 1 byte per
                               // weight + their f32 block scales)
  double gbps = 0;             // weight_bytes / us
  double pct_hbm_nominal = 0;  // HBM bound (nominal bandwidth) / us
  double pct_hbm_copy = 0;     // HBM bound (measured copy bandwidth) / us
  double tflops = 0;
  double pct_tensor = 0;       // tensor bound / us (fp8: against 2x the bf16 dense peak)
  double speedup_vs_bf16 = 0;  // fp8 rows when bf16 ran too: bf16 us / fp8 us
};

struct MoeBenchReport {
  std::string card;
  int sms = 0;
  double hbm_nominal_Bps = 0;  // 0 when the card is not in the table (then only copy-based %)
  double copy_Bps = 0;         // measured device-to-device copy (read + write bytes)
  double tensor_nominal_flops = 0;
  MoeBenchOptions options;
  std::vector<MoeBenchRow> rows;
};

// Runs the benchmark on the current CUDA device. Errors: no device, unsupported shape, CUDA
// failures (one line each).
Result<MoeBenchReport> run_moe_bench(const MoeBenchOptions& options);

}  // namespace moeopt::cli
