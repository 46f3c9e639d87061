// Pre-tokenizer implementations (see pre_tokenizer.h).
//
// Every splitting pre-tokenizer works the same way as in Hugging Face `tokenizers`: find the
// matches of a pattern, cut the piece into alternating non-match / match segments that
// cover it, then combine them according to the split behaviour.
#include "moeopt/tokenizer/pre_tokenizer.h"

#include <utf8proc.h>

#include "moeopt/tokenizer/byte_level.h"
#include "moeopt/tokenizer/json_fields.h"
#include "moeopt/tokenizer/normalizer.h"
#include "moeopt/tokenizer/regex.h"
#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {
namespace {

using json_fields::json;
using Span = std::pair<size_t, size_t>;

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Result<Behavior> parse_behavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return Behavior::kRemoved;
  if (s == "Isolated") return Behavior::kIsolated;
  if (s == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::kMergedWithNext;
  if (s == "Contiguous") return Behavior::kContiguous;
  return make_error(ErrorCode::kUnsupported, "{}: unknown split behavior '{}'", where, s);
}

// Turns match spans into segments covering [0, n) tagged with whether they matched.
std::vector<std::pair<Span, bool>> to_segments(const std::vector<Span>& matches, size_t n, bool invert) {
  std::vector<std::pair<Span, bool>> seg;
  seg.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (auto [s, e] : matches) {
    if (prev != s) seg.push_back({{prev, s}, invert});
    seg.push_back({{s, e}, !invert});
    prev = e;
  }
  if (prev != n) seg.push_back({{prev, n}, invert});
  return seg;
}

// Applies `behavior` to the segments of `piece` and appends the non-empty results to `out`.
void split_piece(const Piece& piece, const std::vector<std::pair<Span, bool>>& seg, Behavior behavior,
                 std::vector<Piece>& out) {
  std::vector<Span> spans;
  spans.reserve(seg.size());
  switch (behavior) {
    case Behavior::kIsolated:
      for (auto& [sp, m] : seg) spans.push_back(sp);
      break;
    case Behavior::kRemoved:
      for (auto& [sp, m] : seg)
        if (!m) spans.push_back(sp);
      break;
    case Behavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (auto& [sp, m] : seg) {
        if (m && !prev_match && !spans.empty()) spans.back().second = sp.second;
        else spans.push_back(sp);
        prev_match = m;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool prev_match = false;
      for (size_t k = seg.size(); k-- > 0;) {
        auto& [sp, m] = seg[k];
        if (m && !prev_match && !spans.empty()) spans.back().first = sp.first;
        else spans.push_back(sp);
        prev_match = m;
      }
      std::reverse(spans.begin(), spans.end());
      break;
    }
    case Behavior::kContiguous: {
      int prev = -1;
      for (auto& [sp, m] : seg) {
        if (prev == int(m) && !spans.empty()) spans.back().second = sp.second;
        else spans.push_back(sp);
        prev = int(m);
      }
      break;
    }
  }
  for (auto [s, e] : spans) {
    if (s == e) continue;
    out.push_back(Piece{piece.text.substr(s, e - s), piece.at_origin && s == 0});
  }
}

// Spans of every single character satisfying `pred`.
template <typename Pred>
std::vector<Span> char_matches(const std::string& text, Pred pred) {
  std::vector<Span> m;
  size_t i = 0;
  while (i < text.size()) {
    size_t at = i;
    char32_t c = next_code_point(text, i);
    if (pred(c)) m.push_back({at, i});
  }
  return m;
}

// Rust's char::is_numeric (Nd, Nl, No) from utf8proc's categories (Unicode 15.0; the reference
// has Unicode 16, so digits of scripts added in 16.0 are not split out by Digits).
bool is_numeric(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

class SplitRegex final : public PreTokenizer {
 public:
  SplitRegex(Regex re, Behavior b, bool invert) : re_(std::move(re)), behavior_(b), invert_(invert) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    std::vector<Span> m;
    for (const Piece& p : pieces) {
      m.clear();
      MOEOPT_RETURN_IF_ERROR(re_.find_all(p.text, m));
      split_piece(p, to_segments(m, p.text.size(), invert_), behavior_, out);
    }
    pieces.swap(out);
    return {};
  }

 private:
  Regex re_;
  Behavior behavior_;
  bool invert_;
};

// The GPT-2 pattern ByteLevel uses when use_regex is set.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPre final : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, std::unique_ptr<SplitRegex> split)
      : add_prefix_space_(add_prefix_space), split_(std::move(split)) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_)
      for (Piece& p : pieces)
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, " ");
    if (split_) MOEOPT_RETURN_IF_ERROR(split_->pre_tokenize(pieces));
    const auto& alpha = ByteLevelAlphabet::get();
    for (Piece& p : pieces) p.text = alpha.encode(p.text);
    return {};
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitRegex> split_;
};

class Digits final : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const Piece& p : pieces)
      split_piece(p, to_segments(char_matches(p.text, is_numeric), p.text.size(), false),
                  individual_ ? Behavior::kIsolated : Behavior::kContiguous, out);
    pieces.swap(out);
    return {};
  }

 private:
  bool individual_;
};

class WhitespaceSplit final : public PreTokenizer {
 public:
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const Piece& p : pieces)
      split_piece(p, to_segments(char_matches(p.text, is_unicode_whitespace), p.text.size(), false),
                  Behavior::kRemoved, out);
    pieces.swap(out);
    return {};
  }
};

enum class PrependScheme { kAlways, kFirst, kNever };

class Metaspace final : public PreTokenizer {
 public:
  Metaspace(std::string replacement, char32_t rep_cp, PrependScheme scheme, bool split)
      : rep_(std::move(replacement)), rep_cp_(rep_cp), scheme_(scheme), split_(split) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (Piece& p : pieces) {
      std::string t;
      t.reserve(p.text.size() + rep_.size());
      for (char c : p.text) {
        if (c == ' ') t += rep_;
        else t += c;
      }
      const bool starts = t.compare(0, rep_.size(), rep_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_origin)))
        t.insert(0, rep_);
      Piece q{std::move(t), p.at_origin};
      if (split_) {
        split_piece(q, to_segments(char_matches(q.text, [&](char32_t c) { return c == rep_cp_; }), q.text.size(), false),
                    Behavior::kMergedWithNext, out);
      } else if (!q.text.empty()) {
        out.push_back(std::move(q));
      }
    }
    pieces.swap(out);
    return {};
  }

 private:
  std::string rep_;
  char32_t rep_cp_;
  PrependScheme scheme_;
  bool split_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) MOEOPT_RETURN_IF_ERROR(p->pre_tokenize(pieces));
    return {};
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

Result<std::unique_ptr<PreTokenizer>> parse_pre_tokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return std::unique_ptr<PreTokenizer>();
  std::string type;
  MOEOPT_RETURN_IF_ERROR(json_fields::get_type(j, where, &type));
  const std::string here = where + " " + type;
  if (type == "Split") {
    auto it = j.find("pattern");
    if (it == j.end()) return json_fields::missing(here, "pattern");
    MOEOPT_ASSIGN_OR_RETURN(Regex re, parse_pattern(*it, here));
    std::string behavior = "Isolated";
    bool invert = false;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_string(j, "behavior", here, &behavior));
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "invert", here, &invert));
    MOEOPT_ASSIGN_OR_RETURN(Behavior b, parse_behavior(behavior, here));
    return std::unique_ptr<PreTokenizer>(new SplitRegex(std::move(re), b, invert));
  }
  if (type == "ByteLevel") {
    bool add_prefix_space = true, use_regex = true;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "add_prefix_space", here, &add_prefix_space));
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "use_regex", here, &use_regex));
    std::unique_ptr<SplitRegex> split;
    if (use_regex) {
      MOEOPT_ASSIGN_OR_RETURN(Regex re, Regex::compile(kGpt2Pattern, here));
      split = std::make_unique<SplitRegex>(std::move(re), Behavior::kIsolated, false);
    }
    return std::unique_ptr<PreTokenizer>(new ByteLevelPre(add_prefix_space, std::move(split)));
  }
  if (type == "Digits") {
    bool individual = false;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "individual_digits", here, &individual));
    return std::unique_ptr<PreTokenizer>(new Digits(individual));
  }
  if (type == "WhitespaceSplit") return std::unique_ptr<PreTokenizer>(new WhitespaceSplit());
  if (type == "Whitespace") {
    // Rust regex \w+|[^\w\s]+ (kept, the rest removed). \w is spelled out as Rust's Unicode
    // word class (alphabetic, marks, decimal digits, connector punctuation, joiners).
    MOEOPT_ASSIGN_OR_RETURN(
        Regex re, Regex::compile(R"([\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}]+|[^\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}\s]+)",
                                 here));
    return std::unique_ptr<PreTokenizer>(new SplitRegex(std::move(re), Behavior::kRemoved, true));
  }
  if (type == "Metaspace") {
    std::string rep = "\xE2\x96\x81";  // U+2581
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_string(j, "replacement", here, &rep));
    size_t i = 0;
    if (rep.empty() || !is_valid_utf8(rep)) return json_fields::wrong_type(here, "replacement", "one character");
    char32_t cp = next_code_point(rep, i);
    if (i != rep.size()) return json_fields::wrong_type(here, "replacement", "one character");
    PrependScheme scheme = PrependScheme::kAlways;
    bool add_prefix_space = true;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "add_prefix_space", here, &add_prefix_space));
    if (!add_prefix_space) scheme = PrependScheme::kNever;
    std::string s;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_string(j, "prepend_scheme", here, &s));
    if (s == "always") scheme = PrependScheme::kAlways;
    else if (s == "first") scheme = PrependScheme::kFirst;
    else if (s == "never") scheme = PrependScheme::kNever;
    else if (!s.empty()) return make_error(ErrorCode::kUnsupported, "{}: unknown prepend_scheme '{}'", here, s);
    bool split = true;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "split", here, &split));
    return std::unique_ptr<PreTokenizer>(new Metaspace(rep, cp, scheme, split));
  }
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) return json_fields::wrong_type(here, "pretokenizers", "an array");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t k = 0; k < it->size(); ++k) {
      MOEOPT_ASSIGN_OR_RETURN(auto part, parse_pre_tokenizer((*it)[k], fmt::format("{}[{}]", here, k)));
      if (part) parts.push_back(std::move(part));
    }
    return std::unique_ptr<PreTokenizer>(new Sequence(std::move(parts)));
  }
  return make_error(ErrorCode::kUnsupported, "{}: unknown pre_tokenizer type '{}'", where, type);
}

}  // namespace moeopt::tokenizer
