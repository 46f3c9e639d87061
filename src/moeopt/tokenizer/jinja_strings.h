// Python `str` semantics on UTF-8 strings, for the Jinja interpreter.
//
// Jinja templates run on Python strings: lengths, indices, slices and find() count code
// points, strip()/split() treat every Unicode whitespace character as whitespace, and
// upper()/lower() are Unicode-aware. These helpers give the interpreter the same results
// on the UTF-8 std::string values it carries. Invalid UTF-8 bytes decode as U+FFFD (the
// strings come from parsed JSON, which is already valid UTF-8).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moeopt::jinja {

std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view s);
void utf8_append(std::string& out, char32_t cp);
size_t utf8_length(std::string_view s);
bool is_ascii(std::string_view s);

// str.isspace() for one code point (the set Python's \s and str.strip() use).
bool py_isspace(char32_t c);

// str.strip/lstrip/rstrip; `chars` empty-optional means whitespace.
std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                     bool right);
// str.split(sep, maxsplit) / str.rsplit; no sep means runs of whitespace.
std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep,
                                  int64_t maxsplit, bool from_right);
// str.replace(old, new, count); count < 0 replaces all.
std::string py_replace(std::string_view s, std::string_view old_s, std::string_view new_s,
                       int64_t count);
// str.find / rfind: code point index or -1.
int64_t py_find(std::string_view s, std::string_view sub, bool from_right);
int64_t py_count(std::string_view s, std::string_view sub);
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_capitalize(std::string_view s);  // str.capitalize()
std::string py_title(std::string_view s);       // str.title()
// Jinja's `title` filter (words split at whitespace, '-', '(', '{', '[', '<').
std::string jinja_title_filter(std::string_view s);

// Python's repr() of a str: quotes chosen as Python does, escapes for control characters.
std::string py_repr_string(std::string_view s);
// Python's repr() of a float (shortest round trip; 'e' notation outside [1e-4, 1e16)).
std::string py_repr_float(double v);

}  // namespace moeopt::jinja
