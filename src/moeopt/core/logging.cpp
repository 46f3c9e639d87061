#include "moeopt/core/logging.h"

#include <cstdlib>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace moeopt::log {

void init_from_env() {
  auto logger = spdlog::stderr_color_mt("moeopt");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%H:%M:%S.%e %^%l%$] %v");
  const char* env = std::getenv("MOEOPT_LOG");
  spdlog::set_level(env ? spdlog::level::from_str(env) : spdlog::level::warn);
}

}  // namespace moeopt::log
