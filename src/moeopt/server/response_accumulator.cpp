// ResponseAccumulator (see response_accumulator.h).
#include "moeopt/server/response_accumulator.h"

#include <algorithm>
#include <unordered_set>

#include <fmt/format.h>

#include "moeopt/server/served_model.h"

namespace moeopt::server {
namespace {

// Final tokens that are counted but not shown: stop_token_ids, and EOS unless ignored.
std::unordered_set<int32_t> hidden_final_ids(const ServedModel& model, const SamplingParams& p) {
  std::unordered_set<int32_t> hidden(p.stop_token_ids.begin(), p.stop_token_ids.end());
  if (!p.ignore_eos) hidden.insert(model.eos_ids.begin(), model.eos_ids.end());
  return hidden;
}

}  // namespace

ResponseAccumulator::ResponseAccumulator(const ServedModel& model, const ApiRequest& ar, int64_t prompt_tokens,
                                         std::shared_ptr<RequestStream> stream, EngineService& service,
                                         Metrics& metrics)
    : tok_(model.tok),
      info_(model.response_info(ar.endpoint)),
      want_logprobs_(ar.top_logprobs >= 0),
      stream_(std::move(stream)),
      service_(service),
      metrics_(metrics) {
  const auto hidden = hidden_final_ids(model, ar.params);
  for (int32_t i = 0; i < std::max(1, ar.n); ++i) {
    choices_.push_back(std::make_unique<Choice>(
        Choice{OutputAssembler(model.tok, ar.stop, hidden, ar.skip_special_tokens, want_logprobs_), std::nullopt}));
    if (ar.parse_tool_calls) choices_.back()->tools.emplace();
  }
  usage_.prompt_tokens = prompt_tokens;
}

std::optional<ChoiceDelta> ResponseAccumulator::next(std::chrono::milliseconds timeout) {
  auto ev = stream_->wait(timeout);
  if (!ev) return std::nullopt;
  return consume(*ev);
}

ChoiceDelta ResponseAccumulator::consume(const StreamEvent& ev) {
  ChoiceDelta out;
  out.index = ev.choice;
  if (!ev.error.empty()) {
    out.error = api_error(500, "server_error", "engine: " + ev.error);
    return out;
  }
  if (ev.choice < 0 || ev.choice >= num_choices()) {
    out.error = api_error(500, "server_error", fmt::format("engine: an event for choice {} of {}", ev.choice,
                                                           num_choices()));
    return out;
  }
  Choice& c = *choices_[size_t(ev.choice)];
  if (ev.finished && ev.finish_reason == FinishReason::kAbort && !c.assembler.stopped_by_string()) {
    out.error = api_error(503, "server_error", "the request was aborted (server shutting down)");
    return out;
  }
  usage_.cached_tokens = std::max<int64_t>(usage_.cached_tokens, ev.cached_prompt_tokens);
  OutputDelta d = c.assembler.consume(ev);
  if (c.assembler.stopped_by_string() && !ev.finished)
    service_.cancel(stream_->id(), /*completed=*/true, ev.choice);
  out.content = std::move(d.text);
  out.logprobs = std::move(d.logprobs);
  out.finished = d.finished;
  out.finish_reason = d.finish_reason;
  if (!c.tools) return out;
  ToolCallDelta td = d.finished ? c.tools->feed_last(out.content) : c.tools->feed(out.content);
  if (d.finished) {
    out.finish_reason = chat_finish_reason(d.finish_reason, c.tools->num_calls());
    if (d.finish_reason == "stop") metrics_.count_finish_reason(out.finish_reason);
  }
  out.content = std::move(td.content);
  out.calls = std::move(td.calls);
  return out;
}

bool ResponseAccumulator::done() const {
  return std::all_of(choices_.begin(), choices_.end(), [](const auto& c) { return c->assembler.done(); });
}

void ResponseAccumulator::cancel() { service_.cancel(stream_->id()); }

void ResponseAccumulator::cancel_unless_finished(bool complete) {
  if (!complete || !stream_->finished()) cancel();
}

Usage ResponseAccumulator::usage() const {
  Usage u = usage_;
  for (const auto& c : choices_) u.completion_tokens += c->assembler.completion_tokens();
  return u;
}

ojson ResponseAccumulator::logprobs_json(const std::vector<TokenLogprobEntry>& entries) const {
  return want_logprobs_ ? server::logprobs_json(info_.endpoint, entries, tok_) : ojson(nullptr);
}

}  // namespace moeopt::server
