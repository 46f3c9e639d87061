// JSON data <-> Jinja values, and transformers' `tojson` (Python json.dumps) output.
//
// json.dumps layout: without indent, items are separated by ", " and keys by ": "; with an
// indent, each item goes on its own line, the separator becomes "," and empty containers
// stay "[]"/"{}". Floats print as Python's repr; with ensure_ascii=False only '"', '\\'
// and control characters are escaped (\n, \r, \t, \b, \f, else \u00XX).
#include <algorithm>
#include <cmath>

#include "moeopt/tokenizer/jinja_builtins.h"
#include "moeopt/tokenizer/jinja_strings.h"

namespace moeopt::jinja {

Value from_json(const nlohmann::ordered_json& j, int depth) {
  if (j.is_structured() && depth >= kMaxFromJsonDepth) return Value::none();
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::floating(static_cast<double>(u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value::floating(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      d.entries.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) d.set(it.key(), from_json(it.value(), depth + 1));
      return Value::dict(std::move(d));
    }
    default: return Value::none();  // binary / discarded: not produced by the JSON parser
  }
}

namespace {

void append_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out.push_back('"');
  auto escape_unit = [&](uint32_t u) { out += fmt::format("\\u{:04x}", u); };
  if (!ensure_ascii) {
    for (char ch : s) {
      unsigned char c = static_cast<unsigned char>(ch);
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20) {
            escape_unit(c);
          } else {
            out.push_back(ch);
          }
      }
    }
  } else {
    for (char32_t c : utf8_decode(s)) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20 || c > 0x7E) {
            if (c > 0xFFFF) {  // UTF-16 surrogate pair, as Python writes it
              uint32_t v = static_cast<uint32_t>(c) - 0x10000;
              escape_unit(0xD800 + (v >> 10));
              escape_unit(0xDC00 + (v & 0x3FF));
            } else {
              escape_unit(static_cast<uint32_t>(c));
            }
          } else {
            out.push_back(static_cast<char>(c));
          }
      }
    }
  }
  out.push_back('"');
}

Status dump(const Value& v, const JsonDumpOptions& o, int depth, std::string& out) {
  if (depth > 512) return make_error(ErrorCode::kInvalidArgument, "tojson: nesting too deep");
  auto newline_indent = [&](int level) {
    out.push_back('\n');
    for (int i = 0; i < level; ++i) out += o.indent;
  };
  switch (v.kind()) {
    case Value::Kind::kNone: out += "null"; return Status::ok_status();
    case Value::Kind::kBool: out += v.as_bool() ? "true" : "false"; return Status::ok_status();
    case Value::Kind::kInt: out += std::to_string(v.as_int()); return Status::ok_status();
    case Value::Kind::kFloat: {
      double d = v.as_double();
      if (std::isnan(d)) out += "NaN";
      else if (std::isinf(d)) out += d > 0 ? "Infinity" : "-Infinity";
      else out += py_repr_float(d);
      return Status::ok_status();
    }
    case Value::Kind::kString: append_json_string(out, v.as_string(), o.ensure_ascii);
      return Status::ok_status();
    case Value::Kind::kList: {
      const auto& xs = v.items();
      if (xs.empty()) {
        out += "[]";
        return Status::ok_status();
      }
      out.push_back('[');
      for (size_t i = 0; i < xs.size(); ++i) {
        if (i) out += *o.item_separator;
        if (o.has_indent) newline_indent(depth + 1);
        MOEOPT_RETURN_IF_ERROR(dump(xs[i], o, depth + 1, out));
      }
      if (o.has_indent) newline_indent(depth);
      out.push_back(']');
      return Status::ok_status();
    }
    case Value::Kind::kDict: {
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& e : v.as_dict().entries) entries.push_back(&e);
      if (entries.empty()) {
        out += "{}";
        return Status::ok_status();
      }
      if (o.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      out.push_back('{');
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out += *o.item_separator;
        if (o.has_indent) newline_indent(depth + 1);
        append_json_string(out, entries[i]->first, o.ensure_ascii);
        out += o.key_separator;
        MOEOPT_RETURN_IF_ERROR(dump(entries[i]->second, o, depth + 1, out));
      }
      if (o.has_indent) newline_indent(depth);
      out.push_back('}');
      return Status::ok_status();
    }
    case Value::Kind::kUndefined:
      return make_error(ErrorCode::kInvalidArgument, "tojson: Object of type Undefined is not "
                        "JSON serializable{}", v.as_string().empty() ? "" : " (" + v.as_string() + ")");
    case Value::Kind::kNamespace:
    case Value::Kind::kFunction:
      return make_error(ErrorCode::kInvalidArgument, "tojson: {} is not JSON serializable",
                        v.type_name());
  }
  return Status::ok_status();
}

}  // namespace

Result<std::string> dump_json(const Value& v, const JsonDumpOptions& opts) {
  JsonDumpOptions o = opts;
  if (!o.item_separator) o.item_separator = o.has_indent ? "," : ", ";
  std::string out;
  MOEOPT_RETURN_IF_ERROR(dump(v, o, 0, out));
  return out;
}

}  // namespace moeopt::jinja
