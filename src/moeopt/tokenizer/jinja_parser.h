// Jinja parser: tokens -> syntax tree, with jinja2's grammar and operator precedence.
//
// Supported statements: if/elif/else, for (tuple targets, inline `if` filter, else),
// set (names, tuples, namespace attributes, block set), macro, break/continue
// (transformers loads jinja2's loopcontrols), generation (transformers' extension),
// raw (handled by the lexer). Anything else (include, extends, block, call, filter
// blocks, with, recursive loops, chained comparisons, *args) is rejected with an error
// naming the line and column.
#pragma once

#include <memory>
#include <string_view>

#include "moeopt/core/status.h"
#include "moeopt/tokenizer/jinja_ast.h"

namespace moeopt::jinja {

Result<std::shared_ptr<const Program>> parse_template(std::string_view source);

}  // namespace moeopt::jinja
