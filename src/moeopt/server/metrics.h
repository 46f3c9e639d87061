// Metrics: the counters and histograms behind GET /metrics, in Prometheus text format
// (version 0.0.4: "# HELP", "# TYPE", then `name{labels} value` lines; histograms as
// cumulative `_bucket{le="..."}` series plus `_sum` and `_count`).
//
// Thread-safe: handler threads count HTTP responses, the engine thread records latencies
// and tokens; one mutex guards everything (updates are a few additions).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace moeopt::server {

// Gauges and counters owned by the engine thread, copied out after every step.
struct EngineSnapshot {
  int64_t running = 0, waiting = 0;
  int64_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_cached = 0;
  int64_t preemptions = 0;
  int64_t prefix_queried_tokens = 0, prefix_hit_tokens = 0;
  int64_t in_flight = 0;
  int64_t steps = 0;
  int64_t num_layers = 0, num_experts = 0;
  std::vector<int64_t> expert_tokens;  // [num_layers * num_experts]; empty when not collected
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  // Appends the _bucket/_sum/_count lines of `name`.
  void render(const std::string& name, std::string& out) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// One finished generation request, as the engine thread saw it.
struct FinishedRequest {
  double e2e_s = 0;                      // arrival -> last token
  double tpot_s = 0;                     // mean time per output token after the first
  bool has_tpot = false;                 // >= 2 tokens came out
  double queue_s = -1, prefill_s = -1, decode_s = -1;  // < 0: the phase never happened
  int64_t prompt_tokens = 0, generated_tokens = 0;
  bool aborted = false;
  // "stop", "length", "abort"; "" when the handler counts it later (count_finish_reason:
  // a chat answer with tool calls is "tool_calls").
  std::string finish_reason;
};

class Metrics {
 public:
  Metrics();

  // One HTTP response (endpoint is the route path, status the HTTP code).
  void count_response(const std::string& endpoint, int status);
  // A request's first token, `ttft_s` seconds after it arrived.
  void record_first_token(double ttft_s);
  // One finished request: latencies in seconds, tokens, its finish reason.
  void record_request(const FinishedRequest& r);
  // The finish reason of a request recorded with an empty one.
  void count_finish_reason(const std::string& reason);

  // The full exposition text, with the engine's gauges.
  std::string render(const EngineSnapshot& snap, const std::string& model_name) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> responses_;
  Histogram ttft_, tpot_, e2e_, queue_, prefill_, decode_;
  uint64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  uint64_t aborted_ = 0;
  std::map<std::string, uint64_t> finish_reasons_;
};

}  // namespace moeopt::server
