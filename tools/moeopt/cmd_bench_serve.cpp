// `moeopt bench serve --url URL [--model NAME] [--concurrency N] [--num-prompts N]
//                     [--input-len N] [--output-len N] [--request-rate R] [--json]`
//
// Load generator for any OpenAI-compatible server (ours, vLLM, ...). Sends num-prompts
// streamed requests, at most `concurrency` at a time; with --request-rate R they arrive as
// a Poisson process of R requests/s (seeded), else all at once. Completions prompts are
// random token ids of exactly input-len tokens (servers accept token-id prompts); with
// --endpoint chat they are input-len random words. Every request asks for output-len
// tokens with ignore_eos and stream_options.include_usage, so output counts come from the
// server's usage (chunks are counted when a server sends none).
//
// Reported: request throughput, output and total tokens/s, and mean/p50/p90/p99 of
//   TTFT  time to the first chunk with text,
//   TPOT  (e2e - TTFT) / (output tokens - 1) per request,
//   ITL   gaps between text chunks,
//   E2E   request latency,
// as a table, or JSON with --json.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "bench_commands.h"
#include "commands.h"
#include "moeopt/core/json_limits.h"

namespace moeopt::cli {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct BenchServeArgs {
  std::string url;
  std::string model;
  std::string endpoint = "completions";
  std::string api_key;
  int concurrency = 8;
  int num_prompts = 64;
  int input_len = 128;
  int output_len = 128;
  int vocab_size = 30001;   // completions prompts: token ids drawn from [min(1000, V/2), V)
  double request_rate = 0;  // 0: all at once
  uint64_t seed = 0;
  double timeout_s = 600;
  bool json = false, no_progress = false;
};

struct RequestResult {
  bool ok = false;
  std::string error;
  double ttft = 0, e2e = 0;
  std::vector<double> itl;
  int64_t output_tokens = 0;
  int64_t prompt_tokens = 0;
};

struct Target {
  std::string origin;  // scheme://host:port
  std::string prefix;  // "/v1"
};

Result<Target> parse_url(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  auto scheme = url.find("://");
  if (scheme == std::string::npos || url.substr(0, scheme) != "http")
    return make_error(ErrorCode::kInvalidArgument, "--url must look like http://HOST:PORT, got '{}'", url);
  auto path = url.find('/', scheme + 3);
  Target t;
  t.origin = path == std::string::npos ? url : url.substr(0, path);
  std::string p = path == std::string::npos ? "" : url.substr(path);
  if (p.size() >= 3 && p.substr(p.size() - 3) == "/v1") p.resize(p.size() - 3);
  t.prefix = p + "/v1";
  return t;
}

httplib::Headers auth_headers(const BenchServeArgs& a) {
  httplib::Headers h;
  if (!a.api_key.empty()) h.emplace("Authorization", "Bearer " + a.api_key);
  return h;
}

Result<std::string> first_model(const Target& t, const BenchServeArgs& a) {
  httplib::Client cli(t.origin);
  cli.set_connection_timeout(10);
  auto res = cli.Get((t.prefix + "/models").c_str(), auth_headers(a));
  if (!res)
    return make_error(ErrorCode::kIoError, "GET {}{}/models: {}", t.origin, t.prefix,
                      httplib::to_string(res.error()));
  if (res->status != 200)
    return make_error(ErrorCode::kIoError, "GET /v1/models answered {}: {}", res->status,
                      res->body.substr(0, 200));
  auto parsed = parse_json(res->body);  // nesting and size limits (core/json_limits.h)
  json j = parsed.ok() ? std::move(parsed).value() : json();
  if (!j.is_object() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
      !j["data"][0].contains("id") || !j["data"][0]["id"].is_string())
    return make_error(ErrorCode::kIoError, "GET /v1/models: no model listed");
  return j["data"][0]["id"].get<std::string>();
}

// One streamed request; parses SSE events as they arrive.
RequestResult run_one(const Target& t, const BenchServeArgs& a, const std::string& model,
                      const json& prompt) {
  RequestResult r;
  const bool chat = a.endpoint == "chat";
  json body = {{"model", model},
               {"max_tokens", a.output_len},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}},
               {"ignore_eos", true}};
  if (chat)
    body["messages"] = json::array({{{"role", "user"}, {"content", prompt}}});
  else
    body["prompt"] = prompt;
  httplib::Client cli(t.origin);
  cli.set_connection_timeout(30);
  cli.set_read_timeout(time_t(a.timeout_s));
  cli.set_write_timeout(30);
  httplib::Request req;
  req.method = "POST";
  req.path = t.prefix + (chat ? "/chat/completions" : "/completions");
  req.headers = auth_headers(a);
  req.headers.emplace("Content-Type", "application/json");
  req.headers.emplace("Accept", "text/event-stream");
  req.body = body.dump();
  std::string buf, error_body;
  int status = 0;
  auto start = Clock::now();
  std::optional<Clock::time_point> last_text;
  int64_t chunks_with_text = 0, usage_tokens = -1;
  bool done = false;
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    if (status != 200) {
      error_body.append(data, len);
      return true;
    }
    buf.append(data, len);
    size_t end;
    while ((end = buf.find("\n\n")) != std::string::npos) {
      std::string ev = buf.substr(0, end);
      buf.erase(0, end + 2);
      if (ev.rfind("data: ", 0) != 0) continue;  // comments, keep-alives
      std::string payload = ev.substr(6);
      if (payload == "[DONE]") {
        done = true;
        continue;
      }
      auto parsed = parse_json(payload);
      if (!parsed.ok() || !parsed->is_object()) continue;
      json j = std::move(parsed).value();
      if (j.contains("error")) {
        error_body = payload;
        continue;
      }
      if (j.contains("usage") && j["usage"].is_object() && j["usage"].contains("completion_tokens")) {
        usage_tokens = j["usage"]["completion_tokens"].get<int64_t>();
        r.prompt_tokens = j["usage"].value("prompt_tokens", int64_t(0));
      }
      if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) continue;
      const json& c = j["choices"][0];
      std::string text;
      if (chat) {
        if (c.contains("delta") && c["delta"].contains("content") && c["delta"]["content"].is_string())
          text = c["delta"]["content"].get<std::string>();
      } else if (c.contains("text") && c["text"].is_string()) {
        text = c["text"].get<std::string>();
      }
      if (text.empty()) continue;
      auto now = Clock::now();
      if (!last_text)
        r.ttft = std::chrono::duration<double>(now - start).count();
      else
        r.itl.push_back(std::chrono::duration<double>(now - *last_text).count());
      last_text = now;
      ++chunks_with_text;
    }
    return true;
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  bool sent = cli.send(req, res, err);
  r.e2e = std::chrono::duration<double>(Clock::now() - start).count();
  if (!sent) {
    r.error = "connection: " + httplib::to_string(err);
    return r;
  }
  if (status != 200) {
    r.error = fmt::format("HTTP {}: {}", status, error_body.substr(0, 200));
    return r;
  }
  if (!error_body.empty()) {
    r.error = "stream error: " + error_body.substr(0, 200);
    return r;
  }
  if (!done || !last_text) {
    r.error = !done ? "stream ended without [DONE]" : "no text generated";
    return r;
  }
  r.output_tokens = usage_tokens >= 0 ? usage_tokens : chunks_with_text;
  r.ok = true;
  return r;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  double pos = p / 100.0 * double(v.size() - 1);
  size_t lo = size_t(std::floor(pos)), hi = size_t(std::ceil(pos));
  return v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
}

json stats_ms(const std::vector<double>& secs) {
  double sum = 0;
  for (double s : secs) sum += s;
  return {{"mean", secs.empty() ? 0.0 : sum / double(secs.size()) * 1e3},
          {"p50", percentile(secs, 50) * 1e3},
          {"p90", percentile(secs, 90) * 1e3},
          {"p99", percentile(secs, 99) * 1e3}};
}

int run_bench_serve(const BenchServeArgs& a) {
  const char* cmd = "bench serve";
  auto target = parse_url(a.url);
  if (!target.ok()) return report_error(cmd, target.status());
  if (a.endpoint != "completions" && a.endpoint != "chat")
    return report_error(cmd,
                        make_error(ErrorCode::kInvalidArgument, "--endpoint must be completions or chat"));
  std::string model = a.model;
  if (model.empty()) {
    auto m = first_model(*target, a);
    if (!m.ok()) return report_error(cmd, m.status());
    model = *m;
  }

  // Prompts and arrival times, all from the seed.
  std::mt19937_64 rng(a.seed);
  std::vector<json> prompts;
  static const char* kWords[] = {"river",  "stone",  "light",  "quiet",  "paper",  "garden",
                                 "window", "music",  "cloud",  "winter", "signal", "bridge",
                                 "market", "engine", "forest", "ocean"};
  std::uniform_int_distribution<int> tok(std::min(1000, a.vocab_size / 2), a.vocab_size - 1), word(0, 15);
  for (int i = 0; i < a.num_prompts; ++i) {
    if (a.endpoint == "chat") {
      std::string s;
      for (int k = 0; k < a.input_len; ++k) s += std::string(k ? " " : "") + kWords[word(rng)];
      prompts.push_back(s);
    } else {
      std::vector<int> ids;
      for (int k = 0; k < a.input_len; ++k) ids.push_back(tok(rng));
      prompts.push_back(ids);
    }
  }
  std::vector<double> arrival(size_t(a.num_prompts), 0.0);
  if (a.request_rate > 0) {
    std::exponential_distribution<double> gap(a.request_rate);
    double t = 0;
    for (auto& x : arrival) {
      x = t;
      t += gap(rng);
    }
  }

  std::vector<RequestResult> results(size_t(a.num_prompts));
  std::atomic<int> next{0}, finished{0};
  std::mutex print_mu;
  auto t0 = Clock::now();
  auto progress = [&](int done) {
    if (a.no_progress || a.json) return;
    std::lock_guard<std::mutex> lk(print_mu);
    int width = 30, fill = a.num_prompts ? done * width / a.num_prompts : width;
    std::fprintf(stderr, "\r[%s%s] %d/%d requests", std::string(size_t(fill), '#').c_str(),
                 std::string(size_t(width - fill), ' ').c_str(), done, a.num_prompts);
    if (done == a.num_prompts) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
  progress(0);
  std::vector<std::thread> workers;
  for (int w = 0; w < std::max(1, std::min(a.concurrency, a.num_prompts)); ++w) {
    workers.emplace_back([&] {
      for (;;) {
        int i = next.fetch_add(1);
        if (i >= a.num_prompts) return;
        std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(arrival[size_t(i)])));
        results[size_t(i)] = run_one(*target, a, model, prompts[size_t(i)]);
        progress(finished.fetch_add(1) + 1);
      }
    });
  }
  for (auto& t : workers) t.join();
  double duration = std::chrono::duration<double>(Clock::now() - t0).count();

  std::vector<double> ttft, tpot, itl, e2e;
  int64_t ok = 0, out_tokens = 0, in_tokens = 0;
  std::string first_error;
  for (const auto& r : results) {
    if (!r.ok) {
      if (first_error.empty()) first_error = r.error;
      continue;
    }
    ++ok;
    out_tokens += r.output_tokens;
    in_tokens += r.prompt_tokens > 0 ? r.prompt_tokens : a.input_len;
    ttft.push_back(r.ttft);
    e2e.push_back(r.e2e);
    if (r.output_tokens > 1) tpot.push_back((r.e2e - r.ttft) / double(r.output_tokens - 1));
    itl.insert(itl.end(), r.itl.begin(), r.itl.end());
  }
  json j = {{"url", a.url},
            {"model", model},
            {"endpoint", a.endpoint},
            {"concurrency", a.concurrency},
            {"request_rate", a.request_rate > 0 ? json(a.request_rate) : json("inf")},
            {"num_prompts", a.num_prompts},
            {"input_len", a.input_len},
            {"output_len", a.output_len},
            {"completed", ok},
            {"failed", int64_t(a.num_prompts) - ok},
            {"duration_s", duration},
            {"total_input_tokens", in_tokens},
            {"total_output_tokens", out_tokens},
            {"request_throughput", double(ok) / duration},
            {"output_throughput", double(out_tokens) / duration},
            {"total_token_throughput", double(in_tokens + out_tokens) / duration},
            {"ttft_ms", stats_ms(ttft)},
            {"tpot_ms", stats_ms(tpot)},
            {"itl_ms", stats_ms(itl)},
            {"e2e_ms", stats_ms(e2e)}};
  if (!first_error.empty()) j["first_error"] = first_error;
  if (a.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    auto line = [](const char* k, const std::string& v) { std::printf("%-36s %s\n", k, v.c_str()); };
    std::printf("============ moeopt bench serve ============\n");
    line("Server / model:", a.url + " / " + model);
    line("Successful requests:", std::to_string(ok));
    line("Failed requests:", std::to_string(a.num_prompts - ok));
    line("Benchmark duration (s):", fmt::format("{:.2f}", duration));
    line("Total input tokens:", std::to_string(in_tokens));
    line("Total generated tokens:", std::to_string(out_tokens));
    line("Request throughput (req/s):", fmt::format("{:.2f}", j["request_throughput"].get<double>()));
    line("Output token throughput (tok/s):", fmt::format("{:.2f}", j["output_throughput"].get<double>()));
    line("Total token throughput (tok/s):", fmt::format("{:.2f}", j["total_token_throughput"].get<double>()));
    std::printf("%-12s %10s %10s %10s %10s\n", "(ms)", "mean", "p50", "p90", "p99");
    for (const char* k : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
      const json& s = j[k];
      std::string name = std::string(k).substr(0, std::string(k).find('_'));
      for (char& c : name) c = char(std::toupper(c));
      std::printf("%-12s %10.2f %10.2f %10.2f %10.2f\n", name.c_str(), s["mean"].get<double>(),
                  s["p50"].get<double>(), s["p90"].get<double>(), s["p99"].get<double>());
    }
    if (!first_error.empty()) std::printf("first error: %s\n", first_error.c_str());
  }
  // Failed requests mean the measurement is not what was asked for.
  return ok == a.num_prompts ? 0 : 1;
}

RunFn setup_bench_serve(CLI::App& bench) {
  auto a = std::make_shared<BenchServeArgs>();
  CLI::App* sub = bench.add_subcommand("serve", "Load generator for an OpenAI-compatible server");
  sub->add_option("--url", a->url, "server base URL, e.g. http://127.0.0.1:8000")->required();
  sub->add_option("--model", a->model, "model name (default: the first of GET /v1/models)");
  sub->add_option("--endpoint", a->endpoint, "completions (default, token-id prompts) or chat");
  sub->add_option("--api-key", a->api_key, "sent as 'Authorization: Bearer KEY'");
  sub->add_option("--concurrency", a->concurrency, "requests in flight at most (default 8)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--num-prompts", a->num_prompts, "requests to send (default 64)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--input-len", a->input_len, "prompt tokens (default 128)")->check(CLI::PositiveNumber);
  sub->add_option("--vocab-size", a->vocab_size,
                  "completions: prompt token ids are drawn below this (default 30001; the demo model has 8192)")
      ->check(CLI::Range(2, 1 << 24));
  sub->add_option("--output-len", a->output_len, "tokens to generate (default 128)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--request-rate", a->request_rate, "Poisson arrivals per second (default: all at once)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--seed", a->seed, "seed for prompts and arrivals (default 0)");
  sub->add_option("--timeout", a->timeout_s, "seconds to wait for one request (default 600)")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--json", a->json, "print JSON instead of the table");
  sub->add_flag("--no-progress", a->no_progress, "no progress bar on stderr");
  return [a] { return run_bench_serve(*a); };
}

}  // namespace

MOEOPT_REGISTER_BENCH(setup_bench_serve);

}  // namespace moeopt::cli
