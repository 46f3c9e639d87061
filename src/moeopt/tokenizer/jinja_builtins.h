// Jinja built-ins: filters, tests, attribute/item access (incl. Python str/dict/list
// methods), slicing, iteration and JSON conversion, with the semantics of jinja2's
// ImmutableSandboxedEnvironment as transformers configures it.
//
// jinja_filters.cpp: filters and tests. jinja_methods.cpp: getattr/getitem/slices,
// methods, iteration. jinja_json.cpp: nlohmann JSON <-> Value and the `tojson` filter.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/core/status.h"
#include "moeopt/tokenizer/jinja_value.h"

namespace moeopt::jinja {

// `value | name(args)`. Unknown filters are an error naming the filter.
Result<Value> apply_filter(const std::string& name, const Value& value, const CallArgs& args);
// `value is name(args)`.
Result<bool> apply_test(const std::string& name, const Value& value, const CallArgs& args);
bool test_exists(const std::string& name);

// `obj.name`: Python attribute first (methods of str/dict/list), then item; missing ->
// Undefined with jinja2's hint. Attribute access on Undefined is an error.
Result<Value> get_attr(const Value& obj, const std::string& name);
// `obj[key]`: item first, then attribute for string keys; missing -> Undefined.
Result<Value> get_item(const Value& obj, const Value& key);
// `obj[start:stop:step]` on strings, lists and tuples (null pointers = omitted).
Result<Value> get_slice(const Value& obj, const Value* start, const Value* stop,
                        const Value* step);
// The items a `for` loop or a filter iterates: list/tuple items, dict keys, string code
// points; Undefined iterates as empty. Anything else is an error.
Result<std::vector<Value>> iterate(const Value& v);
// Python `needle in container`.
Result<bool> contains(const Value& container, const Value& needle);

// Python's printf-style `fmt % args` (the `%` operator on strings and the `format`
// filter): conversions s r a d i u f F e E g G x X o c with flags, width and precision;
// `args` is a tuple (one value per conversion), a dict (for %(name)s) or a single value.
Result<std::string> percent_format(const std::string& fmt, const Value& args);

// JSON data -> Value (objects keep their key order). Recursion is capped: containers
// nested deeper than kMaxFromJsonDepth become None. Callers that take JSON from outside
// reject deep values before (ChatTemplate::render, core/json_limits.h), so the cap only
// keeps a programming error from overflowing the stack.
inline constexpr int kMaxFromJsonDepth = 256;
Value from_json(const nlohmann::ordered_json& j, int depth = 0);
// transformers' tojson: json.dumps(x, ensure_ascii, indent, separators, sort_keys).
struct JsonDumpOptions {
  bool ensure_ascii = false;
  bool has_indent = false;
  std::string indent;         // the indent unit (int n -> n spaces)
  std::optional<std::string> item_separator;  // default as json.dumps: ", " ("," with indent)
  std::string key_separator = ": ";
  bool sort_keys = false;
};
Result<std::string> dump_json(const Value& v, const JsonDumpOptions& opts);

}  // namespace moeopt::jinja
