// The body of the HTTP request fuzz target: an input is a request as it arrives (head,
// CRLF CRLF, body). The head goes through the server's parser (parse_request_head), the
// body through the OpenAI request parsers of both generation endpoints and the JSON-object
// intake of /tokenize. Shared with the CI corpus replay (tests/unit/server_fuzz_replay_test.cpp).
// Invariants: errors are 4xx/5xx with a one-line message; an accepted head has a method, a
// path starting with '/', a body length within the limit; nothing crashes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "moeopt/server/http_server.h"
#include "moeopt/server/openai_request.h"

namespace moeopt::fuzz {

inline void check_one_line(const std::string& m) {
  if (m.empty() || m.find('\n') != std::string::npos) __builtin_trap();
}

inline int run_http_request_input(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t end = in.find("\r\n\r\n");
  std::string_view head = in.substr(0, end), body = end == in.npos ? std::string_view() : in.substr(end + 4);
  server::http::HttpOptions opt;
  opt.max_body_bytes = 1 << 20;
  server::http::Request r;
  size_t len = 0;
  bool expect = false;
  int accepted = 0;
  if (auto e = server::http::parse_request_head(head, opt, r, len, expect)) {
    if (e->status < 400 || e->status > 599) __builtin_trap();
    check_one_line(e->message);
  } else {
    if (r.method.empty() || r.path.empty() || len > opt.max_body_bytes) __builtin_trap();
    if (r.path[0] != '/' && r.path != "*") __builtin_trap();
    accepted = 1;
  }
  const std::string b(body);
  for (auto ep : {server::Endpoint::kCompletions, server::Endpoint::kChat}) {
    server::ApiRequest ar;
    if (auto e = server::parse_generation_request(b, ep, ar)) {
      if (e->status != 400) __builtin_trap();
      check_one_line(e->message);
    }
  }
  server::ojson j;
  if (!server::parse_json_object(b, j)) {
    if (!j.is_object()) __builtin_trap();
    server::ojson msgs;
    if (auto m = j.find("messages"); m != j.end()) (void)server::normalize_messages(*m, msgs);
  }
  return accepted;
}

}  // namespace moeopt::fuzz
