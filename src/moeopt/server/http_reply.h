// OpenAI JSON bodies and error objects onto an http::Response (every route answers this way).
#pragma once

#include <string>

#include "moeopt/server/http_server.h"
#include "moeopt/server/openai_request.h"

namespace moeopt::server {

// The JSON text a response carries (invalid UTF-8 in strings replaced, never thrown).
std::string json_text(const ojson& j);
// `j` as an application/json body with this status.
void send_json(http::Response& res, int status, const ojson& j);
// The error object with its status; a 429 adds Retry-After: 1.
void send_error(http::Response& res, const ApiError& e);

}  // namespace moeopt::server
