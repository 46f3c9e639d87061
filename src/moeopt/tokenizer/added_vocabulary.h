// Added tokens of tokenizer.json ("added_tokens"): special tokens such as <|im_start|> and
// user-added words, matched in the text before normalization and BPE.
//
// Matching follows Hugging Face `tokenizers`: tokens with normalized=false are searched in
// the raw text, the rest in each normalized remainder; the search is leftmost-longest over
// all tokens (a byte trie here); single_word rejects a match touching word characters;
// lstrip/rstrip widen a match over neighbouring whitespace so it is swallowed. Added tokens
// are always matched; `special` only matters when decoding with skip_special_tokens.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt::tokenizer {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A set of literal strings searched leftmost-longest with a byte trie.
class TokenTrie {
 public:
  void insert(std::string_view s, int32_t value);
  bool empty() const { return nodes_.size() <= 1; }
  // Longest entry starting at text[pos]: {length, value}, or {0, -1}.
  std::pair<size_t, int32_t> longest_at(std::string_view text, size_t pos) const;

 private:
  struct Node {
    int32_t value = -1;
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
  };
  std::vector<Node> nodes_{Node{}};
};

// One segment of the input after added-token extraction: either an added token (token_id
// >= 0) or text still to be normalized / pre-tokenized.
struct Segment {
  std::string text;
  int32_t token_id = -1;
  size_t start = 0;  // byte offset of the segment in the text it was cut from
};

class AddedVocabulary {
 public:
  // `normalized_contents[i]` is tokens[i].content passed through the tokenizer's normalizer
  // (used for tokens with normalized=true).
  void build(std::vector<AddedToken> tokens, const std::vector<std::string>& normalized_contents);

  // Splits `text` on the tokens of one set (raw: normalized=false; else normalized=true).
  void split(std::string_view text, bool normalized_set, std::vector<Segment>& out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* find_by_id(int32_t id) const;
  const AddedToken* find_by_content(std::string_view content) const;
  bool has_normalized_tokens() const { return !normalized_trie_.empty(); }

 private:
  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_map<std::string, size_t> by_content_;
  TokenTrie raw_trie_, normalized_trie_;  // values index tokens_
};

}  // namespace moeopt::tokenizer
