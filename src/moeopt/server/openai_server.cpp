// OpenAiServer: routes, request validation, streaming and shutdown (see openai_server.h).
#include "moeopt/server/openai_server.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <thread>
#include <unordered_set>

#include <fmt/format.h>

#include "moeopt/core/logging.h"
#include "moeopt/server/http_server.h"
#include "moeopt/server/openai_request.h"
#include "moeopt/server/openai_response.h"
#include "moeopt/server/output_assembler.h"
#include "moeopt/server/tool_call_parser.h"

namespace moeopt::server {
namespace {

using Clock = std::chrono::steady_clock;
using http::Request;
using http::Response;

void send_json(Response& res, int status, const ojson& j) {
  res.status = status;
  res.set_content(j.dump(-1, ' ', false, ojson::error_handler_t::replace), "application/json");
}

void send_error(Response& res, const ApiError& e) {
  if (e.status == 429) res.set_header("Retry-After", "1");
  send_json(res, e.status, e.to_json());
}

ApiError api_error(int status, std::string type, std::string message, std::string param = "",
                   std::string code = "") {
  ApiError e;
  e.status = status;
  e.type = std::move(type);
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

// Route label for the requests-by-status counter (unknown paths share one label so a
// scanner cannot blow up the metric's cardinality).
std::string route_label(const std::string& path) {
  static const char* kRoutes[] = {"/health",   "/v1/models",  "/v1/completions", "/v1/chat/completions",
                                  "/tokenize", "/detokenize", "/metrics"};
  for (const char* r : kRoutes)
    if (path == r) return r;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

// The client's X-Request-Id when it is short and plain, else a fresh one.
std::string request_id_for(const Request& req) {
  const std::string& given = req.header("X-Request-Id");
  bool ok = !given.empty() && given.size() <= 128;
  for (char c : given)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':')) ok = false;
  if (ok) return given;
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = uint64_t(Clock::now().time_since_epoch().count());
  return fmt::format("req-{:016x}", (salt * 0x9E3779B97F4A7C15ull) ^ counter.fetch_add(1));
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The HTTP error for a refused submission.
ApiError submit_error(const Status& st) {
  if (st.code() == ErrorCode::kResourceExhausted)
    return api_error(429, "rate_limit_error", st.message(), "", "rate_limit_exceeded");
  if (st.code() == ErrorCode::kUnsupported) return api_error(503, "server_error", st.message());
  return api_error(500, "server_error", st.message());
}

// What a chat client sees of the finished text: with tool parsing, <tool_call> blocks become
// calls and the finish reason says so. `engine_finish` is the assembler's ("stop", "length").
struct ChatOutput {
  std::string text, finish;
  std::vector<ToolCall> calls;
};
ChatOutput split_tool_calls(const std::string& text, const std::string& engine_finish, bool parse) {
  if (!parse) return {text, engine_finish, {}};
  ToolCallDelta d = parse_tool_calls(text);
  std::string finish = chat_finish_reason(engine_finish, int(d.calls.size()));
  return {std::move(d.content), std::move(finish), std::move(d.calls)};
}

}  // namespace

struct OpenAiServer::Impl {
  tokenizer::Tokenizer tok;
  std::optional<tokenizer::ChatTemplate> chat;
  std::string model_name;
  int32_t max_model_len = 0, block_size = 16, num_blocks = 0;
  int64_t vocab = 0;
  // Upper bound on the text bytes one token can stand for (longest vocabulary entry, times
  // 4 for normalizers that compose characters): a text longer than max_model_len times this
  // cannot fit, and is refused before it is tokenised.
  size_t max_text_bytes = SIZE_MAX;
  std::unordered_set<int32_t> eos_ids;
  int64_t created = 0;

  explicit Impl(tokenizer::Tokenizer t) : tok(std::move(t)) {}

  std::optional<ApiError> check_text_bytes(const std::string& text, const char* param) const {
    if (text.size() <= max_text_bytes) return std::nullopt;
    return bad_request(fmt::format("This model's maximum context length is {} tokens, but the prompt has {} "
                                   "bytes of text (more than {} tokens can hold)",
                                   max_model_len, text.size(), max_model_len),
                       param);
  }
  // Prompt token ids for a request, or the 400 that explains why there are none.
  std::optional<ApiError> build_prompt(const ApiRequest& ar, std::vector<int32_t>& ids) const;
  std::optional<ApiError> render_chat(const ojson& messages, const ojson& tools, bool add_generation_prompt,
                                      const ojson& kwargs, std::string& text) const;
  // Context-length, vocabulary and KV-capacity checks; fills the default max_tokens.
  std::optional<ApiError> check_lengths(ApiRequest& ar, const std::vector<int32_t>& ids) const;
  // The prompt as text, for `echo` (token-id prompts are decoded).
  std::string echo_text(const ApiRequest& ar, const std::vector<int32_t>& ids) const {
    if (!ar.echo) return "";
    return ar.prompt_is_ids ? tok.decode(ids, /*skip_special_tokens=*/false) : ar.prompt_text;
  }
  ResponseInfo response_info(Endpoint ep) const {
    ResponseInfo info;
    info.endpoint = ep;
    info.id = make_response_id(ep == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
    info.created = unix_now();
    info.model = model_name;
    return info;
  }
  // `echo` with max_tokens 0: the prompt is the whole answer; the engine is not involved.
  void answer_echo_only(const ApiRequest& ar, const std::vector<int32_t>& ids, Response& res) const;
};

void OpenAiServer::Impl::answer_echo_only(const ApiRequest& ar, const std::vector<int32_t>& ids,
                                          Response& res) const {
  ResponseInfo info = response_info(ar.endpoint);
  Usage usage;
  usage.prompt_tokens = int64_t(ids.size());
  const std::string text = echo_text(ar, ids);
  if (!ar.stream) return send_json(res, 200, full_response(info, text, "length", nullptr, usage));
  std::string body = sse_event(stream_chunk(info, text, "", nullptr, false, ar.include_usage)) +
                     sse_event(stream_chunk(info, "", "length", nullptr, false, ar.include_usage));
  if (ar.include_usage) body += sse_event(usage_chunk(info, usage));
  body += "data: [DONE]\n\n";
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_content(body, "text/event-stream");
}

std::optional<ApiError> OpenAiServer::Impl::render_chat(const ojson& messages, const ojson& tools,
                                                        bool add_generation_prompt, const ojson& kwargs,
                                                        std::string& text) const {
  if (!chat) return bad_request("this model has no chat template; use /v1/completions", "messages");
  auto r = chat->render(messages, tools.is_array() ? tools : ojson(nullptr), add_generation_prompt,
                        kwargs.is_object() ? kwargs : ojson(nullptr));
  if (!r.ok()) return bad_request("chat template: " + r.status().message(), "messages");
  text = std::move(*r);
  return std::nullopt;
}

std::optional<ApiError> OpenAiServer::Impl::build_prompt(const ApiRequest& ar,
                                                         std::vector<int32_t>& ids) const {
  if (ar.endpoint == Endpoint::kCompletions) {
    if (ar.prompt_is_ids) {
      ids = ar.prompt_ids;
      return std::nullopt;
    }
    if (auto e = check_text_bytes(ar.prompt_text, "prompt")) return e;
    auto enc = tok.encode(ar.prompt_text, /*add_special_tokens=*/true);
    if (!enc.ok()) return bad_request("prompt: " + enc.status().message(), "prompt");
    ids = std::move(*enc);
    return std::nullopt;
  }
  std::string text;
  if (auto e = render_chat(ar.messages, ar.tools, ar.add_generation_prompt, ar.chat_template_kwargs, text))
    return e;
  if (auto e = check_text_bytes(text, "messages")) return e;
  // The template already wrote the special tokens it wants.
  auto enc = tok.encode(text, /*add_special_tokens=*/false);
  if (!enc.ok()) return bad_request("messages: " + enc.status().message(), "messages");
  ids = std::move(*enc);
  return std::nullopt;
}

std::optional<ApiError> OpenAiServer::Impl::check_lengths(ApiRequest& ar,
                                                          const std::vector<int32_t>& ids) const {
  const char* param = ar.endpoint == Endpoint::kChat ? "messages" : "prompt";
  if (ids.empty()) return bad_request("the prompt is empty after tokenization", param);
  for (int32_t t : ids)
    if (t < 0 || t >= vocab)
      return bad_request(fmt::format("prompt token id {} is outside the vocabulary [0, {})", t, vocab),
                         param);
  const int64_t n = int64_t(ids.size());
  if (n >= max_model_len)
    return bad_request(
        fmt::format("This model's maximum context length is {} tokens, but the prompt has {} tokens "
                    "(no room to generate)",
                    max_model_len, n),
        param);
  // Largest total length the KV pool can ever hold for one sequence.
  const int64_t kv_tokens = int64_t(num_blocks) * block_size;
  const int64_t cap = std::min<int64_t>(max_model_len, kv_tokens);
  if (n >= cap)
    return bad_request(
        fmt::format("the prompt has {} tokens but the KV cache holds only {} tokens", n, kv_tokens), param);
  if (!ar.max_tokens_given) {
    ar.params.max_tokens =
        ar.endpoint == Endpoint::kChat ? int32_t(cap - n) : int32_t(std::min<int64_t>(16, cap - n));
  } else if (n + ar.params.max_tokens > max_model_len) {
    return bad_request(
        fmt::format("This model's maximum context length is {} tokens. However, you requested {} "
                    "tokens ({} in the prompt, {} for the completion)",
                    max_model_len, n + ar.params.max_tokens, n, ar.params.max_tokens),
        "max_tokens");
  } else if (n + ar.params.max_tokens > kv_tokens) {
    return bad_request(
        fmt::format("the request needs up to {} tokens of KV cache but the cache holds only {}",
                    n + ar.params.max_tokens, kv_tokens),
        "max_tokens");
  }
  SamplingParams checked = ar.params;
  if (checked.max_tokens == 0) checked.max_tokens = 1;  // echo alone (nothing is generated)
  Status st = checked.validate(vocab);
  if (!st.ok()) {
    std::string msg = st.message();
    std::string p = msg.substr(0, msg.find(' '));
    if (p == "stop") p = "stop_token_ids";
    if (p == "logprobs" && ar.endpoint == Endpoint::kChat) p = "top_logprobs";
    return bad_request(msg, p);
  }
  return std::nullopt;
}

Result<std::unique_ptr<OpenAiServer>> OpenAiServer::create(
    ServerOptions options, std::unique_ptr<Engine> engine, tokenizer::Tokenizer tok,
    std::optional<tokenizer::ChatTemplate> chat_template) {
  if (options.served_model_name.empty())
    return make_error(ErrorCode::kInvalidArgument, "served model name is empty");
  if (options.max_waiting_requests < 0)
    return make_error(ErrorCode::kInvalidArgument, "max_waiting_requests must be >= 0");
  std::unique_ptr<OpenAiServer> s(new OpenAiServer());
  s->opt_ = options;
  s->impl_ = std::make_unique<Impl>(std::move(tok));
  Impl& im = *s->impl_;
  im.chat = std::move(chat_template);
  im.model_name = options.served_model_name;
  im.max_model_len = engine->max_model_len();
  im.block_size = engine->options().block_size;
  im.num_blocks = engine->blocks().num_blocks();
  im.vocab = engine->config().vocab_size;
  for (int64_t id : engine->config().eos_token_ids) im.eos_ids.insert(int32_t(id));
  size_t longest = 1;
  for (size_t id = 0; id < im.tok.vocab_size(); ++id)
    if (auto t = im.tok.id_to_token(int32_t(id))) longest = std::max(longest, t->size());
  im.max_text_bytes = size_t(std::max<int32_t>(im.max_model_len, 1)) * longest * 4;
  im.created = unix_now();
  const int max_seqs = engine->options().max_num_seqs;
  EngineServiceOptions so;
  so.max_in_flight = max_seqs + options.max_waiting_requests;
  s->service_ = std::make_unique<EngineService>(std::move(engine), so, &s->metrics_);
  http::HttpOptions ho;
  // Handler threads serve complete requests only (idle and arriving sockets cost no
  // thread); enough for every request the engine admits plus a few tokenizer calls.
  ho.handler_threads = options.http_threads > 0 ? options.http_threads
                                                : std::min(max_seqs + options.max_waiting_requests, 256) + 8;
  ho.max_queued = std::max(16, ho.handler_threads);
  ho.max_body_bytes = options.max_body_bytes;
  ho.header_timeout_s = options.header_timeout_s;
  ho.body_timeout_s = options.body_timeout_s;
  ho.idle_timeout_s = options.idle_timeout_s;
  ho.max_connections = options.max_connections;
  ho.max_reading = options.max_reading_connections;
  s->http_ = std::make_unique<http::HttpServer>(ho);
  s->install_routes();
  return s;
}

OpenAiServer::~OpenAiServer() {
  if (service_) service_->stop();
}

Status OpenAiServer::bind() {
  Status st = http_->bind(opt_.host, opt_.port);
  if (!st.ok()) {
    if (opt_.port == 0) return make_error(ErrorCode::kIoError, "cannot listen on {} (any port)", opt_.host);
    return make_error(ErrorCode::kIoError, "cannot listen on {}:{} (in use, or not a local address)", opt_.host,
                      opt_.port);
  }
  port_ = http_->port();
  return {};
}

Status OpenAiServer::run() {
  service_->start();
  Status st = http_->run();
  service_->stop();
  if (!st.ok() && !shutdown_started_) return st.with_context("the HTTP listener failed");
  return {};
}

void OpenAiServer::shutdown() {
  if (shutdown_started_.exchange(true)) return;
  draining_ = true;
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(std::max(0.0, opt_.shutdown_timeout_s)));
  while (service_->in_flight() > 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (service_->in_flight() > 0)
    log::warn("shutdown: aborting {} request(s) still in flight", service_->in_flight());
  // Abort leftovers first so no handler thread waits for the engine, then stop listening
  // (the HTTP layer joins its handler threads). A listener that has not started yet is waited for.
  service_->stop();
  for (int i = 0; i < 500 && !http_->is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  http_->stop();
}

void OpenAiServer::install_routes() {
  http::HttpServer& h = *http_;
  Impl& im = *impl_;

  auto authorized = [this](const Request& req, Response& res) {
    if (opt_.api_key.empty()) return true;
    // The raw header value: scheme case-insensitive, the key byte for byte (no decoding).
    const std::string& got = req.header("Authorization");
    if (http::bearer_matches(got, opt_.api_key)) return true;
    send_error(res, api_error(401, "authentication_error",
                              got.empty() ? "missing API key: send 'Authorization: Bearer <key>'"
                                          : "invalid API key",
                              "", "invalid_api_key"));
    return false;
  };
  auto check_model = [&im](const std::string& model, Response& res) {
    if (model.empty() || model == im.model_name) return true;
    send_error(res, api_error(404, "not_found_error",
                              fmt::format("The model `{}` does not exist; this server serves `{}`", model,
                                          im.model_name),
                              "model", "model_not_found"));
    return false;
  };

  h.set_logger([this](const Request& req, int status) { metrics_.count_response(route_label(req.path), status); });
  h.set_fallback([](const Request& req, Response& res) {
    send_error(res, api_error(404, "not_found_error", fmt::format("no route {} {}", req.method, req.path)));
  });
  h.set_exception_message([](std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = std::string("internal error: ") + e.what();
    } catch (...) {
    }
    return what;
  });
  // Every route answers with X-Request-Id. `inline_route`: answered on the event loop.
  auto add = [&h](const char* method, const char* path, http::Handler fn, bool inline_route = false,
                  bool prefix = false) {
    http::Handler wrapped = [fn = std::move(fn)](const Request& req, Response& res) {
      fn(req, res);
      res.set_header("X-Request-Id", request_id_for(req));
    };
    if (prefix)
      h.route_prefix(method, path, std::move(wrapped), inline_route);
    else
      h.route(method, path, std::move(wrapped), inline_route);
  };

  add("GET", "/health", [this](const Request&, Response& res) {
    std::string fatal = service_->fatal_error();
    if (!fatal.empty()) return send_json(res, 503, {{"status", "error"}, {"error", fatal}});
    if (draining_) return send_json(res, 503, {{"status", "shutting_down"}});
    send_json(res, 200, {{"status", "ok"}});
  }, /*inline_route=*/true);

  auto model_card = [&im] {
    return ojson{{"id", im.model_name},  {"object", "model"},     {"created", im.created},
                 {"owned_by", "moeopt"}, {"root", im.model_name}, {"max_model_len", im.max_model_len}};
  };
  add("GET", "/v1/models", [authorized, model_card](const Request& req, Response& res) {
    if (!authorized(req, res)) return;
    send_json(res, 200, {{"object", "list"}, {"data", ojson::array({model_card()})}});
  }, /*inline_route=*/true);
  add("GET", "/v1/models/", [authorized, model_card, check_model](const Request& req, Response& res) {
    if (!authorized(req, res)) return;
    if (!check_model(req.match, res)) return;
    send_json(res, 200, model_card());
  }, /*inline_route=*/true, /*prefix=*/true);

  add("GET", "/metrics", [this](const Request&, Response& res) {
    res.status = 200;
    res.set_content(metrics_.render(service_->snapshot(), impl_->model_name), "text/plain; version=0.0.4");
  }, /*inline_route=*/true);

  add("POST", "/tokenize", [authorized, check_model, &im](const Request& req, Response& res) {
    if (!authorized(req, res)) return;
    ojson j;
    if (auto e = parse_json_object(req.body, j)) return send_error(res, *e);
    if (j.contains("model") && j["model"].is_string() && !check_model(j["model"].get<std::string>(), res))
      return;
    std::string text;
    bool add_special = true;
    auto read_bool = [&j](const char* key, bool& out) -> std::optional<ApiError> {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) return std::nullopt;
      if (!it->is_boolean()) return bad_request(fmt::format("'{}' must be a boolean", key), key);
      out = it->get<bool>();
      return std::nullopt;
    };
    if (auto it = j.find("messages"); it != j.end() && !it->is_null()) {
      ojson messages;
      if (auto e = normalize_messages(*it, messages)) return send_error(res, *e);
      bool agp = true;
      if (auto e = read_bool("add_generation_prompt", agp)) return send_error(res, *e);
      if (auto e = im.render_chat(messages, ojson(nullptr), agp, ojson(nullptr), text))
        return send_error(res, *e);
      add_special = false;
    } else if (auto p = j.find("prompt"); p != j.end() && p->is_string()) {
      text = p->get<std::string>();
    } else {
      return send_error(res, bad_request("'prompt' (a string) or 'messages' is required", "prompt"));
    }
    if (auto e = read_bool("add_special_tokens", add_special)) return send_error(res, *e);
    if (auto e = im.check_text_bytes(text, "prompt")) return send_error(res, *e);
    auto ids = im.tok.encode(text, add_special);
    if (!ids.ok()) return send_error(res, bad_request(ids.status().message(), "prompt"));
    send_json(res, 200, {{"tokens", *ids}, {"count", ids->size()}, {"max_model_len", im.max_model_len}});
  });

  add("POST", "/detokenize", [authorized, check_model, &im](const Request& req, Response& res) {
    if (!authorized(req, res)) return;
    ojson j;
    if (auto e = parse_json_object(req.body, j)) return send_error(res, *e);
    if (j.contains("model") && j["model"].is_string() && !check_model(j["model"].get<std::string>(), res))
      return;
    if (!j.contains("tokens")) return send_error(res, bad_request("'tokens' is required", "tokens"));
    std::vector<int32_t> ids;
    if (auto e = read_token_ids(j["tokens"], "tokens", ids)) return send_error(res, *e);
    for (int32_t t : ids)
      if (int64_t(t) >= int64_t(im.tok.vocab_size()))
        return send_error(res,
                          bad_request(fmt::format("token id {} is outside the vocabulary", t), "tokens"));
    send_json(res, 200, {{"prompt", im.tok.decode(ids, /*skip_special_tokens=*/false)}});
  });

  auto generate = [this, authorized, check_model](Endpoint ep) {
    return [this, authorized, check_model, ep](const Request& req, Response& res) {
      if (!authorized(req, res)) return;
      if (draining_) return send_error(res, api_error(503, "server_error", "the server is shutting down"));
      Impl& im = *impl_;
      ApiRequest ar;
      if (auto e = parse_generation_request(req.body, ep, ar)) return send_error(res, *e);
      if (!check_model(ar.model, res)) return;
      std::vector<int32_t> ids;
      if (auto e = im.build_prompt(ar, ids)) return send_error(res, *e);
      if (auto e = im.check_lengths(ar, ids)) return send_error(res, *e);
      if (ar.params.max_tokens == 0) return im.answer_echo_only(ar, ids, res);

      moeopt::Request r;
      r.prompt = ids;
      r.params = ar.params;
      // With tool parsing the handler knows the real finish reason ("tool_calls").
      auto submitted = service_->submit(std::move(r), /*caller_counts_stop=*/ar.parse_tool_calls);
      if (!submitted.ok()) return send_error(res, submit_error(submitted.status()));
      std::shared_ptr<RequestStream> stream = *submitted;
      const std::string echo = im.echo_text(ar, ids);
      const bool parse_tools = ar.parse_tool_calls;
      Metrics* metrics = &metrics_;

      std::unordered_set<int32_t> hidden(ar.params.stop_token_ids.begin(), ar.params.stop_token_ids.end());
      if (!ar.params.ignore_eos) hidden.insert(im.eos_ids.begin(), im.eos_ids.end());
      auto assembler = std::make_shared<OutputAssembler>(im.tok, ar.stop, std::move(hidden),
                                                         ar.skip_special_tokens, ar.top_logprobs >= 0);
      ResponseInfo info = im.response_info(ep);
      Usage usage;
      usage.prompt_tokens = int64_t(ids.size());

      if (!ar.stream) {
        // Non-streamed: collect the whole answer. A short request is answered normally
        // (any status). One that runs longer than kDirectWait switches to a chunked 200
        // response whose body starts with JSON whitespace written every second while
        // waiting: a write to a client that went away fails, and the request is cancelled
        // like a stream.
        // The price: an engine failure or shutdown after the switch is reported as an
        // error object in a 200 body.
        struct Collect {
          std::shared_ptr<RequestStream> stream;
          std::shared_ptr<OutputAssembler> assembler;
          std::string text, finish;
          std::vector<TokenLogprobEntry> lps;
          Usage usage;
          std::optional<ApiError> error;
          // Takes one event; true when the answer (or an error) is complete.
          bool absorb(const StreamEvent& ev, EngineService& svc) {
            if (!ev.error.empty()) {
              error = api_error(500, "server_error", "engine: " + ev.error);
              return true;
            }
            if (ev.finished && ev.finish_reason == FinishReason::kAbort && !assembler->stopped_by_string()) {
              error = api_error(503, "server_error", "the request was aborted (server shutting down)");
              return true;
            }
            usage.cached_tokens = std::max<int64_t>(usage.cached_tokens, ev.cached_prompt_tokens);
            OutputDelta d = assembler->consume(ev);
            if (assembler->stopped_by_string() && !ev.finished) svc.cancel(stream->id(), /*completed=*/true);
            text += d.text;
            for (auto& e : d.logprobs) lps.push_back(std::move(e));
            if (d.finished) finish = d.finish_reason;
            return assembler->done();
          }
        };
        auto c = std::make_shared<Collect>();
        c->stream = stream;
        c->assembler = assembler;
        c->usage = usage;
        const bool want_lp = ar.top_logprobs >= 0;
        auto body = [c, ep, info, want_lp, echo, parse_tools, metrics, &tok = im.tok] {
          c->usage.completion_tokens = c->assembler->completion_tokens();
          ojson lp = want_lp ? logprobs_json(ep, c->lps, tok) : ojson(nullptr);
          ChatOutput o = split_tool_calls(echo + c->text, c->finish, parse_tools);
          if (parse_tools && c->finish == "stop") metrics->count_finish_reason(o.finish);
          return full_response(info, o.text, o.finish, lp, c->usage, o.calls);
        };
        constexpr auto kDirectWait = std::chrono::seconds(2);
        auto deadline = Clock::now() + kDirectWait;
        bool complete = false;
        while (!complete && Clock::now() < deadline) {
          auto ev = stream->wait(std::chrono::milliseconds(100));
          if (ev) complete = c->absorb(*ev, *service_);
        }
        if (complete) {
          if (c->error) return send_error(res, *c->error);
          return send_json(res, 200, body());
        }
        EngineService* svc = service_.get();
        auto last_write = std::make_shared<Clock::time_point>(Clock::now());
        res.status = 200;
        res.set_chunked(
            "application/json",
            [c, svc, body, last_write](http::Sink& sink) -> bool {
              std::string out;
              bool complete = false;
              if (auto ev = c->stream->wait(std::chrono::milliseconds(250))) complete = c->absorb(*ev, *svc);
              if (complete) {
                out = (c->error ? c->error->to_json() : body())
                          .dump(-1, ' ', false, ojson::error_handler_t::replace);
              } else if (Clock::now() - *last_write >= std::chrono::seconds(1)) {
                out = " ";
              }
              if (!out.empty()) {
                if (!sink.write(out.data(), out.size())) {
                  svc->cancel(c->stream->id());
                  return false;
                }
                *last_write = Clock::now();
              }
              if (complete) sink.done();
              return true;
            },
            [c, svc](bool) {
              if (!c->assembler->done() || !c->stream->finished()) svc->cancel(c->stream->id());
            });
        return;
      }

      // Streaming: the provider runs on this handler thread once headers are out; each call
      // waits for the next tokens and writes their chunk. A failed write means the client
      // left: cancel the request so the engine frees its blocks.
      struct StreamState {
        std::shared_ptr<RequestStream> stream;
        std::shared_ptr<OutputAssembler> assembler;
        ResponseInfo info;
        Usage usage;
        bool include_usage = false, want_logprobs = false, sent_first = false, done = false;
        Clock::time_point last_write = Clock::now();
        std::string echo;                      // completions: sent as the first chunk
        std::optional<ToolCallParser> tools;   // chat with tool parsing
        int calls_sent = 0;
        Metrics* metrics = nullptr;
      };
      auto st = std::make_shared<StreamState>();
      st->stream = stream;
      st->assembler = assembler;
      st->info = info;
      st->usage = usage;
      st->include_usage = ar.include_usage;
      st->want_logprobs = ar.top_logprobs >= 0;
      st->echo = echo;
      if (parse_tools) st->tools.emplace();
      st->metrics = metrics;
      EngineService* svc = service_.get();
      res.status = 200;
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked(
          "text/event-stream",
          [st, svc, &tok = im.tok](http::Sink& sink) -> bool {
            if (st->done) {
              sink.done();
              return true;
            }
            std::string out;
            if (!st->sent_first && st->info.endpoint == Endpoint::kChat)
              out += sse_event(stream_chunk(st->info, "", "", nullptr, true, st->include_usage));
            else if (!st->sent_first && !st->echo.empty())
              out += sse_event(stream_chunk(st->info, st->echo, "", nullptr, false, st->include_usage));
            st->sent_first = true;
            if (out.empty()) {
              auto ev = st->stream->wait(std::chrono::milliseconds(250));
              if (!ev) {
                // Idle (queued or slow step): an SSE comment now and then finds a client
                // that went away.
                if (Clock::now() - st->last_write < std::chrono::seconds(2)) return true;
                out = ": keep-alive\n\n";
              } else if (!ev->error.empty() || (ev->finished && ev->finish_reason == FinishReason::kAbort &&
                                                !st->assembler->stopped_by_string())) {
                ApiError e = api_error(ev->error.empty() ? 503 : 500, "server_error",
                                       ev->error.empty() ? "the request was aborted (server shutting down)"
                                                         : "engine: " + ev->error);
                out = sse_event(e.to_json()) + "data: [DONE]\n\n";
                st->done = true;
              } else {
                st->usage.cached_tokens =
                    std::max<int64_t>(st->usage.cached_tokens, ev->cached_prompt_tokens);
                OutputDelta d = st->assembler->consume(*ev);
                if (st->assembler->stopped_by_string() && !ev->finished)
                  svc->cancel(st->stream->id(), /*completed=*/true);
                ToolCallDelta td;
                td.content = d.text;
                if (st->tools) {
                  td = st->tools->feed(d.text);
                  if (d.finished) {
                    ToolCallDelta rest = st->tools->finish();
                    td.content += rest.content;
                    for (auto& c : rest.calls) td.calls.push_back(std::move(c));
                  }
                }
                if (!td.content.empty() || !d.logprobs.empty()) {
                  ojson lp =
                      st->want_logprobs ? logprobs_json(st->info.endpoint, d.logprobs, tok) : ojson(nullptr);
                  out += sse_event(stream_chunk(st->info, td.content, "", lp, false, st->include_usage));
                }
                if (!td.calls.empty()) {
                  out += sse_event(tool_calls_chunk(st->info, td.calls, st->calls_sent, st->include_usage));
                  st->calls_sent += int(td.calls.size());
                }
                if (d.finished) {
                  std::string finish = d.finish_reason;
                  if (st->tools) {
                    finish = chat_finish_reason(d.finish_reason, st->tools->num_calls());
                    if (d.finish_reason == "stop") st->metrics->count_finish_reason(finish);
                  }
                  out += sse_event(stream_chunk(st->info, "", finish, nullptr, false, st->include_usage));
                  if (st->include_usage) {
                    st->usage.completion_tokens = st->assembler->completion_tokens();
                    out += sse_event(usage_chunk(st->info, st->usage));
                  }
                  out += "data: [DONE]\n\n";
                  st->done = true;
                }
              }
            }
            if (!out.empty()) {
              if (!sink.write(out.data(), out.size())) {
                svc->cancel(st->stream->id());
                return false;
              }
              st->last_write = Clock::now();
            }
            if (st->done) sink.done();
            return true;
          },
          [st, svc](bool) {
            // Runs when the response is torn down; a stream that did not reach its end
            // (client gone, server stopping) must not keep generating.
            if (!st->done || !st->stream->finished()) svc->cancel(st->stream->id());
          });
    };
  };
  add("POST", "/v1/completions", generate(Endpoint::kCompletions));
  add("POST", "/v1/chat/completions", generate(Endpoint::kChat));
}

}  // namespace moeopt::server
