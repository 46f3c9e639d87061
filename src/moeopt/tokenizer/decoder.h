// Decoders of tokenizer.json ("decoder" field): turn the token strings of an id sequence
// back into text.
//
// Hugging Face decoders work on the list of token strings ("decode_chain"): each decoder
// maps the list to a new list, and the final list is concatenated. Supported types:
// ByteLevel, ByteFallback, Replace, Fuse, Strip, Metaspace, Sequence.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/core/status.h"

namespace moeopt::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
  // True when this decoder (or a part of a sequence) is ByteFallback: streaming must then
  // not cut a run of <0xXX> tokens, which ByteFallback decodes as one unit.
  virtual bool has_byte_fallback() const { return false; }
};

// Null JSON gives nullptr (tokens are joined with spaces, as Hugging Face does).
Result<std::unique_ptr<Decoder>> parse_decoder(const nlohmann::json& j, const std::string& where);

// Whether `token` is a byte-fallback token "<0xXX>"; stores the byte.
bool parse_byte_token(const std::string& token, unsigned char* byte);

}  // namespace moeopt::tokenizer
