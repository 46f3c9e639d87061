// HttpServer: epoll event loop for all sockets, handler threads for complete requests
// (see http_server.h).
#include "moeopt/server/http_server.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace moeopt::server::http {
namespace {

using Clock = std::chrono::steady_clock;

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(std::max(0.0, s)));
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

const char* reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return status < 400 ? "OK" : "Error";
  }
}

bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return std::nullopt;
    out.push_back(char(hi * 16 + lo));
    i += 2;
  }
  return out;
}

}  // namespace

std::optional<HeadError> parse_request_head(std::string_view head, const HttpOptions& opt, Request& r,
                                            size_t& content_length, bool& expect_continue) {
  content_length = 0;
  expect_continue = false;
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos || sp1 == 0 || sp2 == sp1 + 1)
    return HeadError{400, "malformed request line"};
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  for (char c : method)
    if (!is_tchar(c)) return HeadError{400, "malformed request line"};
  for (char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return HeadError{400, "malformed request target"};
  bool http10 = false;
  if (version == "HTTP/1.0") {
    http10 = true;
  } else if (version != "HTTP/1.1") {
    if (version.rfind("HTTP/", 0) == 0) return HeadError{505, "only HTTP/1.0 and HTTP/1.1 are supported"};
    return HeadError{400, "malformed request line"};
  }
  r.method = std::string(method);
  r.target = std::string(target);
  std::string_view t = target;
  if (t.rfind("http://", 0) == 0 || t.rfind("https://", 0) == 0) {  // absolute-form
    size_t slash = t.find('/', t.find("//") + 2);
    t = slash == std::string_view::npos ? std::string_view("/") : t.substr(slash);
  }
  if (t.empty() || (t[0] != '/' && t != "*")) return HeadError{400, "malformed request target"};
  size_t q = t.find('?');
  auto path = percent_decode(t.substr(0, q));
  if (!path) return HeadError{400, "malformed percent-encoding in the request path"};
  r.path = std::move(*path);
  r.query = q == std::string_view::npos ? "" : std::string(t.substr(q + 1));

  bool have_length = false, have_host = false, chunked = false, conn_close = false, conn_keep = false;
  size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    std::string_view h = head.substr(pos, e == std::string_view::npos ? std::string_view::npos : e - pos);
    pos = e == std::string_view::npos ? head.size() : e + 2;
    if (int(r.headers.size()) >= opt.max_headers)
      return HeadError{431, fmt::format("more than {} header fields", opt.max_headers)};
    if (h.empty() || h[0] == ' ' || h[0] == '\t') return HeadError{400, "obsolete header line folding"};
    size_t colon = h.find(':');
    if (colon == std::string_view::npos || colon == 0) return HeadError{400, "malformed header field"};
    std::string_view name = h.substr(0, colon);
    for (char c : name)
      if (!is_tchar(c)) return HeadError{400, "malformed header field name"};
    std::string_view value = h.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    for (char c : value) {
      unsigned char u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return HeadError{400, "control character in a header value"};
    }
    if (iequals(name, "content-length")) {
      // A list ("5, 5") or repeated fields must all agree (RFC 9112 6.3).
      size_t start = 0;
      while (start <= value.size()) {
        size_t comma = value.find(',', start);
        std::string_view item = value.substr(start, comma == std::string_view::npos ? value.npos : comma - start);
        while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
        while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
        if (item.empty() || item.size() > 19) return HeadError{400, "invalid Content-Length"};
        size_t n = 0;
        for (char c : item) {
          if (c < '0' || c > '9') return HeadError{400, "invalid Content-Length"};
          n = n * 10 + size_t(c - '0');
        }
        if (have_length && n != content_length) return HeadError{400, "conflicting Content-Length values"};
        have_length = true;
        content_length = n;
        if (comma == std::string_view::npos) break;
        start = comma + 1;
      }
    } else if (iequals(name, "transfer-encoding")) {
      chunked = true;
    } else if (iequals(name, "host")) {
      if (have_host) return HeadError{400, "more than one Host header"};
      have_host = true;
    } else if (iequals(name, "expect")) {
      if (iequals(value, "100-continue")) expect_continue = true;
    } else if (iequals(name, "connection")) {
      size_t start = 0;
      while (start <= value.size()) {
        size_t comma = value.find(',', start);
        std::string_view item = value.substr(start, comma == std::string_view::npos ? value.npos : comma - start);
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        if (iequals(item, "close")) conn_close = true;
        if (iequals(item, "keep-alive")) conn_keep = true;
        if (comma == std::string_view::npos) break;
        start = comma + 1;
      }
    }
    r.headers.emplace_back(std::string(name), std::string(value));
  }
  r.keep_alive = !conn_close && (!http10 || conn_keep);
  if (!http10 && !have_host) return HeadError{400, "missing Host header"};
  if (chunked && have_length) return HeadError{400, "both Transfer-Encoding and Content-Length"};
  if (chunked) return HeadError{411, "Transfer-Encoding request bodies are not supported; send Content-Length"};
  if (content_length > opt.max_body_bytes)
    return HeadError{413, fmt::format("the request body ({} bytes) is larger than the limit of {} bytes",
                                      content_length, opt.max_body_bytes)};
  return std::nullopt;
}

namespace {

std::string serialize_head(const Response& res, bool keep_alive, bool chunked) {
  std::string out = fmt::format("HTTP/1.1 {} {}\r\n", res.status, reason(res.status));
  if (!res.content_type.empty()) out += "Content-Type: " + res.content_type + "\r\n";
  if (chunked)
    out += "Transfer-Encoding: chunked\r\n";
  else
    out += fmt::format("Content-Length: {}\r\n", res.body.size());
  out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  for (const auto& [k, v] : res.headers) out += k + ": " + v + "\r\n";
  out += "\r\n";
  return out;
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

// Writes everything, waiting for the socket at most `timeout` per stall.
bool write_all(int fd, const char* p, size_t n, Clock::duration timeout) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w > 0) {
      p += w;
      n -= size_t(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pf{fd, POLLOUT, 0};
      int ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count());
      int pr = ::poll(&pf, 1, std::max(ms, 1));
      if (pr <= 0 || (pf.revents & (POLLERR | POLLHUP | POLLNVAL))) return false;
      continue;
    }
    return false;
  }
  return true;
}

class ChunkSink : public Sink {
 public:
  ChunkSink(int fd, Clock::duration timeout) : fd_(fd), timeout_(timeout) {}
  bool write(const char* data, size_t n) override {
    if (failed_) return false;
    if (n == 0) return true;
    std::string frame = fmt::format("{:x}\r\n", n);
    frame.append(data, n);
    frame += "\r\n";
    if (!write_all(fd_, frame.data(), frame.size(), timeout_)) failed_ = true;
    return !failed_;
  }
  bool failed() const { return failed_; }

 private:
  int fd_;
  Clock::duration timeout_;
  bool failed_ = false;
};

// kLinger: an error answer was sent and the write side shut; input is read and dropped
// for a moment so the client sees the answer instead of a reset.
enum class Phase { kIdle, kHead, kBody, kWriting, kHandler, kLinger };

}  // namespace

const std::string& Request::header(std::string_view name) const {
  static const std::string kEmpty;
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return kEmpty;
}

bool Request::has_header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return true;
  return false;
}

std::string error_body(int status, std::string_view message) {
  nlohmann::ordered_json e = nlohmann::ordered_json::object();
  e["message"] = std::string(message);
  e["type"] = status >= 500 ? "server_error" : "invalid_request_error";
  e["param"] = nullptr;
  e["code"] = nullptr;
  return nlohmann::ordered_json{{"error", e}}.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

bool bearer_matches(std::string_view value, std::string_view key) {
  if (value.size() < 7 || !iequals(value.substr(0, 6), "bearer") || (value[6] != ' ' && value[6] != '\t'))
    return false;
  std::string_view got = value.substr(7);
  while (!got.empty() && (got.front() == ' ' || got.front() == '\t')) got.remove_prefix(1);
  unsigned diff = got.size() == key.size() ? 0u : 1u;
  for (size_t i = 0; i < key.size(); ++i) diff |= unsigned(char(i < got.size() ? got[i] : 0) ^ key[i]);
  return diff == 0;
}

struct HttpServer::Impl {
  struct Conn {
    int fd = -1;
    Phase phase = Phase::kIdle;
    std::string in, out;
    size_t out_off = 0, head_len = 0, body_len = 0, scanned = 0;
    bool close_after_write = false, peer_eof = false;
    size_t lingered = 0;
    Clock::time_point deadline;
    Request req;
  };

  HttpServer* self;
  int listen_fd = -1, epoll_fd = -1, wake_fd = -1;
  std::unordered_map<int, std::unique_ptr<Conn>> conns;  // owned by the loop
  int64_t reading = 0;

  // Handler pool.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Conn>> jobs;
  std::deque<std::unique_ptr<Conn>> returned;  // keep-alive sockets back to the loop
  std::vector<std::thread> workers;
  bool stopping = false;
  std::atomic<int64_t> busy{0}, queued{0}, rejected_busy{0}, timed_out{0}, refused{0}, open{0}, reading_now{0};

  explicit Impl(HttpServer* s) : self(s) {}

  const HttpOptions& opt() const { return self->opt_; }

  void log(const Request& r, int status) {
    if (self->logger_) self->logger_(r, status);
  }

  void watch(Conn& c, bool add) {
    epoll_event ev{};
    ev.data.fd = c.fd;
    ev.events = c.phase == Phase::kWriting ? EPOLLOUT : EPOLLIN;
    epoll_ctl(epoll_fd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c.fd, &ev);
  }

  void set_phase(Conn& c, Phase p) {
    bool was_reading = c.phase == Phase::kHead || c.phase == Phase::kBody;
    bool is_reading = p == Phase::kHead || p == Phase::kBody;
    if (was_reading && !is_reading) --reading;
    if (!was_reading && is_reading) ++reading;
    reading_now = reading;
    c.phase = p;
  }

  void close_conn(int fd) {
    auto it = conns.find(fd);
    if (it == conns.end()) return;
    set_phase(*it->second, Phase::kIdle);
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns.erase(it);
    --open;
  }

  // Queues a response written by the loop itself; the connection closes afterwards
  // unless `keep` and the request allows it.
  void respond_from_loop(Conn& c, Response& res, bool keep) {
    bool keep_alive = keep && c.req.keep_alive;
    c.out += serialize_head(res, keep_alive, false);
    c.out += res.body;
    c.close_after_write = !keep_alive;
    set_phase(c, Phase::kWriting);
    watch(c, false);
    log(c.req, res.status);
    flush(c);
  }

  void fail(Conn& c, int status, const std::string& message) {
    Response res;
    res.status = status;
    res.body = error_body(status, message);
    if (status == 503) res.set_header("Retry-After", "1");
    respond_from_loop(c, res, false);
  }

  // Writes what the loop holds for `c`; on completion closes or goes back to reading.
  void flush(Conn& c) {
    while (c.out_off < c.out.size()) {
      ssize_t w = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (w > 0) {
        c.out_off += size_t(w);
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        c.deadline = Clock::now() + seconds(opt().write_timeout_s);
        return;
      }
      close_conn(c.fd);
      return;
    }
    c.out.clear();
    c.out_off = 0;
    if (c.phase != Phase::kWriting) return;  // an interim 100 Continue
    if (c.close_after_write) {
      if (c.peer_eof) return close_conn(c.fd);
      ::shutdown(c.fd, SHUT_WR);
      set_phase(c, Phase::kLinger);
      c.deadline = Clock::now() + std::chrono::seconds(2);
      watch(c, false);
      return;
    }
    to_idle(c);
  }

  void to_idle(Conn& c) {
    set_phase(c, Phase::kIdle);
    c.req = Request{};
    c.deadline = Clock::now() + seconds(opt().idle_timeout_s);
    watch(c, false);
    if (!c.in.empty()) process(c);
  }

  // Advances the request state machine on the bytes in c.in.
  void process(Conn& c) {
    const int fd = c.fd;
    if (c.phase == Phase::kIdle) {
      size_t skip = 0;  // RFC 9112 2.2: ignore empty lines before a request
      while (skip < c.in.size() && (c.in[skip] == '\r' || c.in[skip] == '\n')) ++skip;
      c.in.erase(0, skip);
      if (c.in.empty()) return;
      if (reading >= opt().max_reading) return fail(c, 503, "the server has too many requests in progress");
      set_phase(c, Phase::kHead);
      c.scanned = 0;
      c.deadline = Clock::now() + seconds(opt().header_timeout_s);
    }
    if (c.phase == Phase::kHead) {
      size_t from = c.scanned >= 3 ? c.scanned - 3 : 0;
      size_t end = c.in.find("\r\n\r\n", from);
      if (end == std::string::npos) {
        c.scanned = c.in.size();
        if (c.in.size() > opt().max_header_bytes)
          return fail(c, 431, fmt::format("the request head is larger than {} bytes", opt().max_header_bytes));
        return;
      }
      if (end > opt().max_header_bytes)
        return fail(c, 431, fmt::format("the request head is larger than {} bytes", opt().max_header_bytes));
      bool expect = false;
      if (auto e = parse_request_head(std::string_view(c.in).substr(0, end), opt(), c.req, c.body_len, expect))
        return fail(c, e->status, e->message);
      c.head_len = end + 4;
      set_phase(c, Phase::kBody);
      c.deadline = Clock::now() + seconds(opt().body_timeout_s);
      if (expect && c.body_len > 0 && c.in.size() < c.head_len + c.body_len) {
        c.out += "HTTP/1.1 100 Continue\r\n\r\n";
        flush(c);
        if (conns.find(fd) == conns.end()) return;
      }
    }
    if (c.phase == Phase::kBody) {
      if (c.in.size() < c.head_len + c.body_len) return;
      c.req.body = c.in.substr(c.head_len, c.body_len);
      c.in.erase(0, c.head_len + c.body_len);
      dispatch(c);
    }
  }

  void dispatch(Conn& c) {
    if (c.peer_eof) c.req.keep_alive = false;
    const RouteEntry* route = self->find_route(c.req);
    if (!route || route->inline_route) {
      Response res;
      run_handler(route ? route->handler : self->fallback_, c.req, res);
      if (res.provider) {  // not allowed inline
        res = Response{};
        res.status = 500;
        res.body = error_body(500, "internal error: streamed response from an inline route");
      }
      return respond_from_loop(c, res, true);
    }
    {
      std::lock_guard<std::mutex> lk(mu);
      if (busy + int64_t(jobs.size()) >= opt().handler_threads + opt().max_queued) {
        ++rejected_busy;
        // fall through to the 503 below, outside the lock
      } else {
        set_phase(c, Phase::kHandler);
        epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c.fd, nullptr);
        auto it = conns.find(c.fd);
        jobs.push_back(std::move(it->second));
        conns.erase(it);
        queued = int64_t(jobs.size());
        cv.notify_one();
        return;
      }
    }
    fail(c, 503, "the server is busy: every handler thread is in use; retry later");
  }

  void run_handler(const Handler& h, const Request& req, Response& res) {
    try {
      if (h) {
        h(req, res);
      } else {
        res.status = 404;
        res.body = error_body(404, "not found");
      }
    } catch (...) {
      res = Response{};
      res.status = 500;
      std::string what = self->exception_message_ ? self->exception_message_(std::current_exception())
                                                  : std::string("internal error");
      res.body = error_body(500, what);
    }
  }

  void on_readable(Conn& c) {
    const int fd = c.fd;
    char buf[16384];
    if (c.phase == Phase::kLinger) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      c.lingered += n > 0 ? size_t(n) : 0;
      if (n <= 0 || c.lingered > (size_t(4) << 20)) close_conn(fd);
      return;
    }
    while (true) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n > 0) {
        c.in.append(buf, size_t(n));
        // Never buffer more than one request's worth ahead.
        if (c.in.size() > opt().max_header_bytes + opt().max_body_bytes + 4) break;
        if (size_t(n) < sizeof(buf)) break;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0) return close_conn(fd);
      c.peer_eof = true;  // half-close: what arrived is still answered, then the socket closes
      break;
    }
    const bool eof = c.peer_eof;
    process(c);
    if (!eof) return;
    auto it = conns.find(fd);
    if (it != conns.end() && (it->second->phase == Phase::kIdle || it->second->phase == Phase::kHead ||
                              it->second->phase == Phase::kBody))
      close_conn(fd);
  }

  void accept_all() {
    while (true) {
      int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR) continue;
        return;  // EAGAIN, or out of descriptors: try again on the next event
      }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      if (int64_t(conns.size()) >= opt().max_connections) {
        ++refused;
        std::string msg = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n";
        std::string body = error_body(503, "the server has too many open connections");
        msg += fmt::format("Content-Length: {}\r\nConnection: close\r\n\r\n", body.size()) + body;
        (void)!::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
        ::close(fd);
        continue;
      }
      auto c = std::make_unique<Conn>();
      c->fd = fd;
      c->deadline = Clock::now() + seconds(opt().idle_timeout_s);
      Conn& ref = *c;
      conns.emplace(fd, std::move(c));
      ++open;
      watch(ref, true);
    }
  }

  void take_returned() {
    uint64_t v;
    (void)!::read(wake_fd, &v, sizeof(v));
    std::deque<std::unique_ptr<Conn>> back;
    {
      std::lock_guard<std::mutex> lk(mu);
      back.swap(returned);
    }
    for (auto& c : back) {
      Conn& ref = *c;
      ref.phase = Phase::kIdle;
      conns.emplace(ref.fd, std::move(c));
      ref.req = Request{};
      ref.deadline = Clock::now() + seconds(opt().idle_timeout_s);
      watch(ref, true);
      if (!ref.in.empty()) process(ref);
    }
  }

  void expire() {
    auto now = Clock::now();
    std::vector<int> late;
    for (auto& [fd, c] : conns)
      if (c->deadline <= now) late.push_back(fd);
    for (int fd : late) {
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Conn& c = *it->second;
      if (c.phase == Phase::kHead || c.phase == Phase::kBody) {
        ++timed_out;
        // Best effort: the 408 is written once; a client that does not read it is dropped.
        std::string body = error_body(408, c.phase == Phase::kHead ? "the request head did not arrive in time"
                                                                   : "the request body did not arrive in time");
        std::string msg = fmt::format(
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
            "Connection: close\r\n\r\n",
            body.size());
        msg += body;
        (void)!::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
        log(c.req, 408);
      }
      close_conn(fd);
    }
  }

  void worker_loop() {
    while (true) {
      std::unique_ptr<Conn> c;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stopping || !jobs.empty(); });
        if (jobs.empty()) return;  // stopping with nothing left
        c = std::move(jobs.front());
        jobs.pop_front();
        queued = int64_t(jobs.size());
        ++busy;
      }
      bool keep = serve(*c);
      std::lock_guard<std::mutex> lk(mu);
      --busy;
      if (keep && !stopping) {
        returned.push_back(std::move(c));
        uint64_t one = 1;
        (void)!::write(wake_fd, &one, sizeof(one));
      } else {
        ::close(c->fd);
        --open;
      }
    }
  }

  // Runs the handler and writes the response on this thread; true to keep the socket.
  bool serve(Conn& c) {
    const auto timeout = seconds(opt().write_timeout_s);
    if (c.out_off < c.out.size() && !write_all(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, timeout))
      return false;
    c.out.clear();
    c.out_off = 0;
    const RouteEntry* route = self->find_route(c.req);
    Response res;
    run_handler(route ? route->handler : self->fallback_, c.req, res);
    const bool chunked = bool(res.provider);
    bool keep = c.req.keep_alive;
    std::string head = serialize_head(res, keep, chunked);
    bool ok;
    if (!chunked) {
      head += res.body;
      ok = write_all(c.fd, head.data(), head.size(), timeout);
    } else {
      ok = write_all(c.fd, head.data(), head.size(), timeout);
      ChunkSink sink(c.fd, timeout);
      while (ok && !sink.is_done()) {
        bool more = false;
        try {
          more = res.provider(sink);
        } catch (...) {
          more = false;
        }
        if (!more || sink.failed()) ok = false;
      }
      if (ok) ok = write_all(c.fd, "0\r\n\r\n", 5, timeout);
      if (res.on_finish) res.on_finish(ok);
    }
    log(c.req, res.status);
    return ok && keep;
  }
};

HttpServer::HttpServer(HttpOptions opt) : opt_(std::move(opt)), impl_(std::make_unique<Impl>(this)) {}

HttpServer::~HttpServer() {
  stop();
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
  if (impl_->epoll_fd >= 0) ::close(impl_->epoll_fd);
  if (impl_->wake_fd >= 0) ::close(impl_->wake_fd);
}

void HttpServer::route(std::string method, std::string path, Handler h, bool inline_route) {
  routes_.push_back({std::move(method), std::move(path), false, inline_route, std::move(h)});
}

void HttpServer::route_prefix(std::string method, std::string prefix, Handler h, bool inline_route) {
  routes_.push_back({std::move(method), std::move(prefix), true, inline_route, std::move(h)});
}

const HttpServer::RouteEntry* HttpServer::find_route(const Request& r) const {
  for (const RouteEntry& e : routes_) {
    if (e.method != r.method) continue;
    if (!e.prefix && r.path == e.path) return &e;
    if (e.prefix && r.path.size() > e.path.size() && r.path.compare(0, e.path.size(), e.path) == 0) {
      const_cast<Request&>(r).match = r.path.substr(e.path.size());
      return &e;
    }
  }
  return nullptr;
}

Status HttpServer::bind(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  std::string port_s = std::to_string(port);
  if (::getaddrinfo(host.empty() ? nullptr : host.c_str(), port_s.c_str(), &hints, &res) != 0 || !res)
    return make_error(ErrorCode::kIoError, "cannot listen on {}:{} (unknown host)", host, port);
  int fd = -1;
  for (addrinfo* a = res; a; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    // SO_REUSEADDR only: SO_REUSEPORT would let a second server share a port in use.
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 1024) == 0) break;
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd < 0) return make_error(ErrorCode::kIoError, "cannot listen on {}:{}", host, port);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                         : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  set_nonblocking(fd);
  impl_->listen_fd = fd;
  impl_->epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  impl_->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl_->epoll_fd < 0 || impl_->wake_fd < 0)
    return make_error(ErrorCode::kIoError, "epoll/eventfd: {}", std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  epoll_ctl(impl_->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
  ev.data.fd = impl_->wake_fd;
  epoll_ctl(impl_->epoll_fd, EPOLL_CTL_ADD, impl_->wake_fd, &ev);
  return {};
}

Status HttpServer::run() {
  Impl& im = *impl_;
  if (im.listen_fd < 0) return make_error(ErrorCode::kInternal, "HttpServer::run before bind");
  {
    std::lock_guard<std::mutex> lk(im.mu);
    if (im.stopping) return {};
    for (int i = 0; i < std::max(1, opt_.handler_threads); ++i) im.workers.emplace_back([&im] { im.worker_loop(); });
  }
  running_ = true;
  std::vector<epoll_event> events(256);
  auto next_scan = Clock::now();
  while (true) {
    {
      std::lock_guard<std::mutex> lk(im.mu);
      if (im.stopping) break;
    }
    int n = ::epoll_wait(im.epoll_fd, events.data(), int(events.size()), 100);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == im.listen_fd) {
        im.accept_all();
        continue;
      }
      if (fd == im.wake_fd) {
        im.take_returned();
        continue;
      }
      auto it = im.conns.find(fd);
      if (it == im.conns.end()) continue;
      Impl::Conn& c = *it->second;
      if (c.phase == Phase::kWriting) {
        if (events[i].events & (EPOLLERR | EPOLLHUP)) {
          im.close_conn(fd);
          continue;
        }
        im.flush(c);
      } else {
        im.on_readable(c);
      }
    }
    auto now = Clock::now();
    if (now >= next_scan) {
      im.expire();
      next_scan = now + std::chrono::milliseconds(100);
    }
  }
  // Stop: no new connections; handlers finish what they have, the rest is closed.
  std::vector<int> fds;
  for (auto& [fd, c] : im.conns) fds.push_back(fd);
  for (int fd : fds) im.close_conn(fd);
  for (auto& t : im.workers) t.join();
  im.workers.clear();
  for (auto& c : im.jobs) ::close(c->fd);
  for (auto& c : im.returned) ::close(c->fd);
  im.jobs.clear();
  im.returned.clear();
  running_ = false;
  return {};
}

void HttpServer::stop() {
  Impl& im = *impl_;
  {
    std::lock_guard<std::mutex> lk(im.mu);
    if (im.stopping) return;
    im.stopping = true;
  }
  im.cv.notify_all();
  if (im.wake_fd >= 0) {
    uint64_t one = 1;
    (void)!::write(im.wake_fd, &one, sizeof(one));
  }
}

HttpServer::Stats HttpServer::stats() const {
  Stats s;
  s.connections = impl_->open;
  s.reading = impl_->reading_now;
  s.busy_handlers = impl_->busy;
  s.queued = impl_->queued;
  s.rejected_busy = impl_->rejected_busy;
  s.timed_out = impl_->timed_out;
  s.refused_connections = impl_->refused;
  return s;
}

}  // namespace moeopt::server::http
