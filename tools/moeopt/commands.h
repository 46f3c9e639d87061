// The subcommand table of the `moeopt` CLI.
//
// Each cmd_<name>.cpp registers one subcommand with MOEOPT_REGISTER_COMMAND: a function that
// adds a CLI11 subcommand and returns the function to run when it is chosen. The table is
// the CLI's only global; the library itself has none.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "moeopt/core/status.h"

namespace moeopt::cli {

// Exit codes: 0 success, 1 a check or runtime failure, 2 bad input (flags, files, configs).
int exit_code_for(const Status& st);
// Prints "moeopt <cmd>: error: <message>" on one line to stderr and returns the exit code.
int report_error(const std::string& command, const Status& st);

using RunFn = std::function<int()>;
// Adds a subcommand to `app` and returns what to run when it is selected.
using SetupFn = RunFn (*)(CLI::App& app);

struct CommandRegistry {
  static std::vector<SetupFn>& all();
  explicit CommandRegistry(SetupFn fn) { all().push_back(fn); }
};

// Root of the source tree, for data files (models/catalog, configs) when running from a
// build directory; MOEOPT_HOME overrides it for installed copies.
std::string data_root();

}  // namespace moeopt::cli

#define MOEOPT_REGISTER_COMMAND(fn) \
  static ::moeopt::cli::CommandRegistry MOEOPT_CONCAT(_moeopt_cmd_, __LINE__)(fn)
