// Jinja interpreter: runs a parsed template against a context of variables.
//
// Scoping follows jinja2: a `for` body gets a fresh scope on every iteration (assignments
// there are invisible after the loop and in the next iteration), `if` bodies share the
// enclosing scope, macros run in a scope whose parent is the template's top level, and
// `namespace()` objects are the way to carry state out of a loop.
//
// Globals as transformers defines them: range, namespace, dict, raise_exception (fails the
// render with the template's message), strftime_now. Resource limits keep an untrusted
// template from running away (output size, loop iterations, recursion depth).
#pragma once

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>

#include "moeopt/core/status.h"
#include "moeopt/tokenizer/jinja_ast.h"

namespace moeopt::jinja {

struct RenderOptions {
  size_t max_output_bytes = size_t(256) << 20;
  uint64_t max_loop_iterations = 50'000'000;
  int max_call_depth = 256;   // macro calls
  int max_eval_depth = 2000;  // nested expression evaluations (native stack use)
  // Time for strftime_now (local time); unset means "now". Tests pin it.
  std::optional<std::time_t> now;
};

// Renders `program`. `context` holds the template's variables (messages, tools, ...);
// they shadow the globals of the same name. Errors name the template line and column.
Result<std::string> render(const Program& program, const Dict& context,
                           const RenderOptions& options = {});

}  // namespace moeopt::jinja
