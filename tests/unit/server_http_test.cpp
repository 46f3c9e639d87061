// The HTTP layer (server/http_server.h) against raw sockets: framing errors, limits at the
// headers, deadlines, a saturated handler pool answering 503 while inline routes still
// answer, keep-alive and chunked responses, and the raw bearer comparison.
#include "moeopt/server/http_server.h"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace moeopt::server::http {
namespace {

class Running {
 public:
  explicit Running(HttpOptions opt) : srv(opt) {}
  void start() {
    Status st = srv.bind("127.0.0.1", 0);
    ASSERT_TRUE(st.ok()) << st.message();
    thread = std::thread([this] { (void)srv.run(); });
    for (int i = 0; i < 200 && !srv.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ~Running() {
    srv.stop();
    if (thread.joinable()) thread.join();
  }
  HttpServer srv;
  std::thread thread;
};

int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// Sends `req` and reads until the peer closes (or `until` appears).
std::string roundtrip(int port, const std::string& req, const std::string& until = "") {
  int fd = connect_to(port);
  (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string got;
  char buf[4096];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, size_t(n));
    if (!until.empty() && got.find(until) != std::string::npos) break;
  }
  ::close(fd);
  return got;
}

int status_of(const std::string& resp) {
  if (resp.rfind("HTTP/1.1 ", 0) != 0) return -1;
  return std::stoi(resp.substr(9, 3));
}

HttpOptions small_options() {
  HttpOptions o;
  o.handler_threads = 2;
  o.max_queued = 0;
  o.max_body_bytes = 1000;
  o.max_header_bytes = 2000;
  o.max_headers = 10;
  o.header_timeout_s = 0.5;
  o.body_timeout_s = 0.5;
  o.idle_timeout_s = 0.5;
  return o;
}

void add_routes(HttpServer& s, std::atomic<int>* slow_started = nullptr) {
  s.route("GET", "/health", [](const Request&, Response& r) { r.set_content("ok", "text/plain"); }, true);
  s.route("POST", "/echo", [](const Request& q, Response& r) { r.set_content(q.body, "text/plain"); });
  s.route("POST", "/slow", [slow_started](const Request&, Response& r) {
    if (slow_started) ++*slow_started;
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    r.set_content("slow", "text/plain");
  });
  s.route("GET", "/stream", [](const Request&, Response& r) {
    auto n = std::make_shared<int>(0);
    r.set_chunked("text/event-stream", [n](Sink& sink) {
      if (++*n > 3) {
        sink.done();
        return true;
      }
      return sink.write("data: " + std::to_string(*n) + "\n\n");
    }, nullptr);
  });
  s.route_prefix("GET", "/v1/models/", [](const Request& q, Response& r) { r.set_content(q.match, "text/plain"); }, true);
}

TEST(HttpServer, FramingErrorsAndLimitsAtTheHeaders) {
  Running r(small_options());
  add_routes(r.srv);
  r.start();
  const int p = r.srv.port();
  EXPECT_EQ(status_of(roundtrip(p, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")), 200);
  EXPECT_EQ(status_of(roundtrip(p, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi")),
            400);
  EXPECT_EQ(status_of(roundtrip(p, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 3\r\n\r\nhi")), 400);
  EXPECT_EQ(status_of(roundtrip(p, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\nhi")), 200);
  EXPECT_EQ(status_of(roundtrip(p, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")), 400);
  // Declared too large: refused at once, the body is never waited for.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(status_of(roundtrip(p, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000000\r\n\r\n")),
            413);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(400));
  std::string many = "GET /health HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 11; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(status_of(roundtrip(p, many + "\r\n")), 431);
  EXPECT_EQ(status_of(roundtrip(p, "GET /health HTTP/1.1\r\nHost: x\r\nX: " + std::string(3000, 'a') + "\r\n\r\n")), 431);
  EXPECT_EQ(status_of(roundtrip(p, "GET /health HTTP/1.1\r\nHost: x\r\nX: " + std::string(3000, 'a'))), 431);
  EXPECT_EQ(status_of(roundtrip(p, "GET /health HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n")), 400);
  EXPECT_EQ(status_of(roundtrip(p, "GET /health HTTP/1.1\r\nHost : x\r\n\r\n")), 400);
  EXPECT_EQ(status_of(roundtrip(p, "GET /health HTTP/1.1\r\n\r\n")), 400);
  EXPECT_EQ(status_of(roundtrip(p, "GET /health HTTP/2.0\r\nHost: x\r\n\r\n")), 505);
  EXPECT_EQ(status_of(roundtrip(p, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
            411);
  EXPECT_EQ(status_of(roundtrip(p, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")), 404);
  std::string m = roundtrip(p, "GET /v1/models/org%2Fname HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(status_of(m), 200);
  EXPECT_NE(m.find("\r\n\r\norg/name"), std::string::npos) << m;
  // Error bodies are OpenAI error objects.
  std::string e = roundtrip(p, "GARBAGE\r\n\r\n");
  EXPECT_EQ(status_of(e), 400);
  EXPECT_NE(e.find("{\"error\":{\"message\":"), std::string::npos) << e;
}

TEST(HttpServer, SlowHeadAndBodyGet408) {
  Running r(small_options());
  add_routes(r.srv);
  r.start();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(status_of(roundtrip(r.srv.port(), "POST /echo HTTP/1.1\r\nHost")), 408);
  EXPECT_EQ(status_of(roundtrip(r.srv.port(), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")), 408);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  EXPECT_GE(r.srv.stats().timed_out, 2);
}

TEST(HttpServer, SaturatedPoolAnswers503AndInlineRoutesStillAnswer) {
  std::atomic<int> started{0};
  Running r(small_options());  // 2 handler threads, no queue
  add_routes(r.srv, &started);
  r.start();
  const int p = r.srv.port();
  std::string req = "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  std::thread a([&] { EXPECT_EQ(status_of(roundtrip(p, req)), 200); });
  std::thread b([&] { EXPECT_EQ(status_of(roundtrip(p, req)), 200); });
  for (int i = 0; i < 200 && started < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(started.load(), 2);
  std::string busy = roundtrip(p, req);
  EXPECT_EQ(status_of(busy), 503);
  EXPECT_NE(busy.find("Retry-After: 1"), std::string::npos);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(status_of(roundtrip(p, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")), 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(300));
  a.join();
  b.join();
  EXPECT_GE(r.srv.stats().rejected_busy, 1);
}

TEST(HttpServer, KeepAlivePipeliningAndChunkedResponses) {
  Running r(small_options());
  add_routes(r.srv);
  r.start();
  std::string two = roundtrip(r.srv.port(),
                             "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nA"
                             "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nB");
  EXPECT_NE(two.find("Connection: keep-alive"), std::string::npos) << two;
  EXPECT_NE(two.find("\r\n\r\nA"), std::string::npos) << two;
  EXPECT_NE(two.find("\r\n\r\nB"), std::string::npos) << two;
  std::string s = roundtrip(r.srv.port(), "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(s.find("Transfer-Encoding: chunked"), std::string::npos);
  EXPECT_NE(s.find("9\r\ndata: 3\n\n\r\n0\r\n\r\n"), std::string::npos) << s;
  // Expect: 100-continue gets the interim answer before the body is sent.
  int fd = connect_to(r.srv.port());
  std::string head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
  (void)!::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
  char buf[256];
  ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, size_t(n)), "HTTP/1.1 100 Continue\r\n\r\n");
  (void)!::send(fd, "ok", 2, MSG_NOSIGNAL);
  n = ::recv(fd, buf, sizeof(buf), 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(status_of(std::string(buf, size_t(n))), 200);
  ::close(fd);
}

TEST(HttpServer, BearerIsComparedRaw) {
  EXPECT_TRUE(bearer_matches("Bearer k%41y", "k%41y"));
  EXPECT_TRUE(bearer_matches("bearer k%41y", "k%41y"));
  EXPECT_TRUE(bearer_matches("BEARER   k%41y", "k%41y"));
  EXPECT_FALSE(bearer_matches("Bearer kAy", "k%41y"));
  EXPECT_FALSE(bearer_matches("Bearer k%41y%00", "k%41y"));
  EXPECT_FALSE(bearer_matches(std::string("Bearer k%41y\0x", 14), "k%41y"));
  EXPECT_FALSE(bearer_matches("Bearer k%41", "k%41y"));
  EXPECT_FALSE(bearer_matches("Basic k%41y", "k%41y"));
  EXPECT_FALSE(bearer_matches("Bearerk%41y", "k%41y"));
  EXPECT_FALSE(bearer_matches("", "k%41y"));
}

}  // namespace
}  // namespace moeopt::server::http
