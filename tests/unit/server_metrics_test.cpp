// Metrics: finish reasons as labels, the request-phase histograms in Prometheus form.
#include <gtest/gtest.h>

#include <string>

#include "moeopt/server/metrics.h"

namespace moeopt::server {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

TEST(ServerMetrics, FinishReasonsAreLabels) {
  Metrics m;
  std::string before = m.render(EngineSnapshot{}, "m");
  for (const char* r : {"stop", "length", "tool_calls", "abort"})
    EXPECT_TRUE(has_line(before, std::string("moeopt_requests_finished_total{finish_reason=\"") + r + "\"} 0"))
        << r;
  FinishedRequest f;
  f.finish_reason = "length";
  m.record_request(f);
  m.record_request(f);
  f.finish_reason = "abort";
  f.aborted = true;
  m.record_request(f);
  f = {};
  f.finish_reason = "";  // the handler tells later
  m.record_request(f);
  m.count_finish_reason("tool_calls");
  std::string text = m.render(EngineSnapshot{}, "m");
  EXPECT_TRUE(has_line(text, "moeopt_requests_finished_total{finish_reason=\"length\"} 2"));
  EXPECT_TRUE(has_line(text, "moeopt_requests_finished_total{finish_reason=\"abort\"} 1"));
  EXPECT_TRUE(has_line(text, "moeopt_requests_finished_total{finish_reason=\"tool_calls\"} 1"));
  EXPECT_TRUE(has_line(text, "moeopt_requests_finished_total{finish_reason=\"stop\"} 0"));
  EXPECT_TRUE(has_line(text, "moeopt_requests_aborted_total 1"));
  EXPECT_TRUE(has_line(text, "# TYPE moeopt_requests_finished_total counter"));
}

TEST(ServerMetrics, PhaseHistograms) {
  Metrics m;
  FinishedRequest f;
  f.finish_reason = "stop";
  f.queue_s = 0.003;
  f.prefill_s = 0.2;
  f.decode_s = 1.5;
  m.record_request(f);
  FinishedRequest waiting_only;  // aborted before it ran: only e2e is known
  waiting_only.finish_reason = "abort";
  m.record_request(waiting_only);
  std::string text = m.render(EngineSnapshot{}, "m");
  for (const char* h : {"queue", "prefill", "decode"})
    EXPECT_TRUE(has_line(text, std::string("# TYPE moeopt_request_") + h + "_time_seconds histogram")) << h;
  EXPECT_TRUE(has_line(text, "moeopt_request_queue_time_seconds_bucket{le=\"0.0025\"} 0"));
  EXPECT_TRUE(has_line(text, "moeopt_request_queue_time_seconds_bucket{le=\"0.005\"} 1"));
  EXPECT_TRUE(has_line(text, "moeopt_request_queue_time_seconds_bucket{le=\"+Inf\"} 1"));
  EXPECT_TRUE(has_line(text, "moeopt_request_queue_time_seconds_count 1"));
  EXPECT_TRUE(has_line(text, "moeopt_request_prefill_time_seconds_bucket{le=\"0.1\"} 0"));
  EXPECT_TRUE(has_line(text, "moeopt_request_prefill_time_seconds_bucket{le=\"0.25\"} 1"));
  EXPECT_TRUE(has_line(text, "moeopt_request_decode_time_seconds_bucket{le=\"1\"} 0"));
  EXPECT_TRUE(has_line(text, "moeopt_request_decode_time_seconds_bucket{le=\"2.5\"} 1"));
  EXPECT_TRUE(has_line(text, "moeopt_request_decode_time_seconds_sum 1.5"));
  EXPECT_TRUE(has_line(text, "moeopt_e2e_request_latency_seconds_count 2"));
}

}  // namespace
}  // namespace moeopt::server
