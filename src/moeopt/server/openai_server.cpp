// OpenAiServer: construction, listening and shutdown (see openai_server.h). The routes are
// in openai_routes.cpp and openai_generate.cpp.
#include "moeopt/server/openai_server.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "moeopt/core/logging.h"
#include "moeopt/server/http_server.h"
#include "moeopt/server/served_model.h"

namespace moeopt::server {

using Clock = std::chrono::steady_clock;

Result<std::unique_ptr<OpenAiServer>> OpenAiServer::create(
    ServerOptions options, std::unique_ptr<Engine> engine, tokenizer::Tokenizer tok,
    std::optional<tokenizer::ChatTemplate> chat_template) {
  if (options.served_model_name.empty())
    return make_error(ErrorCode::kInvalidArgument, "served model name is empty");
  if (options.max_waiting_requests < 0)
    return make_error(ErrorCode::kInvalidArgument, "max_waiting_requests must be >= 0");
  std::unique_ptr<OpenAiServer> s(new OpenAiServer());
  s->opt_ = options;
  s->model_ = std::make_unique<ServedModel>(std::move(tok), std::move(chat_template), options.served_model_name,
                                            *engine);
  const int max_seqs = engine->options().max_num_seqs;
  EngineServiceOptions so;
  so.max_in_flight = max_seqs + options.max_waiting_requests;
  s->service_ = std::make_unique<EngineService>(std::move(engine), so, &s->metrics_);
  http::HttpOptions ho;
  // Handler threads serve complete requests only (idle and arriving sockets cost no
  // thread); enough for every request the engine admits plus a few tokenizer calls.
  ho.handler_threads = options.http_threads > 0 ? options.http_threads
                                                : std::min(max_seqs + options.max_waiting_requests, 256) + 8;
  ho.max_queued = std::max(16, ho.handler_threads);
  ho.max_body_bytes = options.max_body_bytes;
  ho.header_timeout_s = options.header_timeout_s;
  ho.body_timeout_s = options.body_timeout_s;
  ho.idle_timeout_s = options.idle_timeout_s;
  ho.max_connections = options.max_connections;
  ho.max_reading = options.max_reading_connections;
  s->http_ = std::make_unique<http::HttpServer>(ho);
  s->install_routes();
  return s;
}

OpenAiServer::~OpenAiServer() {
  if (service_) service_->stop();
}

Status OpenAiServer::bind() {
  Status st = http_->bind(opt_.host, opt_.port);
  if (!st.ok()) {
    if (opt_.port == 0) return make_error(ErrorCode::kIoError, "cannot listen on {} (any port)", opt_.host);
    return make_error(ErrorCode::kIoError, "cannot listen on {}:{} (in use, or not a local address)", opt_.host,
                      opt_.port);
  }
  port_ = http_->port();
  return {};
}

Status OpenAiServer::run() {
  service_->start();
  Status st = http_->run();
  service_->stop();
  if (!st.ok() && !shutdown_started_) return st.with_context("the HTTP listener failed");
  return {};
}

void OpenAiServer::shutdown() {
  if (shutdown_started_.exchange(true)) return;
  draining_ = true;
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(std::max(0.0, opt_.shutdown_timeout_s)));
  while (service_->in_flight() > 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (service_->in_flight() > 0)
    log::warn("shutdown: aborting {} request(s) still in flight", service_->in_flight());
  // Abort leftovers first so no handler thread waits for the engine, then stop listening
  // (the HTTP layer joins its handler threads). A listener that has not started yet is waited for.
  service_->stop();
  for (int i = 0; i < 500 && !http_->is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  http_->stop();
}

}  // namespace moeopt::server
