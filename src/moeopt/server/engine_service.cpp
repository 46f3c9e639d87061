// EngineService: see engine_service.h for the threading model.
#include "moeopt/server/engine_service.h"

#include <algorithm>

#include "moeopt/core/logging.h"

namespace moeopt::server {

using Clock = std::chrono::steady_clock;

void RequestStream::push(StreamEvent ev) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    const size_t c = size_t(ev.choice);
    if (ev.choice < 0 || c >= choice_finished_.size() || choice_finished_[c])
      return;  // nothing may follow a choice's final event
    if (!ev.error.empty()) {
      // An engine failure ends the whole request.
      ev.finished = true;
      std::fill(choice_finished_.begin(), choice_finished_.end(), true);
      num_finished_ = num_choices();
    } else if (ev.finished) {
      choice_finished_[c] = true;
      ++num_finished_;
    }
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

std::optional<StreamEvent> RequestStream::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!cv_.wait_for(lk, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  StreamEvent out = std::move(events_.front());
  events_.pop_front();
  for (auto it = events_.begin(); it != events_.end();) {
    StreamEvent& e = *it;
    if (e.choice != out.choice) {
      ++it;
      continue;
    }
    out.tokens.insert(out.tokens.end(), e.tokens.begin(), e.tokens.end());
    for (auto& s : e.samples) out.samples.push_back(std::move(s));
    out.finished = e.finished;
    out.finish_reason = e.finish_reason;
    if (e.prompt_tokens) out.prompt_tokens = e.prompt_tokens;
    if (e.cached_prompt_tokens) out.cached_prompt_tokens = e.cached_prompt_tokens;
    if (!e.error.empty()) out.error = e.error;
    it = events_.erase(it);
  }
  return out;
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lk(mu_);
  return num_finished_ == num_choices();
}

EngineService::EngineService(std::unique_ptr<Engine> engine, EngineServiceOptions opt, Metrics* metrics)
    : engine_(std::move(engine)), opt_(opt), metrics_(metrics) {
  publish_snapshot();
}

EngineService::~EngineService() {
  stop();
}

void EngineService::start() {
  thread_ = std::thread([this] { loop(); });
}

void EngineService::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Result<std::shared_ptr<RequestStream>> EngineService::submit(Request request, bool caller_counts_stop,
                                                             int32_t n) {
  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return make_error(ErrorCode::kUnsupported, "the server is shutting down");
    if (!fatal_.empty()) return make_error(ErrorCode::kInternal, "the engine failed: {}", fatal_);
    if (n < 1) return make_error(ErrorCode::kInvalidArgument, "n must be at least 1, got {}", n);
    if (in_flight_.load() + n > opt_.max_in_flight)
      return make_error(ErrorCode::kResourceExhausted,
                        "the server is at capacity ({} sequences in flight, {} asked for, at most {}); retry later",
                        in_flight_.load(), n, opt_.max_in_flight);
    in_flight_ += n;
    stream = std::make_shared<RequestStream>(next_stream_id_++, n);
    Pending p;
    p.stream = stream;
    p.request = std::move(request);
    p.n = n;
    p.arrival = Clock::now();
    p.caller_counts_stop = caller_counts_stop;
    incoming_.push_back(std::move(p));
  }
  cv_.notify_all();
  return stream;
}

void EngineService::cancel(uint64_t stream_id, bool completed, int32_t choice) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancels_.push_back({stream_id, completed, choice});
  }
  cv_.notify_all();
}

EngineSnapshot EngineService::snapshot() const {
  std::lock_guard<std::mutex> lk(snap_mu_);
  EngineSnapshot s = snap_;
  s.in_flight = in_flight_.load();
  return s;
}

std::string EngineService::fatal_error() const {
  std::lock_guard<std::mutex> lk(mu_);
  return fatal_;
}

void EngineService::publish_snapshot() {
  EngineSnapshot s;
  const Scheduler& sch = engine_->scheduler();
  const BlockAllocator& blk = engine_->blocks();
  s.running = int64_t(sch.num_running());
  s.waiting = int64_t(sch.num_waiting());
  s.kv_blocks_total = blk.num_blocks();
  s.kv_blocks_used = blk.num_used();
  s.kv_blocks_cached = blk.num_cached();
  s.preemptions = sch.num_preemptions();
  s.prefix_queried_tokens = sch.prefix_queried_tokens();
  s.prefix_hit_tokens = sch.prefix_hit_tokens();
  s.steps = engine_->num_steps();
  s.num_layers = engine_->config().num_hidden_layers;
  s.num_experts = engine_->config().num_experts;
  s.expert_tokens = engine_->expert_token_counts();
  std::lock_guard<std::mutex> lk(snap_mu_);
  snap_ = std::move(s);
}

void EngineService::finish_active(uint64_t engine_id, Active& a, StreamEvent& ev) {
  auto now = Clock::now();
  auto secs = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  FinishedRequest f;
  f.e2e_s = secs(now - a.arrival);
  f.has_tpot = a.first_token && a.generated >= 2;
  if (f.has_tpot) f.tpot_s = secs(now - *a.first_token) / double(a.generated - 1);
  if (a.first_scheduled) {
    f.queue_s = secs(*a.first_scheduled - a.arrival);
    if (a.first_token) f.prefill_s = std::max(0.0, secs(*a.first_token - *a.first_scheduled));
  }
  if (a.first_token) f.decode_s = secs(now - *a.first_token);
  f.prompt_tokens = a.choice == 0 ? ev.prompt_tokens : 0;  // a request's prompt counts once
  f.generated_tokens = a.generated;
  f.aborted = ev.finish_reason == FinishReason::kAbort && !a.completed_by_caller;
  // A request its caller ended on purpose (a stop string matched) stopped.
  const bool stopped = ev.finish_reason == FinishReason::kStop || (a.completed_by_caller && !f.aborted);
  f.finish_reason = stopped ? (a.caller_counts_stop ? "" : "stop")
                   : ev.finish_reason == FinishReason::kLength ? "length"
                                                               : "abort";
  metrics_->record_request(f);
  ev.choice = a.choice;
  a.stream->push(std::move(ev));
  auto it = stream_to_engine_.find(a.stream->id());
  if (it != stream_to_engine_.end()) {
    std::vector<uint64_t>& ids = it->second;
    if (size_t(a.choice) < ids.size()) ids[size_t(a.choice)] = 0;
    if (std::all_of(ids.begin(), ids.end(), [](uint64_t id) { return id == 0; })) stream_to_engine_.erase(it);
  }
  active_.erase(engine_id);
  --in_flight_;
}

void EngineService::loop() {
  bool busy = false;
  for (;;) {
    std::vector<Pending> incoming;
    std::vector<Cancel> cancels;
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || busy || !incoming_.empty() || !cancels_.empty(); });
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      stopping = stopping_;
    }
    for (Pending& p : incoming) {
      auto ids = engine_->add_samples(std::move(p.request), p.n);
      if (!ids.ok()) {
        StreamEvent ev;
        ev.finished = true;
        ev.finish_reason = FinishReason::kAbort;
        ev.error = ids.status().message();
        p.stream->push(std::move(ev));
        in_flight_ -= p.n;
        continue;
      }
      for (size_t i = 0; i < ids->size(); ++i) {
        Active a;
        a.stream = p.stream;
        a.choice = int32_t(i);
        a.arrival = p.arrival;
        a.caller_counts_stop = p.caller_counts_stop;
        active_[(*ids)[i]] = std::move(a);
      }
      stream_to_engine_[p.stream->id()] = std::move(*ids);
    }
    for (const Cancel& c : cancels) {
      auto it = stream_to_engine_.find(c.stream_id);
      if (it == stream_to_engine_.end()) continue;
      const std::vector<uint64_t>& ids = it->second;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] == 0 || (c.choice >= 0 && size_t(c.choice) != i)) continue;
        engine_->abort(ids[i]);
        if (c.completed) active_[ids[i]].completed_by_caller = true;
      }
    }
    if (stopping) {
      // Shutdown: whatever is still running is aborted (the HTTP layer drained first).
      for (auto& [eid, a] : active_) engine_->abort(eid);
    }
    if (engine_->has_unfinished()) {
      auto outs = engine_->step();  // the model runs here, with no lock held
      if (!outs.ok()) {
        std::string msg = outs.status().message();
        log::warn("engine step failed: {}", msg);
        {
          std::lock_guard<std::mutex> lk(mu_);
          fatal_ = msg;
        }
        while (!active_.empty()) {
          auto it = active_.begin();
          engine_->abort(it->first);
          StreamEvent ev;
          ev.finished = true;
          ev.finish_reason = FinishReason::kAbort;
          ev.error = msg;
          finish_active(it->first, it->second, ev);
        }
        break;  // the engine's state is unknown now; submit() refuses new work
      } else {
        auto now = Clock::now();
        for (RequestOutput& o : *outs) {
          auto it = active_.find(o.id);
          if (it == active_.end()) continue;
          Active& a = it->second;
          StreamEvent ev;
          ev.choice = a.choice;
          ev.tokens = std::move(o.new_tokens);
          ev.samples = std::move(o.samples);
          ev.finished = o.finished;
          ev.finish_reason = o.finish_reason;
          ev.prompt_tokens = o.prompt_tokens;
          ev.cached_prompt_tokens = o.cached_prompt_tokens;
          if (o.first_scheduled && !a.first_scheduled) a.first_scheduled = o.first_scheduled;
          if (!ev.tokens.empty() && !a.first_token) {
            a.first_token = now;
            metrics_->record_first_token(std::chrono::duration<double>(now - a.arrival).count());
          }
          a.generated += int32_t(ev.tokens.size());
          if (ev.finished)
            finish_active(o.id, a, ev);
          else
            a.stream->push(std::move(ev));
        }
      }
    }
    publish_snapshot();
    busy = engine_->has_unfinished();
    if (stopping && !busy && active_.empty()) {
      std::lock_guard<std::mutex> lk(mu_);
      if (incoming_.empty()) break;
    }
  }
  // Requests that arrived after the stop began never reach the engine.
  std::lock_guard<std::mutex> lk(mu_);
  for (Pending& p : incoming_) {
    StreamEvent ev;
    ev.finished = true;
    ev.finish_reason = FinishReason::kAbort;
    ev.error = "the server is shutting down";
    p.stream->push(std::move(ev));
    in_flight_ -= p.n;
  }
  incoming_.clear();
}

}  // namespace moeopt::server
