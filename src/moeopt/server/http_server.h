// HttpServer: a small HTTP/1.1 server with one event-loop thread for all sockets and a
// bounded pool of handler threads for complete requests.
//
// Why not a thread per connection: a client that sends one byte per second would hold a
// thread for as long as it likes, and a few hundred of them starve everyone (/health
// included). Here the event loop (epoll) owns every socket while it is idle or while a
// request's head and body arrive, so a slow or idle client costs a buffer, not a thread:
//   * the head must arrive within `header_timeout_s` of its first byte, the body within
//     `body_timeout_s` of the head, an idle keep-alive connection is closed after
//     `idle_timeout_s`; a late head or body gets 408 and the connection is closed;
//   * at most `max_headers` header lines and `max_header_bytes` of head (431), one
//     Content-Length (conflicting values: 400), a declared body larger than
//     `max_body_bytes` is refused at the headers (413) without reading it; Transfer-Encoding
//     on a request is not supported (411);
//   * at most `max_connections` sockets in all (beyond: 503 and close) and at most
//     `max_reading` of them between the first byte of a request and its last (beyond:
//     503 and close);
//   * a complete request goes to a handler thread; when all `handler_threads` are busy and
//     `max_queued` requests wait, the loop answers 503 (Retry-After: 1) itself;
//   * routes marked `inline` (/health, /metrics, ...) run on the loop thread and never wait
//     for a handler thread, so they answer while every handler is busy.
// A handler thread writes its response with a per-write deadline (`write_timeout_s`) and,
// for keep-alive, gives the socket back to the loop. Chunked responses (SSE) call a
// provider repeatedly on the handler thread until it says done or a write fails.
//
// Errors produced by this layer are OpenAI-style one-line JSON error objects.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt::server::http {

struct Request {
  std::string method;
  std::string target;  // as sent (path and query)
  std::string path;    // percent-decoded, without the query
  std::string query;   // raw, without '?'
  std::vector<std::pair<std::string, std::string>> headers;  // as sent, values trimmed
  std::string body;
  std::string match;  // for prefix routes: the decoded rest of the path after the prefix
  bool keep_alive = true;

  // The first header of that name (case-insensitive), "" when absent.
  const std::string& header(std::string_view name) const;
  bool has_header(std::string_view name) const;
};

// Writes pieces of a chunked response body. write() false: the client is gone (or too slow).
class Sink {
 public:
  virtual ~Sink() = default;
  virtual bool write(const char* data, size_t n) = 0;
  bool write(const std::string& s) { return write(s.data(), s.size()); }
  void done() { done_ = true; }
  bool is_done() const { return done_; }

 private:
  bool done_ = false;
};

struct Response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string content_type = "application/json";
  std::string body;
  // Chunked body: called on the handler thread until it calls sink.done() (true) or
  // returns false (abandon). `on_finish(ok)` runs afterwards in every case.
  std::function<bool(Sink&)> provider;
  std::function<void(bool ok)> on_finish;

  void set_header(std::string name, std::string value) { headers.emplace_back(std::move(name), std::move(value)); }
  void set_content(std::string b, std::string type) {
    body = std::move(b);
    content_type = std::move(type);
  }
  void set_chunked(std::string type, std::function<bool(Sink&)> p, std::function<void(bool)> finish) {
    content_type = std::move(type);
    provider = std::move(p);
    on_finish = std::move(finish);
  }
};

using Handler = std::function<void(const Request&, Response&)>;

struct HttpOptions {
  int handler_threads = 16;
  int max_queued = 64;                 // complete requests waiting for a handler thread
  int max_connections = 4096;          // open sockets in all
  int max_reading = 1024;              // sockets between a request's first and last byte
  size_t max_header_bytes = 64 << 10;  // request line + headers
  int max_headers = 100;
  size_t max_body_bytes = size_t(32) << 20;
  double header_timeout_s = 10;
  double body_timeout_s = 30;
  double idle_timeout_s = 5;
  double write_timeout_s = 30;
};

class HttpServer {
 public:
  explicit HttpServer(HttpOptions opt);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Routes: exact path, or a prefix (path starts with it; Request::match is the rest).
  // `inline_route`: run on the event loop (must be quick and never block).
  void route(std::string method, std::string path, Handler h, bool inline_route = false);
  void route_prefix(std::string method, std::string prefix, Handler h, bool inline_route = false);
  // When no route matches (404 or 405 are the caller's to write).
  void set_fallback(Handler h) { fallback_ = std::move(h); }
  // Called after every response (status as sent), from whichever thread sent it.
  void set_logger(std::function<void(const Request&, int status)> f) { logger_ = std::move(f); }
  // Runs before the handler on the handler thread; a handler that throws gets a 500.
  void set_exception_message(std::function<std::string(std::exception_ptr)> f) { exception_message_ = std::move(f); }

  // port 0: any free port. kIoError naming host:port on failure.
  Status bind(const std::string& host, int port);
  int port() const { return port_; }
  // Serves until stop(); returns after the loop and every handler thread ended.
  Status run();
  // From any thread; idempotent. Handlers in progress run to their end.
  void stop();
  bool is_running() const { return running_.load(); }

  // Counters for tests and /metrics.
  struct Stats {
    int64_t connections = 0, reading = 0, busy_handlers = 0, queued = 0;
    int64_t rejected_busy = 0, timed_out = 0, refused_connections = 0;
  };
  Stats stats() const;

  struct Impl;

 private:
  struct RouteEntry {
    std::string method, path;
    bool prefix = false, inline_route = false;
    Handler handler;
  };
  const RouteEntry* find_route(const Request& r) const;

  HttpOptions opt_;
  std::vector<RouteEntry> routes_;
  Handler fallback_;
  std::function<void(const Request&, int)> logger_;
  std::function<std::string(std::exception_ptr)> exception_message_;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<bool> running_{false};
};

// Parses a request line and header fields (`head` without the final CRLF CRLF) into `r`:
// method, target, decoded path, query, headers, keep-alive; the body length and whether
// the client waits for 100 Continue. An error carries the status to answer (400, 411,
// 413, 431, 505) and a one-line message. Exposed for the fuzz target.
struct HeadError {
  int status;
  std::string message;
};
std::optional<HeadError> parse_request_head(std::string_view head, const HttpOptions& opt, Request& r,
                                            size_t& content_length, bool& expect_continue);

// The OpenAI-style error body this layer sends: {"error": {"message", "type", "param", "code"}}.
std::string error_body(int status, std::string_view message);
// "Bearer <key>" check on the raw header value: scheme case-insensitive, then exactly the
// key (no decoding), compared in constant time over the key's length.
bool bearer_matches(std::string_view header_value, std::string_view key);

}  // namespace moeopt::server::http
