// Tokenizer: Hugging Face tokenizer.json (+ tokenizer_config.json) loaded into an encoder and
// decoder that produce exactly the ids of the `tokenizers` library.
//
// Encoding pipeline (same order as Hugging Face):
//   1. added tokens with normalized=false are cut out of the raw text;
//   2. each remaining piece is normalized, then added tokens with normalized=true are cut;
//   3. the rest is pre-tokenized into words, and each word is BPE-encoded;
//   4. with add_special_tokens, the post-processor adds BOS/EOS (TemplateProcessing).
// Decoding maps ids to token strings (added tokens to their content; special ones dropped
// with skip_special_tokens; unknown ids dropped) and runs the decoder chain.
//
// A Tokenizer is immutable after load and safe to use from several threads (the BPE word
// cache is guarded by a mutex). Usage:
//   MOEOPT_ASSIGN_OR_RETURN(auto tok, tokenizer::Tokenizer::load("models/tokenizers/qwen3"));
//   MOEOPT_ASSIGN_OR_RETURN(auto ids, tok.encode("Hello", /*add_special_tokens=*/true));
//   std::string text = tok.decode(ids, /*skip_special_tokens=*/false);
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt::tokenizer {

class Normalizer;
class PreTokenizer;
class Decoder;
class BpeModel;
class AddedVocabulary;
class PostProcessor;

class Tokenizer {
 public:
  // Reads dir/tokenizer.json (or tokenizer.json.gz) and, when present, dir/tokenizer_config.json.
  static Result<Tokenizer> load(const std::string& dir);
  // Builds from file contents; `config_json` may be empty. `where` names the source in errors.
  static Result<Tokenizer> from_json(std::string_view tokenizer_json, std::string_view config_json,
                                     const std::string& where);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Encodes UTF-8 text; invalid UTF-8 is an error naming the byte offset.
  Result<std::vector<int32_t>> encode(std::string_view text, bool add_special_tokens) const;
  // Decodes ids to text (never invalid UTF-8: bad byte sequences become U+FFFD).
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  // One past the largest id (model vocabulary and added tokens).
  size_t vocab_size() const;
  bool is_special(int32_t id) const;
  // True for <0xXX> tokens when the decoder has ByteFallback (streaming keeps their runs whole).
  bool is_byte_fallback_token(int32_t id) const;
  bool decoder_has_byte_fallback() const;

  // From tokenizer_config.json (empty / nullopt where absent).
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  std::optional<int32_t> bos_token_id() const { return bos_id_; }
  std::optional<int32_t> eos_token_id() const { return eos_id_; }
  // Ids that end generation: the configured EOS token (callers may add a model's extra
  // stop ids from generation_config.json).
  const std::vector<int32_t>& eos_token_ids() const { return eos_ids_; }
  // tokenizer_config.json's add_bos_token / add_eos_token, for prompt builders. encode()
  // itself follows tokenizer.json's post_processor, as Hugging Face `tokenizers` does.
  bool add_bos_token() const { return add_bos_; }
  bool add_eos_token() const { return add_eos_; }
  // The chat template string ("default" one when the config has a list); empty if none.
  const std::string& chat_template() const { return chat_template_; }

 private:
  Tokenizer();
  Status encode_text(std::string_view text, bool at_origin, std::vector<int32_t>& ids) const;
  const std::string* token_string(int32_t id) const;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<AddedVocabulary> added_;
  std::unique_ptr<PostProcessor> post_;
  std::string bos_token_, eos_token_, chat_template_;
  std::optional<int32_t> bos_id_, eos_id_;
  std::vector<int32_t> eos_ids_;
  bool add_bos_ = false, add_eos_ = false;
};

// Resolves a --tokenizer argument: an existing directory is used as is; otherwise a name of
// a vendored tokenizer (qwen3, deepseek_v3, llama2, llama3) is looked up under
// <data_root>/models/tokenizers/. Returns kNotFound naming both places tried.
Result<std::string> resolve_tokenizer_dir(const std::string& name_or_dir, const std::string& data_root);

}  // namespace moeopt::tokenizer
