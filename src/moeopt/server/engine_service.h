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
  explicit RequestStream(uint64_t id) : id_(id) {}
  uint64_t id() const { return id_; }

  void push(StreamEvent ev);
  // Waits up to `timeout` for events; returns them merged (tokens concatenated, the last
  // finish state), or nullopt on timeout.
  std::optional<StreamEvent> wait(std::chrono::milliseconds timeout);
  bool finished() const;

 private:
  uint64_t id_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
  bool finished_ = false;
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

  // Queues a request (already validated). kResourceExhausted when the queue is full,
  // kUnsupported once stop() began. `caller_counts_stop`: a "stop" finish is not counted
  // by reason here; the caller reports the reason it answered with
  // (Metrics::count_finish_reason, e.g. "tool_calls").
  Result<std::shared_ptr<RequestStream>> submit(Request request, bool caller_counts_stop = false);
  // Aborts a request (no-op when it already finished). `completed` marks a request the
  // caller ended on purpose (a stop string matched): metrics count it as finished, not
  // aborted.
  void cancel(uint64_t stream_id, bool completed = false);

  EngineSnapshot snapshot() const;
  int64_t in_flight() const { return in_flight_.load(); }
  // Set when Engine::step failed; the service then fails every request.
  std::string fatal_error() const;

 private:
  struct Pending {
    std::shared_ptr<RequestStream> stream;
    Request request;
    std::chrono::steady_clock::time_point arrival;
    bool caller_counts_stop = false;
  };
  struct Active {
    std::shared_ptr<RequestStream> stream;
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
  std::vector<std::pair<uint64_t, bool>> cancels_;  // stream id, completed
  bool stopping_ = false;
  uint64_t next_stream_id_ = 1;
  std::string fatal_;

  // Engine-thread only.
  std::map<uint64_t, Active> active_;              // engine id -> request
  std::map<uint64_t, uint64_t> stream_to_engine_;  // stream id -> engine id

  std::atomic<int64_t> in_flight_{0};
  mutable std::mutex snap_mu_;
  EngineSnapshot snap_;
};

}  // namespace moeopt::server
