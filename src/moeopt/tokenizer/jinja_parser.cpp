// Jinja parser (see jinja_parser.h). Recursive descent mirroring jinja2/parser.py:
//   expression := or ['if' or ['else' expression]]
//   or := and ('or' and)* ; and := not ('and' not)* ; not := 'not' not | compare
//   compare := math1 [('=='|'!='|'<'|'<='|'>'|'>='|'in'|'not in') math1]
//   math1 := concat (('+'|'-') concat)* ; concat := math2 ('~' math2)*
//   math2 := pow (('*'|'/'|'//'|'%') pow)* ; pow := unary ('**' unary)*
//   unary := ('-'|'+') unary | primary postfix* ; then filters/tests: ('|' f | 'is' t | call)*
#include "moeopt/tokenizer/jinja_parser.h"

#include <cerrno>
#include <cstdlib>
#include <initializer_list>

#include "moeopt/tokenizer/jinja_lexer.h"

namespace moeopt::jinja {
namespace {

// Nesting limit for expressions and blocks: the parser and the interpreter recurse, and
// a template is untrusted input.
constexpr int kMaxNesting = 256;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  Result<std::shared_ptr<const Program>> run() {
    auto program = std::make_shared<Program>();
    std::string end_tag;
    MOEOPT_RETURN_IF_ERROR(parse_body({}, program->body, end_tag));
    if (cur().type != TokenType::kEof) return error(cur(), "unexpected tokens after template");
    return std::shared_ptr<const Program>(std::move(program));
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t k = 1) const {
    return toks_[std::min(pos_ + k, toks_.size() - 1)];
  }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool is_op(std::string_view op) const {
    return cur().type == TokenType::kOperator && cur().value == op;
  }
  bool is_name(std::string_view n) const {
    return cur().type == TokenType::kName && cur().value == n;
  }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(std::string_view n) {
    if (!is_name(n)) return false;
    advance();
    return true;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case TokenType::kData: return "template data";
      case TokenType::kVarBegin: return "'{{'";
      case TokenType::kVarEnd: return "'}}'";
      case TokenType::kBlockBegin: return "'{%'";
      case TokenType::kBlockEnd: return "'%}'";
      case TokenType::kName: return "'" + t.value + "'";
      case TokenType::kString: return "string literal";
      case TokenType::kInteger:
      case TokenType::kFloat: return "number '" + t.value + "'";
      case TokenType::kOperator: return "'" + t.value + "'";
      case TokenType::kEof: return "end of template";
    }
    return "token";
  }
  Status error(const Token& t, const std::string& what) const {
    return make_error(ErrorCode::kInvalidArgument, "template syntax error at line {} column {}: {}",
                      t.line, t.column, what);
  }
  Status expect_op(std::string_view op) {
    if (skip_op(op)) return Status::ok_status();
    return error(cur(), fmt::format("expected '{}', got {}", op, describe(cur())));
  }
  Status expect_block_end() {
    if (cur().type == TokenType::kBlockEnd) {
      advance();
      return Status::ok_status();
    }
    return error(cur(), fmt::format("expected '%}}', got {}", describe(cur())));
  }
  Result<std::string> expect_name() {
    if (cur().type != TokenType::kName)
      return error(cur(), fmt::format("expected a name, got {}", describe(cur())));
    std::string n = cur().value;
    advance();
    return n;
  }

  struct DepthGuard {
    int& d;
    explicit DepthGuard(int& depth) : d(depth) { ++d; }
    ~DepthGuard() { --d; }
  };
  Status check_depth() const {
    if (depth_ > kMaxNesting)
      return error(cur(), fmt::format("template nesting deeper than {} levels", kMaxNesting));
    return Status::ok_status();
  }

  ExprPtr make(Expr::Kind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }

  // ---- statements ----
  // Parses nodes until `{% <one of end_names>` (left positioned on that name, whose text is
  // returned in end_tag) or, with no end names, until end of input.
  Status parse_body(std::initializer_list<std::string_view> end_names, Body& out,
                    std::string& end_tag) {
    while (true) {
      const Token& t = cur();
      switch (t.type) {
        case TokenType::kEof:
          if (end_names.size() == 0) return Status::ok_status();
          return error(t, fmt::format("unexpected end of template, expected '{}'",
                                      *end_names.begin()));
        case TokenType::kData: {
          auto n = std::make_unique<Node>();
          n->kind = Node::Kind::kText;
          n->line = t.line;
          n->column = t.column;
          n->text = t.value;
          out.push_back(std::move(n));
          advance();
          break;
        }
        case TokenType::kVarBegin: {
          advance();
          auto n = std::make_unique<Node>();
          n->kind = Node::Kind::kOutput;
          n->line = t.line;
          n->column = t.column;
          MOEOPT_ASSIGN_OR_RETURN(n->expr, parse_tuple(true));
          if (cur().type != TokenType::kVarEnd)
            return error(cur(), fmt::format("expected '}}}}', got {}", describe(cur())));
          advance();
          out.push_back(std::move(n));
          break;
        }
        case TokenType::kBlockBegin: {
          const Token& name = peek();
          if (name.type == TokenType::kName) {
            for (auto e : end_names) {
              if (name.value == e) {
                advance();  // onto the name
                end_tag = name.value;
                return Status::ok_status();
              }
            }
          }
          advance();
          MOEOPT_RETURN_IF_ERROR(parse_statement(out));
          break;
        }
        default: return error(t, fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  // After `{% name`, the name has been matched by parse_body: consume it and `%}`.
  Status finish_end_tag() {
    advance();
    return expect_block_end();
  }

  Status parse_statement(Body& out) {
    DepthGuard guard(depth_);
    MOEOPT_RETURN_IF_ERROR(check_depth());
    const Token& t = cur();
    if (t.type != TokenType::kName) return error(t, "expected a statement name after '{%'");
    auto node = std::make_unique<Node>();
    node->line = t.line;
    node->column = t.column;
    const std::string kw = t.value;
    advance();
    std::string end_tag;
    if (kw == "if") {
      node->kind = Node::Kind::kIf;
      while (true) {
        MOEOPT_ASSIGN_OR_RETURN(ExprPtr cond, parse_tuple(false));
        MOEOPT_RETURN_IF_ERROR(expect_block_end());
        Body body;
        MOEOPT_RETURN_IF_ERROR(parse_body({"elif", "else", "endif"}, body, end_tag));
        node->branches.emplace_back(std::move(cond), std::move(body));
        advance();  // past elif/else/endif
        if (end_tag == "elif") continue;
        if (end_tag == "else") {
          MOEOPT_RETURN_IF_ERROR(expect_block_end());
          MOEOPT_RETURN_IF_ERROR(parse_body({"endif"}, node->else_body, end_tag));
          advance();
        }
        MOEOPT_RETURN_IF_ERROR(expect_block_end());
        break;
      }
    } else if (kw == "for") {
      node->kind = Node::Kind::kFor;
      MOEOPT_ASSIGN_OR_RETURN(node->targets, parse_assign_names());
      if (!skip_name("in")) return error(cur(), "expected 'in' in for loop");
      MOEOPT_ASSIGN_OR_RETURN(node->expr, parse_tuple(false, /*stop_at_if=*/true));
      if (skip_name("if")) {
        MOEOPT_ASSIGN_OR_RETURN(node->filter, parse_expression(true));
      }
      if (is_name("recursive")) return error(cur(), "recursive for loops are not supported");
      MOEOPT_RETURN_IF_ERROR(expect_block_end());
      MOEOPT_RETURN_IF_ERROR(parse_body({"endfor", "else"}, node->body, end_tag));
      if (end_tag == "else") {
        MOEOPT_RETURN_IF_ERROR(finish_end_tag());
        MOEOPT_RETURN_IF_ERROR(parse_body({"endfor"}, node->else_body, end_tag));
      }
      MOEOPT_RETURN_IF_ERROR(finish_end_tag());
    } else if (kw == "set") {
      MOEOPT_ASSIGN_OR_RETURN(std::string first, expect_name());
      node->targets.push_back(first);
      if (skip_op(".")) {
        MOEOPT_ASSIGN_OR_RETURN(node->attr, expect_name());
      } else {
        while (skip_op(",")) {
          MOEOPT_ASSIGN_OR_RETURN(std::string n, expect_name());
          node->targets.push_back(n);
        }
      }
      if (skip_op("=")) {
        node->kind = Node::Kind::kSet;
        MOEOPT_ASSIGN_OR_RETURN(node->expr, parse_tuple(true));
        MOEOPT_RETURN_IF_ERROR(expect_block_end());
      } else {
        if (node->targets.size() != 1 || !node->attr.empty())
          return error(cur(), "block set needs a single plain name");
        if (is_op("|")) return error(cur(), "filters on block set are not supported");
        node->kind = Node::Kind::kSetBlock;
        MOEOPT_RETURN_IF_ERROR(expect_block_end());
        MOEOPT_RETURN_IF_ERROR(parse_body({"endset"}, node->body, end_tag));
        MOEOPT_RETURN_IF_ERROR(finish_end_tag());
      }
    } else if (kw == "macro") {
      node->kind = Node::Kind::kMacro;
      MOEOPT_ASSIGN_OR_RETURN(node->name, expect_name());
      MOEOPT_RETURN_IF_ERROR(expect_op("("));
      while (!is_op(")")) {
        if (!node->params.empty()) MOEOPT_RETURN_IF_ERROR(expect_op(","));
        if (is_op(")")) break;
        MOEOPT_ASSIGN_OR_RETURN(std::string p, expect_name());
        ExprPtr def;
        if (skip_op("=")) {
          MOEOPT_ASSIGN_OR_RETURN(def, parse_expression(true));
        }
        node->params.push_back(p);
        node->defaults.push_back(std::move(def));
      }
      advance();
      MOEOPT_RETURN_IF_ERROR(expect_block_end());
      MOEOPT_RETURN_IF_ERROR(parse_body({"endmacro"}, node->body, end_tag));
      MOEOPT_RETURN_IF_ERROR(finish_end_tag());
    } else if (kw == "break" || kw == "continue") {
      node->kind = kw == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      MOEOPT_RETURN_IF_ERROR(expect_block_end());
    } else if (kw == "generation") {
      node->kind = Node::Kind::kScopedBody;
      MOEOPT_RETURN_IF_ERROR(expect_block_end());
      MOEOPT_RETURN_IF_ERROR(parse_body({"endgeneration"}, node->body, end_tag));
      MOEOPT_RETURN_IF_ERROR(finish_end_tag());
    } else {
      return error(t, fmt::format("unsupported statement '{}'", kw));
    }
    out.push_back(std::move(node));
    return Status::ok_status();
  }

  // `a` or `a, b` or `(a, b)` for loop targets.
  Result<std::vector<std::string>> parse_assign_names() {
    std::vector<std::string> names;
    bool paren = skip_op("(");
    while (true) {
      MOEOPT_ASSIGN_OR_RETURN(std::string n, expect_name());
      names.push_back(n);
      if (!skip_op(",")) break;
      if (paren && is_op(")")) break;
      if (!paren && is_name("in")) break;
    }
    if (paren) MOEOPT_RETURN_IF_ERROR(expect_op(")"));
    return names;
  }

  // ---- expressions ----
  bool at_tuple_end() const {
    return cur().type == TokenType::kVarEnd || cur().type == TokenType::kBlockEnd ||
           is_op(")") || cur().type == TokenType::kEof;
  }

  // Comma-separated expressions; a comma makes a tuple.
  Result<ExprPtr> parse_tuple(bool with_condexpr, bool stop_at_if = false) {
    const Token& start = cur();
    std::vector<ExprPtr> items;
    bool saw_comma = false;
    while (true) {
      if (!items.empty()) {
        if (!skip_op(",")) break;
        saw_comma = true;
      }
      if (at_tuple_end() || (stop_at_if && is_name("if"))) break;
      MOEOPT_ASSIGN_OR_RETURN(ExprPtr e, with_condexpr ? parse_expression(true) : parse_or());
      items.push_back(std::move(e));
    }
    if (!saw_comma) {
      if (items.empty()) return error(cur(), fmt::format("expected an expression, got {}",
                                                         describe(cur())));
      return std::move(items[0]);
    }
    auto t = make(Expr::Kind::kTuple, start);
    t->operands = std::move(items);
    return t;
  }

  Result<ExprPtr> parse_expression(bool with_condexpr) {
    DepthGuard guard(depth_);
    MOEOPT_RETURN_IF_ERROR(check_depth());
    if (!with_condexpr) return parse_or();
    const Token& start = cur();
    MOEOPT_ASSIGN_OR_RETURN(ExprPtr e, parse_or());
    while (skip_name("if")) {
      MOEOPT_ASSIGN_OR_RETURN(ExprPtr cond, parse_or());
      ExprPtr else_e;
      if (skip_name("else")) {
        MOEOPT_ASSIGN_OR_RETURN(else_e, parse_expression(true));
      }
      auto c = make(Expr::Kind::kCondExpr, start);
      c->operands.push_back(std::move(cond));
      c->operands.push_back(std::move(e));
      c->operands.push_back(std::move(else_e));
      e = std::move(c);
    }
    return e;
  }

  Result<ExprPtr> binary(Expr::Kind kind, std::string op, ExprPtr a, ExprPtr b, const Token& at) {
    auto e = make(kind, at);
    e->name = std::move(op);
    e->operands.push_back(std::move(a));
    e->operands.push_back(std::move(b));
    return e;
  }

  Result<ExprPtr> parse_or() {
    MOEOPT_ASSIGN_OR_RETURN(ExprPtr e, parse_and());
    while (is_name("or")) {
      Token at = cur();
      advance();
      MOEOPT_ASSIGN_OR_RETURN(ExprPtr r, parse_and());
      MOEOPT_ASSIGN_OR_RETURN(e, binary(Expr::Kind::kOr, "or", std::move(e), std::move(r), at));
    }
    return e;
  }

  Result<ExprPtr> parse_and() {
    MOEOPT_ASSIGN_OR_RETURN(ExprPtr e, parse_not());
    while (is_name("and")) {
      Token at = cur();
      advance();
      MOEOPT_ASSIGN_OR_RETURN(ExprPtr r, parse_not());
      MOEOPT_ASSIGN_OR_RETURN(e, binary(Expr::Kind::kAnd, "and", std::move(e), std::move(r), at));
    }
    return e;
  }

  Result<ExprPtr> parse_not() {
    DepthGuard guard(depth_);
    MOEOPT_RETURN_IF_ERROR(check_depth());
    if (is_name("not")) {
      Token at = cur();
      advance();
      MOEOPT_ASSIGN_OR_RETURN(ExprPtr inner, parse_not());
      auto e = make(Expr::Kind::kUnary, at);
      e->name = "not";
      e->operands.push_back(std::move(inner));
      return e;
    }
    return parse_compare();
  }

  Result<ExprPtr> parse_compare() {
    MOEOPT_ASSIGN_OR_RETURN(ExprPtr e, parse_math1());
    bool compared = false;
    while (true) {
      Token at = cur();
      std::string op;
      if (cur().type == TokenType::kOperator &&
          (cur().value == "==" || cur().value == "!=" || cur().value == "<" ||
           cur().value == "<=" || cur().value == ">" || cur().value == ">=")) {
        op = cur().value;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().type == TokenType::kName && peek().value == "in") {
        op = "not in";
        advance();
        advance();
      } else {
        break;
      }
      if (compared) return error(at, "chained comparisons are not supported");
      compared = true;
      MOEOPT_ASSIGN_OR_RETURN(ExprPtr r, parse_math1());
      MOEOPT_ASSIGN_OR_RETURN(e, binary(Expr::Kind::kBinary, op, std::move(e), std::move(r), at));
    }
    return e;
  }

  template <typename Next>
  Result<ExprPtr> parse_left_assoc(std::initializer_list<std::string_view> ops, Next next) {
    MOEOPT_ASSIGN_OR_RETURN(ExprPtr e, (this->*next)());
    while (true) {
      bool hit = false;
      for (auto op : ops) {
        if (is_op(op)) {
          Token at = cur();
          advance();
          MOEOPT_ASSIGN_OR_RETURN(ExprPtr r, (this->*next)());
          MOEOPT_ASSIGN_OR_RETURN(
              e, binary(Expr::Kind::kBinary, std::string(op), std::move(e), std::move(r), at));
          hit = true;
          break;
        }
      }
      if (!hit) return e;
    }
  }

  Result<ExprPtr> parse_math1() { return parse_left_assoc({"+", "-"}, &Parser::parse_concat); }
  Result<ExprPtr> parse_concat() { return parse_left_assoc({"~"}, &Parser::parse_math2); }
  Result<ExprPtr> parse_math2() {
    return parse_left_assoc({"*", "/", "//", "%"}, &Parser::parse_pow);
  }
  Result<ExprPtr> parse_pow() { return parse_left_assoc({"**"}, &Parser::parse_unary_filtered); }
  Result<ExprPtr> parse_unary_filtered() { return parse_unary(true); }

  Result<ExprPtr> parse_unary(bool with_filter) {
    DepthGuard guard(depth_);
    MOEOPT_RETURN_IF_ERROR(check_depth());
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      Token at = cur();
      advance();
      MOEOPT_ASSIGN_OR_RETURN(ExprPtr inner, parse_unary(false));
      e = make(Expr::Kind::kUnary, at);
      e->name = at.value;
      e->operands.push_back(std::move(inner));
    } else {
      MOEOPT_ASSIGN_OR_RETURN(e, parse_primary());
    }
    MOEOPT_ASSIGN_OR_RETURN(e, parse_postfix(std::move(e)));
    if (with_filter) {
      MOEOPT_ASSIGN_OR_RETURN(e, parse_filter_expr(std::move(e)));
    }
    return e;
  }

  Result<ExprPtr> parse_primary() {
    const Token t = cur();
    switch (t.type) {
      case TokenType::kName: {
        advance();
        auto e = make(Expr::Kind::kLiteral, t);
        if (t.value == "true" || t.value == "True") {
          e->literal = Value::boolean(true);
        } else if (t.value == "false" || t.value == "False") {
          e->literal = Value::boolean(false);
        } else if (t.value == "none" || t.value == "None") {
          e->literal = Value::none();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = t.value;
        }
        return e;
      }
      case TokenType::kString: {
        std::string s;
        while (cur().type == TokenType::kString) {  // adjacent literals concatenate
          s += cur().value;
          advance();
        }
        auto e = make(Expr::Kind::kLiteral, t);
        e->literal = Value::string(std::move(s));
        return e;
      }
      case TokenType::kInteger: {
        advance();
        auto e = make(Expr::Kind::kLiteral, t);
        errno = 0;
        char* end = nullptr;
        long long v = std::strtoll(t.value.c_str(), &end, 10);
        if (errno == ERANGE) return error(t, "integer literal out of range");
        e->literal = Value::integer(v);
        return e;
      }
      case TokenType::kFloat: {
        advance();
        auto e = make(Expr::Kind::kLiteral, t);
        e->literal = Value::floating(std::strtod(t.value.c_str(), nullptr));
        return e;
      }
      case TokenType::kOperator: {
        if (t.value == "(") {
          advance();
          if (skip_op(")")) {
            auto e = make(Expr::Kind::kTuple, t);
            return e;
          }
          MOEOPT_ASSIGN_OR_RETURN(ExprPtr e, parse_tuple(true));
          MOEOPT_RETURN_IF_ERROR(expect_op(")"));
          return e;
        }
        if (t.value == "[") {
          advance();
          auto e = make(Expr::Kind::kList, t);
          while (!is_op("]")) {
            if (!e->operands.empty()) MOEOPT_RETURN_IF_ERROR(expect_op(","));
            if (is_op("]")) break;
            MOEOPT_ASSIGN_OR_RETURN(ExprPtr item, parse_expression(true));
            e->operands.push_back(std::move(item));
          }
          advance();
          return e;
        }
        if (t.value == "{") {
          advance();
          auto e = make(Expr::Kind::kDict, t);
          while (!is_op("}")) {
            if (!e->operands.empty()) MOEOPT_RETURN_IF_ERROR(expect_op(","));
            if (is_op("}")) break;
            MOEOPT_ASSIGN_OR_RETURN(ExprPtr k, parse_expression(true));
            MOEOPT_RETURN_IF_ERROR(expect_op(":"));
            MOEOPT_ASSIGN_OR_RETURN(ExprPtr v, parse_expression(true));
            e->keys.push_back(std::move(k));
            e->operands.push_back(std::move(v));
          }
          advance();
          return e;
        }
        break;
      }
      default: break;
    }
    return error(t, fmt::format("unexpected {}", describe(t)));
  }

  Result<ExprPtr> parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        Token at = cur();
        advance();
        if (cur().type == TokenType::kName) {
          auto g = make(Expr::Kind::kGetAttr, at);
          g->name = cur().value;
          advance();
          g->operands.push_back(std::move(e));
          e = std::move(g);
        } else if (cur().type == TokenType::kInteger) {
          auto g = make(Expr::Kind::kGetItem, at);
          auto idx = make(Expr::Kind::kLiteral, cur());
          idx->literal = Value::integer(std::strtoll(cur().value.c_str(), nullptr, 10));
          advance();
          g->operands.push_back(std::move(e));
          g->operands.push_back(std::move(idx));
          e = std::move(g);
        } else {
          return error(cur(), fmt::format("expected an attribute name, got {}", describe(cur())));
        }
      } else if (is_op("[")) {
        MOEOPT_ASSIGN_OR_RETURN(e, parse_subscript(std::move(e)));
      } else if (is_op("(")) {
        MOEOPT_ASSIGN_OR_RETURN(e, parse_call(std::move(e)));
      } else {
        return e;
      }
    }
  }

  Result<ExprPtr> parse_subscript(ExprPtr target) {
    Token at = cur();
    advance();  // '['
    ExprPtr parts[3];
    bool is_slice = false;
    int idx = 0;
    while (true) {
      if (is_op("]")) break;
      if (is_op(":")) {
        is_slice = true;
        if (++idx > 2) return error(cur(), "too many ':' in slice");
        advance();
        continue;
      }
      if (is_op(",")) return error(cur(), "tuple subscripts are not supported");
      if (parts[idx]) return error(cur(), fmt::format("unexpected {} in subscript", describe(cur())));
      MOEOPT_ASSIGN_OR_RETURN(parts[idx], parse_expression(true));
    }
    advance();  // ']'
    if (!is_slice) {
      if (!parts[0]) return error(at, "empty subscript");
      auto g = make(Expr::Kind::kGetItem, at);
      g->operands.push_back(std::move(target));
      g->operands.push_back(std::move(parts[0]));
      return g;
    }
    auto s = make(Expr::Kind::kSlice, at);
    s->operands.push_back(std::move(target));
    for (auto& p : parts) s->operands.push_back(std::move(p));
    return s;
  }

  Status parse_call_args(Expr& e) {
    MOEOPT_RETURN_IF_ERROR(expect_op("("));
    bool first = true;
    while (!is_op(")")) {
      if (!first) MOEOPT_RETURN_IF_ERROR(expect_op(","));
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) return error(cur(), "*args / **kwargs are not supported");
      if (cur().type == TokenType::kName && peek().type == TokenType::kOperator &&
          peek().value == "=") {
        std::string key = cur().value;
        advance();
        advance();
        MOEOPT_ASSIGN_OR_RETURN(ExprPtr v, parse_expression(true));
        e.kwargs.emplace_back(std::move(key), std::move(v));
      } else {
        if (!e.kwargs.empty()) return error(cur(), "positional argument after keyword argument");
        MOEOPT_ASSIGN_OR_RETURN(ExprPtr v, parse_expression(true));
        e.args.push_back(std::move(v));
      }
    }
    advance();
    return Status::ok_status();
  }

  Result<ExprPtr> parse_call(ExprPtr target) {
    auto c = make(Expr::Kind::kCall, cur());
    c->operands.push_back(std::move(target));
    MOEOPT_RETURN_IF_ERROR(parse_call_args(*c));
    return c;
  }

  Result<std::string> parse_dotted_name() {
    MOEOPT_ASSIGN_OR_RETURN(std::string n, expect_name());
    while (is_op(".") && peek().type == TokenType::kName) {
      advance();
      n += "." + cur().value;
      advance();
    }
    return n;
  }

  Result<ExprPtr> parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        Token at = cur();
        advance();
        auto f = make(Expr::Kind::kFilter, at);
        MOEOPT_ASSIGN_OR_RETURN(f->name, parse_dotted_name());
        f->operands.push_back(std::move(e));
        if (is_op("(")) MOEOPT_RETURN_IF_ERROR(parse_call_args(*f));
        e = std::move(f);
      } else if (is_name("is")) {
        Token at = cur();
        advance();
        auto t = make(Expr::Kind::kTest, at);
        t->negated = skip_name("not");
        MOEOPT_ASSIGN_OR_RETURN(t->name, parse_dotted_name());
        t->operands.push_back(std::move(e));
        if (is_op("(")) {
          MOEOPT_RETURN_IF_ERROR(parse_call_args(*t));
        } else {
          const Token& n = cur();
          bool starts_arg = n.type == TokenType::kName || n.type == TokenType::kString ||
                            n.type == TokenType::kInteger || n.type == TokenType::kFloat ||
                            (n.type == TokenType::kOperator &&
                             (n.value == "(" || n.value == "[" || n.value == "{"));
          if (starts_arg && !(is_name("else") || is_name("or") || is_name("and"))) {
            if (is_name("is")) return error(n, "you cannot chain multiple tests with 'is'");
            MOEOPT_ASSIGN_OR_RETURN(ExprPtr arg, parse_primary());
            MOEOPT_ASSIGN_OR_RETURN(arg, parse_postfix(std::move(arg)));
            t->args.push_back(std::move(arg));
          }
        }
        e = std::move(t);
      } else if (is_op("(")) {
        MOEOPT_ASSIGN_OR_RETURN(e, parse_call(std::move(e)));
      } else {
        return e;
      }
    }
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

Result<std::shared_ptr<const Program>> parse_template(std::string_view source) {
  MOEOPT_ASSIGN_OR_RETURN(std::vector<Token> tokens, tokenize(source));
  Parser parser(std::move(tokens));
  return parser.run();
}

}  // namespace moeopt::jinja
