// OpenAiServer: route registration and the small routes (health, models, metrics, tokenizer).
// The generation routes are in openai_generate.cpp.
#include <atomic>
#include <cctype>
#include <chrono>

#include <fmt/format.h>

#include "moeopt/server/http_reply.h"
#include "moeopt/server/http_server.h"
#include "moeopt/server/openai_server.h"
#include "moeopt/server/served_model.h"

namespace moeopt::server {
namespace {

using http::Request;
using http::Response;

// Route label for the requests-by-status counter (unknown paths share one label so a
// scanner cannot blow up the metric's cardinality).
std::string route_label(const std::string& path) {
  static const char* kRoutes[] = {"/health",   "/v1/models",  "/v1/completions", "/v1/chat/completions",
                                  "/tokenize", "/detokenize", "/metrics"};
  for (const char* r : kRoutes)
    if (path == r) return r;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

// The client's X-Request-Id when it is short and plain, else a fresh one.
std::string request_id_for(const Request& req) {
  const std::string& given = req.header("X-Request-Id");
  bool ok = !given.empty() && given.size() <= 128;
  for (char c : given)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':')) ok = false;
  if (ok) return given;
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  return fmt::format("req-{:016x}", (salt * 0x9E3779B97F4A7C15ull) ^ counter.fetch_add(1));
}

std::string exception_message(std::exception_ptr ep) {
  std::string what = "internal error";
  try {
    if (ep) std::rethrow_exception(ep);
  } catch (const std::exception& e) {
    what = std::string("internal error: ") + e.what();
  } catch (...) {
  }
  return what;
}

// An optional boolean field of `j` (absent or null: `out` unchanged).
std::optional<ApiError> read_bool(const ojson& j, const char* key, bool& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return bad_request(fmt::format("'{}' must be a boolean", key), key);
  out = it->get<bool>();
  return std::nullopt;
}

}  // namespace

void OpenAiServer::install_routes() {
  http::HttpServer& h = *http_;
  h.set_logger([this](const Request& req, int status) { metrics_.count_response(route_label(req.path), status); });
  h.set_fallback([](const Request& req, Response& res) {
    send_error(res, api_error(404, "not_found_error", fmt::format("no route {} {}", req.method, req.path)));
  });
  h.set_exception_message(exception_message);
  // Every route answers with X-Request-Id. `inline_route`: answered on the event loop.
  using Method = void (OpenAiServer::*)(const Request&, Response&);
  auto add = [this, &h](const char* method, const char* path, Method fn, bool inline_route = false,
                        bool prefix = false) {
    http::Handler wrapped = [this, fn](const Request& req, Response& res) {
      (this->*fn)(req, res);
      res.set_header("X-Request-Id", request_id_for(req));
    };
    if (prefix)
      h.route_prefix(method, path, std::move(wrapped), inline_route);
    else
      h.route(method, path, std::move(wrapped), inline_route);
  };
  add("GET", "/health", &OpenAiServer::handle_health, /*inline_route=*/true);
  add("GET", "/v1/models", &OpenAiServer::handle_models, /*inline_route=*/true);
  add("GET", "/v1/models/", &OpenAiServer::handle_model, /*inline_route=*/true, /*prefix=*/true);
  add("GET", "/metrics", &OpenAiServer::handle_metrics, /*inline_route=*/true);
  add("POST", "/tokenize", &OpenAiServer::handle_tokenize);
  add("POST", "/detokenize", &OpenAiServer::handle_detokenize);
  add("POST", "/v1/completions", &OpenAiServer::handle_completions);
  add("POST", "/v1/chat/completions", &OpenAiServer::handle_chat_completions);
}

bool OpenAiServer::authorized(const Request& req, Response& res) const {
  if (opt_.api_key.empty()) return true;
  // The raw header value: scheme case-insensitive, the key byte for byte (no decoding).
  const std::string& got = req.header("Authorization");
  if (http::bearer_matches(got, opt_.api_key)) return true;
  send_error(res, api_error(401, "authentication_error",
                            got.empty() ? "missing API key: send 'Authorization: Bearer <key>'" : "invalid API key",
                            "", "invalid_api_key"));
  return false;
}

bool OpenAiServer::check_model(const std::string& model, Response& res) const {
  if (model.empty() || model == model_->model_name) return true;
  send_error(res, api_error(404, "not_found_error",
                            fmt::format("The model `{}` does not exist; this server serves `{}`", model,
                                        model_->model_name),
                            "model", "model_not_found"));
  return false;
}

bool OpenAiServer::read_tokenizer_body(const Request& req, Response& res, ojson& j) const {
  if (!authorized(req, res)) return false;
  if (auto e = parse_json_object(req.body, j)) {
    send_error(res, *e);
    return false;
  }
  return !(j.contains("model") && j["model"].is_string() && !check_model(j["model"].get<std::string>(), res));
}

void OpenAiServer::handle_health(const Request&, Response& res) {
  std::string fatal = service_->fatal_error();
  if (!fatal.empty()) return send_json(res, 503, {{"status", "error"}, {"error", fatal}});
  if (draining_) return send_json(res, 503, {{"status", "shutting_down"}});
  send_json(res, 200, {{"status", "ok"}});
}

void OpenAiServer::handle_models(const Request& req, Response& res) {
  if (!authorized(req, res)) return;
  send_json(res, 200, {{"object", "list"}, {"data", ojson::array({model_->model_card()})}});
}

void OpenAiServer::handle_model(const Request& req, Response& res) {
  if (!authorized(req, res)) return;
  if (!check_model(req.match, res)) return;
  send_json(res, 200, model_->model_card());
}

void OpenAiServer::handle_metrics(const Request&, Response& res) {
  res.status = 200;
  res.set_content(metrics_.render(service_->snapshot(), model_->model_name), "text/plain; version=0.0.4");
}

void OpenAiServer::handle_tokenize(const Request& req, Response& res) {
  ojson j;
  if (!read_tokenizer_body(req, res, j)) return;
  const ServedModel& m = *model_;
  std::string text;
  bool add_special = true;
  if (auto it = j.find("messages"); it != j.end() && !it->is_null()) {
    ojson messages;
    if (auto e = normalize_messages(*it, messages)) return send_error(res, *e);
    bool agp = true;
    if (auto e = read_bool(j, "add_generation_prompt", agp)) return send_error(res, *e);
    if (auto e = m.render_chat(messages, ojson(nullptr), agp, ojson(nullptr), text)) return send_error(res, *e);
    add_special = false;
  } else if (auto p = j.find("prompt"); p != j.end() && p->is_string()) {
    text = p->get<std::string>();
  } else {
    return send_error(res, bad_request("'prompt' (a string) or 'messages' is required", "prompt"));
  }
  if (auto e = read_bool(j, "add_special_tokens", add_special)) return send_error(res, *e);
  if (auto e = m.check_text_bytes(text, "prompt")) return send_error(res, *e);
  auto ids = m.tok.encode(text, add_special);
  if (!ids.ok()) return send_error(res, bad_request(ids.status().message(), "prompt"));
  send_json(res, 200, {{"tokens", *ids}, {"count", ids->size()}, {"max_model_len", m.max_model_len}});
}

void OpenAiServer::handle_detokenize(const Request& req, Response& res) {
  ojson j;
  if (!read_tokenizer_body(req, res, j)) return;
  if (!j.contains("tokens")) return send_error(res, bad_request("'tokens' is required", "tokens"));
  std::vector<int32_t> ids;
  if (auto e = read_token_ids(j["tokens"], "tokens", ids)) return send_error(res, *e);
  for (int32_t t : ids)
    if (int64_t(t) >= int64_t(model_->tok.vocab_size()))
      return send_error(res, bad_request(fmt::format("token id {} is outside the vocabulary", t), "tokens"));
  send_json(res, 200, {{"prompt", model_->tok.decode(ids, /*skip_special_tokens=*/false)}});
}

}  // namespace moeopt::server
