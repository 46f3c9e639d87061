// Jinja lexer: template text -> tokens, with jinja2's whitespace rules.
//
// Environment as transformers configures it for chat templates: trim_blocks=True (the
// first newline after a block or comment tag is dropped), lstrip_blocks=True (spaces and
// tabs before a block or comment tag at the start of a line are dropped),
// keep_trailing_newline=False (one trailing newline of the template is dropped), and
// "\r\n"/"\r" normalised to "\n". `{%-`/`-%}` (and the `{{`/`{#` forms) strip all
// whitespace on that side; `{%+` / `+%}` turn lstrip/trim off for that tag.
// `{% raw %}...{% endraw %}` bodies become data. Comments produce no tokens.
//
// Inside tags, the tokens follow jinja2's lexer: names, integers, floats, strings
// (Python escapes), and operators. A tag only ends when brackets are balanced, so `}}`
// inside `{{ {'a': {'b': 1}} }}` does not close the tag.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moeopt/core/status.h"

namespace moeopt::jinja {

enum class TokenType {
  kData,         // template text between tags
  kVarBegin,     // {{
  kVarEnd,       // }}
  kBlockBegin,   // {%
  kBlockEnd,     // %}
  kName,
  kString,       // value: the unescaped string
  kInteger,
  kFloat,
  kOperator,     // value: the operator text ("==", "(", "|", ...)
  kEof,
};

struct Token {
  TokenType type;
  std::string value;
  int line = 1;
  int column = 1;
};

Result<std::vector<Token>> tokenize(std::string_view source);

}  // namespace moeopt::jinja
