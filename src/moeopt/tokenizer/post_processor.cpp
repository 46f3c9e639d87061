// Post-processor templates (see post_processor.h).
#include "moeopt/tokenizer/post_processor.h"

#include "moeopt/tokenizer/json_fields.h"

namespace moeopt::tokenizer {

using json_fields::json;

Result<PostProcessor> PostProcessor::parse(const json& j, const std::string& where) {
  PostProcessor p;
  if (j.is_null()) return p;
  MOEOPT_RETURN_IF_ERROR(p.parse_into(j, where));
  return p;
}

namespace {

// Reads [token, id] as Bert/Roberta write their cls/sep fields.
Status token_pair_id(const json& j, const char* key, const std::string& where, int32_t* id) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_unsigned())
    return json_fields::wrong_type(where, key, "a [token, id] pair");
  *id = static_cast<int32_t>((*it)[1].get<uint64_t>());
  return {};
}

}  // namespace

Status PostProcessor::parse_into(const json& j, const std::string& where) {
  std::string type;
  MOEOPT_RETURN_IF_ERROR(json_fields::get_type(j, where, &type));
  const std::string here = where + " " + type;
  if (type == "ByteLevel") return {};
  if (type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end() || !it->is_array()) return json_fields::wrong_type(here, "processors", "an array");
    for (size_t k = 0; k < it->size(); ++k)
      MOEOPT_RETURN_IF_ERROR(parse_into((*it)[k], fmt::format("{}[{}]", here, k)));
    return {};
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    int32_t cls, sep;
    MOEOPT_RETURN_IF_ERROR(token_pair_id(j, "cls", here, &cls));
    MOEOPT_RETURN_IF_ERROR(token_pair_id(j, "sep", here, &sep));
    // A later processor of a Sequence wraps the output of the earlier ones.
    prefix_.insert(prefix_.begin(), cls);
    suffix_.push_back(sep);
    return {};
  }
  if (type == "TemplateProcessing") {
    auto single = j.find("single");
    if (single == j.end() || !single->is_array()) return json_fields::wrong_type(here, "single", "an array");
    auto specials = j.find("special_tokens");
    if (specials != j.end() && !specials->is_object()) return json_fields::wrong_type(here, "special_tokens", "an object");
    std::vector<int32_t> before, after;
    bool seen = false;
    for (const json& item : *single) {
      if (!item.is_object()) return make_error(ErrorCode::kCorruptData, "{}: 'single' items must be objects", here);
      if (item.contains("Sequence")) {
        if (seen) return make_error(ErrorCode::kCorruptData, "{}: 'single' names the sequence twice", here);
        seen = true;
        continue;
      }
      auto st = item.find("SpecialToken");
      if (st == item.end() || !st->is_object())
        return make_error(ErrorCode::kCorruptData, "{}: 'single' item is neither Sequence nor SpecialToken", here);
      std::string name;
      MOEOPT_RETURN_IF_ERROR(json_fields::get_string(*st, "id", here + " SpecialToken", &name));
      if (specials == j.end() || !specials->contains(name))
        return make_error(ErrorCode::kCorruptData, "{}: special token '{}' is not in special_tokens", here, name);
      const json& entry = (*specials)[name];
      auto ids = entry.find("ids");
      if (ids == entry.end() || !ids->is_array())
        return json_fields::wrong_type(here + " special_tokens." + name, "ids", "an array");
      for (const json& id : *ids) {
        if (!id.is_number_unsigned() || id.get<uint64_t>() > INT32_MAX)
          return json_fields::wrong_type(here + " special_tokens." + name, "ids", "an array of ids");
        (seen ? after : before).push_back(static_cast<int32_t>(id.get<uint64_t>()));
      }
    }
    if (!seen) return make_error(ErrorCode::kCorruptData, "{}: 'single' has no Sequence item", here);
    prefix_.insert(prefix_.begin(), before.begin(), before.end());
    suffix_.insert(suffix_.end(), after.begin(), after.end());
    seen_sequence_ = true;
    return {};
  }
  return make_error(ErrorCode::kUnsupported, "{}: unknown post_processor type '{}'", where, type);
}

void PostProcessor::apply(std::vector<int32_t>& ids) const {
  if (!prefix_.empty()) ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
}

}  // namespace moeopt::tokenizer
