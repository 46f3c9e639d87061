// Normalizer implementations (see normalizer.h).
#include "moeopt/tokenizer/normalizer.h"

#include <cstdlib>
#include <vector>

#include <utf8proc.h>

#include "moeopt/tokenizer/json_fields.h"
#include "moeopt/tokenizer/regex.h"
#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {
namespace {

using json_fields::json;

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// Unicode normalization forms through utf8proc. ASCII text is invariant under all four forms,
// which skips the library call for most English and code. Partial: Debian's utf8proc 2.8 has
// Unicode 15.0 tables while the reference's Rust crates have Unicode 16, so characters
// assigned or changed since may normalize differently under NFKC/NFD/NFKD (NFC, the form the
// vendored Qwen3 tokenizer uses, matched on every corpus and random-code-point string).
class UnicodeForm final : public Normalizer {
 public:
  UnicodeForm(int options, std::string name) : options_(options), name_(std::move(name)) {}
  Status normalize(std::string& text) const override {
    if (text.empty() || is_ascii(text)) return {};
    utf8proc_uint8_t* out = nullptr;
    utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                      static_cast<utf8proc_ssize_t>(text.size()), &out,
                                      static_cast<utf8proc_option_t>(options_));
    if (n < 0) {
      return make_error(ErrorCode::kInvalidArgument, "normalizer {}: {}", name_, utf8proc_errmsg(n));
    }
    text.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
    return {};
  }

 private:
  int options_;
  std::string name_;
};

// Lowercase as Hugging Face does it: Rust's char::to_lowercase on every character, i.e. the
// simple mapping except where Unicode's full mapping is longer, which for lowercasing is only
// U+0130 (İ -> "i" + U+0307). No context rules (capital sigma always becomes σ).
class Lowercase final : public Normalizer {
 public:
  Status normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
      const char32_t c = next_code_point(text, i);
      if (c == 0x130) out += "i\xCC\x87";
      else append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
    text.swap(out);
    return {};
  }
};

// Strip: removes leading and/or trailing whitespace (Rust char::is_whitespace).
class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  Status normalize(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      size_t i = 0;
      while (i < text.size()) {
        size_t at = i;
        if (!is_unicode_whitespace(next_code_point(text, i))) {
          i = at;
          break;
        }
      }
      begin = i;
    }
    if (right_) {
      // Walk forward remembering where the trailing whitespace run starts.
      size_t i = begin, run_start = text.size();
      bool in_run = false;
      while (i < text.size()) {
        size_t at = i;
        bool ws = is_unicode_whitespace(next_code_point(text, i));
        if (ws && !in_run) run_start = at;
        in_run = ws;
      }
      end = in_run ? run_start : text.size();
    }
    text = text.substr(begin, end - begin);
    return {};
  }

 private:
  bool left_, right_;
};

// Prepend: adds a prefix to non-empty text (SentencePiece's leading "▁").
class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  Status normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
    return {};
  }

 private:
  std::string prefix_;
};

// Replace: every non-overlapping match of the pattern becomes `content`.
class Replace final : public Normalizer {
 public:
  Replace(Regex re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  Status normalize(std::string& text) const override {
    std::vector<std::pair<size_t, size_t>> m;
    MOEOPT_RETURN_IF_ERROR(re_.find_all(text, m));
    if (m.empty()) return {};
    std::string out;
    out.reserve(text.size() + m.size() * content_.size());
    size_t prev = 0;
    for (auto [s, e] : m) {
      out.append(text, prev, s - prev);
      out += content_;
      prev = e;
    }
    out.append(text, prev, std::string::npos);
    text.swap(out);
    return {};
  }

 private:
  Regex re_;
  std::string content_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  Status normalize(std::string& text) const override {
    for (const auto& p : parts_) MOEOPT_RETURN_IF_ERROR(p->normalize(text));
    return {};
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

// Parses a {"String": s} or {"Regex": r} pattern object (Replace and Split use it).
Result<Regex> parse_pattern(const json& j, const std::string& where) {
  if (!j.is_object()) return make_error(ErrorCode::kCorruptData, "{}: 'pattern' must be an object", where);
  if (auto it = j.find("String"); it != j.end() && it->is_string())
    return Regex::literal(it->get<std::string>(), where);
  if (auto it = j.find("Regex"); it != j.end() && it->is_string())
    return Regex::compile(it->get<std::string>(), where);
  return make_error(ErrorCode::kCorruptData, "{}: 'pattern' needs a 'String' or 'Regex' string", where);
}

Result<std::unique_ptr<Normalizer>> parse_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return std::unique_ptr<Normalizer>();
  std::string type;
  MOEOPT_RETURN_IF_ERROR(json_fields::get_type(j, where, &type));
  const std::string here = where + " " + type;
  if (type == "NFC") return std::unique_ptr<Normalizer>(new UnicodeForm(UTF8PROC_STABLE | UTF8PROC_COMPOSE, type));
  if (type == "NFD") return std::unique_ptr<Normalizer>(new UnicodeForm(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE, type));
  if (type == "NFKC")
    return std::unique_ptr<Normalizer>(new UnicodeForm(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT, type));
  if (type == "NFKD")
    return std::unique_ptr<Normalizer>(new UnicodeForm(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, type));
  if (type == "Lowercase") return std::unique_ptr<Normalizer>(new Lowercase());
  if (type == "Strip") {
    bool left = true, right = true;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "strip_left", here, &left));
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "strip_right", here, &right));
    return std::unique_ptr<Normalizer>(new Strip(left, right));
  }
  if (type == "Prepend") {
    std::string prefix;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_string(j, "prepend", here, &prefix));
    return std::unique_ptr<Normalizer>(new Prepend(std::move(prefix)));
  }
  if (type == "Replace") {
    std::string content;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_string(j, "content", here, &content));
    auto it = j.find("pattern");
    if (it == j.end()) return json_fields::missing(here, "pattern");
    MOEOPT_ASSIGN_OR_RETURN(Regex re, parse_pattern(*it, here));
    return std::unique_ptr<Normalizer>(new Replace(std::move(re), std::move(content)));
  }
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) return json_fields::wrong_type(here, "normalizers", "an array");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t k = 0; k < it->size(); ++k) {
      MOEOPT_ASSIGN_OR_RETURN(auto part, parse_normalizer((*it)[k], fmt::format("{}[{}]", here, k)));
      if (part) parts.push_back(std::move(part));
    }
    return std::unique_ptr<Normalizer>(new Sequence(std::move(parts)));
  }
  return make_error(ErrorCode::kUnsupported, "{}: unknown normalizer type '{}'", where, type);
}

}  // namespace moeopt::tokenizer
