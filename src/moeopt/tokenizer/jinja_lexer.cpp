// Jinja lexer (see jinja_lexer.h). The structure follows jinja2's own lexer so that
// whitespace handling is byte-identical: the text before a tag is stripped according to
// the tag's sign and lstrip_blocks, the tag end consumes trailing whitespace ('-') or one
// newline (trim_blocks), and `line_starting` remembers whether the previous match ended
// a line (lstrip then applies even when the text before the tag has no newline).
#include "moeopt/tokenizer/jinja_lexer.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "moeopt/tokenizer/jinja_strings.h"

namespace moeopt::jinja {
namespace {

constexpr bool kTrimBlocks = true;
constexpr bool kLstripBlocks = true;

// Operators longest first, as jinja2 sorts them.
constexpr std::array<std::string_view, 27> kOperators = {
    "//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(",
    ")",  "{",  "}",  ">",  "<",  "=",  ".", ":", "|", ",", ";", "!"};

std::string normalize_source(std::string_view source) {
  // Newlines to "\n", then drop one trailing newline (keep_trailing_newline=False).
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    char c = source[i];
    if (c == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(c);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Length in bytes of the (Unicode) whitespace run starting at `pos`.
size_t whitespace_run(const std::string& s, size_t pos) {
  size_t p = pos;
  while (p < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[p]);
    if (c < 0x80) {
      if (!py_isspace(c)) break;
      ++p;
      continue;
    }
    // Multi-byte: decode one code point.
    size_t len = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : 2;
    std::u32string cp = utf8_decode(std::string_view(s).substr(p, len));
    if (cp.size() != 1 || !py_isspace(cp[0])) break;
    p += len;
  }
  return p - pos;
}

std::string rstrip_whitespace(std::string_view text) {
  return py_strip(text, std::nullopt, false, true);
}

bool all_whitespace(std::string_view text) {
  if (text.empty()) return false;  // jinja2: \s+ must match at least one character
  for (char32_t c : utf8_decode(text))
    if (!py_isspace(c)) return false;
  return true;
}

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  Result<std::vector<Token>> run() {
    size_t pos = 0;
    bool line_starting = true;
    const size_t n = src_.size();
    while (pos < n) {
      size_t idx = find_tag_start(pos);
      if (idx == std::string::npos) {
        emit(TokenType::kData, src_.substr(pos), pos);
        break;
      }
      std::string text = src_.substr(pos, idx - pos);
      char kind = src_[idx + 1];
      size_t p = idx + 2;
      char sign = 0;
      if (p < n && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];

      size_t raw_body = std::string::npos;
      if (kind == '%') raw_body = match_raw_begin(p);

      text = strip_before_tag(std::move(text), sign, kind != '{', line_starting);
      if (!text.empty()) emit(TokenType::kData, text, pos);

      if (raw_body != std::string::npos) {
        MOEOPT_ASSIGN_OR_RETURN(pos, lex_raw(raw_body, idx));
        line_starting = src_[pos - 1] == '\n';
        continue;
      }
      if (kind == '#') {
        MOEOPT_ASSIGN_OR_RETURN(pos, lex_comment(p, idx));
        line_starting = src_[pos - 1] == '\n';
        continue;
      }
      emit(kind == '{' ? TokenType::kVarBegin : TokenType::kBlockBegin, "", idx);
      MOEOPT_ASSIGN_OR_RETURN(pos, lex_tag(p, kind == '%', idx));
      line_starting = src_[pos - 1] == '\n';
    }
    emit(TokenType::kEof, "", n);
    return std::move(tokens_);
  }

 private:
  size_t find_tag_start(size_t pos) const {
    while (true) {
      size_t k = src_.find('{', pos);
      if (k == std::string::npos || k + 1 >= src_.size()) return std::string::npos;
      char c = src_[k + 1];
      if (c == '{' || c == '%' || c == '#') return k;
      pos = k + 1;
    }
  }

  // `{%[-+]?\s*raw\s*(-%}\s*|%})`: returns the offset where the raw body starts.
  size_t match_raw_begin(size_t p) const {
    p += whitespace_run(src_, p);
    if (src_.compare(p, 3, "raw") != 0) return std::string::npos;
    p += 3;
    p += whitespace_run(src_, p);
    if (src_.compare(p, 3, "-%}") == 0) return p + 3 + whitespace_run(src_, p + 3);
    if (src_.compare(p, 2, "%}") == 0) return p + 2;
    return std::string::npos;
  }

  std::string strip_before_tag(std::string text, char sign, bool lstrip_kind,
                               bool line_starting) const {
    if (sign == '-') return rstrip_whitespace(text);
    if (sign != '+' && kLstripBlocks && lstrip_kind) {
      size_t nl = text.rfind('\n');
      size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting) && all_whitespace(std::string_view(text).substr(l_pos)))
        text.resize(l_pos);
    }
    return text;
  }

  // Consumes a tag end at `p` for block/comment ends ("%}" or "#}"); returns the new
  // position, or npos when `p` does not start an end.
  size_t match_block_like_end(size_t p, char closer) const {
    auto at = [&](size_t q, char a, char b) {
      return q + 1 < src_.size() && src_[q] == a && src_[q + 1] == b;
    };
    if (p < src_.size() && src_[p] == '+' && at(p + 1, closer, '}')) return p + 3;
    if (p < src_.size() && src_[p] == '-' && at(p + 1, closer, '}'))
      return p + 3 + whitespace_run(src_, p + 3);
    if (at(p, closer, '}')) {
      size_t q = p + 2;
      if (kTrimBlocks && q < src_.size() && src_[q] == '\n') ++q;
      return q;
    }
    return std::string::npos;
  }

  Result<size_t> lex_comment(size_t p, size_t start) {
    // First position where "+#}", "-#}" or "#}" matches.
    for (size_t q = p; q < src_.size(); ++q) {
      size_t end = match_block_like_end(q, '#');
      if (end != std::string::npos) return end;
    }
    return error_at(start, "missing end of comment tag");
  }

  Result<size_t> lex_raw(size_t body_start, size_t start) {
    for (size_t q = body_start; q + 1 < src_.size(); ++q) {
      if (src_[q] != '{' || src_[q + 1] != '%') continue;
      size_t p = q + 2;
      char sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      p += whitespace_run(src_, p);
      if (src_.compare(p, 6, "endraw") != 0) continue;
      p += 6;
      p += whitespace_run(src_, p);
      size_t end = match_block_like_end(p, '%');
      if (end == std::string::npos) continue;
      bool line_starting = src_[body_start - 1] == '\n';
      std::string body = strip_before_tag(src_.substr(body_start, q - body_start), sign, true,
                                          line_starting);
      if (!body.empty()) emit(TokenType::kData, body, body_start);
      return end;
    }
    return error_at(start, "missing end of raw directive");
  }

  Result<size_t> lex_tag(size_t p, bool block, size_t start) {
    std::vector<char> balance;
    const size_t n = src_.size();
    while (true) {
      if (p >= n)
        return error_at(start, block ? "unexpected end of template: '%}' missing"
                                     : "unexpected end of template: '}}' missing");
      if (balance.empty()) {
        if (block) {
          size_t end = match_block_like_end(p, '%');
          if (end != std::string::npos) {
            emit(TokenType::kBlockEnd, "", p);
            return end;
          }
        } else if (src_.compare(p, 3, "-}}") == 0) {
          emit(TokenType::kVarEnd, "", p);
          return p + 3 + whitespace_run(src_, p + 3);
        } else if (src_.compare(p, 2, "}}") == 0) {
          emit(TokenType::kVarEnd, "", p);
          return p + 2;
        }
      }
      char c = src_[p];
      if (is_ascii_space(c)) {
        ++p;
        continue;
      }
      if (size_t ws = whitespace_run(src_, p); ws > 0) {
        p += ws;
        continue;
      }
      if (c >= '0' && c <= '9') {
        p = lex_number(p);
        continue;
      }
      if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        size_t q = p + 1;
        while (q < n && (src_[q] == '_' || std::isalnum(static_cast<unsigned char>(src_[q]))))
          ++q;
        emit(TokenType::kName, src_.substr(p, q - p), p);
        p = q;
        continue;
      }
      if (c == '\'' || c == '"') {
        MOEOPT_ASSIGN_OR_RETURN(p, lex_string(p));
        continue;
      }
      bool matched = false;
      for (std::string_view op : kOperators) {
        if (op == "!") continue;  // '!' alone is not an operator; reported below
        if (src_.compare(p, op.size(), op) != 0) continue;
        if (op == "(" || op == "[" || op == "{") {
          balance.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
        } else if (op == ")" || op == "]" || op == "}") {
          if (balance.empty()) return error_at(p, fmt::format("unexpected '{}'", op));
          if (balance.back() != op[0])
            return error_at(p, fmt::format("unexpected '{}', expected '{}'", op, balance.back()));
          balance.pop_back();
        }
        emit(TokenType::kOperator, std::string(op), p);
        p += op.size();
        matched = true;
        break;
      }
      if (!matched) {
        unsigned char uc = static_cast<unsigned char>(c);
        return error_at(p, uc >= 0x20 && uc < 0x7F ? fmt::format("unexpected character '{}'", c)
                                                   : fmt::format("unexpected byte 0x{:02x}", uc));
      }
    }
  }

  // Integer or float with jinja2's rules: '_' separators, a float needs a fractional part
  // or an exponent, and digits right after '.' (attribute access `x.0`) stay integers.
  size_t lex_number(size_t p) {
    const size_t n = src_.size();
    auto digits = [&](size_t q) {
      size_t s = q;
      while (q < n && (std::isdigit(static_cast<unsigned char>(src_[q])) ||
                       (src_[q] == '_' && q > s && q + 1 < n &&
                        std::isdigit(static_cast<unsigned char>(src_[q + 1])))))
        ++q;
      return q;
    };
    size_t q = digits(p);
    bool is_float = false;
    bool after_dot = p > 0 && src_[p - 1] == '.';
    if (!after_dot) {
      if (q + 1 < n && src_[q] == '.' && std::isdigit(static_cast<unsigned char>(src_[q + 1]))) {
        q = digits(q + 1);
        is_float = true;
      }
      if (q < n && (src_[q] == 'e' || src_[q] == 'E')) {
        size_t r = q + 1;
        if (r < n && (src_[r] == '+' || src_[r] == '-')) ++r;
        if (r < n && std::isdigit(static_cast<unsigned char>(src_[r]))) {
          q = digits(r);
          is_float = true;
        }
      }
    }
    std::string text;
    for (size_t i = p; i < q; ++i)
      if (src_[i] != '_') text.push_back(src_[i]);
    emit(is_float ? TokenType::kFloat : TokenType::kInteger, text, p);
    return q;
  }

  // Quoted string with Python escapes (jinja2 decodes them with "unicode-escape").
  Result<size_t> lex_string(size_t p) {
    const char quote = src_[p];
    const size_t n = src_.size();
    std::string out;
    size_t q = p + 1;
    while (true) {
      if (q >= n) return error_at(p, "unterminated string literal");
      char c = src_[q];
      if (c == quote) break;
      if (c != '\\') {
        out.push_back(c);
        ++q;
        continue;
      }
      if (q + 1 >= n) return error_at(p, "unterminated string literal");
      char e = src_[q + 1];
      q += 2;
      switch (e) {
        case '\n': break;  // line continuation
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'v': out.push_back('\v'); break;
        case 'x':
        case 'u':
        case 'U': {
          size_t len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (q + len > n) return error_at(q - 2, "truncated \\x/\\u escape in string literal");
          uint32_t cp = 0;
          for (size_t i = 0; i < len; ++i) {
            char h = src_[q + i];
            int d = std::isdigit(static_cast<unsigned char>(h)) ? h - '0'
                    : (h >= 'a' && h <= 'f')                    ? h - 'a' + 10
                    : (h >= 'A' && h <= 'F')                    ? h - 'A' + 10
                                                                : -1;
            if (d < 0) return error_at(q - 2, "invalid \\x/\\u escape in string literal");
            cp = cp * 16 + static_cast<uint32_t>(d);
          }
          if (cp > 0x10FFFF) return error_at(q - 2, "escape out of Unicode range");
          utf8_append(out, cp);
          q += len;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int i = 0; i < 2 && q < n && src_[q] >= '0' && src_[q] <= '7'; ++i)
              cp = cp * 8 + static_cast<uint32_t>(src_[q++] - '0');
            utf8_append(out, cp);
          } else if (e == 'N') {
            return error_at(q - 2, "\\N{...} escapes are not supported");
          } else {
            // Unknown escapes keep the backslash, as in Python.
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    emit(TokenType::kString, out, p);
    return q + 1;
  }

  void emit(TokenType t, std::string value, size_t offset) {
    auto [line, col] = line_col(offset);
    tokens_.push_back(Token{t, std::move(value), line, col});
  }

  std::pair<int, int> line_col(size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    size_t line = static_cast<size_t>(it - line_starts_.begin());
    size_t col = offset - line_starts_[line - 1] + 1;
    return {static_cast<int>(line), static_cast<int>(col)};
  }

  Status error_at(size_t offset, const std::string& what) const {
    auto [line, col] = line_col(offset);
    return make_error(ErrorCode::kInvalidArgument, "template syntax error at line {} column {}: {}",
                      line, col, what);
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

Result<std::vector<Token>> tokenize(std::string_view source) {
  Lexer lexer(normalize_source(source));
  return lexer.run();
}

}  // namespace moeopt::jinja
