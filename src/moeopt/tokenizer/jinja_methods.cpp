// Attribute and item access, slices, iteration and the Python methods templates call on
// strings, dicts and lists (see jinja_builtins.h).
//
// Only read-only methods exist: the sandbox transformers uses (ImmutableSandboxedEnvironment)
// refuses list.append, dict.update and the like, so asking for them is an error here too.
#include <algorithm>

#include "moeopt/tokenizer/jinja_builtins.h"
#include "moeopt/tokenizer/jinja_strings.h"

#include <utf8proc.h>

namespace moeopt::jinja {
namespace {

Status type_error(const std::string& what) {
  return Status(ErrorCode::kInvalidArgument, what);
}

Result<std::string> string_arg(const CallArgs& a, size_t i, std::string_view name,
                               const char* method) {
  const Value* v = a.get(i, name);
  if (!v || !v->is_string())
    return type_error(fmt::format("{}() argument '{}' must be a string", method, name));
  return v->as_string();
}

// Optional string argument where None means "not given" (strip(None), split(None)).
Result<std::optional<std::string>> opt_string_arg(const CallArgs& a, size_t i,
                                                  std::string_view name, const char* method) {
  const Value* v = a.get(i, name);
  if (!v || v->is_none()) return std::optional<std::string>();
  if (!v->is_string())
    return type_error(fmt::format("{}() argument '{}' must be a string or None", method, name));
  return std::optional<std::string>(v->as_string());
}

Result<int64_t> int_arg(const CallArgs& a, size_t i, std::string_view name, int64_t def,
                        const char* method) {
  const Value* v = a.get(i, name);
  if (!v) return def;
  if (!v->is_integral())
    return type_error(fmt::format("{}() argument '{}' must be an integer", method, name));
  return v->as_int();
}

Value string_list(std::vector<std::string> parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (auto& p : parts) items.push_back(Value::string(std::move(p)));
  return Value::list(std::move(items));
}

bool all_code_points(const std::string& s, bool (*pred)(char32_t)) {
  if (s.empty()) return false;
  for (char32_t c : utf8_decode(s))
    if (!pred(c)) return false;
  return true;
}

bool cp_isdigit(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND;
}
bool cp_isalpha(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}
bool cp_isalnum(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}
bool cp_isspace(char32_t c) { return py_isspace(c); }

// Bound method of a str.
Result<Value> string_method(const std::string& self, const std::string& name) {
  using Fn = std::function<Result<Value>(const CallArgs&)>;
  Fn fn;
  if (name == "startswith" || name == "endswith") {
    bool starts = name == "startswith";
    fn = [self, starts, name](const CallArgs& a) -> Result<Value> {
      const Value* p = a.get(0, "prefix");
      if (!p) return type_error(name + "() takes at least 1 argument");
      std::vector<std::string> options;
      if (p->is_string()) {
        options.push_back(p->as_string());
      } else if (p->is_tuple()) {
        for (const auto& x : p->items()) {
          if (!x.is_string()) return type_error(name + "() tuple items must be strings");
          options.push_back(x.as_string());
        }
      } else {
        return type_error(name + "() first arg must be str or a tuple of str");
      }
      for (const auto& o : options) {
        if (o.size() > self.size()) continue;
        if (starts ? self.compare(0, o.size(), o) == 0
                   : self.compare(self.size() - o.size(), o.size(), o) == 0)
          return Value::boolean(true);
      }
      return Value::boolean(false);
    };
  } else if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool l = name != "rstrip", r = name != "lstrip";
    fn = [self, l, r, name](const CallArgs& a) -> Result<Value> {
      MOEOPT_ASSIGN_OR_RETURN(auto chars, opt_string_arg(a, 0, "chars", name.c_str()));
      return Value::string(py_strip(self, chars, l, r));
    };
  } else if (name == "split" || name == "rsplit") {
    bool right = name == "rsplit";
    fn = [self, right, name](const CallArgs& a) -> Result<Value> {
      MOEOPT_ASSIGN_OR_RETURN(auto sep, opt_string_arg(a, 0, "sep", name.c_str()));
      MOEOPT_ASSIGN_OR_RETURN(int64_t maxsplit, int_arg(a, 1, "maxsplit", -1, name.c_str()));
      if (sep && sep->empty()) return type_error("ValueError: empty separator");
      return string_list(py_split(self, sep, maxsplit, right));
    };
  } else if (name == "splitlines") {
    fn = [self](const CallArgs&) -> Result<Value> {
      std::vector<std::string> lines;
      std::u32string u = utf8_decode(self);
      std::u32string curline;
      for (size_t i = 0; i < u.size(); ++i) {
        char32_t c = u[i];
        bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
                   c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
        if (!brk) {
          curline.push_back(c);
          continue;
        }
        if (c == '\r' && i + 1 < u.size() && u[i + 1] == '\n') ++i;
        lines.push_back(utf8_encode(curline));
        curline.clear();
      }
      if (!curline.empty()) lines.push_back(utf8_encode(curline));
      return string_list(std::move(lines));
    };
  } else if (name == "replace") {
    fn = [self](const CallArgs& a) -> Result<Value> {
      MOEOPT_ASSIGN_OR_RETURN(std::string o, string_arg(a, 0, "old", "replace"));
      MOEOPT_ASSIGN_OR_RETURN(std::string n, string_arg(a, 1, "new", "replace"));
      MOEOPT_ASSIGN_OR_RETURN(int64_t count, int_arg(a, 2, "count", -1, "replace"));
      return Value::string(py_replace(self, o, n, count));
    };
  } else if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    fn = [self, name](const CallArgs&) -> Result<Value> {
      if (name == "upper") return Value::string(py_upper(self));
      if (name == "lower") return Value::string(py_lower(self));
      if (name == "title") return Value::string(py_title(self));
      return Value::string(py_capitalize(self));
    };
  } else if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    fn = [self, name](const CallArgs& a) -> Result<Value> {
      MOEOPT_ASSIGN_OR_RETURN(std::string sub, string_arg(a, 0, "sub", name.c_str()));
      int64_t k = py_find(self, sub, name[0] == 'r');
      if (k < 0 && name.find("index") != std::string::npos)
        return type_error("ValueError: substring not found");
      return Value::integer(k);
    };
  } else if (name == "count") {
    fn = [self](const CallArgs& a) -> Result<Value> {
      MOEOPT_ASSIGN_OR_RETURN(std::string sub, string_arg(a, 0, "sub", "count"));
      return Value::integer(py_count(self, sub));
    };
  } else if (name == "removeprefix" || name == "removesuffix") {
    bool prefix = name == "removeprefix";
    fn = [self, prefix, name](const CallArgs& a) -> Result<Value> {
      MOEOPT_ASSIGN_OR_RETURN(std::string x, string_arg(a, 0, "prefix", name.c_str()));
      if (x.size() <= self.size()) {
        if (prefix && self.compare(0, x.size(), x) == 0) return Value::string(self.substr(x.size()));
        if (!prefix && self.compare(self.size() - x.size(), x.size(), x) == 0)
          return Value::string(self.substr(0, self.size() - x.size()));
      }
      return Value::string(self);
    };
  } else if (name == "join") {
    fn = [self](const CallArgs& a) -> Result<Value> {
      const Value* it = a.get(0, "iterable");
      if (!it) return type_error("join() takes exactly one argument");
      MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(*it));
      std::string out;
      for (size_t i = 0; i < xs.size(); ++i) {
        if (!xs[i].is_string())
          return type_error(fmt::format("sequence item {}: expected str instance, {} found", i,
                                        xs[i].type_name()));
        if (i) out += self;
        out += xs[i].as_string();
      }
      return Value::string(std::move(out));
    };
  } else if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
             name == "isupper" || name == "islower") {
    fn = [self, name](const CallArgs&) -> Result<Value> {
      if (name == "isdigit") return Value::boolean(all_code_points(self, cp_isdigit));
      if (name == "isalpha") return Value::boolean(all_code_points(self, cp_isalpha));
      if (name == "isalnum") return Value::boolean(all_code_points(self, cp_isalnum));
      if (name == "isspace") return Value::boolean(all_code_points(self, cp_isspace));
      // isupper/islower: at least one cased character and none of the other case.
      bool want_upper = name == "isupper", any = false;
      for (char32_t c : utf8_decode(self)) {
        auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
        if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT) {
          if (!want_upper) return Value::boolean(false);
          any = true;
        } else if (cat == UTF8PROC_CATEGORY_LL) {
          if (want_upper) return Value::boolean(false);
          any = true;
        }
      }
      return Value::boolean(any);
    };
  } else {
    return Value::undefined(fmt::format("'str object' has no attribute '{}'", name));
  }
  return Value::function("str." + name, std::move(fn));
}

Result<Value> dict_method(const Value& self, const std::string& name, bool* found) {
  *found = true;
  if (name == "get") {
    return Value::function("dict.get", [self](const CallArgs& a) -> Result<Value> {
      const Value* k = a.get(0, "key");
      if (!k) return type_error("get() takes at least 1 argument");
      const Value* d = a.get(1, "default");
      if (k->is_string())
        if (const Value* v = self.as_dict().find(k->as_string())) return *v;
      return d ? *d : Value::none();
    });
  }
  if (name == "items" || name == "keys" || name == "values") {
    return Value::function("dict." + name, [self, name](const CallArgs&) -> Result<Value> {
      std::vector<Value> out;
      for (const auto& [k, v] : self.as_dict().entries) {
        if (name == "items") out.push_back(Value::list({Value::string(k), v}, true));
        else if (name == "keys") out.push_back(Value::string(k));
        else out.push_back(v);
      }
      return Value::list(std::move(out));
    });
  }
  if (name == "copy") {
    return Value::function("dict.copy", [self](const CallArgs&) -> Result<Value> {
      return Value::dict(self.as_dict());
    });
  }
  if (name == "clear" || name == "pop" || name == "popitem" || name == "setdefault" ||
      name == "update" || name == "fromkeys") {
    return type_error(fmt::format("access to dict.{} is unsafe in a chat template", name));
  }
  *found = false;
  return Value();
}

Result<Value> list_method(const Value& self, const std::string& name, bool* found) {
  *found = true;
  if (name == "index" || name == "count") {
    return Value::function("list." + name, [self, name](const CallArgs& a) -> Result<Value> {
      const Value* x = a.get(0, "value");
      if (!x) return type_error(name + "() takes exactly one argument");
      int64_t n = 0;
      const auto& xs = self.items();
      for (size_t i = 0; i < xs.size(); ++i) {
        if (!values_equal(xs[i], *x)) continue;
        if (name == "index") return Value::integer(static_cast<int64_t>(i));
        ++n;
      }
      if (name == "index") return type_error("ValueError: value is not in list");
      return Value::integer(n);
    });
  }
  if (name == "append" || name == "extend" || name == "insert" || name == "pop" ||
      name == "remove" || name == "reverse" || name == "sort" || name == "clear") {
    return type_error(fmt::format("access to list.{} is unsafe in a chat template", name));
  }
  *found = false;
  return Value();
}

// Python index normalisation for a sequence of length n; false when out of range.
bool normalize_index(int64_t& i, size_t n) {
  if (i < 0) i += static_cast<int64_t>(n);
  return i >= 0 && i < static_cast<int64_t>(n);
}

Status undefined_error(const Value& v, const std::string& fallback) {
  return type_error(v.as_string().empty() ? fallback : v.as_string());
}

}  // namespace

Result<Value> get_attr(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      return undefined_error(obj, fmt::format("undefined value has no attribute '{}'", name));
    case Value::Kind::kString: return string_method(obj.as_string(), name);
    case Value::Kind::kDict: {
      bool found = false;
      MOEOPT_ASSIGN_OR_RETURN(Value m, dict_method(obj, name, &found));
      if (found) return m;
      if (const Value* v = obj.as_dict().find(name)) return *v;
      return Value::undefined(fmt::format("'dict object' has no attribute '{}'", name));
    }
    case Value::Kind::kNamespace: {
      if (const Value* v = obj.namespace_dict().find(name)) return *v;
      return Value::undefined(fmt::format("'Namespace object' has no attribute '{}'", name));
    }
    case Value::Kind::kList: {
      bool found = false;
      MOEOPT_ASSIGN_OR_RETURN(Value m, list_method(obj, name, &found));
      if (found) return m;
      break;
    }
    default: break;
  }
  std::string tn = obj.is_none() ? "'None'" : "'" + obj.type_name() + "'";
  return Value::undefined(fmt::format("{} has no attribute '{}'", tn, name));
}

Result<Value> get_item(const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      return undefined_error(obj, "undefined value is not subscriptable");
    case Value::Kind::kDict:
      if (key.is_string()) {
        if (const Value* v = obj.as_dict().find(key.as_string())) return *v;
      }
      break;
    case Value::Kind::kNamespace:
      if (key.is_string()) {
        if (const Value* v = obj.namespace_dict().find(key.as_string())) return *v;
      }
      break;
    case Value::Kind::kList:
      if (key.is_integral()) {
        int64_t i = key.as_int();
        if (normalize_index(i, obj.items().size())) return obj.items()[static_cast<size_t>(i)];
        return Value::undefined(fmt::format("'{}' has no element {}", obj.type_name(), key.as_int()));
      }
      break;
    case Value::Kind::kString:
      if (key.is_integral()) {
        const std::string& s = obj.as_string();
        int64_t i = key.as_int();
        if (is_ascii(s)) {
          if (normalize_index(i, s.size())) return Value::string(s.substr(static_cast<size_t>(i), 1));
        } else {
          std::u32string u = utf8_decode(s);
          if (normalize_index(i, u.size()))
            return Value::string(utf8_encode(std::u32string(1, u[static_cast<size_t>(i)])));
        }
        return Value::undefined(fmt::format("'str object' has no element {}", key.as_int()));
      }
      break;
    default: break;
  }
  // jinja2: a failed item lookup with a string key falls back to the attribute.
  if (key.is_string()) return get_attr(obj, key.as_string());
  return Value::undefined(fmt::format("'{}' has no element {}", obj.type_name(), key.repr()));
}

Result<Value> get_slice(const Value& obj, const Value* start_v, const Value* stop_v,
                        const Value* step_v) {
  auto as_opt_int = [](const Value* v, const char* what) -> Result<std::optional<int64_t>> {
    if (!v || v->is_none()) return std::optional<int64_t>();
    if (!v->is_integral())
      return type_error(fmt::format("slice {} must be an integer or None", what));
    return std::optional<int64_t>(v->as_int());
  };
  MOEOPT_ASSIGN_OR_RETURN(auto start, as_opt_int(start_v, "start"));
  MOEOPT_ASSIGN_OR_RETURN(auto stop, as_opt_int(stop_v, "stop"));
  MOEOPT_ASSIGN_OR_RETURN(auto step_o, as_opt_int(step_v, "step"));
  int64_t step = step_o.value_or(1);
  if (step == 0) return type_error("ValueError: slice step cannot be zero");

  // Python's PySlice_AdjustIndices.
  auto indices = [&](int64_t n) {
    std::vector<int64_t> idx;
    int64_t lo, hi;
    if (step > 0) {
      lo = start ? *start : 0;
      hi = stop ? *stop : n;
      if (lo < 0) lo = std::max<int64_t>(lo + n, 0);
      if (hi < 0) hi = std::max<int64_t>(hi + n, 0);
      lo = std::min(lo, n);
      hi = std::min(hi, n);
      for (int64_t i = lo; i < hi; i += step) idx.push_back(i);
    } else {
      lo = start ? *start : n - 1;
      hi = stop ? *stop : -1 - n;  // "before the beginning"
      if (lo < 0) lo = std::max<int64_t>(lo + n, -1);
      else lo = std::min(lo, n - 1);
      if (stop) {
        if (hi < 0) hi = std::max<int64_t>(hi + n, -1);
        else hi = std::min(hi, n - 1);
      } else {
        hi = -1;
      }
      for (int64_t i = lo; i > hi; i += step) idx.push_back(i);
    }
    return idx;
  };

  if (obj.is_list()) {
    const auto& xs = obj.items();
    std::vector<Value> out;
    for (int64_t i : indices(static_cast<int64_t>(xs.size())))
      out.push_back(xs[static_cast<size_t>(i)]);
    return Value::list(std::move(out), obj.is_tuple());
  }
  if (obj.is_string()) {
    std::u32string u = utf8_decode(obj.as_string());
    std::u32string out;
    for (int64_t i : indices(static_cast<int64_t>(u.size()))) out.push_back(u[static_cast<size_t>(i)]);
    return Value::string(utf8_encode(out));
  }
  if (obj.is_undefined()) return undefined_error(obj, "undefined value is not subscriptable");
  return type_error(fmt::format("'{}' is not subscriptable", obj.type_name()));
}

Result<std::vector<Value>> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return std::vector<Value>{};
    case Value::Kind::kList: return v.items();
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& [k, _] : v.as_dict().entries) keys.push_back(Value::string(k));
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      for (char32_t c : utf8_decode(v.as_string()))
        chars.push_back(Value::string(utf8_encode(std::u32string(1, c))));
      return chars;
    }
    default:
      return type_error(fmt::format("'{}' is not iterable",
                                    v.is_none() ? std::string("NoneType") : v.type_name()));
  }
}

Result<bool> contains(const Value& container, const Value& needle) {
  switch (container.kind()) {
    case Value::Kind::kUndefined: return false;
    case Value::Kind::kString:
      if (!needle.is_string())
        return type_error(fmt::format("'in <string>' requires string as left operand, not {}",
                                      needle.type_name()));
      return container.as_string().find(needle.as_string()) != std::string::npos;
    case Value::Kind::kList:
      for (const auto& x : container.items())
        if (values_equal(x, needle)) return true;
      return false;
    case Value::Kind::kDict:
      return needle.is_string() && container.as_dict().find(needle.as_string()) != nullptr;
    case Value::Kind::kNamespace:
      return needle.is_string() && container.namespace_dict().find(needle.as_string()) != nullptr;
    default:
      return type_error(fmt::format("argument of type '{}' is not iterable",
                                    container.is_none() ? std::string("NoneType")
                                                        : container.type_name()));
  }
}

}  // namespace moeopt::jinja
