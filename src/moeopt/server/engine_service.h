// EngineService: the Engine on its own thread, fed by HTTP handler threads.
//
// Threads and locks:
//   * one engine thread owns the Engine and is the only one that touches it. Each loop it
//     takes the new submissions and cancellations (under `mu_`, briefly), adds/aborts them,
//     runs one Engine::step() with NO lock held, then hands each request's new tokens to
//     that request's RequestStream;
//   * handler threads call submit() (validation happens before, in the handler) and then
//     read events from their RequestStream, which has its own mutex and condition variable,
//     so a slow client never blocks the engine or another request;
//   * cancel() (client gone, stop string matched) queues an abort that the engine thread
//     applies before its next step; the engine then frees the request's KV blocks.
// Gauges (running, waiting, KV blocks) are published as atomics after every step, and the
// latency histograms and token counters are recorded here, in the engine thread, where the
// token times are known.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "moeopt/engine/engine.h"
#include "moeopt/server/metrics.h"

namespace moeopt::server {

// What the engine produced for one request since the last event.
struct StreamEvent {
  int32_t choice = 0;  // which of the request's n samples this is about
  std::vector<int32_t> tokens;
  std::vector<SampleResult> samples;  // parallel to tokens
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  int32_t prompt_tokens = 0;
  int32_t cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache
  std::string error;                 // set when the engine failed this request
};

// One request's mailbox: the engine thread pushes, the handler thread pops.
class RequestStream {
 public:
  explicit RequestStream(uint64_t id, int32_t num_choices = 1)
      : id_(id), choice_finished_(size_t(std::max(1, num_choices)), false) {}
  uint64_t id() const { return id_; }
  int32_t num_choices() const { return int32_t(choice_finished_.size()); }

  // Nothing is taken for a choice after its final event; an event with an error ends every
  // choice.
  void push(StreamEvent ev);
  // Waits up to `timeout` for events; returns the oldest one merged with the later ones of
  // the same choice (tokens concatenated, the last finish state), or nullopt on timeout.
  std::optional<StreamEvent> wait(std::chrono::milliseconds timeout);
  // Every choice had its final event.
  bool finished() const;

 private:
  uint64_t id_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
  std::vector<bool> choice_finished_;
  int32_t num_finished_ = 0;
};

struct EngineServiceOptions {
  // Requests accepted but not finished; beyond this submit() answers kResourceExhausted
  // (HTTP 429). Running + waiting, so max_num_seqs + max_waiting_requests.
  int32_t max_in_flight = 1024;
};

class EngineService {
 public:
  EngineService(std::unique_ptr<Engine> engine, EngineServiceOptions opt, Metrics* metrics);
  ~EngineService();
  EngineService(const EngineService&) = delete;
  EngineService& operator=(const EngineService&) = delete;

  void start();
  // Aborts whatever is still in flight and joins the engine thread.
  void stop();

  // Queues a request (already validated) as `n` samples of its prompt. kResourceExhausted
  // when the n do not fit under max_in_flight (all or nothing), kUnsupported once stop()
  // began. `caller_counts_stop`: a "stop" finish is not counted by reason here; the caller
  // reports the reason it answered with (Metrics::count_finish_reason, e.g. "tool_calls").
  Result<std::shared_ptr<RequestStream>> submit(Request request, bool caller_counts_stop = false,
                                                int32_t n = 1);
  // Aborts a request's choices, or only choice `choice` when it is >= 0 (no-op for those
  // already finished). `completed` marks a choice the caller ended on purpose (a stop string
  // matched): metrics count it as finished, not aborted.
  void cancel(uint64_t stream_id, bool completed = false, int32_t choice = -1);

  EngineSnapshot snapshot() const;
  int64_t in_flight() const { return in_flight_.load(); }
  // Sequences (a request's n choices each count) accepted but not finished, at most.
  int32_t max_in_flight() const { return opt_.max_in_flight; }
  // Set when Engine::step failed; the service then fails every request.
  std::string fatal_error() const;

 private:
  struct Pending {
    std::shared_ptr<RequestStream> stream;
    Request request;
    int32_t n = 1;
    std::chrono::steady_clock::time_point arrival;
    bool caller_counts_stop = false;
  };
  // One engine sequence: choice `choice` of its stream.
  struct Active {
    std::shared_ptr<RequestStream> stream;
    int32_t choice = 0;
    std::chrono::steady_clock::time_point arrival;
    std::optional<std::chrono::steady_clock::time_point> first_token;
    int32_t generated = 0;
    bool completed_by_caller = false;
    bool caller_counts_stop = false;
    std::optional<std::chrono::steady_clock::time_point> first_scheduled;
  };

  void loop();
  void finish_active(uint64_t engine_id, Active& a, StreamEvent& ev);
  void publish_snapshot();

  std::unique_ptr<Engine> engine_;
  EngineServiceOptions opt_;
  Metrics* metrics_;
  std::thread thread_;

  mutable std::mutex mu_;  // guards the fields below (never held while the model runs)
  std::condition_variable cv_;
  std::vector<Pending> incoming_;
  struct Cancel {
    uint64_t stream_id = 0;
    bool completed = false;
    int32_t choice = -1;  // -1: all
  };
  std::vector<Cancel> cancels_;
  bool stopping_ = false;
  uint64_t next_stream_id_ = 1;
  std::string fatal_;

  // Engine-thread only.
  std::map<uint64_t, Active> active_;                           // engine id -> sequence
  std::map<uint64_t, std::vector<uint64_t>> stream_to_engine_;  // stream id -> engine id per choice

  std::atomic<int64_t> in_flight_{0};
  mutable std::mutex snap_mu_;
  EngineSnapshot snap_;
};

}  // namespace moeopt::server
