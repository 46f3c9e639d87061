// The body of the JSON intake fuzz target (core/json_limits.h), shared with the CI corpus
// replay. Invariants: an accepted text parses to a value no deeper than the limit that
// nlohmann's strict parser agrees with; a refused one has a one-line message; and dumping
// and copying an accepted value (both recursive) cannot overflow the stack.
#pragma once

#include <cstdint>
#include <string_view>

#include "moeopt/core/json_limits.h"

namespace moeopt::fuzz {

inline int run_json_body_input(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  JsonLimits lim;
  lim.max_depth = 16;
  lim.max_values = 4096;
  auto r = parse_ordered_json(text, lim);
  if (!r.ok()) {
    if (r.status().message().empty() || r.status().message().find('\n') != std::string::npos) __builtin_trap();
    return 0;
  }
  if (json_depth(*r) > lim.max_depth) __builtin_trap();
  if (text.find('\0') != std::string_view::npos) __builtin_trap();
  auto again = nlohmann::ordered_json::parse(text.begin(), text.end(), nullptr, false);
  if (again.is_discarded() || again != *r) __builtin_trap();
  nlohmann::ordered_json copy = *r;
  (void)copy.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  return 1;
}

}  // namespace moeopt::fuzz
