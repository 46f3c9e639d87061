// BPE model: vocabulary, merge ranks and the heap-driven merge loop (see bpe_model.h).
#include "moeopt/tokenizer/bpe_model.h"

#include <queue>

#include "moeopt/tokenizer/json_fields.h"
#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {

using json_fields::json;

Result<BpeModel> BpeModel::parse(const json& j, const std::string& where) {
  if (!j.is_object()) return make_error(ErrorCode::kCorruptData, "{}: must be an object", where);
  std::string type = "BPE";
  MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_string(j, "type", where, &type));
  if (type != "BPE")
    return make_error(ErrorCode::kUnsupported, "{}: unknown model type '{}' (only BPE is supported)", where, type);
  const std::string here = where + " BPE";
  BpeModel m;
  if (auto it = j.find("dropout"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0)
      return make_error(ErrorCode::kUnsupported, "{}: BPE dropout is not supported", here);
  }
  MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "byte_fallback", here, &m.byte_fallback_));
  MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "fuse_unk", here, &m.fuse_unk_));
  MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(j, "ignore_merges", here, &m.ignore_merges_));
  MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_string(j, "continuing_subword_prefix", here, &m.continuing_subword_prefix_));
  MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_string(j, "end_of_word_suffix", here, &m.end_of_word_suffix_));

  auto vit = j.find("vocab");
  if (vit == j.end() || !vit->is_object()) return json_fields::wrong_type(here, "vocab", "an object");
  m.vocab_.reserve(vit->size());
  int64_t max_id = -1;
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    if (!it.value().is_number_unsigned() || it.value().get<uint64_t>() > INT32_MAX)
      return make_error(ErrorCode::kCorruptData, "{}: vocab entry '{}' needs an id in [0, 2^31)", here, it.key());
    const auto id = static_cast<int32_t>(it.value().get<uint64_t>());
    m.vocab_.emplace(it.key(), id);
    max_id = std::max<int64_t>(max_id, id);
  }
  if (max_id >= (int64_t(1) << 26))
    return make_error(ErrorCode::kCorruptData, "{}: vocab id {} is implausibly large", here, max_id);
  m.id_to_token_.resize(static_cast<size_t>(max_id + 1));
  m.has_id_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [tok, id] : m.vocab_) {
    m.id_to_token_[id] = tok;
    m.has_id_[id] = true;
  }

  std::string unk;
  MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_string(j, "unk_token", here, &unk));
  if (!unk.empty()) {
    auto it = m.vocab_.find(unk);
    if (it == m.vocab_.end()) return make_error(ErrorCode::kCorruptData, "{}: unk_token '{}' is not in the vocab", here, unk);
    m.unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = m.vocab_.find(fmt::format("<0x{:02X}>", b));
    m.byte_token_ids_[b] = it == m.vocab_.end() ? -1 : it->second;
  }

  auto mit = j.find("merges");
  if (mit == j.end() || !mit->is_array()) return json_fields::wrong_type(here, "merges", "an array");
  m.merges_.reserve(mit->size());
  const size_t prefix_len = m.continuing_subword_prefix_.size();
  for (size_t r = 0; r < mit->size(); ++r) {
    const json& e = (*mit)[r];
    std::string a, b;
    // Two spellings: "left right" (older files) or ["left", "right"].
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        return make_error(ErrorCode::kCorruptData, "{}: merge {} '{}' is not two tokens", here, r, s);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return make_error(ErrorCode::kCorruptData, "{}: merge {} must be a string or a pair of strings", here, r);
    }
    auto ia = m.vocab_.find(a), ib = m.vocab_.find(b);
    if (ia == m.vocab_.end() || ib == m.vocab_.end())
      return make_error(ErrorCode::kCorruptData, "{}: merge {} uses '{}' or '{}' which is not in the vocab", here, r, a, b);
    // With a continuing-subword prefix the right token carries it; the merged token not.
    std::string merged = a + (prefix_len && b.compare(0, prefix_len, m.continuing_subword_prefix_) == 0 ? b.substr(prefix_len) : b);
    auto im = m.vocab_.find(merged);
    if (im == m.vocab_.end())
      return make_error(ErrorCode::kCorruptData, "{}: merge {} result '{}' is not in the vocab", here, r, merged);
    const uint64_t key = (uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second);
    // A repeated pair keeps its last rank, as a map built from the list in order does.
    m.merges_[key] = MergeInfo{static_cast<uint32_t>(r), im->second};
  }
  return m;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    // Llama-3 style: a word that is itself a vocabulary entry is taken whole.
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() < Cache::kMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (auto it = cache_->map.find(word); it != cache_->map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->map.size() < Cache::kCapacity)
      cache_->map.emplace(std::string(word), std::vector<int32_t>(out.begin() + before, out.end()));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  // Symbols form a doubly linked list over a vector; a merged-away symbol gets id -1.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  auto add = [&](int32_t id) {
    const int32_t n = static_cast<int32_t>(sym.size());
    sym.push_back(Symbol{id, n - 1, n + 1});
  };
  // Pending unknown token (id) while fuse_unk collects a run of unknown characters.
  int32_t pending_unk = -1;
  size_t i = 0;
  std::string piece;
  while (i < word.size()) {
    const size_t start = i;
    next_code_point(word, i);
    std::string_view ch = word.substr(start, i - start);
    std::string_view key = ch;
    if ((start > 0 && !continuing_subword_prefix_.empty()) || (i == word.size() && !end_of_word_suffix_.empty())) {
      piece.clear();
      if (start > 0) piece += continuing_subword_prefix_;
      piece += ch;
      if (i == word.size()) piece += end_of_word_suffix_;
      key = piece;
    }
    if (auto it = vocab_.find(key); it != vocab_.end()) {
      if (pending_unk >= 0) {
        add(pending_unk);
        pending_unk = -1;
      }
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : key) all = all && byte_token_ids_[c] >= 0;
      if (all) {
        for (unsigned char c : key) add(byte_token_ids_[c]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      pending_unk = *unk_id_;
    }
    // Without an unknown token the character is dropped, as Hugging Face does.
  }
  if (pending_unk >= 0) add(pending_unk);
  if (sym.empty()) return;
  sym.back().next = -1;

  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto lookup = [&](int32_t a, int32_t b) -> const MergeInfo* {
    auto it = merges_.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t k = 0; k + 1 < sym.size(); ++k)
    if (const MergeInfo* mi = lookup(sym[k].id, sym[k + 1].id))
      heap.push(Candidate{mi->rank, static_cast<int32_t>(k), mi->new_id});

  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Symbol& left = sym[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    const int32_t right_pos = left.next;
    const Symbol right = sym[right_pos];
    // Stale entry: the pair at this position changed since it was queued.
    const MergeInfo* now = lookup(left.id, right.id);
    if (!now || now->new_id != top.new_id) continue;
    left.id = top.new_id;
    left.next = right.next;
    sym[right_pos].id = -1;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (left.prev >= 0)
      if (const MergeInfo* mi = lookup(sym[left.prev].id, left.id)) heap.push(Candidate{mi->rank, left.prev, mi->new_id});
    if (left.next >= 0)
      if (const MergeInfo* mi = lookup(left.id, sym[left.next].id)) heap.push(Candidate{mi->rank, top.pos, mi->new_id});
  }
  for (int32_t k = 0; k >= 0; k = sym[k].next) out.push_back(sym[k].id);
}

}  // namespace moeopt::tokenizer
