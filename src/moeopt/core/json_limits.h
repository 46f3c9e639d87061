// Bounded JSON parsing for every JSON text that comes from outside the process (HTTP
// bodies, config.json, tokenizer.json, tokenizer_config.json, template kwargs, index files).
//
// nlohmann's parser itself is iterative, but copying, dumping or converting a parsed value
// recurses once per nesting level, so a 60 KB body of 30,000 nested arrays crashes the
// process later. parse_json() therefore runs an O(n) pre-scan first that, outside strings,
// counts the nesting depth and the number of values and rejects
//   * nesting deeper than `max_depth` (default 128),
//   * more than `max_values` values (arrays' and objects' members, every comma counts),
//   * any NUL byte (nlohmann treats NUL as the end of the input, so `{...}\0garbage`
//     would otherwise be accepted),
// and then parses strictly: bytes after the document other than whitespace are an error.
// Errors are one line with the byte offset, e.g.
//   "JSON nesting is deeper than 128 levels at byte 129".
// After a successful parse every value has depth <= max_depth, so code that recurses over
// it is bounded.
#pragma once

#include <cstddef>
#include <string_view>

#include <nlohmann/json.hpp>

#include "moeopt/core/status.h"

namespace moeopt {

struct JsonLimits {
  size_t max_depth = 128;
  size_t max_values = size_t(16) << 20;  // 16 Mi: tokenizer.json files hold a few million
};

// The pre-scan alone (ok, or kInvalidArgument naming the offset).
Status check_json_text(std::string_view text, const JsonLimits& limits = {});

// Pre-scan, then strict parse. kInvalidArgument with a one-line message on any failure.
Result<nlohmann::json> parse_json(std::string_view text, const JsonLimits& limits = {});
Result<nlohmann::ordered_json> parse_ordered_json(std::string_view text, const JsonLimits& limits = {});

// Nesting depth of a parsed value (a scalar is 0, [] is 1, [[1]] is 2), computed without
// recursion, stopping early once it exceeds `stop_above`.
size_t json_depth(const nlohmann::json& j, size_t stop_above = SIZE_MAX);
size_t json_depth(const nlohmann::ordered_json& j, size_t stop_above = SIZE_MAX);

}  // namespace moeopt
