// Jinja filters and tests (see jinja_builtins.h), following jinja2/filters.py and
// jinja2/tests.py. `tojson` is transformers' override (json.dumps with ensure_ascii=False
// by default, optional indent/separators/sort_keys), not jinja2's HTML-safe one.
// Not implemented (an error names them): batch, slice, groupby, truncate,
// wordwrap, urlize, xmlattr, filesizeformat, pprint, escape.
// Known difference: jinja2's select/reject/map are lazy generators, ours build lists, so
// `xs|selectattr('a', 'gt', 1)|first` fails here on a later element that would raise in
// jinja2 had it been reached (e.g. an undefined attribute), where jinja2 stops early.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "moeopt/tokenizer/jinja_builtins.h"
#include "moeopt/tokenizer/jinja_strings.h"

namespace moeopt::jinja {
namespace {

Status filter_error(const std::string& filter, const std::string& what) {
  return Status(ErrorCode::kInvalidArgument, fmt::format("filter '{}': {}", filter, what));
}

// Args after the first `skip` positional ones (for map/select passing extra arguments on).
CallArgs shift_args(const CallArgs& a, size_t skip) {
  CallArgs out;
  for (size_t i = skip; i < a.positional.size(); ++i) out.positional.push_back(a.positional[i]);
  out.keyword = a.keyword;
  return out;
}

// Dotted attribute path lookup used by map/selectattr/sort/join (`attribute='a.b'`).
Result<Value> lookup_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    if (numeric) {
      MOEOPT_ASSIGN_OR_RETURN(cur, get_item(cur, Value::integer(std::stoll(part))));
    } else {
      MOEOPT_ASSIGN_OR_RETURN(cur, get_item(cur, Value::string(part)));
    }
    if (dot == std::string::npos) return cur;
    if (cur.is_undefined()) return cur;
    start = dot + 1;
  }
}

// Sort/unique key: strings lowercased unless case-sensitive (jinja2's ignore_case).
Value fold_case(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::string(py_lower(v.as_string()));
  return v;
}

Result<Value> to_int(const Value& v, const Value* def_v, int64_t base) {
  Value def = def_v ? *def_v : Value::integer(0);
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.is_float()) {
    if (!std::isfinite(v.as_double())) return def;
    return Value::integer(static_cast<int64_t>(std::trunc(v.as_double())));
  }
  if (v.is_string()) {
    std::string s = py_strip(v.as_string(), std::nullopt, true, true);
    std::string digits;
    for (char c : s)
      if (c != '_') digits.push_back(c);
    if (!digits.empty()) {
      char* end = nullptr;
      errno = 0;
      long long x = std::strtoll(digits.c_str(), &end, static_cast<int>(base));
      if (errno == 0 && end && *end == 0) return Value::integer(x);
      // jinja2 then tries int(float(value)).
      double d = std::strtod(digits.c_str(), &end);
      if (end && *end == 0 && std::isfinite(d)) return Value::integer(static_cast<int64_t>(d));
    }
  }
  return def;
}

Result<Value> to_float(const Value& v, const Value* def_v) {
  Value def = def_v ? *def_v : Value::floating(0.0);
  if (v.is_number()) return Value::floating(v.as_double());
  if (v.is_string()) {
    std::string s = py_strip(v.as_string(), std::nullopt, true, true);
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == 0) return Value::floating(d);
  }
  return def;
}

Result<Value> round_value(const Value& v, const CallArgs& a) {
  const Value* prec_v = a.get(0, "precision");
  const Value* method_v = a.get(1, "method");
  int64_t prec = prec_v && prec_v->is_integral() ? prec_v->as_int() : 0;
  std::string method = method_v && method_v->is_string() ? method_v->as_string() : "common";
  if (!v.is_number()) return filter_error("round", "value must be a number");
  double x = v.as_double();
  double scale = std::pow(10.0, static_cast<double>(prec));
  if (method == "ceil") return Value::floating(std::ceil(x * scale) / scale);
  if (method == "floor") return Value::floating(std::floor(x * scale) / scale);
  if (method != "common") return filter_error("round", "method must be common, ceil or floor");
  // Python round(): correctly rounded, ties to even; printf does the same on the exact
  // binary value.
  char buf[512];
  if (prec >= 0 && prec < 300) {
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(prec), x);
    return Value::floating(std::strtod(buf, nullptr));
  }
  return Value::floating(std::nearbyint(x * scale) / scale);
}

Result<Value> indent_filter(const Value& v, const CallArgs& a) {
  const Value* width = a.get(0, "width");
  const Value* first = a.get(1, "first");
  const Value* blank = a.get(2, "blank");
  std::string unit = "    ";
  if (width) {
    if (width->is_string()) unit = width->as_string();
    else if (width->is_integral()) unit = std::string(static_cast<size_t>(std::max<int64_t>(0, width->as_int())), ' ');
  }
  MOEOPT_ASSIGN_OR_RETURN(Value lines_fn, get_attr(Value::string(v.str() + "\n"), "splitlines"));
  MOEOPT_ASSIGN_OR_RETURN(Value lines_v, lines_fn.as_function()(CallArgs{}));
  std::vector<std::string> lines;
  for (const auto& l : lines_v.items()) lines.push_back(l.as_string());
  std::string rv;
  if (blank && blank->truthy()) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) rv += "\n" + unit;
      rv += lines[i];
    }
  } else {
    if (!lines.empty()) rv = lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += "\n";
      if (!lines[i].empty()) rv += unit;
      rv += lines[i];
    }
  }
  if (first && first->truthy()) rv = unit + rv;
  return Value::string(rv);
}

// select/reject/selectattr/rejectattr.
Result<Value> select_filter(const std::string& name, const Value& v, const CallArgs& a) {
  bool by_attr = name == "selectattr" || name == "rejectattr";
  bool keep_when = name == "select" || name == "selectattr";
  MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(v));
  size_t pos = 0;
  std::string attr;
  if (by_attr) {
    if (a.positional.empty() || !a.positional[0].is_string())
      return filter_error(name, "needs an attribute name");
    attr = a.positional[0].as_string();
    pos = 1;
  }
  std::string test;
  if (a.positional.size() > pos) {
    if (!a.positional[pos].is_string()) return filter_error(name, "test name must be a string");
    test = a.positional[pos].as_string();
  }
  CallArgs test_args = shift_args(a, pos + 1);
  std::vector<Value> out;
  for (const auto& x : xs) {
    Value subject = x;
    if (by_attr) {
      MOEOPT_ASSIGN_OR_RETURN(subject, lookup_path(x, attr));
    }
    bool ok;
    if (test.empty()) {
      ok = subject.truthy();
    } else {
      MOEOPT_ASSIGN_OR_RETURN(ok, apply_test(test, subject, test_args));
    }
    if (ok == keep_when) out.push_back(x);
  }
  return Value::list(std::move(out));
}

Result<Value> map_filter(const Value& v, const CallArgs& a) {
  MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(v));
  std::vector<Value> out;
  if (const Value* attr = a.kwarg("attribute")) {
    if (!attr->is_string()) return filter_error("map", "attribute must be a string");
    const Value* def = a.kwarg("default");
    for (const auto& x : xs) {
      MOEOPT_ASSIGN_OR_RETURN(Value r, lookup_path(x, attr->as_string()));
      if (r.is_undefined() && def) r = *def;
      out.push_back(std::move(r));
    }
    return Value::list(std::move(out));
  }
  if (a.positional.empty() || !a.positional[0].is_string())
    return filter_error("map", "needs a filter name or attribute=");
  CallArgs rest = shift_args(a, 1);
  for (const auto& x : xs) {
    MOEOPT_ASSIGN_OR_RETURN(Value r, apply_filter(a.positional[0].as_string(), x, rest));
    out.push_back(std::move(r));
  }
  return Value::list(std::move(out));
}

Result<Value> sort_filter(const Value& v, const CallArgs& a) {
  const Value* rev = a.get(0, "reverse");
  const Value* cs = a.get(1, "case_sensitive");
  const Value* attr = a.get(2, "attribute");
  MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(v));
  std::vector<std::pair<Value, Value>> keyed;
  for (const auto& x : xs) {
    Value key = x;
    if (attr && attr->is_string()) {
      MOEOPT_ASSIGN_OR_RETURN(key, lookup_path(x, attr->as_string()));
    }
    keyed.emplace_back(fold_case(key, cs && cs->truthy()), x);
  }
  Status err;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& l, const auto& r) {
    auto c = values_compare(l.first, r.first);
    if (!c.ok()) {
      err = c.status();
      return false;
    }
    return *c < 0;
  });
  if (!err.ok()) return filter_error("sort", err.message());
  std::vector<Value> out;
  for (auto& [_, x] : keyed) out.push_back(std::move(x));
  if (rev && rev->truthy()) std::reverse(out.begin(), out.end());
  return Value::list(std::move(out));
}

Result<Value> tojson_filter(const Value& v, const CallArgs& a) {
  // transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
  JsonDumpOptions o;
  if (const Value* e = a.get(0, "ensure_ascii")) o.ensure_ascii = e->truthy();
  if (const Value* ind = a.get(1, "indent"); ind && !ind->is_none()) {
    o.has_indent = true;
    if (ind->is_string()) o.indent = ind->as_string();
    else if (ind->is_integral()) o.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, ind->as_int())), ' ');
    else return filter_error("tojson", "indent must be an integer or a string");
  }
  if (const Value* sep = a.get(2, "separators"); sep && !sep->is_none()) {
    if (!sep->is_list() || sep->items().size() != 2 || !sep->items()[0].is_string() ||
        !sep->items()[1].is_string())
      return filter_error("tojson", "separators must be a pair of strings");
    o.item_separator = sep->items()[0].as_string();
    o.key_separator = sep->items()[1].as_string();
  }
  if (const Value* sk = a.get(3, "sort_keys")) o.sort_keys = sk->truthy();
  MOEOPT_ASSIGN_OR_RETURN(std::string s, dump_json(v, o));
  return Value::string(std::move(s));
}

Result<Value> length_of(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return Value::integer(0);
    case Value::Kind::kString: return Value::integer(static_cast<int64_t>(utf8_length(v.as_string())));
    case Value::Kind::kList: return Value::integer(static_cast<int64_t>(v.items().size()));
    case Value::Kind::kDict: return Value::integer(static_cast<int64_t>(v.as_dict().entries.size()));
    default:
      return filter_error("length", fmt::format("object of type '{}' has no len()", v.type_name()));
  }
}

}  // namespace

Result<std::string> percent_format(const std::string& fmt, const Value& args) {
  std::vector<Value> positional;
  const Value* mapping = nullptr;
  if (args.is_tuple()) positional = args.items();
  else if (args.is_dict()) mapping = &args;
  else positional.push_back(args);
  size_t next = 0;
  bool used_mapping = false;
  auto fail = [](const std::string& m) { return Status(ErrorCode::kInvalidArgument, m); };
  std::string out;
  const size_t n = fmt.size();
  for (size_t i = 0; i < n; ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    if (++i >= n) return fail("incomplete format");
    if (fmt[i] == '%') {
      out.push_back('%');
      continue;
    }
    const Value* arg = nullptr;
    if (fmt[i] == '(') {
      size_t close = fmt.find(')', i);
      if (close == std::string::npos) return fail("incomplete format key");
      if (!mapping) return fail("format requires a mapping");
      std::string key = fmt.substr(i + 1, close - i - 1);
      arg = mapping->as_dict().find(key);
      if (!arg) return fail(fmt::format("KeyError: '{}'", key));
      used_mapping = true;
      i = close + 1;
    }
    std::string flags;
    while (i < n && std::string_view("-+ 0#").find(fmt[i]) != std::string_view::npos) flags += fmt[i++];
    int width = -1, precision = -1;
    if (i < n && fmt[i] == '*') return fail("'*' width in format is not supported");
    if (i < n && std::isdigit(static_cast<unsigned char>(fmt[i]))) {
      width = 0;
      while (i < n && std::isdigit(static_cast<unsigned char>(fmt[i]))) width = std::min(width * 10 + (fmt[i++] - '0'), 4096);
    }
    if (i < n && fmt[i] == '.') {
      ++i;
      precision = 0;
      while (i < n && std::isdigit(static_cast<unsigned char>(fmt[i]))) precision = std::min(precision * 10 + (fmt[i++] - '0'), 4096);
    }
    while (i < n && (fmt[i] == 'h' || fmt[i] == 'l' || fmt[i] == 'L')) ++i;
    if (i >= n) return fail("incomplete format");
    const char conv = fmt[i];
    if (!arg) {
      if (mapping) return fail("format requires a mapping key for every conversion");
      if (next >= positional.size()) return fail("not enough arguments for format string");
      arg = &positional[next++];
    }
    const bool left = flags.find('-') != std::string::npos;
    auto pad = [&](std::string s) {
      int64_t len = static_cast<int64_t>(utf8_length(s));
      if (width > len) {
        std::string fill(static_cast<size_t>(width - len), ' ');
        s = left ? s + fill : fill + s;
      }
      return s;
    };
    std::string cflags = flags;  // printf takes the same flag characters
    std::string spec = "%" + cflags + (width >= 0 ? std::to_string(width) : "") +
                       (precision >= 0 ? "." + std::to_string(precision) : "");
    char buf[8192];
    switch (conv) {
      case 's':
      case 'r':
      case 'a': {
        std::string s = conv == 's' ? arg->str() : arg->repr();
        if (precision >= 0) s = utf8_encode(utf8_decode(s).substr(0, static_cast<size_t>(precision)));
        out += pad(s);
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o': {
        if (!arg->is_number())
          return fail(fmt::format("%{} format: a real number is required, not {}", conv, arg->type_name()));
        long long v = arg->is_float() ? static_cast<long long>(std::trunc(arg->as_double())) : arg->as_int();
        char c = (conv == 'i' || conv == 'u') ? 'd' : conv;
        if (c == 'o' && flags.find('#') != std::string::npos) {
          // Python writes 0o17 where C writes 017.
          std::string f2 = spec;
          f2.erase(std::remove(f2.begin(), f2.end(), '#'), f2.end());
          std::snprintf(buf, sizeof(buf), (f2 + "llo").c_str(), v);
          std::string s(buf);
          size_t digit = s.find_first_not_of(" +-");
          s.insert(digit, "0o");
          out += s;
          break;
        }
        std::snprintf(buf, sizeof(buf), (spec + "ll" + c).c_str(), v);
        out += buf;
        break;
      }
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G': {
        if (!arg->is_number())
          return fail(fmt::format("%{} format: a real number is required, not {}", conv, arg->type_name()));
        std::snprintf(buf, sizeof(buf), (spec + conv).c_str(), arg->as_double());
        out += buf;
        break;
      }
      case 'c': {
        std::string s;
        if (arg->is_integral()) {
          int64_t cp = arg->as_int();
          if (cp < 0 || cp > 0x10FFFF) return fail("%c arg not in range(0x110000)");
          utf8_append(s, static_cast<char32_t>(cp));
        } else if (arg->is_string() && utf8_length(arg->as_string()) == 1) {
          s = arg->as_string();
        } else {
          return fail("%c requires an int or a single character");
        }
        out += pad(s);
        break;
      }
      default: return fail(fmt::format("unsupported format character '{}'", conv));
    }
  }
  if (!mapping && next < positional.size())
    return fail("not all arguments converted during string formatting");
  (void)used_mapping;
  return out;
}

Result<Value> apply_filter(const std::string& name, const Value& v, const CallArgs& a) {
  if (name == "tojson") return tojson_filter(v, a);
  if (name == "length" || name == "count") return length_of(v);
  if (name == "string") return Value::string(v.str());
  if (name == "safe" || name == "e" || name == "escape" || name == "forceescape") {
    // No autoescaping in chat templates; `escape` would HTML-escape, which none uses.
    if (name != "safe") return filter_error(name, "HTML escaping is not supported");
    return v;
  }
  if (name == "default" || name == "d") {
    const Value* def = a.get(0, "default_value");
    const Value* boolean = a.get(1, "boolean");
    bool use_default = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
    if (use_default) return def ? *def : Value::string("");
    return v;
  }
  if (name == "trim") {
    const Value* chars = a.get(0, "chars");
    std::optional<std::string> set;
    if (chars && chars->is_string()) set = chars->as_string();
    return Value::string(py_strip(v.str(), set, true, true));
  }
  if (name == "upper") return Value::string(py_upper(v.str()));
  if (name == "lower") return Value::string(py_lower(v.str()));
  if (name == "capitalize") return Value::string(py_capitalize(v.str()));
  if (name == "title") return Value::string(jinja_title_filter(v.str()));
  if (name == "replace") {
    const Value* o = a.get(0, "old");
    const Value* n = a.get(1, "new");
    const Value* c = a.get(2, "count");
    if (!o || !n) return filter_error(name, "needs old and new");
    int64_t count = c && c->is_integral() ? c->as_int() : -1;
    return Value::string(py_replace(v.str(), o->str(), n->str(), count));
  }
  if (name == "join") {
    const Value* sep = a.get(0, "d");
    const Value* attr = a.get(1, "attribute");
    MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(v));
    std::string out;
    for (size_t i = 0; i < xs.size(); ++i) {
      if (i && sep) out += sep->str();
      Value x = xs[i];
      if (attr && attr->is_string()) {
        MOEOPT_ASSIGN_OR_RETURN(x, lookup_path(x, attr->as_string()));
      }
      out += x.str();
    }
    return Value::string(std::move(out));
  }
  if (name == "first" || name == "last") {
    if (v.is_undefined())
      return v.as_string().empty() ? Value::undefined("No first item, sequence was empty.") : v;
    MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(v));
    if (xs.empty()) return Value::undefined(fmt::format("No {} item, sequence was empty.", name));
    return name == "first" ? xs.front() : xs.back();
  }
  if (name == "list") {
    MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(v));
    return Value::list(std::move(xs));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::list({});
    if (!v.is_dict()) return filter_error(name, "can only get item pairs from a mapping");
    std::vector<Value> out;
    for (const auto& [k, x] : v.as_dict().entries)
      out.push_back(Value::list({Value::string(k), x}, true));
    return Value::list(std::move(out));
  }
  if (name == "dictsort") {
    if (!v.is_dict()) return filter_error(name, "needs a mapping");
    const Value* cs = a.get(0, "case_sensitive");
    const Value* by = a.get(1, "by");
    const Value* rev = a.get(2, "reverse");
    bool by_value = by && by->is_string() && by->as_string() == "value";
    std::vector<std::pair<std::string, Value>> entries = v.as_dict().entries;
    Status err;
    std::stable_sort(entries.begin(), entries.end(), [&](const auto& l, const auto& r) {
      Value lk = by_value ? l.second : Value::string(l.first);
      Value rk = by_value ? r.second : Value::string(r.first);
      auto c = values_compare(fold_case(lk, cs && cs->truthy()), fold_case(rk, cs && cs->truthy()));
      if (!c.ok()) {
        err = c.status();
        return false;
      }
      return *c < 0;
    });
    if (!err.ok()) return filter_error(name, err.message());
    if (rev && rev->truthy()) std::reverse(entries.begin(), entries.end());
    std::vector<Value> out;
    for (auto& [k, x] : entries) out.push_back(Value::list({Value::string(k), x}, true));
    return Value::list(std::move(out));
  }
  if (name == "int") {
    const Value* base = a.get(1, "base");
    return to_int(v, a.get(0, "default"), base && base->is_integral() ? base->as_int() : 10);
  }
  if (name == "float") return to_float(v, a.get(0, "default"));
  if (name == "abs") {
    if (v.is_integral()) return Value::integer(std::llabs(v.as_int()));
    if (v.is_float()) return Value::floating(std::fabs(v.as_double()));
    return filter_error(name, "bad operand type");
  }
  if (name == "round") return round_value(v, a);
  if (name == "reverse") {
    if (v.is_string()) {
      std::u32string u = utf8_decode(v.as_string());
      std::reverse(u.begin(), u.end());
      return Value::string(utf8_encode(u));
    }
    MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(v));
    std::reverse(xs.begin(), xs.end());
    return Value::list(std::move(xs));
  }
  if (name == "unique") {
    const Value* cs = a.get(0, "case_sensitive");
    const Value* attr = a.get(1, "attribute");
    MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(v));
    std::vector<Value> out, seen;
    for (const auto& x : xs) {
      Value key = x;
      if (attr && attr->is_string()) {
        MOEOPT_ASSIGN_OR_RETURN(key, lookup_path(x, attr->as_string()));
      }
      key = fold_case(key, cs && cs->truthy());
      bool dup = std::any_of(seen.begin(), seen.end(),
                             [&](const Value& s) { return values_equal(s, key); });
      if (dup) continue;
      seen.push_back(key);
      out.push_back(x);
    }
    return Value::list(std::move(out));
  }
  if (name == "sort") return sort_filter(v, a);
  if (name == "map") return map_filter(v, a);
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr")
    return select_filter(name, v, a);
  if (name == "attr") {
    const Value* n = a.get(0, "name");
    if (!n || !n->is_string()) return filter_error(name, "needs an attribute name");
    // Python getattr only: a dict's keys are not attributes (only its methods are).
    const std::string& a_name = n->as_string();
    if (v.is_dict() && a_name != "get" && a_name != "items" && a_name != "keys" &&
        a_name != "values" && a_name != "copy")
      return Value::undefined(fmt::format("'dict object' has no attribute '{}'", a_name));
    return get_attr(v, a_name);
  }
  if (name == "indent") return indent_filter(v, a);
  if (name == "wordcount") {
    int64_t n = static_cast<int64_t>(py_split(v.str(), std::nullopt, -1, false).size());
    return Value::integer(n);
  }
  if (name == "sum" || name == "min" || name == "max") {
    MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(v));
    if (name == "sum") {
      Value acc = a.get(1, "start") ? *a.get(1, "start") : Value::integer(0);
      for (const auto& x : xs) {
        if (!x.is_number() || !acc.is_number()) return filter_error(name, "items must be numbers");
        acc = (x.is_float() || acc.is_float()) ? Value::floating(acc.as_double() + x.as_double())
                                               : Value::integer(acc.as_int() + x.as_int());
      }
      return acc;
    }
    if (xs.empty()) return Value::undefined(fmt::format("No aggregated item, sequence was empty."));
    Value best = xs[0];
    for (size_t i = 1; i < xs.size(); ++i) {
      MOEOPT_ASSIGN_OR_RETURN(int c, values_compare(fold_case(xs[i], false), fold_case(best, false)));
      if ((name == "min" && c < 0) || (name == "max" && c > 0)) best = xs[i];
    }
    return best;
  }
  if (name == "format") {
    // jinja2: str(value) % (kwargs or args)
    if (!a.positional.empty() && !a.keyword.empty())
      return filter_error(name, "can't handle positional and keyword arguments at the same time");
    Value args;
    if (!a.keyword.empty()) {
      Dict d;
      for (const auto& [k, x] : a.keyword) d.set(k, x);
      args = Value::dict(std::move(d));
    } else {
      args = Value::list(a.positional, /*is_tuple=*/true);
    }
    MOEOPT_ASSIGN_OR_RETURN(std::string s, percent_format(v.str(), args));
    return Value::string(std::move(s));
  }
  if (name == "center") {
    const Value* w = a.get(0, "width");
    int64_t width = w && w->is_integral() ? w->as_int() : 80;
    std::string s = v.str();
    int64_t len = static_cast<int64_t>(utf8_length(s));
    if (width <= len) return Value::string(s);
    // Python str.center: extra padding goes to the right when the total is odd... unless
    // the string length is odd; replicate CPython's formula.
    int64_t pad = width - len;
    int64_t left = pad / 2 + (pad & width & 1);
    return Value::string(std::string(static_cast<size_t>(left), ' ') + s +
                         std::string(static_cast<size_t>(pad - left), ' '));
  }
  return Status(ErrorCode::kInvalidArgument, fmt::format("no filter named '{}'", name));
}

bool test_exists(const std::string& name) {
  static const char* kTests[] = {
      "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number",
      "string", "mapping", "iterable", "sequence", "callable", "sameas", "equalto", "eq", "==",
      "ne", "!=", "lt", "<", "le", "<=", "gt", ">", "ge", ">=", "in", "odd", "even",
      "divisibleby", "lower", "upper", "escaped"};
  for (const char* t : kTests)
    if (name == t) return true;
  return false;
}

Result<bool> apply_test(const std::string& name, const Value& v, const CallArgs& a) {
  auto arg0 = [&]() -> Result<Value> {
    const Value* x = a.get(0, "other");
    if (!x) return Status(ErrorCode::kInvalidArgument, fmt::format("test '{}' needs an argument", name));
    return *x;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "integer") return v.is_int();  // jinja2: bool is not an integer here
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  // Undefined has __iter__, __len__ and __getitem__ in jinja2, so it passes both.
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "callable") return v.is_function();
  if (name == "escaped") return false;
  if (name == "sameas") {
    MOEOPT_ASSIGN_OR_RETURN(Value o, arg0());
    // Identity: singletons (None/True/False) and shared containers.
    if (v.kind() != o.kind()) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.is_bool()) return v.as_bool() == o.as_bool();
    if (v.is_list()) return &v.items() == &o.items();
    if (v.is_dict()) return &v.as_dict() == &o.as_dict();
    if (v.is_namespace()) return &v.namespace_dict() == &o.namespace_dict();
    return values_equal(v, o);
  }
  if (name == "equalto" || name == "eq" || name == "==") {
    MOEOPT_ASSIGN_OR_RETURN(Value o, arg0());
    return values_equal(v, o);
  }
  if (name == "ne" || name == "!=") {
    MOEOPT_ASSIGN_OR_RETURN(Value o, arg0());
    return !values_equal(v, o);
  }
  if (name == "lt" || name == "<" || name == "le" || name == "<=" || name == "gt" ||
      name == ">" || name == "ge" || name == ">=") {
    MOEOPT_ASSIGN_OR_RETURN(Value o, arg0());
    MOEOPT_ASSIGN_OR_RETURN(int c, values_compare(v, o));
    if (name == "lt" || name == "<") return c < 0;
    if (name == "le" || name == "<=") return c <= 0;
    if (name == "gt" || name == ">") return c > 0;
    return c >= 0;
  }
  if (name == "in") {
    const Value* seq = a.get(0, "seq");
    if (!seq) return Status(ErrorCode::kInvalidArgument, "test 'in' needs an argument");
    return contains(*seq, v);
  }
  if (name == "odd" || name == "even") {
    if (!v.is_integral()) return Status(ErrorCode::kInvalidArgument, fmt::format("test '{}' needs an integer", name));
    int64_t r = ((v.as_int() % 2) + 2) % 2;
    return name == "odd" ? r == 1 : r == 0;
  }
  if (name == "divisibleby") {
    const Value* n = a.get(0, "num");
    if (!n || !n->is_integral() || !v.is_integral() || n->as_int() == 0)
      return Status(ErrorCode::kInvalidArgument, "test 'divisibleby' needs non-zero integers");
    return v.as_int() % n->as_int() == 0;
  }
  if (name == "lower") return v.is_string() && py_lower(v.as_string()) == v.as_string();
  if (name == "upper") return v.is_string() && py_upper(v.as_string()) == v.as_string();
  return Status(ErrorCode::kInvalidArgument, fmt::format("no test named '{}'", name));
}

}  // namespace moeopt::jinja
