// Checked access to tokenizer.json fields. nlohmann::json throws on a type mismatch; the
// tokenizer layer never lets an exception escape, so every read goes through these helpers,
// which return a one-line error naming the component and the field instead.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "moeopt/core/status.h"

namespace moeopt::tokenizer::json_fields {

using nlohmann::json;

inline Status missing(const std::string& where, const char* key) {
  return make_error(ErrorCode::kCorruptData, "{}: missing field '{}'", where, key);
}

inline Status wrong_type(const std::string& where, const char* key, const char* want) {
  return make_error(ErrorCode::kCorruptData, "{}: field '{}' must be {}", where, key, want);
}

// Required string field.
inline Status get_string(const json& j, const char* key, const std::string& where, std::string* out) {
  auto it = j.find(key);
  if (it == j.end()) return missing(where, key);
  if (!it->is_string()) return wrong_type(where, key, "a string");
  *out = it->get<std::string>();
  return {};
}

// Optional string field: a missing key or null leaves `out` unchanged.
inline Status get_opt_string(const json& j, const char* key, const std::string& where, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_string()) return wrong_type(where, key, "a string");
  *out = it->get<std::string>();
  return {};
}

inline Status get_opt_bool(const json& j, const char* key, const std::string& where, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_boolean()) return wrong_type(where, key, "a boolean");
  *out = it->get<bool>();
  return {};
}

inline Status get_opt_uint(const json& j, const char* key, const std::string& where, uint64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_number_unsigned()) return wrong_type(where, key, "a non-negative integer");
  *out = it->get<uint64_t>();
  return {};
}

// Reads the "type" tag of a component object.
inline Status get_type(const json& j, const std::string& where, std::string* out) {
  if (!j.is_object()) return make_error(ErrorCode::kCorruptData, "{}: must be an object", where);
  return get_string(j, "type", where, out);
}

}  // namespace moeopt::tokenizer::json_fields
