// OpenAiServer: the HTTP front of the engine (http_server.h), OpenAI-compatible.
//
// Routes:
//   GET  /health                 200 {"status": "ok"} (503 while shutting down or after an engine failure)
//   GET  /v1/models[/{id}]       the one served model
//   POST /v1/completions         prompt text or token ids; stream or not
//   POST /v1/chat/completions    messages through the model's chat template; stream or not
//   POST /tokenize               {"prompt": text | "messages": [...], "add_special_tokens"?}
//                                -> {"tokens", "count", "max_model_len"}
//   POST /detokenize             {"tokens": [ids]} -> {"prompt": text}
//   GET  /metrics                Prometheus text (metrics.h)
// Errors are OpenAI error objects: 400 bad input, 401 bad/missing API key (when one is set;
// /health and /metrics stay open), 404 unknown model or route, 429 queue full (with
// Retry-After), 503 shutting down, 500 engine failure.
//
// Sockets live on the HTTP layer's event loop while idle or while a request arrives
// (deadlines, header and body limits: http_server.h); /health, /metrics and /v1/models are
// answered on the loop itself. A complete generation or tokenizer request runs on a handler
// thread; it validates and tokenizes, submits to the EngineService and then reads its own
// RequestStream (engine_service.h). Every response carries X-Request-Id (the client's, when
// it sent a sane one).
// A streamed response notices a client that went away when a write fails; the request is
// then cancelled and its KV blocks are freed by the engine thread. A non-streamed request
// that takes longer than 2 s is answered as a chunked 200 body preceded by JSON whitespace
// written every second, so its client leaving is noticed the same way; late failures then
// come as an error object in that body.
//
// Shutdown (shutdown()): new generation requests get 503, in-flight ones may finish for up
// to `shutdown_timeout_s`, then whatever is left is aborted and the listener stops.
//
// Code: openai_server.cpp (construction, listening, shutdown), openai_routes.cpp (route
// registration and the small routes), openai_generate.cpp (the generation routes and their
// two sinks, SSE and JSON), response_accumulator.h (engine events -> OpenAI choice deltas,
// shared by both sinks), served_model.h (prompts, chat template and length checks).
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "moeopt/engine/engine.h"
#include "moeopt/server/engine_service.h"
#include "moeopt/server/metrics.h"
#include "moeopt/tokenizer/chat_template.h"
#include "moeopt/tokenizer/tokenizer.h"

namespace moeopt::server::http {
class HttpServer;
struct Request;
struct Response;
}  // namespace moeopt::server::http

namespace moeopt::server {

enum class Endpoint;  // openai_request.h
struct ServedModel;   // served_model.h

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                  // 0: any free port (see port())
  std::string api_key;              // "": no authentication
  std::string served_model_name;    // the id of /v1/models and the "model" field
  int max_waiting_requests = 1024;  // beyond running + this many, 429
  int http_threads = 0;             // 0: max_num_seqs + max_waiting (capped) + 8
  double shutdown_timeout_s = 30.0;
  size_t max_body_bytes = size_t(32) << 20;
  // Connection limits of the HTTP layer (http_server.h).
  double header_timeout_s = 10, body_timeout_s = 30, idle_timeout_s = 5;
  int max_connections = 4096, max_reading_connections = 1024;
};

class OpenAiServer {
 public:
  // `chat_template` may be empty: chat requests then get 400.
  static Result<std::unique_ptr<OpenAiServer>> create(ServerOptions options, std::unique_ptr<Engine> engine,
                                                      tokenizer::Tokenizer tok,
                                                      std::optional<tokenizer::ChatTemplate> chat_template);
  ~OpenAiServer();

  // Binds the listening socket (kIoError naming host:port on failure).
  Status bind();
  int port() const { return port_; }
  // Starts the engine thread and serves until shutdown(); returns after everything stopped.
  Status run();
  // Graceful stop, callable from any thread (see the file comment). Idempotent.
  void shutdown();

  const ServerOptions& options() const { return opt_; }
  EngineSnapshot snapshot() const { return service_->snapshot(); }

 private:
  OpenAiServer() = default;
  // Registers the handlers below with the HTTP layer (openai_routes.cpp).
  void install_routes();

  // One function per route. Small routes: openai_routes.cpp; the two generation routes:
  // openai_generate.cpp.
  void handle_health(const http::Request& req, http::Response& res);
  void handle_models(const http::Request& req, http::Response& res);
  void handle_model(const http::Request& req, http::Response& res);  // /v1/models/{id}
  void handle_metrics(const http::Request& req, http::Response& res);
  void handle_tokenize(const http::Request& req, http::Response& res);
  void handle_detokenize(const http::Request& req, http::Response& res);
  void handle_completions(const http::Request& req, http::Response& res);
  void handle_chat_completions(const http::Request& req, http::Response& res);
  void handle_generate(Endpoint ep, const http::Request& req, http::Response& res);
  // Checks shared by the routes: false after the 401 / 404 was written to `res`.
  bool authorized(const http::Request& req, http::Response& res) const;
  bool check_model(const std::string& model, http::Response& res) const;
  // /tokenize, /detokenize: authorized, a JSON object, and its "model" (if any) served.
  bool read_tokenizer_body(const http::Request& req, http::Response& res, nlohmann::ordered_json& j) const;

  ServerOptions opt_;
  std::unique_ptr<ServedModel> model_;
  std::unique_ptr<http::HttpServer> http_;
  std::unique_ptr<EngineService> service_;
  Metrics metrics_;
  int port_ = 0;
  std::atomic<bool> draining_{false};
  std::atomic<bool> shutdown_started_{false};
};

}  // namespace moeopt::server
