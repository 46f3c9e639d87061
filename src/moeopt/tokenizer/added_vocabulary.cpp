// Added-token matching (see added_vocabulary.h).
#include "moeopt/tokenizer/added_vocabulary.h"

#include <algorithm>

#include <utf8proc.h>

#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {

void TokenTrie::insert(std::string_view s, int32_t value) {
  if (s.empty()) return;
  int32_t n = 0;
  for (unsigned char c : s) {
    auto& ch = nodes_[n].children;
    auto it = std::lower_bound(ch.begin(), ch.end(), c, [](const auto& p, unsigned char v) { return p.first < v; });
    if (it != ch.end() && it->first == c) {
      n = it->second;
    } else {
      const auto child = static_cast<int32_t>(nodes_.size());
      ch.insert(it, {c, child});
      nodes_.emplace_back();
      n = child;
    }
  }
  // The first token with a given content wins, like the first pattern of an automaton.
  if (nodes_[n].value < 0) nodes_[n].value = value;
}

std::pair<size_t, int32_t> TokenTrie::longest_at(std::string_view text, size_t pos) const {
  std::pair<size_t, int32_t> best{0, -1};
  int32_t n = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const auto& ch = nodes_[n].children;
    auto it = std::lower_bound(ch.begin(), ch.end(), c, [](const auto& p, unsigned char v) { return p.first < v; });
    if (it == ch.end() || it->first != c) break;
    n = it->second;
    if (nodes_[n].value >= 0) best = {i + 1 - pos, nodes_[n].value};
  }
  return best;
}

void AddedVocabulary::build(std::vector<AddedToken> tokens, const std::vector<std::string>& normalized_contents) {
  tokens_ = std::move(tokens);
  // Special tokens are searched before ordinary added tokens (same content: special wins).
  std::vector<size_t> order(tokens_.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_partition(order.begin(), order.end(), [&](size_t k) { return tokens_[k].special; });
  for (size_t k : order) {
    const AddedToken& t = tokens_[k];
    by_id_.emplace(t.id, k);
    by_content_.emplace(t.content, k);
    if (t.normalized) normalized_trie_.insert(normalized_contents[k], static_cast<int32_t>(k));
    else raw_trie_.insert(t.content, static_cast<int32_t>(k));
  }
}

const AddedToken* AddedVocabulary::find_by_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::find_by_content(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

namespace {

// Unicode word character as in the Rust regex crate's \w (alphabetic, marks, decimal
// digits, connector punctuation, joiners); used by single_word.
bool is_word_char(char32_t c) {
  if (c == 0x200C || c == 0x200D) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

char32_t last_code_point(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i > 0) --i;
  size_t j = i;
  return next_code_point(s, j);
}

}  // namespace

void AddedVocabulary::split(std::string_view text, bool normalized_set, std::vector<Segment>& out) const {
  const TokenTrie& trie = normalized_set ? normalized_trie_ : raw_trie_;
  size_t seg_start = 0;  // end of the previous emitted match (incl. stripped whitespace)
  size_t pos = 0;        // where the search resumes (end of the previous raw match)
  if (!trie.empty()) {
    while (pos < text.size()) {
      auto [len, k] = trie.longest_at(text, pos);
      if (len == 0) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + len;
      pos = stop;  // the search always continues after the raw match, even a rejected one
      const AddedToken& t = tokens_[k];
      if (t.single_word) {
        bool start_ok = start == 0 || !is_word_char(last_code_point(text.substr(0, start)));
        size_t j = stop;
        bool stop_ok = stop == text.size() || !is_word_char(next_code_point(text, j));
        if (!start_ok || !stop_ok) continue;
      }
      if (t.lstrip) {
        size_t s = start;
        while (s > 0) {
          size_t b = s - 1;
          while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
          size_t tmp = b;
          if (!is_unicode_whitespace(next_code_point(text, tmp))) break;
          s = b;
        }
        start = std::max(s, seg_start);
      }
      if (t.rstrip) {
        size_t e = stop;
        while (e < text.size()) {
          size_t tmp = e;
          if (!is_unicode_whitespace(next_code_point(text, tmp))) break;
          e = tmp;
        }
        stop = e;
      }
      if (seg_start < start) out.push_back(Segment{std::string(text.substr(seg_start, start - seg_start)), -1, seg_start});
      out.push_back(Segment{std::string(text.substr(start, stop - start)), t.id, start});
      seg_start = stop;
    }
  }
  if (seg_start < text.size() || text.empty())
    out.push_back(Segment{std::string(text.substr(seg_start)), -1, seg_start});
}

}  // namespace moeopt::tokenizer
