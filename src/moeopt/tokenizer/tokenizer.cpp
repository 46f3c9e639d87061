// Tokenizer loading, encoding and decoding (see tokenizer.h).
#include "moeopt/tokenizer/tokenizer.h"

#include <filesystem>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/core/json_limits.h"
#include "moeopt/tokenizer/added_vocabulary.h"
#include "moeopt/tokenizer/bpe_model.h"
#include "moeopt/tokenizer/decoder.h"
#include "moeopt/tokenizer/json_fields.h"
#include "moeopt/tokenizer/normalizer.h"
#include "moeopt/tokenizer/post_processor.h"
#include "moeopt/tokenizer/pre_tokenizer.h"
#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {

using json_fields::json;

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

namespace {

Result<std::vector<AddedToken>> parse_added_tokens(const json& root, const std::string& where) {
  std::vector<AddedToken> out;
  auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return out;
  if (!it->is_array()) return json_fields::wrong_type(where, "added_tokens", "an array");
  for (size_t k = 0; k < it->size(); ++k) {
    const json& e = (*it)[k];
    const std::string here = fmt::format("{} added_tokens[{}]", where, k);
    if (!e.is_object()) return make_error(ErrorCode::kCorruptData, "{}: must be an object", here);
    AddedToken t;
    uint64_t id = UINT64_MAX;
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_uint(e, "id", here, &id));
    if (id > INT32_MAX) return json_fields::wrong_type(here, "id", "an id in [0, 2^31)");
    t.id = static_cast<int32_t>(id);
    MOEOPT_RETURN_IF_ERROR(json_fields::get_string(e, "content", here, &t.content));
    if (!is_valid_utf8(t.content)) return make_error(ErrorCode::kCorruptData, "{}: content is not valid UTF-8", here);
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(e, "single_word", here, &t.single_word));
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(e, "lstrip", here, &t.lstrip));
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(e, "rstrip", here, &t.rstrip));
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(e, "special", here, &t.special));
    t.normalized = !t.special;  // the default when the field is absent
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(e, "normalized", here, &t.normalized));
    if (!t.content.empty()) out.push_back(std::move(t));
  }
  return out;
}

// Hugging Face does not take the ids of "added_tokens" from the file: it adds the tokens one
// by one, in file order, and each gets the id of the same content if that is already known
// (an earlier added token or the model vocabulary), else the next free id after the model
// vocabulary. For a consistent file this is the listed id; for an inconsistent one we follow
// the reference. A later entry for the same id replaces the earlier one.
std::vector<AddedToken> assign_added_token_ids(std::vector<AddedToken> listed, const BpeModel& model) {
  std::vector<AddedToken> out;
  std::unordered_map<std::string, int32_t> by_content;
  std::unordered_map<int32_t, size_t> by_id;
  const auto vocab_entries = static_cast<int64_t>(model.vocab_entries());
  int64_t max_id = -1;
  for (AddedToken& t : listed) {
    int32_t id;
    if (auto it = by_content.find(t.content); it != by_content.end()) {
      id = it->second;
    } else if (auto mid = model.token_to_id(t.content)) {
      id = *mid;
    } else {
      id = static_cast<int32_t>(max_id < 0 ? vocab_entries
                                           : (max_id >= vocab_entries || vocab_entries == 0 ? max_id + 1 : vocab_entries));
    }
    t.id = id;
    by_content[t.content] = id;
    max_id = std::max<int64_t>(max_id, id);
    if (auto it = by_id.find(id); it != by_id.end()) {
      out[it->second] = std::move(t);
    } else {
      by_id[id] = out.size();
      out.push_back(std::move(t));
    }
  }
  return out;
}

// A config token is a string, an {"content": ...} object, or null.
Status config_token(const json& cfg, const char* key, const std::string& where, std::string* out) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return {};
  if (it->is_string()) {
    *out = it->get<std::string>();
    return {};
  }
  if (it->is_object()) return json_fields::get_string(*it, "content", where + " " + key, out);
  return json_fields::wrong_type(where, key, "a string or an object with 'content'");
}

}  // namespace

Result<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json,
                                       const std::string& where) {
  // Nesting and size limits (core/json_limits.h): the pipeline parsers recurse over the value.
  auto parsed = parse_json(tokenizer_json);
  if (!parsed.ok()) return Status(ErrorCode::kCorruptData, where + ": " + parsed.status().message());
  json root = std::move(parsed).value();
  if (!root.is_object()) return make_error(ErrorCode::kCorruptData, "{}: not a JSON object", where);
  Tokenizer t;
  auto field = [&](const char* key) -> const json& {
    static const json kNull;
    auto it = root.find(key);
    return it == root.end() ? kNull : *it;
  };
  MOEOPT_ASSIGN_OR_RETURN(t.normalizer_, parse_normalizer(field("normalizer"), where + ": normalizer"));
  MOEOPT_ASSIGN_OR_RETURN(t.pre_tokenizer_, parse_pre_tokenizer(field("pre_tokenizer"), where + ": pre_tokenizer"));
  MOEOPT_ASSIGN_OR_RETURN(t.decoder_, parse_decoder(field("decoder"), where + ": decoder"));
  MOEOPT_ASSIGN_OR_RETURN(PostProcessor post, PostProcessor::parse(field("post_processor"), where + ": post_processor"));
  t.post_ = std::make_unique<PostProcessor>(std::move(post));
  if (field("model").is_null()) return json_fields::missing(where, "model");
  MOEOPT_ASSIGN_OR_RETURN(BpeModel model, BpeModel::parse(field("model"), where + ": model"));
  t.model_ = std::make_unique<BpeModel>(std::move(model));

  MOEOPT_ASSIGN_OR_RETURN(auto listed, parse_added_tokens(root, where));
  auto added = assign_added_token_ids(std::move(listed), *t.model_);
  std::vector<std::string> normalized_contents;
  for (const AddedToken& a : added) {
    std::string c = a.content;
    if (a.normalized && t.normalizer_) MOEOPT_RETURN_IF_ERROR(t.normalizer_->normalize(c));
    normalized_contents.push_back(std::move(c));
  }
  t.added_ = std::make_unique<AddedVocabulary>();
  t.added_->build(std::move(added), normalized_contents);

  if (!config_json.empty()) {
    const std::string cw = where + " tokenizer_config.json";
    auto parsed_cfg = parse_json(config_json);
    if (!parsed_cfg.ok()) return Status(ErrorCode::kCorruptData, cw + ": " + parsed_cfg.status().message());
    json cfg = std::move(parsed_cfg).value();
    if (!cfg.is_object()) return make_error(ErrorCode::kCorruptData, "{}: not a JSON object", cw);
    MOEOPT_RETURN_IF_ERROR(config_token(cfg, "bos_token", cw, &t.bos_token_));
    MOEOPT_RETURN_IF_ERROR(config_token(cfg, "eos_token", cw, &t.eos_token_));
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(cfg, "add_bos_token", cw, &t.add_bos_));
    MOEOPT_RETURN_IF_ERROR(json_fields::get_opt_bool(cfg, "add_eos_token", cw, &t.add_eos_));
    if (auto it = cfg.find("chat_template"); it != cfg.end() && !it->is_null()) {
      if (it->is_string()) {
        t.chat_template_ = it->get<std::string>();
      } else if (it->is_array()) {
        // [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
        for (const json& e : *it)
          if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
            t.chat_template_ = e["template"].get<std::string>();
      } else {
        return json_fields::wrong_type(cw, "chat_template", "a string or a list of named templates");
      }
    }
    if (!t.bos_token_.empty()) {
      t.bos_id_ = t.token_to_id(t.bos_token_);
      if (!t.bos_id_) return make_error(ErrorCode::kCorruptData, "{}: bos_token '{}' is not in the vocabulary", cw, t.bos_token_);
    }
    if (!t.eos_token_.empty()) {
      t.eos_id_ = t.token_to_id(t.eos_token_);
      if (!t.eos_id_) return make_error(ErrorCode::kCorruptData, "{}: eos_token '{}' is not in the vocabulary", cw, t.eos_token_);
      t.eos_ids_.push_back(*t.eos_id_);
    }
  }
  return t;
}

Result<Tokenizer> Tokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string tok_path = (fs::path(dir) / "tokenizer.json").string();
  MOEOPT_ASSIGN_OR_RETURN(std::string tok_json, read_file_or_gz(tok_path, size_t(1) << 30));
  std::string cfg_json;
  const fs::path cfg_path = fs::path(dir) / "tokenizer_config.json";
  std::error_code ec;
  if (fs::exists(cfg_path, ec) || fs::exists(cfg_path.string() + ".gz", ec)) {
    MOEOPT_ASSIGN_OR_RETURN(cfg_json, read_file_or_gz(cfg_path.string(), size_t(64) << 20));
  }
  return from_json(tok_json, cfg_json, tok_path);
}

Status Tokenizer::encode_text(std::string_view text, bool at_origin, std::vector<int32_t>& ids) const {
  std::vector<Piece> pieces;
  pieces.push_back(Piece{std::string(text), at_origin});
  if (pre_tokenizer_) MOEOPT_RETURN_IF_ERROR(pre_tokenizer_->pre_tokenize(pieces));
  for (const Piece& p : pieces) model_->tokenize(p.text, ids);
  return {};
}

Result<std::vector<int32_t>> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (size_t bad = find_invalid_utf8(text); bad != std::string_view::npos)
    return make_error(ErrorCode::kInvalidArgument, "tokenizer input is not valid UTF-8 (byte {} at offset {})",
                      static_cast<unsigned>(static_cast<unsigned char>(text[bad])), bad);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<Segment> raw, norm;
  added_->split(text, /*normalized_set=*/false, raw);
  for (Segment& s : raw) {
    if (s.token_id >= 0) {
      ids.push_back(s.token_id);
      continue;
    }
    // Empty pieces vanish before normalization (so Prepend/Metaspace never see them).
    if (s.text.empty()) continue;
    if (normalizer_) MOEOPT_RETURN_IF_ERROR(normalizer_->normalize(s.text));
    norm.clear();
    if (added_->has_normalized_tokens()) {
      added_->split(s.text, /*normalized_set=*/true, norm);
    } else {
      norm.push_back(Segment{std::move(s.text), -1, 0});
    }
    for (const Segment& n : norm) {
      if (n.token_id >= 0) ids.push_back(n.token_id);
      else if (!n.text.empty()) MOEOPT_RETURN_IF_ERROR(encode_text(n.text, s.start == 0 && n.start == 0, ids));
    }
  }
  if (add_special_tokens) post_->apply(ids);
  return ids;
}

const std::string* Tokenizer::token_string(int32_t id) const {
  if (const AddedToken* a = added_->find_by_id(id)) return &a->content;
  return model_->id_to_token(id);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const AddedToken* a = added_->find_by_id(id);
    if (a) {
      if (skip_special_tokens && a->special) continue;
      tokens.push_back(a->content);
    } else if (const std::string* s = model_->id_to_token(id)) {
      tokens.push_back(*s);
    }
  }
  if (!decoder_) {
    std::string out;
    for (size_t k = 0; k < tokens.size(); ++k) {
      if (k) out += ' ';
      out += tokens[k];
    }
    return out;
  }
  decoder_->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const AddedToken* a = added_->find_by_content(token)) return a->id;
  return model_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const std::string* s = token_string(id)) return *s;
  return std::nullopt;
}

size_t Tokenizer::vocab_size() const {
  size_t n = model_->vocab_size();
  for (const AddedToken& a : added_->tokens()) n = std::max(n, size_t(a.id) + 1);
  return n;
}

bool Tokenizer::is_special(int32_t id) const {
  const AddedToken* a = added_->find_by_id(id);
  return a && a->special;
}

bool Tokenizer::decoder_has_byte_fallback() const { return decoder_ && decoder_->has_byte_fallback(); }

bool Tokenizer::is_byte_fallback_token(int32_t id) const {
  if (!decoder_has_byte_fallback() || added_->find_by_id(id)) return false;
  const std::string* s = model_->id_to_token(id);
  unsigned char b;
  return s && parse_byte_token(*s, &b);
}

Result<std::string> resolve_tokenizer_dir(const std::string& name_or_dir, const std::string& data_root) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(name_or_dir, ec)) return name_or_dir;
  const fs::path vendored = fs::path(data_root) / "models" / "tokenizers" / name_or_dir;
  if (name_or_dir.find('/') == std::string::npos && fs::is_directory(vendored, ec)) return vendored.string();
  return make_error(ErrorCode::kNotFound, "tokenizer '{}': no such directory, and no vendored tokenizer {}", name_or_dir,
                    vendored.string());
}

}  // namespace moeopt::tokenizer
