// Decoder implementations (see decoder.h).
#include "moeopt/tokenizer/decoder.h"

#include "moeopt/tokenizer/byte_level.h"
#include "moeopt/tokenizer/json_fields.h"
#include "moeopt/tokenizer/normalizer.h"
#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {

using json_fields::json;

bool parse_byte_token(const std::string& t, unsigned char* byte) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return false;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(t[3]), lo = hex(t[4]);
  if (hi < 0 || lo < 0) return false;
  *byte = static_cast<unsigned char>(hi * 16 + lo);
  return true;
}

namespace {

// ByteLevel: each token whose characters all belong to the byte alphabet becomes those
// bytes; any other token (e.g. an added token with other characters) contributes its UTF-8
// as is. All bytes are then decoded together, invalid sequences becoming U+FFFD.
class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const auto& alpha = ByteLevelAlphabet::get();
    std::string bytes;
    for (const std::string& t : tokens) {
      const size_t mark = bytes.size();
      bool all = true;
      size_t i = 0;
      while (i < t.size()) {
        int b = alpha.byte_for_char(next_code_point(t, i));
        if (b < 0) {
          all = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!all) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

// ByteFallback: a run of consecutive <0xXX> tokens becomes its UTF-8 text when the run is
// valid UTF-8 as a whole, else one U+FFFD per byte.
class ByteFallbackDecoder final : public Decoder {
 public:
  bool has_byte_fallback() const override { return true; }
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    size_t run_len = 0;
    auto flush = [&] {
      if (run_len == 0) return;
      if (is_valid_utf8(run)) {
        out.push_back(run);
      } else {
        for (size_t k = 0; k < run_len; ++k) out.emplace_back(kReplacementChar);
      }
      run.clear();
      run_len = 0;
    };
    for (std::string& t : tokens) {
      unsigned char b;
      if (parse_byte_token(t, &b)) {
        run.push_back(static_cast<char>(b));
        ++run_len;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Regex re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<size_t, size_t>> m;
    for (std::string& t : tokens) {
      m.clear();
      // Token strings are valid UTF-8 (vocabulary entries); a failed match leaves t as is.
      if (!re_.find_all(t, m).ok() || m.empty()) continue;
      std::string r;
      size_t prev = 0;
      for (auto [s, e] : m) {
        r.append(t, prev, s - prev);
        r += content_;
        prev = e;
      }
      r.append(t, prev, std::string::npos);
      t.swap(r);
    }
  }

 private:
  Regex re_;
  std::string content_;
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Strip: removes up to `start` leading and `stop` trailing copies of one character from
// every token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t c, size_t start, size_t stop) : c_(c), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, code point)
      size_t i = 0;
      while (i < t.size()) {
        size_t at = i;
        chars.push_back({at, next_code_point(t, i)});
      }
      size_t begin = 0, end = chars.size();
      for (size_t k = 0; k < start_ && k < chars.size() && chars[k].second == c_; ++k) begin = k + 1;
      for (size_t k = 0; k < stop_ && k < chars.size(); ++k) {
        size_t idx = chars.size() - 1 - k;
        if (chars[idx].second != c_) break;
        end = idx;
      }
      if (end <= begin) {
        t.clear();
        continue;
      }
      const size_t b0 = chars[begin].first;
      const size_t b1 = end < chars.size() ? chars[end].first : t.size();
      t = t.substr(b0, b1 - b0);
    }
  }

 private:
  char32_t c_;
  size_t start_, stop_;
};

// Metaspace: the replacement character becomes a space, except in the first token when a
// prefix space was prepended at encode time, where it is dropped.
class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(char32_t rep, bool prepend) : rep_(rep), prepend_(prepend) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      const std::string& t = tokens[k];
      std::string r;
      r.reserve(t.size());
      size_t i = 0;
      while (i < t.size()) {
        char32_t c = next_code_point(t, i);
        if (c == rep_) {
          if (!(k == 0 && prepend_)) r.push_back(' ');
        } else {
          append_utf8(r, c);
        }
      }
      tokens[k].swap(r);
    }
  }

 private:
  char32_t rep_;
  bool prepend_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }
  bool has_byte_fallback() const override {
    for (const auto& p : parts_)
      if (p->has_byte_fallback()) return true;
    return false;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

Result<char32_t> single_char(const std::string& s, const std::string& where, const char* key) {
  size_t i = 0;
  if (s.empty() || !is_valid_utf8(s)) return json_fields::wrong_type(where, key, "one character");
  char32_t c = next_code_point(s, i);
  if (i != s.size()) return json_fields::wrong_type(where, key, "one character");
  return c;
}

}  // namespace

Result<std::unique_ptr<Decoder>> parse_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return std::unique_ptr<Decoder>();
  std::string type;
  MOEOPT_RETURN_IF_ERROR(json_fields::get_type(j, where, &type));
  const std::string here = where + " " + type;
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Replace") {
    std::string content;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_string(j, "content", here, &content));
    auto it = j.find("pattern");
    if (it == j.end()) return json_fields::missing(here, "pattern");
    MOEOPT_ASSIGN_OR_RETURN(Regex re, parse_pattern(*it, here));
    return std::unique_ptr<Decoder>(new ReplaceDecoder(std::move(re), std::move(content)));
  }
  if (type == "Strip") {
    std::string content;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_string(j, "content", here, &content));
    MOEOPT_ASSIGN_OR_RETURN(char32_t c, single_char(content, here, "content"));
    uint64_t start = 0, stop = 0;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_uint(j, "start", here, &start));
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_uint(j, "stop", here, &stop));
    return std::unique_ptr<Decoder>(new StripDecoder(c, start, stop));
  }
  if (type == "Metaspace") {
    std::string rep = "\xE2\x96\x81";
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_string(j, "replacement", here, &rep));
    MOEOPT_ASSIGN_OR_RETURN(char32_t c, single_char(rep, here, "replacement"));
    bool prepend = true;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "add_prefix_space", here, &prepend));
    std::string scheme;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_string(j, "prepend_scheme", here, &scheme));
    if (!scheme.empty()) prepend = scheme != "never";
    return std::unique_ptr<Decoder>(new MetaspaceDecoder(c, prepend));
  }
  if (type == "Sequence") {
    auto it = j.find("decoders");
    if (it == j.end() || !it->is_array()) return json_fields::wrong_type(here, "decoders", "an array");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t k = 0; k < it->size(); ++k) {
      MOEOPT_ASSIGN_OR_RETURN(auto part, parse_decoder((*it)[k], fmt::format("{}[{}]", here, k)));
      if (part) parts.push_back(std::move(part));
    }
    return std::unique_ptr<Decoder>(new SequenceDecoder(std::move(parts)));
  }
  return make_error(ErrorCode::kUnsupported, "{}: unknown decoder type '{}'", where, type);
}

}  // namespace moeopt::tokenizer
