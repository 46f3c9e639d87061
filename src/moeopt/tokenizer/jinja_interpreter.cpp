// Jinja interpreter (see jinja_interpreter.h): evaluates expressions and runs statements.
#include "moeopt/tokenizer/jinja_interpreter.h"

#include <cmath>

#include "moeopt/tokenizer/jinja_builtins.h"
#include "moeopt/tokenizer/jinja_strings.h"

namespace moeopt::jinja {
namespace {

constexpr const char* kLocated = "template error at line ";
constexpr int64_t kMaxRange = 100000;  // jinja2's sandbox MAX_RANGE

Status plain_error(std::string msg) { return Status(ErrorCode::kInvalidArgument, std::move(msg)); }

// Prefix an error with the template position, once (the innermost position wins).
Status locate(const Status& st, int line, int column) {
  if (st.ok() || st.message().rfind(kLocated, 0) == 0) return st;
  return Status(st.code(), fmt::format("{}{} column {}: {}", kLocated, line, column, st.message()));
}

struct Scope {
  Scope* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* lookup(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent)
      for (const auto& [k, v] : s->vars)
        if (k == name) return &v;
    return nullptr;
  }
  void set(const std::string& name, Value v) {
    for (auto& [k, old] : vars) {
      if (k == name) {
        old = std::move(v);
        return;
      }
    }
    vars.emplace_back(name, std::move(v));
  }
};

enum class Flow { kNormal, kBreak, kContinue };

Status undefined_operand(const Value& v) {
  return plain_error(v.as_string().empty() ? "undefined value used in an expression"
                                           : v.as_string());
}

Result<Value> arithmetic(const std::string& op, const Value& a, const Value& b) {
  // str % anything is Python's printf formatting (str.__mod__ runs before any __rmod__).
  if (op == "%" && a.is_string()) {
    MOEOPT_ASSIGN_OR_RETURN(std::string s, percent_format(a.as_string(), b));
    return Value::string(std::move(s));
  }
  if (a.is_undefined()) return undefined_operand(a);
  if (b.is_undefined()) return undefined_operand(b);
  auto unsupported = [&]() {
    return plain_error(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op,
                                   a.type_name(), b.type_name()));
  };
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value::string(a.as_string() + b.as_string());
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
      std::vector<Value> xs = a.items();
      xs.insert(xs.end(), b.items().begin(), b.items().end());
      return Value::list(std::move(xs), a.is_tuple());
    }
  }
  if (op == "*") {
    // Sequence repetition.
    const Value* seq = a.is_string() || a.is_list() ? &a : (b.is_string() || b.is_list()) ? &b : nullptr;
    const Value* n = seq == &a ? &b : &a;
    if (seq && n->is_integral()) {
      int64_t k = std::max<int64_t>(0, n->as_int());
      size_t unit = seq->is_string() ? seq->as_string().size() : seq->items().size();
      if (unit && static_cast<uint64_t>(k) > (size_t(64) << 20) / unit)
        return plain_error("sequence repetition too large");
      if (seq->is_string()) {
        std::string out;
        for (int64_t i = 0; i < k; ++i) out += seq->as_string();
        return Value::string(std::move(out));
      }
      std::vector<Value> xs;
      for (int64_t i = 0; i < k; ++i) xs.insert(xs.end(), seq->items().begin(), seq->items().end());
      return Value::list(std::move(xs), seq->is_tuple());
    }
  }

  if (!a.is_number() || !b.is_number()) return unsupported();

  bool ints = a.is_integral() && b.is_integral();
  if (ints) {
    int64_t x = a.as_int(), y = b.as_int(), r = 0;
    if (op == "+") {
      if (__builtin_add_overflow(x, y, &r)) return plain_error("integer overflow");
      return Value::integer(r);
    }
    if (op == "-") {
      if (__builtin_sub_overflow(x, y, &r)) return plain_error("integer overflow");
      return Value::integer(r);
    }
    if (op == "*") {
      if (__builtin_mul_overflow(x, y, &r)) return plain_error("integer overflow");
      return Value::integer(r);
    }
    if (op == "//" || op == "%") {
      if (y == 0) return plain_error("ZeroDivisionError: integer division or modulo by zero");
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {  // Python floors toward -infinity
        q -= 1;
        m += y;
      }
      return Value::integer(op == "//" ? q : m);
    }
    if (op == "**" && y >= 0) {
      int64_t acc = 1;
      for (int64_t i = 0; i < y; ++i)
        if (__builtin_mul_overflow(acc, x, &acc)) return plain_error("integer overflow");
      return Value::integer(acc);
    }
  }
  double x = a.as_double(), y = b.as_double();
  if (op == "+") return Value::floating(x + y);
  if (op == "-") return Value::floating(x - y);
  if (op == "*") return Value::floating(x * y);
  if (op == "/") {
    if (y == 0) return plain_error("ZeroDivisionError: division by zero");
    return Value::floating(x / y);
  }
  if (op == "//" || op == "%") {
    if (y == 0) return plain_error("ZeroDivisionError: float divmod()");
    // CPython's float_divmod.
    double mod = std::fmod(x, y);
    double div = (x - mod) / y;
    if (mod != 0) {
      if ((y < 0) != (mod < 0)) {
        mod += y;
        div -= 1.0;
      }
    } else {
      mod = std::copysign(0.0, y);
    }
    if (op == "%") return Value::floating(mod);
    double floordiv;
    if (div != 0) {
      floordiv = std::floor(div);
      if (div - floordiv > 0.5) floordiv += 1.0;
    } else {
      floordiv = std::copysign(0.0, x / y);
    }
    return Value::floating(floordiv);
  }
  if (op == "**") return Value::floating(std::pow(x, y));
  return unsupported();
}

class Interpreter {
 public:
  explicit Interpreter(const RenderOptions& o) : opts_(o) {}

  Result<std::string> run(const Program& program, const Dict& context) {
    Scope root;
    add_globals(root);
    for (const auto& [k, v] : context.entries) root.set(k, v);
    root_ = &root;
    std::string out;
    Flow flow = Flow::kNormal;
    MOEOPT_RETURN_IF_ERROR(exec_body(program.body, root, out, flow));
    return out;
  }

 private:
  // ---- globals ----
  void add_globals(Scope& root) {
    root.set("range", Value::function("range", [](const CallArgs& a) -> Result<Value> {
      if (!a.keyword.empty() || a.positional.empty() || a.positional.size() > 3)
        return plain_error("range() takes 1 to 3 positional arguments");
      for (const auto& x : a.positional)
        if (!x.is_integral()) return plain_error("range() arguments must be integers");
      int64_t start = 0, stop, step = 1;
      if (a.positional.size() == 1) {
        stop = a.positional[0].as_int();
      } else {
        start = a.positional[0].as_int();
        stop = a.positional[1].as_int();
        if (a.positional.size() == 3) step = a.positional[2].as_int();
      }
      if (step == 0) return plain_error("range() arg 3 must not be zero");
      std::vector<Value> xs;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (static_cast<int64_t>(xs.size()) >= kMaxRange)
          return plain_error(fmt::format("range too big, maximum size is {}", kMaxRange));
        xs.push_back(Value::integer(i));
      }
      return Value::list(std::move(xs));
    }));
    auto make_dict = [](const CallArgs& a, const char* what) -> Result<Dict> {
      Dict d;
      if (a.positional.size() > 1) return plain_error(fmt::format("{}() takes at most 1 positional argument", what));
      if (!a.positional.empty()) {
        if (!a.positional[0].is_dict()) return plain_error(fmt::format("{}() positional argument must be a dict", what));
        d = a.positional[0].as_dict();
      }
      for (const auto& [k, v] : a.keyword) d.set(k, v);
      return d;
    };
    root.set("namespace", Value::function("namespace", [make_dict](const CallArgs& a) -> Result<Value> {
      MOEOPT_ASSIGN_OR_RETURN(Dict d, make_dict(a, "namespace"));
      for (const auto& [k, _] : d.entries)
        if (!k.empty() && k[0] == '_')
          return plain_error(fmt::format("chat templates cannot store underscore-prefixed "
                                         "attributes on a namespace, but got '{}'", k));
      return Value::new_namespace(std::move(d));
    }));
    root.set("dict", Value::function("dict", [make_dict](const CallArgs& a) -> Result<Value> {
      MOEOPT_ASSIGN_OR_RETURN(Dict d, make_dict(a, "dict"));
      return Value::dict(std::move(d));
    }));
    root.set("raise_exception", Value::function("raise_exception", [](const CallArgs& a) -> Result<Value> {
      const Value* m = a.get(0, "message");
      return plain_error(m ? m->str() : std::string("raise_exception() called"));
    }));
    std::optional<std::time_t> now = opts_.now;
    root.set("strftime_now", Value::function("strftime_now", [now](const CallArgs& a) -> Result<Value> {
      const Value* f = a.get(0, "format");
      if (!f || !f->is_string()) return plain_error("strftime_now() needs a format string");
      std::time_t t = now ? *now : std::time(nullptr);
      std::tm tm{};
      localtime_r(&t, &tm);
      char buf[512];
      size_t n = std::strftime(buf, sizeof(buf), f->as_string().c_str(), &tm);
      if (n == 0 && !f->as_string().empty()) return plain_error("strftime_now(): result too long");
      return Value::string(std::string(buf, n));
    }));
  }

  // ---- statements ----
  Status exec_body(const Body& body, Scope& scope, std::string& out, Flow& flow) {
    for (const auto& n : body) {
      MOEOPT_RETURN_IF_ERROR(locate(exec(*n, scope, out, flow), n->line, n->column));
      if (flow != Flow::kNormal) return Status::ok_status();
    }
    return Status::ok_status();
  }

  Status append(std::string& out, std::string_view s) {
    if (out.size() + s.size() > opts_.max_output_bytes)
      return plain_error(fmt::format("template output exceeds {} bytes", opts_.max_output_bytes));
    out.append(s);
    return Status::ok_status();
  }

  Status exec(const Node& n, Scope& scope, std::string& out, Flow& flow) {
    switch (n.kind) {
      case Node::Kind::kText: return append(out, n.text);
      case Node::Kind::kOutput: {
        MOEOPT_ASSIGN_OR_RETURN(Value v, eval(*n.expr, scope));
        return append(out, v.str());
      }
      case Node::Kind::kIf: {
        for (const auto& [cond, body] : n.branches) {
          MOEOPT_ASSIGN_OR_RETURN(Value c, eval(*cond, scope));
          if (c.truthy()) return exec_body(body, scope, out, flow);
        }
        return exec_body(n.else_body, scope, out, flow);
      }
      case Node::Kind::kFor: return exec_for(n, scope, out, flow);
      case Node::Kind::kSet: {
        MOEOPT_ASSIGN_OR_RETURN(Value v, eval(*n.expr, scope));
        return assign(n, std::move(v), scope);
      }
      case Node::Kind::kSetBlock: {
        std::string captured;
        Flow inner = Flow::kNormal;
        MOEOPT_RETURN_IF_ERROR(exec_body(n.body, scope, captured, inner));
        scope.set(n.targets[0], Value::string(std::move(captured)));
        return Status::ok_status();
      }
      case Node::Kind::kMacro: {
        scope.set(n.name, make_macro(n));
        return Status::ok_status();
      }
      case Node::Kind::kBreak:
      case Node::Kind::kContinue:
        if (loop_depth_ == 0) return plain_error("'break'/'continue' outside of a loop");
        flow = n.kind == Node::Kind::kBreak ? Flow::kBreak : Flow::kContinue;
        return Status::ok_status();
      case Node::Kind::kScopedBody: return exec_body(n.body, scope, out, flow);
    }
    return Status::ok_status();
  }

  Status assign(const Node& n, Value v, Scope& scope) {
    if (!n.attr.empty()) {
      const Value* ns = scope.lookup(n.targets[0]);
      if (!ns || !ns->is_namespace())
        return plain_error(fmt::format("cannot assign attribute '{}' on '{}': not a namespace",
                                       n.attr, n.targets[0]));
      if (n.attr[0] == '_')
        return plain_error(fmt::format("chat templates cannot store underscore-prefixed "
                                       "attributes on a namespace, but got '{}'", n.attr));
      ns->namespace_dict().set(n.attr, std::move(v));
      return Status::ok_status();
    }
    if (n.targets.size() == 1) {
      scope.set(n.targets[0], std::move(v));
      return Status::ok_status();
    }
    MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(v));
    if (xs.size() != n.targets.size())
      return plain_error(fmt::format("cannot unpack {} values into {} names", xs.size(),
                                     n.targets.size()));
    for (size_t i = 0; i < xs.size(); ++i) scope.set(n.targets[i], xs[i]);
    return Status::ok_status();
  }

  Status bind_targets(const std::vector<std::string>& targets, const Value& item, Scope& s) {
    if (targets.size() == 1) {
      s.set(targets[0], item);
      return Status::ok_status();
    }
    MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> xs, iterate(item));
    if (xs.size() != targets.size())
      return plain_error(fmt::format("cannot unpack {} values into {} loop variables", xs.size(),
                                     targets.size()));
    for (size_t i = 0; i < xs.size(); ++i) s.set(targets[i], xs[i]);
    return Status::ok_status();
  }

  Status exec_for(const Node& n, Scope& scope, std::string& out, Flow& /*outer_flow*/) {
    MOEOPT_ASSIGN_OR_RETURN(Value iterable, eval(*n.expr, scope));
    MOEOPT_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(iterable));
    if (n.filter) {
      std::vector<Value> kept;
      for (auto& item : items) {
        Scope s{&scope, {}};
        MOEOPT_RETURN_IF_ERROR(bind_targets(n.targets, item, s));
        MOEOPT_ASSIGN_OR_RETURN(Value keep, eval(*n.filter, s));
        if (keep.truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      Flow f = Flow::kNormal;
      return exec_body(n.else_body, scope, out, f);
    }
    const int64_t len = static_cast<int64_t>(items.size());
    ++loop_depth_;
    for (int64_t i = 0; i < len; ++i) {
      if (++iterations_ > opts_.max_loop_iterations) {
        --loop_depth_;
        return plain_error("template exceeded the loop iteration limit");
      }
      Scope s{&scope, {}};
      Status st = bind_targets(n.targets, items[static_cast<size_t>(i)], s);
      if (!st.ok()) {
        --loop_depth_;
        return st;
      }
      s.set("loop", make_loop(items, i));
      Flow f = Flow::kNormal;
      st = exec_body(n.body, s, out, f);
      if (!st.ok()) {
        --loop_depth_;
        return st;
      }
      if (f == Flow::kBreak) break;
    }
    --loop_depth_;
    return Status::ok_status();
  }

  static Value make_loop(const std::vector<Value>& items, int64_t i) {
    const int64_t len = static_cast<int64_t>(items.size());
    Dict d;
    d.set("index", Value::integer(i + 1));
    d.set("index0", Value::integer(i));
    d.set("revindex", Value::integer(len - i));
    d.set("revindex0", Value::integer(len - i - 1));
    d.set("first", Value::boolean(i == 0));
    d.set("last", Value::boolean(i == len - 1));
    d.set("length", Value::integer(len));
    d.set("depth", Value::integer(1));
    d.set("depth0", Value::integer(0));
    if (i > 0) d.set("previtem", items[static_cast<size_t>(i - 1)]);
    if (i + 1 < len) d.set("nextitem", items[static_cast<size_t>(i + 1)]);
    d.set("cycle", Value::function("loop.cycle", [i](const CallArgs& a) -> Result<Value> {
      if (a.positional.empty()) return plain_error("loop.cycle() needs at least one argument");
      return a.positional[static_cast<size_t>(i) % a.positional.size()];
    }));
    return Value::dict(std::move(d));
  }

  Value make_macro(const Node& n) {
    const Node* node = &n;
    return Value::function(n.name, [this, node](const CallArgs& a) -> Result<Value> {
      if (depth_ >= opts_.max_call_depth) return plain_error("macro recursion too deep");
      if (a.positional.size() > node->params.size())
        return plain_error(fmt::format("macro '{}' takes at most {} arguments", node->name,
                                       node->params.size()));
      Scope s{root_, {}};
      for (size_t i = 0; i < node->params.size(); ++i) {
        const std::string& p = node->params[i];
        if (i < a.positional.size()) {
          s.set(p, a.positional[i]);
        } else if (const Value* kv = a.kwarg(p)) {
          s.set(p, *kv);
        } else if (node->defaults[i]) {
          MOEOPT_ASSIGN_OR_RETURN(Value d, eval(*node->defaults[i], s));
          s.set(p, std::move(d));
        } else {
          s.set(p, Value::undefined(fmt::format("parameter '{}' was not provided", p)));
        }
      }
      for (const auto& [k, _] : a.keyword) {
        bool known = false;
        for (const auto& p : node->params) known = known || p == k;
        if (!known)
          return plain_error(fmt::format("macro '{}' has no parameter '{}'", node->name, k));
      }
      ++depth_;
      std::string out;
      Flow f = Flow::kNormal;
      int saved_loops = loop_depth_;
      loop_depth_ = 0;
      Status st = exec_body(node->body, s, out, f);
      loop_depth_ = saved_loops;
      --depth_;
      MOEOPT_RETURN_IF_ERROR(st);
      return Value::string(std::move(out));
    });
  }

  // ---- expressions ----
  Result<CallArgs> eval_args(const Expr& e, Scope& scope) {
    CallArgs a;
    for (const auto& x : e.args) {
      MOEOPT_ASSIGN_OR_RETURN(Value v, eval(*x, scope));
      a.positional.push_back(std::move(v));
    }
    for (const auto& [k, x] : e.kwargs) {
      MOEOPT_ASSIGN_OR_RETURN(Value v, eval(*x, scope));
      a.keyword.emplace_back(k, std::move(v));
    }
    return a;
  }

  Result<Value> eval(const Expr& e, Scope& scope) {
    // Bounds the native stack: nested expressions inside recursive macro calls.
    if (eval_depth_ >= opts_.max_eval_depth)
      return locate(plain_error("expression evaluation nested too deeply"), e.line, e.column);
    ++eval_depth_;
    Result<Value> r = eval_inner(e, scope);
    --eval_depth_;
    if (!r.ok()) return locate(r.status(), e.line, e.column);
    return r;
  }

  Result<Value> eval_inner(const Expr& e, Scope& scope) {
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.literal;
      case Expr::Kind::kName: {
        if (const Value* v = scope.lookup(e.name)) return *v;
        return Value::undefined(fmt::format("'{}' is undefined", e.name));
      }
      case Expr::Kind::kGetAttr: {
        MOEOPT_ASSIGN_OR_RETURN(Value obj, eval(*e.operands[0], scope));
        return get_attr(obj, e.name);
      }
      case Expr::Kind::kGetItem: {
        MOEOPT_ASSIGN_OR_RETURN(Value obj, eval(*e.operands[0], scope));
        MOEOPT_ASSIGN_OR_RETURN(Value key, eval(*e.operands[1], scope));
        return get_item(obj, key);
      }
      case Expr::Kind::kSlice: {
        MOEOPT_ASSIGN_OR_RETURN(Value obj, eval(*e.operands[0], scope));
        Value parts[3];
        for (int i = 0; i < 3; ++i) {
          if (!e.operands[static_cast<size_t>(i) + 1]) continue;
          MOEOPT_ASSIGN_OR_RETURN(parts[i], eval(*e.operands[static_cast<size_t>(i) + 1], scope));
        }
        return get_slice(obj, e.operands[1] ? &parts[0] : nullptr,
                         e.operands[2] ? &parts[1] : nullptr, e.operands[3] ? &parts[2] : nullptr);
      }
      case Expr::Kind::kCall: {
        MOEOPT_ASSIGN_OR_RETURN(Value callee, eval(*e.operands[0], scope));
        MOEOPT_ASSIGN_OR_RETURN(CallArgs args, eval_args(e, scope));
        if (callee.is_function()) return callee.as_function()(args);
        if (callee.is_undefined()) return undefined_operand(callee);
        return plain_error(fmt::format("'{}' is not callable", callee.type_name()));
      }
      case Expr::Kind::kFilter: {
        MOEOPT_ASSIGN_OR_RETURN(Value v, eval(*e.operands[0], scope));
        MOEOPT_ASSIGN_OR_RETURN(CallArgs args, eval_args(e, scope));
        return apply_filter(e.name, v, args);
      }
      case Expr::Kind::kTest: {
        if (!test_exists(e.name)) return plain_error(fmt::format("no test named '{}'", e.name));
        MOEOPT_ASSIGN_OR_RETURN(Value v, eval(*e.operands[0], scope));
        MOEOPT_ASSIGN_OR_RETURN(CallArgs args, eval_args(e, scope));
        MOEOPT_ASSIGN_OR_RETURN(bool t, apply_test(e.name, v, args));
        return Value::boolean(t != e.negated);
      }
      case Expr::Kind::kUnary: {
        MOEOPT_ASSIGN_OR_RETURN(Value v, eval(*e.operands[0], scope));
        if (e.name == "not") return Value::boolean(!v.truthy());
        if (v.is_undefined()) return undefined_operand(v);
        if (!v.is_number())
          return plain_error(fmt::format("bad operand type for unary {}: '{}'", e.name, v.type_name()));
        if (e.name == "+") return v.is_float() ? v : Value::integer(v.as_int());
        if (v.is_float()) return Value::floating(-v.as_double());
        if (v.as_int() == INT64_MIN) return plain_error("integer overflow");
        return Value::integer(-v.as_int());
      }
      case Expr::Kind::kAnd: {
        MOEOPT_ASSIGN_OR_RETURN(Value l, eval(*e.operands[0], scope));
        if (!l.truthy()) return l;
        return eval(*e.operands[1], scope);
      }
      case Expr::Kind::kOr: {
        MOEOPT_ASSIGN_OR_RETURN(Value l, eval(*e.operands[0], scope));
        if (l.truthy()) return l;
        return eval(*e.operands[1], scope);
      }
      case Expr::Kind::kBinary: {
        MOEOPT_ASSIGN_OR_RETURN(Value l, eval(*e.operands[0], scope));
        MOEOPT_ASSIGN_OR_RETURN(Value r, eval(*e.operands[1], scope));
        const std::string& op = e.name;
        if (op == "~") return Value::string(l.str() + r.str());
        if (op == "==") return Value::boolean(values_equal(l, r));
        if (op == "!=") return Value::boolean(!values_equal(l, r));
        if (op == "<" || op == "<=" || op == ">" || op == ">=") {
          if (l.is_undefined()) return undefined_operand(l);
          if (r.is_undefined()) return undefined_operand(r);
          MOEOPT_ASSIGN_OR_RETURN(int c, values_compare(l, r));
          if (op == "<") return Value::boolean(c < 0);
          if (op == "<=") return Value::boolean(c <= 0);
          if (op == ">") return Value::boolean(c > 0);
          return Value::boolean(c >= 0);
        }
        if (op == "in" || op == "not in") {
          MOEOPT_ASSIGN_OR_RETURN(bool c, contains(r, l));
          return Value::boolean(op == "in" ? c : !c);
        }
        return arithmetic(op, l, r);
      }
      case Expr::Kind::kCondExpr: {
        MOEOPT_ASSIGN_OR_RETURN(Value c, eval(*e.operands[0], scope));
        if (c.truthy()) return eval(*e.operands[1], scope);
        if (e.operands[2]) return eval(*e.operands[2], scope);
        return Value::undefined("the inline if-expression evaluated to false and no else "
                                "section was defined");
      }
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        std::vector<Value> xs;
        for (const auto& x : e.operands) {
          MOEOPT_ASSIGN_OR_RETURN(Value v, eval(*x, scope));
          xs.push_back(std::move(v));
        }
        return Value::list(std::move(xs), e.kind == Expr::Kind::kTuple);
      }
      case Expr::Kind::kDict: {
        Dict d;
        for (size_t i = 0; i < e.keys.size(); ++i) {
          MOEOPT_ASSIGN_OR_RETURN(Value k, eval(*e.keys[i], scope));
          if (!k.is_string())
            return plain_error("only string keys are supported in dict literals");
          MOEOPT_ASSIGN_OR_RETURN(Value v, eval(*e.operands[i], scope));
          d.set(k.as_string(), std::move(v));
        }
        return Value::dict(std::move(d));
      }
    }
    return plain_error("internal: unknown expression kind");
  }

  const RenderOptions& opts_;
  Scope* root_ = nullptr;
  int loop_depth_ = 0;
  int depth_ = 0;
  int eval_depth_ = 0;
  uint64_t iterations_ = 0;
};

}  // namespace

Result<std::string> render(const Program& program, const Dict& context,
                           const RenderOptions& options) {
  Interpreter interp(options);
  return interp.run(program, context);
}

}  // namespace moeopt::jinja
