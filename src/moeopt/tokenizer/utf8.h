// UTF-8 helpers for the tokenizer: validation with the offset of the first bad byte, code
// point iteration, encoding, and Rust's `String::from_utf8_lossy` (which Hugging Face
// decoders use, so our decode must replace invalid bytes exactly as it does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moeopt::tokenizer {

// Returns the byte offset of the first invalid UTF-8 sequence in `s`, or npos when valid.
// Rejects overlong forms, surrogates (U+D800..DFFF) and code points above U+10FFFF.
size_t find_invalid_utf8(std::string_view s);
inline bool is_valid_utf8(std::string_view s) { return find_invalid_utf8(s) == std::string_view::npos; }

// Length in bytes of the well-formed sequence starting at s[i], or 0 when s[i..] does not
// start with one. `cp` receives the code point.
size_t utf8_sequence(std::string_view s, size_t i, char32_t* cp);

// Decodes the character at s[i] of a string known to be valid UTF-8; advances i.
char32_t next_code_point(std::string_view s, size_t& i);

void append_utf8(std::string& out, char32_t cp);

// Rust's from_utf8_lossy: every maximal invalid subpart (Unicode "substitution of maximal
// subparts", W3C/WHATWG practice) becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// The replacement character U+FFFD as UTF-8.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Rust's char::is_whitespace (Unicode White_Space property).
bool is_unicode_whitespace(char32_t c);

}  // namespace moeopt::tokenizer
