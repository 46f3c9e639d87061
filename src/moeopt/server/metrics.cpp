// Prometheus text rendering of the server's counters, histograms and engine gauges.
#include "moeopt/server/metrics.h"

#include <fmt/format.h>

namespace moeopt::server {
namespace {

// Latency buckets in seconds: a CPU tiny model answers in milliseconds, a big GPU model in
// tens of milliseconds per token and seconds per request.
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
                                          0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
const std::vector<double> kTpotBuckets = {0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
                                          0.1,   0.15,  0.2,  0.3,   0.4,  0.5,   0.75, 1.0,  2.5};
const std::vector<double> kE2eBuckets = {0.01, 0.05, 0.1,  0.3,  0.5,  0.8,  1.0,  1.5,  2.0,  2.5,
                                         5.0,  10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0};

// Request phases: waiting for the scheduler, prompt (arrival of the first step to the first
// token), decoding (first token to the last).
const std::vector<double> kPhaseBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                                           2.5,   5.0,    10.0,  20.0, 40.0,  60.0, 120.0};
// Always rendered, so a dashboard sees every series from the start.
const char* const kFinishReasons[] = {"stop", "length", "tool_calls", "abort"};

std::string fmt_double(double v) {
  return fmt::format("{}", v);
}

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, fmt_double(bounds_[i]), cum);
  }
  cum += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cum);
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, fmt_double(sum_), name, count_);
}

Metrics::Metrics()
    : ttft_(kTtftBuckets),
      tpot_(kTpotBuckets),
      e2e_(kE2eBuckets),
      queue_(kPhaseBuckets),
      prefill_(kPhaseBuckets),
      decode_(kPhaseBuckets) {
  for (const char* r : kFinishReasons) finish_reasons_[r] = 0;
}

void Metrics::count_response(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lk(mu_);
  ++responses_[{endpoint, status}];
}

void Metrics::record_first_token(double ttft_s) {
  std::lock_guard<std::mutex> lk(mu_);
  ttft_.observe(ttft_s);
}

void Metrics::record_request(const FinishedRequest& r) {
  std::lock_guard<std::mutex> lk(mu_);
  e2e_.observe(r.e2e_s);
  if (r.has_tpot) tpot_.observe(r.tpot_s);
  if (r.queue_s >= 0) queue_.observe(r.queue_s);
  if (r.prefill_s >= 0) prefill_.observe(r.prefill_s);
  if (r.decode_s >= 0) decode_.observe(r.decode_s);
  prompt_tokens_ += uint64_t(r.prompt_tokens);
  generation_tokens_ += uint64_t(r.generated_tokens);
  if (r.aborted) ++aborted_;
  if (!r.finish_reason.empty()) ++finish_reasons_[r.finish_reason];
}

void Metrics::count_finish_reason(const std::string& reason) {
  std::lock_guard<std::mutex> lk(mu_);
  ++finish_reasons_[reason];
}

std::string Metrics::render(const EngineSnapshot& s, const std::string& model_name) const {
  std::string out;
  std::lock_guard<std::mutex> lk(mu_);
  header(out, "moeopt_http_requests_total", "counter", "HTTP responses by endpoint and status code.");
  for (const auto& [key, n] : responses_)
    out += fmt::format("moeopt_http_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", key.first,
                       key.second, n);
  header(out, "moeopt_requests_finished_total", "counter",
         "Generation requests that ended, by finish reason (abort: cancelled, client gone, shutdown).");
  for (const auto& [reason, n] : finish_reasons_)
    out += fmt::format("moeopt_requests_finished_total{{finish_reason=\"{}\"}} {}\n", reason, n);
  header(out, "moeopt_requests_aborted_total", "counter",
         "Generation requests cancelled (client gone, stop string, shutdown).");
  out += fmt::format("moeopt_requests_aborted_total {}\n", aborted_);
  header(out, "moeopt_time_to_first_token_seconds", "histogram", "Arrival to first generated token.");
  ttft_.render("moeopt_time_to_first_token_seconds", out);
  header(out, "moeopt_time_per_output_token_seconds", "histogram",
         "Mean time between output tokens of a request (first token excluded).");
  tpot_.render("moeopt_time_per_output_token_seconds", out);
  header(out, "moeopt_e2e_request_latency_seconds", "histogram", "Arrival to last token.");
  e2e_.render("moeopt_e2e_request_latency_seconds", out);
  header(out, "moeopt_request_queue_time_seconds", "histogram", "Arrival to the first step that ran the request.");
  queue_.render("moeopt_request_queue_time_seconds", out);
  header(out, "moeopt_request_prefill_time_seconds", "histogram",
         "First step that ran the request to its first generated token.");
  prefill_.render("moeopt_request_prefill_time_seconds", out);
  header(out, "moeopt_request_decode_time_seconds", "histogram", "First generated token to the last.");
  decode_.render("moeopt_request_decode_time_seconds", out);
  header(out, "moeopt_prompt_tokens_total", "counter", "Prompt tokens of finished requests.");
  out += fmt::format("moeopt_prompt_tokens_total {}\n", prompt_tokens_);
  header(out, "moeopt_generation_tokens_total", "counter", "Tokens generated.");
  out += fmt::format("moeopt_generation_tokens_total {}\n", generation_tokens_);

  header(out, "moeopt_num_requests_running", "gauge", "Sequences in the running batch.");
  out += fmt::format("moeopt_num_requests_running {}\n", s.running);
  header(out, "moeopt_num_requests_waiting", "gauge", "Sequences waiting for admission.");
  out += fmt::format("moeopt_num_requests_waiting {}\n", s.waiting);
  header(out, "moeopt_requests_in_flight", "gauge", "Requests accepted and not yet finished.");
  out += fmt::format("moeopt_requests_in_flight {}\n", s.in_flight);
  header(out, "moeopt_kv_blocks_total", "gauge", "KV-cache blocks in the pool.");
  out += fmt::format("moeopt_kv_blocks_total {}\n", s.kv_blocks_total);
  header(out, "moeopt_kv_blocks_used", "gauge", "KV-cache blocks held by sequences.");
  out += fmt::format("moeopt_kv_blocks_used {}\n", s.kv_blocks_used);
  header(out, "moeopt_kv_blocks_cached", "gauge", "Free KV-cache blocks that still hold a reusable prefix.");
  out += fmt::format("moeopt_kv_blocks_cached {}\n", s.kv_blocks_cached);
  header(out, "moeopt_kv_cache_usage_ratio", "gauge", "Share of KV-cache blocks held by sequences.");
  out +=
      fmt::format("moeopt_kv_cache_usage_ratio {}\n",
                  fmt_double(s.kv_blocks_total ? double(s.kv_blocks_used) / double(s.kv_blocks_total) : 0.0));
  header(out, "moeopt_preemptions_total", "counter", "Sequences preempted (recomputed later).");
  out += fmt::format("moeopt_preemptions_total {}\n", s.preemptions);
  header(out, "moeopt_engine_steps_total", "counter", "Engine steps run.");
  out += fmt::format("moeopt_engine_steps_total {}\n", s.steps);
  header(out, "moeopt_prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.");
  out += fmt::format("moeopt_prefix_cache_queries_total {}\n", s.prefix_queried_tokens);
  header(out, "moeopt_prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.");
  out += fmt::format("moeopt_prefix_cache_hits_total {}\n", s.prefix_hit_tokens);
  header(out, "moeopt_prefix_cache_hit_rate", "gauge",
         "prefix_cache_hits_total / prefix_cache_queries_total.");
  out += fmt::format(
      "moeopt_prefix_cache_hit_rate {}\n",
      fmt_double(s.prefix_queried_tokens ? double(s.prefix_hit_tokens) / double(s.prefix_queried_tokens)
                                         : 0.0));
  if (!s.expert_tokens.empty() && s.num_experts > 0) {
    header(out, "moeopt_expert_tokens_total", "counter", "Tokens routed to each expert of each MoE layer.");
    for (size_t i = 0; i < s.expert_tokens.size(); ++i)
      out += fmt::format("moeopt_expert_tokens_total{{layer=\"{}\",expert=\"{}\"}} {}\n",
                         int64_t(i) / s.num_experts, int64_t(i) % s.num_experts, s.expert_tokens[i]);
  }
  header(out, "moeopt_model_info", "gauge", "The served model (value is always 1).");
  out += fmt::format("moeopt_model_info{{model=\"{}\"}} 1\n", model_name);
  return out;
}

}  // namespace moeopt::server
