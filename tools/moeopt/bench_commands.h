// Subcommands of `moeopt bench`.
//
// `moeopt bench` alone runs the offline engine benchmark (cmd_bench.cpp); each
// `moeopt bench <name>` lives in its own cmd_bench_<name>.cpp and registers itself here,
// exactly like top-level commands do with MOEOPT_REGISTER_COMMAND:
//
//   RunFn setup_bench_moe(CLI::App& bench) {          // `bench` is the parent subcommand
//     CLI::App* sub = bench.add_subcommand("moe", "...");
//     ...
//     return [args] { return run_bench_moe(*args); };
//   }
//   MOEOPT_REGISTER_BENCH(setup_bench_moe);
#pragma once

#include <vector>

#include "commands.h"

namespace moeopt::cli {

// Adds one subcommand under `bench` and returns what to run when it is selected.
using BenchSetupFn = RunFn (*)(CLI::App& bench);

struct BenchRegistry {
  static std::vector<BenchSetupFn>& all();
  explicit BenchRegistry(BenchSetupFn fn) { all().push_back(fn); }
};

}  // namespace moeopt::cli

#define MOEOPT_REGISTER_BENCH(fn) \
  static ::moeopt::cli::BenchRegistry MOEOPT_CONCAT(_moeopt_bench_, __LINE__)(fn)
