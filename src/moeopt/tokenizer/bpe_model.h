// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}).
//
// A word (one pre-token) starts as one symbol per character; merges are then applied in
// rank order (lowest rank first, leftmost first among equal ranks), exactly like Hugging
// Face `tokenizers`. A min-heap of candidate pairs makes a word of n symbols cost
// O(n log n) instead of the naive O(n^2) rescans; stale heap entries are skipped when popped.
// Characters missing from the vocabulary fall back to <0xXX> byte tokens (byte_fallback) or
// to the unknown token (fused when fuse_unk). Results for short words are cached (bounded).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/core/status.h"

namespace moeopt::tokenizer {

// Hash that lets unordered_map<std::string, ...> be probed with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  static Result<BpeModel> parse(const nlohmann::json& model, const std::string& where);

  // Appends the ids of one pre-token word.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullptr when `id` is not in the vocabulary.
  const std::string* id_to_token(int32_t id) const;
  // One past the largest id of the vocabulary.
  size_t vocab_size() const { return id_to_token_.size(); }
  // Number of vocabulary entries (Hugging Face's get_vocab_size for BPE).
  size_t vocab_entries() const { return vocab_.size(); }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  struct MergeInfo {
    uint32_t rank;
    int32_t new_id;
  };
  struct Cache {
    static constexpr size_t kCapacity = 16384;  // entries; insertion stops when full
    static constexpr size_t kMaxWordBytes = 256; // longer words are not cached
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };

  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  TokenMap vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, MergeInfo> merges_;  // key: left id << 32 | right id
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_token_ids_{};  // ids of <0xXX>, -1 where missing
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();
};

}  // namespace moeopt::tokenizer
