// EngineService: see engine_service.h for the threading model.
#include "moeopt/server/engine_service.h"

#include <algorithm>

#include "moeopt/core/logging.h"

namespace moeopt::server {

using Clock = std::chrono::steady_clock;

void RequestStream::push(StreamEvent ev) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (finished_) return;  // nothing may follow the final event
    if (ev.finished) finished_ = true;
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

std::optional<StreamEvent> RequestStream::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!cv_.wait_for(lk, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  StreamEvent out = std::move(events_.front());
  events_.pop_front();
  while (!events_.empty()) {
    StreamEvent& e = events_.front();
    out.tokens.insert(out.tokens.end(), e.tokens.begin(), e.tokens.end());
    for (auto& s : e.samples) out.samples.push_back(std::move(s));
    out.finished = e.finished;
    out.finish_reason = e.finish_reason;
    if (e.prompt_tokens) out.prompt_tokens = e.prompt_tokens;
    if (e.cached_prompt_tokens) out.cached_prompt_tokens = e.cached_prompt_tokens;
    if (!e.error.empty()) out.error = e.error;
    events_.pop_front();
  }
  return out;
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lk(mu_);
  return finished_;
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

Result<std::shared_ptr<RequestStream>> EngineService::submit(Request request, bool caller_counts_stop) {
  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return make_error(ErrorCode::kUnsupported, "the server is shutting down");
    if (!fatal_.empty()) return make_error(ErrorCode::kInternal, "the engine failed: {}", fatal_);
    if (in_flight_.load() >= opt_.max_in_flight)
      return make_error(ErrorCode::kResourceExhausted,
                        "the server is at capacity ({} requests in flight); retry later", opt_.max_in_flight);
    ++in_flight_;
    stream = std::make_shared<RequestStream>(next_stream_id_++);
    incoming_.push_back({stream, std::move(request), Clock::now(), caller_counts_stop});
  }
  cv_.notify_all();
  return stream;
}

void EngineService::cancel(uint64_t stream_id, bool completed) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancels_.emplace_back(stream_id, completed);
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
  f.prompt_tokens = ev.prompt_tokens;
  f.generated_tokens = a.generated;
  f.aborted = ev.finish_reason == FinishReason::kAbort && !a.completed_by_caller;
  // A request its caller ended on purpose (a stop string matched) stopped.
  const bool stopped = ev.finish_reason == FinishReason::kStop || (a.completed_by_caller && !f.aborted);
  f.finish_reason = stopped ? (a.caller_counts_stop ? "" : "stop")
                   : ev.finish_reason == FinishReason::kLength ? "length"
                                                               : "abort";
  metrics_->record_request(f);
  a.stream->push(std::move(ev));
  stream_to_engine_.erase(a.stream->id());
  active_.erase(engine_id);
  --in_flight_;
}

void EngineService::loop() {
  bool busy = false;
  for (;;) {
    std::vector<Pending> incoming;
    std::vector<std::pair<uint64_t, bool>> cancels;
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || busy || !incoming_.empty() || !cancels_.empty(); });
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      stopping = stopping_;
    }
    for (Pending& p : incoming) {
      auto id = engine_->add_request(std::move(p.request));
      if (!id.ok()) {
        StreamEvent ev;
        ev.finished = true;
        ev.finish_reason = FinishReason::kAbort;
        ev.error = id.status().message();
        p.stream->push(std::move(ev));
        --in_flight_;
        continue;
      }
      Active a;
      a.stream = p.stream;
      a.arrival = p.arrival;
      a.caller_counts_stop = p.caller_counts_stop;
      active_[*id] = std::move(a);
      stream_to_engine_[p.stream->id()] = *id;
    }
    for (auto [sid, completed] : cancels) {
      auto it = stream_to_engine_.find(sid);
      if (it == stream_to_engine_.end()) continue;
      engine_->abort(it->second);
      if (completed) active_[it->second].completed_by_caller = true;
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
    --in_flight_;
  }
  incoming_.clear();
}

}  // namespace moeopt::server
