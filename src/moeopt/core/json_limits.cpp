// Bounded JSON parsing (see json_limits.h).
#include "moeopt/core/json_limits.h"

#include <utility>
#include <vector>

namespace moeopt {

Status check_json_text(std::string_view text, const JsonLimits& limits) {
  size_t depth = 0, values = 1;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\0') return make_error(ErrorCode::kInvalidArgument, "JSON text has a NUL byte at byte {}", i);
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > limits.max_depth)
          return make_error(ErrorCode::kInvalidArgument, "JSON nesting is deeper than {} levels at byte {}",
                            limits.max_depth, i);
        [[fallthrough]];
      case ',':
        if (++values > limits.max_values)
          return make_error(ErrorCode::kInvalidArgument, "JSON text has more than {} values (at byte {})",
                            limits.max_values, i);
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;  // unbalanced text is left to the parser to report
        break;
      default:
        break;
    }
  }
  return {};
}

namespace {

template <typename J>
Result<J> parse_bounded(std::string_view text, const JsonLimits& limits) {
  Status st = check_json_text(text, limits);
  if (!st.ok()) return st;
  try {
    return J::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const std::exception& e) {
    std::string what = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." -> the part after "] ".
    auto p = what.find("] ");
    if (p != std::string::npos) what = what.substr(p + 2);
    return make_error(ErrorCode::kInvalidArgument, "invalid JSON: {}", what);
  }
}

template <typename J>
size_t depth_of(const J& root, size_t stop_above) {
  if (!root.is_structured()) return 0;
  // Explicit stack of (container, depth).
  std::vector<std::pair<const J*, size_t>> stack;
  stack.emplace_back(&root, 1);
  size_t best = 0;
  while (!stack.empty()) {
    auto [v, d] = stack.back();
    stack.pop_back();
    if (d > best) best = d;
    if (best > stop_above) return best;
    for (const auto& e : *v)
      if (e.is_structured()) stack.emplace_back(&e, d + 1);
  }
  return best;
}

}  // namespace

Result<nlohmann::json> parse_json(std::string_view text, const JsonLimits& limits) {
  return parse_bounded<nlohmann::json>(text, limits);
}

Result<nlohmann::ordered_json> parse_ordered_json(std::string_view text, const JsonLimits& limits) {
  return parse_bounded<nlohmann::ordered_json>(text, limits);
}

size_t json_depth(const nlohmann::json& j, size_t stop_above) { return depth_of(j, stop_above); }
size_t json_depth(const nlohmann::ordered_json& j, size_t stop_above) { return depth_of(j, stop_above); }

}  // namespace moeopt
