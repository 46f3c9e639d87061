// PCRE2 wrapper and Oniguruma -> PCRE2 pattern translation (see regex.h).
#include "moeopt/tokenizer/regex.h"

#include <span>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "moeopt/tokenizer/unicode_supplement.h"
#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {

// What Oniguruma's \s matches for UTF-8 input: U+0009..U+000D, U+0085 and the separators
// (Zs, Zl, Zp). PCRE2's \s under UCP also matches U+180E (MONGOLIAN VOWEL SEPARATOR, a
// format character since Unicode 6.3), so \s and \S are spelled out as explicit sets.
static constexpr std::string_view kOnigSpaceSet = "\\t-\\r\\x{85}\\p{Z}";

// Members to add to \p{X} for the classes whose tables are older in PCRE2 than in the
// reference (see unicode_supplement.h); empty for other properties.
static std::string supplement_for(char cls) {
  namespace us = unicode_supplement;
  std::span<const us::Range> ranges;
  switch (cls) {
    case 'L': ranges = us::kL; break;
    case 'N': ranges = us::kN; break;
    case 'P': ranges = us::kP; break;
    case 'S': ranges = us::kS; break;
    case 'M': ranges = us::kM; break;
    default: return {};
  }
  std::string out;
  for (const auto& r : ranges) {
    out += fmt::format("\\x{{{:X}}}", r.lo);
    if (r.hi != r.lo) out += fmt::format("-\\x{{{:X}}}", r.hi);
  }
  return out;
}

Result<std::string> translate_oniguruma(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\') {
      if (i + 1 >= p.size())
        return make_error(ErrorCode::kCorruptData, "regex '{}': trailing backslash", std::string(p));
      const char e = p[i + 1];
      ++i;
      if (e == 's') {
        // Translation 1: \s -> [\t-\r\x{85}\p{Z}] (inside a class: its members).
        if (in_class) out += kOnigSpaceSet;
        else out += "[" + std::string(kOnigSpaceSet) + "]";
      } else if (e == 'S') {
        // Translation 2: \S -> [^\t-\r\x{85}\p{Z}]. A negated escape cannot be spliced into
        // an enclosing class; no known tokenizer needs that.
        if (in_class)
          return make_error(ErrorCode::kUnsupported,
                            "regex '{}': \\S inside a character class is not supported", std::string(p));
        out += "[^" + std::string(kOnigSpaceSet) + "]";
      } else if (e == 'p' && ((i + 3 < p.size() && p[i + 1] == '{' && p[i + 3] == '}') || (i + 1 < p.size() && p[i + 1] != '{'))) {
        // Translation 3: one-letter general categories \p{L} / \pL (also N, P, S, M) get the
        // code points newer Unicode versions added (unicode_supplement.h): PCRE2 10.42 has
        // Unicode 14 tables, the reference Unicode 16.
        const bool braced = p[i + 1] == '{';
        const char cls = braced ? p[i + 2] : p[i + 1];
        i += braced ? 3 : 1;
        const std::string extra = supplement_for(cls);
        const std::string base = std::string("\\p{") + cls + "}";
        if (extra.empty() || in_class) out += base + extra;
        else out += "[" + base + extra + "]";
      } else {
        // Everything else (\p{Lu} and other properties, \P{..}, \x{..}, \r, \n, \t, escaped
        // punctuation, \d, \w) has the same meaning in PCRE2 with UCP: copy it.
        out += '\\';
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') {
        out += '^';
        ++i;
      }
      if (i + 1 < p.size() && p[i + 1] == ']') {
        out += "\\]";
        ++i;
      }
      continue;
    }
    if (in_class && c == '[') {
      // Oniguruma nested sets / POSIX brackets: Oniguruma and PCRE2 disagree on nesting.
      if (i + 1 < p.size() && p[i + 1] == ':') {
        out += c;  // POSIX bracket [:alpha:] means the same in both
        continue;
      }
      return make_error(ErrorCode::kUnsupported, "regex '{}': nested character classes are not supported",
                        std::string(p));
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  if (in_class) return make_error(ErrorCode::kCorruptData, "regex '{}': unterminated character class", std::string(p));
  return out;
}

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() {
    if (code) pcre2_code_free(code);
  }
};

namespace {

// Per-thread match state: one ovector pair is enough (we only need the whole match), and a
// JIT stack larger than PCRE2's 32 KiB default so long whitespace runs with look-ahead
// cannot fail with a stack-limit error.
struct ThreadMatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* ctx = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  ThreadMatchState() {
    data = pcre2_match_data_create(1, nullptr);
    ctx = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    if (ctx && jit_stack) pcre2_jit_stack_assign(ctx, nullptr, jit_stack);
  }
  ~ThreadMatchState() {
    if (data) pcre2_match_data_free(data);
    if (ctx) pcre2_match_context_free(ctx);
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
  }
};

ThreadMatchState& thread_state() {
  thread_local ThreadMatchState state;
  return state;
}

Result<std::shared_ptr<Regex::Code>> compile_pcre2(const std::string& pattern, uint32_t flags,
                                                   const std::string& where) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   flags, &err, &err_off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return make_error(ErrorCode::kCorruptData, "{}: regex '{}' does not compile at offset {}: {}", where, pattern,
                      static_cast<size_t>(err_off), reinterpret_cast<const char*>(msg));
  }
  auto holder = std::make_shared<Regex::Code>();
  holder->code = code;
  // JIT is a speed-up only: where it is unavailable, pcre2_match interprets the pattern.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return holder;
}

}  // namespace

Result<Regex> Regex::compile(std::string_view oniguruma_pattern, const std::string& where) {
  auto translated = translate_oniguruma(oniguruma_pattern);
  if (!translated.ok()) return translated.status().with_context(where);
  Regex r;
  r.pattern_ = std::move(translated).value();
  MOEOPT_ASSIGN_OR_RETURN(r.code_, compile_pcre2(r.pattern_, PCRE2_UTF | PCRE2_UCP, where));
  return r;
}

Result<Regex> Regex::literal(std::string_view text, const std::string& where) {
  Regex r;
  r.pattern_ = std::string(text);
    // PCRE2 refuses UCP together with LITERAL; a literal needs no character classes anyway.
  MOEOPT_ASSIGN_OR_RETURN(r.code_, compile_pcre2(r.pattern_, PCRE2_UTF | PCRE2_LITERAL, where));
  return r;
}

Status Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  ThreadMatchState& st = thread_state();
  if (!st.data || !st.ctx) return make_error(ErrorCode::kResourceExhausted, "regex: out of memory");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    int rc = pcre2_match(code_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, st.data, st.ctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      return make_error(ErrorCode::kInternal, "regex '{}': match failed: {}", pattern_,
                        reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    const size_t s = ov[0], e = ov[1];
    out.emplace_back(s, e);
    if (e > s) {
      pos = e;
    } else {
      // Empty match: step over one character so the scan always advances.
      if (e >= text.size()) break;
      size_t next = e;
      next_code_point(text, next);
      pos = next;
    }
  }
  return {};
}

}  // namespace moeopt::tokenizer
