// JSON replies (see http_reply.h).
#include "moeopt/server/http_reply.h"

namespace moeopt::server {

std::string json_text(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }

void send_json(http::Response& res, int status, const ojson& j) {
  res.status = status;
  res.set_content(json_text(j), "application/json");
}

void send_error(http::Response& res, const ApiError& e) {
  if (e.status == 429) res.set_header("Retry-After", "1");
  send_json(res, e.status, e.to_json());
}

}  // namespace moeopt::server
