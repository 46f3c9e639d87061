// Parsing and checking of OpenAI request bodies (see openai_request.h).
#include "moeopt/server/openai_request.h"

#include <cmath>
#include <limits>
#include <map>

#include <fmt/format.h>

#include "moeopt/core/json_limits.h"

namespace moeopt::server {
namespace {

const char* type_name(const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::null:
      return "null";
    case ojson::value_t::boolean:
      return "boolean";
    case ojson::value_t::number_integer:
    case ojson::value_t::number_unsigned:
      return "integer";
    case ojson::value_t::number_float:
      return "number";
    case ojson::value_t::string:
      return "string";
    case ojson::value_t::array:
      return "array";
    case ojson::value_t::object:
      return "object";
    case ojson::value_t::binary:
      return "binary";
    case ojson::value_t::discarded:
      return "invalid";
  }
  return "invalid";
}

ApiError wrong_type(const std::string& key, const char* want, const ojson& v) {
  return bad_request(fmt::format("'{}' must be {}, got {}", key, want, type_name(v)), key);
}

// The field, or nullptr when absent or null (null means "use the default" in the API).
const ojson* field(const ojson& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<ApiError> read_float(const ojson& body, const char* key, float& out) {
  const ojson* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) return wrong_type(key, "a number", *v);
  double d = v->get<double>();
  if (!std::isfinite(d)) return bad_request(fmt::format("'{}' must be finite", key), key);
  out = float(d);
  return std::nullopt;
}

std::optional<ApiError> read_int(const ojson& body, const char* key, int64_t& out, bool& present) {
  present = false;
  const ojson* v = field(body, key);
  if (!v) return std::nullopt;
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (d != std::floor(d) || std::fabs(d) > 9e15) return wrong_type(key, "an integer", *v);
    out = int64_t(d);
  } else if (v->is_number_unsigned()) {
    uint64_t u = v->get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max()))
      return bad_request(fmt::format("'{}' is too large", key), key);
    out = int64_t(u);
  } else if (v->is_number_integer()) {
    out = v->get<int64_t>();
  } else {
    return wrong_type(key, "an integer", *v);
  }
  present = true;
  return std::nullopt;
}

std::optional<ApiError> read_bool(const ojson& body, const char* key, bool& out) {
  const ojson* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) return wrong_type(key, "a boolean", *v);
  out = v->get<bool>();
  return std::nullopt;
}

#define RETURN_IF_API_ERROR(expr)    \
  do {                               \
    if (auto _e = (expr)) return _e; \
  } while (0)

// tool_choice: "auto" (default) and "none" only; forcing a call ("required", a named
// function) needs constrained decoding, which the engine does not have.
std::optional<ApiError> read_tool_choice(const ojson& body, ApiRequest& out) {
  std::string choice = "auto";
  if (const ojson* tc = field(body, "tool_choice")) {
    if (tc->is_object()) return bad_request("a named 'tool_choice' is not supported (use \"auto\")", "tool_choice");
    if (!tc->is_string()) return wrong_type("tool_choice", "a string", *tc);
    choice = tc->get<std::string>();
    if (choice == "required") return bad_request("'tool_choice' \"required\" is not supported", "tool_choice");
    if (choice != "auto" && choice != "none")
      return bad_request(fmt::format("'tool_choice' must be \"auto\" or \"none\", got \"{}\"", choice),
                         "tool_choice");
  }
  out.parse_tool_calls = out.tools.is_array() && !out.tools.empty() && choice != "none";
  return std::nullopt;
}

// logit_bias: {"<token id>": bias in [-100, 100]}; ids are checked against the vocabulary
// later (SamplingParams::validate). A repeated id keeps its last bias.
std::optional<ApiError> read_logit_bias(const ojson& v, std::vector<std::pair<int32_t, float>>& out) {
  if (!v.is_object()) return wrong_type("logit_bias", "an object of token id -> bias", v);
  std::map<int32_t, float> bias;
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& key = it.key();
    bool digits = !key.empty() && key.size() <= 10;
    for (char c : key) digits = digits && c >= '0' && c <= '9';
    int64_t id = digits ? std::stoll(key) : -1;
    if (!digits || id > std::numeric_limits<int32_t>::max())
      return bad_request(fmt::format("'logit_bias' keys must be token ids, got \"{}\"", key.substr(0, 40)),
                         "logit_bias");
    if (!it->is_number())
      return bad_request(fmt::format("'logit_bias' value for token {} must be a number, got {}", id,
                                     type_name(*it)),
                         "logit_bias");
    double b = it->get<double>();
    if (!(b >= -100.0 && b <= 100.0))
      return bad_request(fmt::format("'logit_bias' value for token {} must be in [-100, 100], got {}", id, b),
                         "logit_bias");
    bias[int32_t(id)] = float(b);
  }
  out.assign(bias.begin(), bias.end());
  return std::nullopt;
}

}  // namespace

// Flattens a message's content parts ([{"type": "text", "text": ...}, ...]) to one string.
std::optional<ApiError> normalize_messages(const ojson& in, ojson& out) {
  if (!in.is_array()) return wrong_type("messages", "an array", in);
  if (in.empty()) return bad_request("'messages' must not be empty", "messages");
  out = ojson::array();
  for (size_t i = 0; i < in.size(); ++i) {
    const ojson& m = in[i];
    std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) return wrong_type(where, "an object", m);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      return bad_request(fmt::format("'{}.role' must be a string", where), "messages");
    const std::string& r = role->get_ref<const std::string&>();
    if (r != "system" && r != "user" && r != "assistant" && r != "tool" && r != "developer")
      return bad_request(
          fmt::format("'{}.role' '{}' is not one of system, developer, user, assistant, tool", where, r),
          "messages");
    ojson copy = m;
    auto content = m.find("content");
    if (content != m.end()) {
      if (content->is_array()) {
        std::string text;
        for (const ojson& part : *content) {
          auto type = part.is_object() ? part.find("type") : part.end();
          if (!part.is_object() || type == part.end() || *type != "text" || !part.contains("text") ||
              !part["text"].is_string())
            return bad_request(fmt::format("'{}.content': only text parts are supported", where), "messages");
          text += part["text"].get<std::string>();
        }
        copy["content"] = text;
      } else if (!content->is_string() && !content->is_null()) {
        return bad_request(fmt::format("'{}.content' must be a string or an array of text parts", where),
                           "messages");
      }
    } else if (r != "assistant") {
      return bad_request(fmt::format("'{}.content' is missing", where), "messages");
    }
    // An assistant turn that only calls tools has no (or null) content in OpenAI history;
    // templates such as Qwen3's test `'</think>' in message.content`, so give them "".
    if (content == m.end() || content->is_null()) {
      if (r != "assistant" && r != "tool")
        return bad_request(fmt::format("'{}.content' must be a string or an array of text parts", where),
                           "messages");
      copy["content"] = "";
    }
    out.push_back(std::move(copy));
  }
  return std::nullopt;
}

ojson ApiError::to_json() const {
  ojson e = ojson::object();
  e["message"] = message;
  e["type"] = type;
  e["param"] = param.empty() ? ojson(nullptr) : ojson(param);
  e["code"] = code.empty() ? ojson(nullptr) : ojson(code);
  return ojson{{"error", e}};
}

ApiError bad_request(std::string message, std::string param) {
  return api_error(400, "invalid_request_error", std::move(message), std::move(param));
}

ApiError api_error(int status, std::string type, std::string message, std::string param, std::string code) {
  ApiError e;
  e.status = status;
  e.type = std::move(type);
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

std::optional<ApiError> parse_json_object(const std::string& body, ojson& out) {
  auto parsed = parse_ordered_json(body, kBodyJsonLimits);
  if (!parsed.ok()) return bad_request("the request body is not valid JSON: " + parsed.status().message());
  out = std::move(parsed).value();
  if (!out.is_object())
    return bad_request(fmt::format("the request body must be a JSON object, got {}", type_name(out)));
  return std::nullopt;
}

std::optional<ApiError> read_token_ids(const ojson& v, const std::string& what, std::vector<int32_t>& out) {
  if (!v.is_array()) return wrong_type(what, "an array of token ids", v);
  out.clear();
  for (const ojson& t : v) {
    if (!t.is_number_integer() && !t.is_number_unsigned())
      return bad_request(fmt::format("'{}' must contain only integer token ids, got {}", what, type_name(t)),
                         what);
    int64_t id = t.is_number_unsigned() ? int64_t(std::min<uint64_t>(t.get<uint64_t>(), uint64_t(INT64_MAX)))
                                        : t.get<int64_t>();
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      return bad_request(fmt::format("'{}': token id {} is out of range", what, id), what);
    out.push_back(int32_t(id));
  }
  return std::nullopt;
}

std::optional<ApiError> parse_generation_request(const std::string& body, Endpoint endpoint,
                                                 ApiRequest& out) {
  ojson j;
  RETURN_IF_API_ERROR(parse_json_object(body, j));
  out = ApiRequest{};
  out.endpoint = endpoint;
  SamplingParams& p = out.params;

  if (const ojson* m = field(j, "model")) {
    if (!m->is_string()) return wrong_type("model", "a string", *m);
    out.model = m->get<std::string>();
  }

  if (endpoint == Endpoint::kCompletions) {
    const ojson* pr = field(j, "prompt");
    if (!pr) return bad_request("'prompt' is required", "prompt");
    const ojson* one = pr;
    // A list with a single prompt is accepted; batches are not (n = 1 per request).
    if (pr->is_array() && !pr->empty() && (pr->front().is_string() || pr->front().is_array())) {
      if (pr->size() != 1)
        return bad_request("only one prompt per request is supported (send one request per prompt)",
                           "prompt");
      one = &pr->front();
    }
    if (one->is_string()) {
      out.prompt_text = one->get<std::string>();
      if (out.prompt_text.empty()) return bad_request("'prompt' must not be empty", "prompt");
    } else if (one->is_array()) {
      RETURN_IF_API_ERROR(read_token_ids(*one, "prompt", out.prompt_ids));
      if (out.prompt_ids.empty()) return bad_request("'prompt' must not be empty", "prompt");
      out.prompt_is_ids = true;
    } else {
      return wrong_type("prompt", "a string or an array of token ids", *one);
    }
    RETURN_IF_API_ERROR(read_bool(j, "echo", out.echo));
    if (const ojson* s = field(j, "suffix")) {
      if (!s->is_string()) return wrong_type("suffix", "a string", *s);
      if (!s->get<std::string>().empty()) return bad_request("'suffix' is not supported", "suffix");
    }
    int64_t lp = -1;
    bool has = false;
    RETURN_IF_API_ERROR(read_int(j, "logprobs", lp, has));
    if (has) {
      if (lp < 0 || lp > 20)
        return bad_request(fmt::format("'logprobs' must be in [0, 20], got {}", lp), "logprobs");
      out.top_logprobs = int(lp);
    }
  } else {
    const ojson* msgs = field(j, "messages");
    if (!msgs) return bad_request("'messages' is required", "messages");
    RETURN_IF_API_ERROR(normalize_messages(*msgs, out.messages));
    if (const ojson* t = field(j, "tools")) {
      if (!t->is_array()) return wrong_type("tools", "an array", *t);
      if (!t->empty()) out.tools = *t;
    }
    RETURN_IF_API_ERROR(read_tool_choice(j, out));
    if (const ojson* k = field(j, "chat_template_kwargs")) {
      if (!k->is_object()) return wrong_type("chat_template_kwargs", "an object", *k);
      out.chat_template_kwargs = *k;
    }
    RETURN_IF_API_ERROR(read_bool(j, "add_generation_prompt", out.add_generation_prompt));
    bool logprobs = false;
    RETURN_IF_API_ERROR(read_bool(j, "logprobs", logprobs));
    int64_t top = 0;
    bool has_top = false;
    RETURN_IF_API_ERROR(read_int(j, "top_logprobs", top, has_top));
    if (has_top && (top < 0 || top > 20))
      return bad_request(fmt::format("'top_logprobs' must be in [0, 20], got {}", top), "top_logprobs");
    if (has_top && !logprobs) return bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
    if (logprobs) out.top_logprobs = int(has_top ? top : 0);
    if (const ojson* rf = field(j, "response_format")) {
      if (!rf->is_object() || !rf->contains("type") || (*rf)["type"] != "text")
        return bad_request("only response_format {\"type\": \"text\"} is supported", "response_format");
    }
  }

  // Sampling.
  RETURN_IF_API_ERROR(read_float(j, "temperature", p.temperature));
  RETURN_IF_API_ERROR(read_float(j, "top_p", p.top_p));
  RETURN_IF_API_ERROR(read_float(j, "min_p", p.min_p));
  RETURN_IF_API_ERROR(read_float(j, "presence_penalty", p.presence_penalty));
  RETURN_IF_API_ERROR(read_float(j, "frequency_penalty", p.frequency_penalty));
  RETURN_IF_API_ERROR(read_float(j, "repetition_penalty", p.repetition_penalty));
  int64_t v = 0;
  bool has = false;
  RETURN_IF_API_ERROR(read_int(j, "top_k", v, has));
  if (has) {
    if (v < -1) return bad_request(fmt::format("'top_k' must be -1 (off) or >= 0, got {}", v), "top_k");
    p.top_k = v <= 0 ? 0 : int32_t(std::min<int64_t>(v, INT32_MAX));
  }
  RETURN_IF_API_ERROR(read_int(j, "seed", v, has));
  if (has) p.seed = uint64_t(v);
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    RETURN_IF_API_ERROR(read_int(j, key, v, has));
    if (!has) continue;
    // With echo, 0 asks for the prompt alone (the engine is not involved).
    if (v < 0 || (v == 0 && !out.echo))
      return bad_request(fmt::format("'{}' must be at least {}, got {}", key, out.echo ? 0 : 1, v), key);
    p.max_tokens = int32_t(std::min<int64_t>(v, INT32_MAX));
    out.max_tokens_given = true;
  }
  RETURN_IF_API_ERROR(read_int(j, "n", v, has));
  if (has) {
    if (v < 1 || v > kMaxChoices)
      return bad_request(fmt::format("'n' must be in [1, {}], got {}", kMaxChoices, v), "n");
    out.n = int32_t(v);
  }
  if (endpoint == Endpoint::kCompletions) {
    // best_of: ranking candidates by log-probability is not implemented; best_of = n (every
    // candidate is returned, nothing to rank) is accepted.
    RETURN_IF_API_ERROR(read_int(j, "best_of", v, has));
    if (has && v != out.n)
      return bad_request(fmt::format("'best_of' must equal 'n' ({}), got {}: choosing the best of more "
                                     "candidates than are returned is not supported",
                                     out.n, v),
                         "best_of");
  }
  if (const ojson* lb = field(j, "logit_bias")) RETURN_IF_API_ERROR(read_logit_bias(*lb, p.logit_bias));
  RETURN_IF_API_ERROR(read_bool(j, "ignore_eos", p.ignore_eos));
  RETURN_IF_API_ERROR(read_bool(j, "skip_special_tokens", out.skip_special_tokens));
  if (const ojson* ids = field(j, "stop_token_ids"))
    RETURN_IF_API_ERROR(read_token_ids(*ids, "stop_token_ids", p.stop_token_ids));
  if (const ojson* s = field(j, "stop")) {
    if (s->is_string()) {
      out.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      for (const ojson& e : *s) {
        if (!e.is_string()) return bad_request("'stop' must be a string or an array of strings", "stop");
        out.stop.push_back(e.get<std::string>());
      }
    } else {
      return wrong_type("stop", "a string or an array of strings", *s);
    }
    for (const std::string& st : out.stop)
      if (st.empty()) return bad_request("'stop' strings must not be empty", "stop");
  }
  RETURN_IF_API_ERROR(read_bool(j, "stream", out.stream));
  if (const ojson* so = field(j, "stream_options")) {
    if (!so->is_object()) return wrong_type("stream_options", "an object", *so);
    if (!out.stream)
      return bad_request("'stream_options' is only allowed with 'stream': true", "stream_options");
    RETURN_IF_API_ERROR(read_bool(*so, "include_usage", out.include_usage));
  }
  if (out.top_logprobs >= 0) p.logprobs = out.top_logprobs;
  if (out.echo && out.top_logprobs >= 0)
    return bad_request("'echo' with 'logprobs' is not supported (prompt logprobs are not computed)", "echo");
  return std::nullopt;
}

}  // namespace moeopt::server
