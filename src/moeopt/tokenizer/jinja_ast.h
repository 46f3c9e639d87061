// Syntax tree of a parsed Jinja template (built by jinja_parser, run by jinja_interpreter).
//
// Expressions and statements are plain tagged structs: `kind` says which fields are used.
// Every node keeps the line/column of its first token for runtime error messages.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "moeopt/tokenizer/jinja_value.h"

namespace moeopt::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,    // literal
    kName,       // name
    kGetAttr,    // operands[0] . name
    kGetItem,    // operands[0] [ operands[1] ]
    kSlice,      // operands[0] [ operands[1] : operands[2] : operands[3] ] (null = omitted)
    kCall,       // operands[0] ( args, kwargs )
    kFilter,     // operands[0] | name ( args, kwargs )
    kTest,       // operands[0] is [not] name ( args )
    kUnary,      // name ("-", "+", "not") operands[0]
    kBinary,     // operands[0] name operands[1]; name is the operator ("+", "==", "in", ...)
    kAnd,        // operands[0] and operands[1]
    kOr,         // operands[0] or operands[1]
    kCondExpr,   // operands[1] if operands[0] else operands[2] (operands[2] may be null)
    kList,       // [ operands... ]
    kTuple,      // ( operands... )
    kDict,       // { keys[i]: operands[i] }
  };
  Kind kind = Kind::kLiteral;
  int line = 0;
  int column = 0;
  Value literal;
  std::string name;
  bool negated = false;  // kTest: "is not"
  std::vector<ExprPtr> operands;
  std::vector<ExprPtr> args;                                 // call/filter/test positional
  std::vector<std::pair<std::string, ExprPtr>> kwargs;      // call/filter/test keyword
  std::vector<ExprPtr> keys;                                 // kDict keys
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    kText,       // text
    kOutput,     // {{ expr }}
    kIf,         // branches: (condition, body)...; else_body
    kFor,        // for targets in expr [if filter] body [else else_body]
    kSet,        // set targets = expr   |   set targets[0].attr = expr
    kSetBlock,   // {% set targets[0] %} body {% endset %}
    kMacro,      // macro name(params = defaults) body
    kBreak,
    kContinue,
    kScopedBody, // body rendered as-is ({% generation %}, which transformers only tracks)
  };
  Kind kind = Kind::kText;
  int line = 0;
  int column = 0;
  std::string text;                 // kText
  ExprPtr expr;                     // kOutput, kFor iterable, kSet value
  ExprPtr filter;                   // kFor inline `if`
  std::vector<std::string> targets; // kFor / kSet / kSetBlock names
  std::string attr;                 // kSet on a namespace attribute
  std::string name;                 // kMacro
  std::vector<std::string> params;  // kMacro parameter names
  std::vector<ExprPtr> defaults;    // kMacro defaults (null where none), same size as params
  std::vector<std::pair<ExprPtr, Body>> branches;  // kIf
  Body body;
  Body else_body;
  bool recursive = false;           // kFor: not supported, parser rejects it
};

struct Program {
  Body body;
};

}  // namespace moeopt::jinja
