// Logging: spdlog, to stderr. The CLI sets the level (--verbose / MOEOPT_LOG=debug).
// Library code logs progress and warnings only; errors travel as Status values.
#pragma once

#include <spdlog/spdlog.h>

namespace moeopt::log {
using spdlog::debug;
using spdlog::info;
using spdlog::warn;
void init_from_env();  // reads MOEOPT_LOG (trace|debug|info|warn|error|off), default warn
}  // namespace moeopt::log
