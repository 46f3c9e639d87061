// Status and Result<T>: how the library reports errors (it never throws across its API).
//
// A Status is ok or carries an error code and a one-line message that names the thing that
// was wrong (file, field, tensor). The CLI prints the message and maps the code to an exit
// status; the server maps it to an OpenAI error object.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace moeopt {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,   // bad user input: flags, JSON fields, shapes
  kNotFound,          // missing file, unknown catalog name, unknown tensor
  kIoError,           // unreadable / unwritable file
  kCorruptData,       // untrusted file failed a bounds or consistency check
  kUnsupported,       // valid input this build cannot handle (yet)
  kResourceExhausted, // out of memory / KV blocks / queue full
  kInternal,          // a bug in moeopt
};

const char* error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return {}; }
  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefix the message with context ("config.json: " + message).
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

template <typename... Args>
Status make_error(ErrorCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Status(code, fmt::format(f, std::forward<Args>(args)...));
}

// Result<T>: a value or an error Status (std::expected is C++23).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}              // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {        // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Result built from an ok Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace moeopt

// Early-return helpers. MOEOPT_RETURN_IF_ERROR(expr) for Status-returning expressions;
// MOEOPT_ASSIGN_OR_RETURN(lhs, expr) for Result<T>.
#define MOEOPT_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::moeopt::Status _moeopt_st = (expr);            \
    if (!_moeopt_st.ok()) return _moeopt_st;         \
  } while (0)

#define MOEOPT_CONCAT_INNER(a, b) a##b
#define MOEOPT_CONCAT(a, b) MOEOPT_CONCAT_INNER(a, b)
#define MOEOPT_ASSIGN_OR_RETURN(lhs, expr)                                      \
  auto MOEOPT_CONCAT(_moeopt_res_, __LINE__) = (expr);                          \
  if (!MOEOPT_CONCAT(_moeopt_res_, __LINE__).ok())                              \
    return MOEOPT_CONCAT(_moeopt_res_, __LINE__).status();                      \
  lhs = std::move(MOEOPT_CONCAT(_moeopt_res_, __LINE__)).value()
