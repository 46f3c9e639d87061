// OpenAiServer: the generation routes (/v1/completions, /v1/chat/completions). A request is
// parsed, validated and submitted to the EngineService; its ResponseAccumulator then turns
// engine events into choice deltas, and one of two sinks writes them: the SSE writer
// (stream: true) or the JSON collector (the whole answer in one body). A request with n
// choices streams each choice's chunks under its own index (interleaved as the engine
// produces them), a finish chunk per choice, then the usage chunk and [DONE] once.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "moeopt/server/http_reply.h"
#include "moeopt/server/http_server.h"
#include "moeopt/server/openai_server.h"
#include "moeopt/server/response_accumulator.h"
#include "moeopt/server/served_model.h"

namespace moeopt::server {
namespace {

using Clock = std::chrono::steady_clock;
using http::Response;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr const char* kSseDone = "data: [DONE]\n\n";

// The HTTP error for a refused submission.
ApiError submit_error(const Status& st) {
  if (st.code() == ErrorCode::kResourceExhausted)
    return api_error(429, "rate_limit_error", st.message(), "", "rate_limit_exceeded");
  if (st.code() == ErrorCode::kUnsupported) return api_error(503, "server_error", st.message());
  return api_error(500, "server_error", st.message());
}

// The finish chunk of choice `index`.
std::string sse_choice_finish(const ResponseInfo& info, const std::string& finish_reason, bool include_usage,
                              int index) {
  return sse_event(stream_chunk(info, "", finish_reason, nullptr, false, include_usage, index));
}

// The end of a stream, after every choice's finish chunk: the usage chunk (include_usage), [DONE].
std::string sse_end(const ResponseInfo& info, const Usage& usage, bool include_usage) {
  std::string out;
  if (include_usage) out += sse_event(usage_chunk(info, usage));
  return out + kSseDone;
}

void start_sse(Response& res) {
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
}

// `echo` with max_tokens 0: the prompt is the whole answer; the engine is not involved.
void answer_echo_only(const ServedModel& m, const ApiRequest& ar, const std::vector<int32_t>& ids,
                      Response& res) {
  ResponseInfo info = m.response_info(ar.endpoint);
  Usage usage;
  usage.prompt_tokens = int64_t(ids.size());
  const std::string text = m.echo_text(ar, ids);
  if (!ar.stream)
    return send_json(res, 200,
                     full_response(info, std::vector<ChoiceBody>(size_t(ar.n), ChoiceBody{text, "length"}), usage));
  start_sse(res);
  std::string body;
  for (int i = 0; i < ar.n; ++i) body += sse_event(stream_chunk(info, text, "", nullptr, false, ar.include_usage, i));
  for (int i = 0; i < ar.n; ++i) body += sse_choice_finish(info, "length", ar.include_usage, i);
  res.set_content(body + sse_end(info, usage, ar.include_usage), "text/event-stream");
}

// Streaming: the provider runs on the handler thread once headers are out; each call waits
// for the next tokens and writes their chunks. A failed write means the client left: cancel
// the request so the engine frees its blocks.
class SseWriter {
 public:
  SseWriter(std::shared_ptr<ResponseAccumulator> acc, std::string echo, bool include_usage)
      : acc_(std::move(acc)),
        echo_(std::move(echo)),
        include_usage_(include_usage),
        calls_sent_(size_t(acc_->num_choices()), 0) {}

  bool pump(http::Sink& sink) {
    if (done_) {
      sink.done();
      return true;
    }
    std::string out;
    if (!sent_first_) out = opening();
    sent_first_ = true;
    if (out.empty()) {
      std::optional<ChoiceDelta> d = acc_->next(milliseconds(250));
      if (!d) {
        // Idle (queued or slow step): an SSE comment now and then finds a client that went away.
        if (Clock::now() - last_write_ < seconds(2)) return true;
        out = ": keep-alive\n\n";
      } else {
        out = chunks(*d);
      }
    }
    if (!out.empty()) {
      if (!sink.write(out)) {
        acc_->cancel();
        return false;
      }
      last_write_ = Clock::now();
    }
    if (done_) sink.done();
    return true;
  }
  // The response is torn down; a stream that did not reach its end (client gone, server
  // stopping) must not keep generating.
  void finish() { acc_->cancel_unless_finished(done_); }

 private:
  // Per choice: chat, the assistant-role chunk; completions, the echoed prompt, if any.
  std::string opening() const {
    const ResponseInfo& info = acc_->info();
    std::string out;
    for (int i = 0; i < acc_->num_choices(); ++i) {
      if (info.endpoint == Endpoint::kChat)
        out += sse_event(stream_chunk(info, "", "", nullptr, true, include_usage_, i));
      else if (!echo_.empty())
        out += sse_event(stream_chunk(info, echo_, "", nullptr, false, include_usage_, i));
    }
    return out;
  }
  std::string chunks(const ChoiceDelta& d) {
    if (d.error) {
      done_ = true;
      return sse_event(d.error->to_json()) + kSseDone;
    }
    const ResponseInfo& info = acc_->info();
    const int i = d.index;
    std::string out;
    if (!d.content.empty() || !d.logprobs.empty())
      out += sse_event(
          stream_chunk(info, d.content, "", acc_->logprobs_json(d.logprobs), false, include_usage_, i));
    if (!d.calls.empty()) {
      int& sent = calls_sent_[size_t(i)];
      out += sse_event(tool_calls_chunk(info, d.calls, sent, include_usage_, i));
      sent += int(d.calls.size());
    }
    if (d.finished) out += sse_choice_finish(info, d.finish_reason, include_usage_, i);
    if (acc_->done()) {
      out += sse_end(info, acc_->usage(), include_usage_);
      done_ = true;
    }
    return out;
  }

  std::shared_ptr<ResponseAccumulator> acc_;
  std::string echo_;  // completions: sent as the first chunk
  bool include_usage_, sent_first_ = false, done_ = false;
  std::vector<int> calls_sent_;  // per choice
  Clock::time_point last_write_ = Clock::now();
};

// Non-streamed: the deltas concatenated into one answer, per choice.
class JsonCollector {
 public:
  JsonCollector(std::shared_ptr<ResponseAccumulator> acc, const std::string& echo)
      : acc_(std::move(acc)), choices_(size_t(acc_->num_choices())), logprobs_(choices_.size()) {
    for (ChoiceBody& c : choices_) c.text = echo;  // completions: the echoed prompt first
  }

  // Waits up to `timeout` for the next event; true when the answer (or an error) is complete.
  bool wait(milliseconds timeout) {
    std::optional<ChoiceDelta> d = acc_->next(timeout);
    if (!d) return false;
    if (d->error) {
      error_ = std::move(d->error);
      return true;
    }
    ChoiceBody& c = choices_[size_t(d->index)];
    c.text += d->content;
    for (auto& e : d->logprobs) logprobs_[size_t(d->index)].push_back(std::move(e));
    for (auto& call : d->calls) c.tool_calls.push_back(std::move(call));
    if (d->finished) c.finish_reason = d->finish_reason;
    return acc_->done();
  }
  const std::optional<ApiError>& error() const { return error_; }
  // The response body once complete: the error object, or the whole answer.
  ojson body() const {
    if (error_) return error_->to_json();
    std::vector<ChoiceBody> out = choices_;
    for (size_t i = 0; i < out.size(); ++i) out[i].logprobs = acc_->logprobs_json(logprobs_[i]);
    return full_response(acc_->info(), out, acc_->usage());
  }
  ResponseAccumulator& accumulator() { return *acc_; }

 private:
  std::shared_ptr<ResponseAccumulator> acc_;
  std::vector<ChoiceBody> choices_;
  std::vector<std::vector<TokenLogprobEntry>> logprobs_;  // per choice
  std::optional<ApiError> error_;
};

void answer_stream(std::shared_ptr<SseWriter> w, Response& res) {
  start_sse(res);
  res.set_chunked(
      "text/event-stream", [w](http::Sink& sink) { return w->pump(sink); }, [w](bool) { w->finish(); });
}

// A short request is answered normally (any status). One that runs longer than kDirectWait
// switches to a chunked 200 response whose body starts with JSON whitespace written every
// second while waiting: a write to a client that went away fails, and the request is
// cancelled like a stream. The price: an engine failure or shutdown after the switch is
// reported as an error object in a 200 body.
void answer_json(std::shared_ptr<JsonCollector> c, Response& res) {
  constexpr auto kDirectWait = seconds(2);
  auto deadline = Clock::now() + kDirectWait;
  bool complete = false;
  while (!complete && Clock::now() < deadline) complete = c->wait(milliseconds(100));
  if (complete) {
    if (c->error()) return send_error(res, *c->error());
    return send_json(res, 200, c->body());
  }
  auto last_write = std::make_shared<Clock::time_point>(Clock::now());
  res.status = 200;
  res.set_chunked(
      "application/json",
      [c, last_write](http::Sink& sink) -> bool {
        std::string out;
        const bool complete = c->wait(milliseconds(250));
        if (complete)
          out = json_text(c->body());
        else if (Clock::now() - *last_write >= seconds(1))
          out.push_back(' ');  // JSON whitespace
        if (!out.empty()) {
          if (!sink.write(out)) {
            c->accumulator().cancel();
            return false;
          }
          *last_write = Clock::now();
        }
        if (complete) sink.done();
        return true;
      },
      [c](bool) { c->accumulator().cancel_unless_finished(c->accumulator().done()); });
}

}  // namespace

void OpenAiServer::handle_completions(const http::Request& req, Response& res) {
  handle_generate(Endpoint::kCompletions, req, res);
}

void OpenAiServer::handle_chat_completions(const http::Request& req, Response& res) {
  handle_generate(Endpoint::kChat, req, res);
}

void OpenAiServer::handle_generate(Endpoint ep, const http::Request& req, Response& res) {
  if (!authorized(req, res)) return;
  if (draining_) return send_error(res, api_error(503, "server_error", "the server is shutting down"));
  const ServedModel& m = *model_;
  ApiRequest ar;
  if (auto e = parse_generation_request(req.body, ep, ar)) return send_error(res, *e);
  if (!check_model(ar.model, res)) return;
  std::vector<int32_t> ids;
  if (auto e = m.build_prompt(ar, ids)) return send_error(res, *e);
  if (auto e = m.check_lengths(ar, ids)) return send_error(res, *e);
  if (ar.params.max_tokens == 0) return answer_echo_only(m, ar, ids, res);

  if (ar.n > service_->max_in_flight())
    return send_error(res, bad_request(fmt::format("'n' = {} is more than this server holds at once ({} "
                                                   "sequences running and waiting)",
                                                   ar.n, service_->max_in_flight()),
                                       "n"));

  moeopt::Request r;
  r.prompt = ids;
  r.params = ar.params;
  // With tool parsing the handler knows the real finish reason ("tool_calls"). The n
  // choices are admitted together or refused together (429).
  auto submitted = service_->submit(std::move(r), /*caller_counts_stop=*/ar.parse_tool_calls, ar.n);
  if (!submitted.ok()) return send_error(res, submit_error(submitted.status()));
  auto acc = std::make_shared<ResponseAccumulator>(m, ar, int64_t(ids.size()), *submitted, *service_, metrics_);
  std::string echo = m.echo_text(ar, ids);
  if (ar.stream)
    answer_stream(std::make_shared<SseWriter>(std::move(acc), std::move(echo), ar.include_usage), res);
  else
    answer_json(std::make_shared<JsonCollector>(std::move(acc), echo), res);
}

}  // namespace moeopt::server
