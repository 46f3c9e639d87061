// The value model of the Jinja interpreter: the Python objects a chat template sees.
//
// Kinds mirror what transformers hands a template (plain JSON data: None, bool, int,
// float, str, list, dict) plus what templates create themselves: tuples (from `(a, b)`
// and dict.items()), namespace() objects, callables (macros, bound string/dict methods,
// globals such as raise_exception) and Jinja's Undefined.
//
// Sharing: lists and dicts are immutable once built (the sandbox forbids mutating them),
// so copies share one allocation. A namespace is mutable by design (`set ns.x = ...`) and
// every copy refers to the same object, as in Python.
//
// Undefined follows jinja2's default `Undefined`: it prints as "", is falsy, iterates as
// empty and has length 0, but attribute/item access, arithmetic and JSON conversion fail
// with the hint it carries ("'dict object' has no attribute 'content'").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt::jinja {

class Value;

// Ordered string-keyed mapping (Python dicts keep insertion order; tojson relies on it).
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // Keyword argument by name, or nullptr.
  const Value* kwarg(std::string_view name) const;
  // Argument by position, else by keyword name, else nullptr (Python call binding).
  const Value* get(size_t index, std::string_view name) const;
};

using NativeFunction = std::function<Result<Value>(const CallArgs&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace,
                    kFunction };

  Value() = default;  // Undefined with no hint
  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double f);
  static Value string(std::string s);
  static Value list(std::vector<Value> items, bool is_tuple = false);
  static Value dict(Dict d);
  static Value new_namespace(Dict d);
  static Value function(std::string name, NativeFunction fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  // Python numbers include bool (True + 1 == 2).
  bool is_number() const { return is_bool() || is_int() || is_float(); }
  bool is_integral() const { return is_bool() || is_int(); }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kList && is_tuple_; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return is_bool() ? (b_ ? 1 : 0) : i_; }
  double as_double() const { return is_float() ? f_ : static_cast<double>(as_int()); }
  const std::string& as_string() const { return s_; }  // string; undefined: its hint
  const std::vector<Value>& items() const;             // list / tuple
  const Dict& as_dict() const;                         // dict
  Dict& namespace_dict() const;                        // namespace (shared, mutable)
  const NativeFunction& as_function() const { return *fn_; }
  const std::string& function_name() const { return s_; }

  // Python truthiness.
  bool truthy() const;
  // str(value) as Jinja prints it ("None", "True", "1.0", "['a', 1]"; Undefined -> "").
  std::string str() const;
  // repr(value) (strings quoted), used inside printed containers.
  std::string repr() const;
  // Python type name for error messages ("dict object", "str object", ...).
  std::string type_name() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool is_tuple_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;  // string value, undefined hint or function name
  std::shared_ptr<const std::vector<Value>> list_;
  std::shared_ptr<Dict> dict_;  // dict (treated as const) or namespace (mutable)
  std::shared_ptr<const NativeFunction> fn_;
};

// Python == (1 == 1.0 == True, lists/dicts compared deeply, Undefined == Undefined).
bool values_equal(const Value& a, const Value& b);
// Python ordering for <, <=, >, >=: numbers, strings (code point order) and lists.
// Returns -1/0/1 or an error for unorderable types.
Result<int> values_compare(const Value& a, const Value& b);

}  // namespace moeopt::jinja
