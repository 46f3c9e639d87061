// `moeopt serve [--model DIR|name] [--host 127.0.0.1] [--port 8000] [--profile NAME|FILE]
//               [--api-key KEY] [--served-model-name NAME] [--<profile key> VALUE ...]`
//
// OpenAI-compatible HTTP server (src/moeopt/server/openai_server.h) on the same engine as
// `generate`. Every profile key is also a flag: engine.max_num_seqs is --max-num-seqs,
// features.fp8_weights is --fp8-weights true|false, and so on (`moeopt serve --help`).
// Startup prints a model summary, the profile's features and "Server running on
// http://HOST:PORT". SIGINT/SIGTERM: stop accepting, let in-flight requests finish (up to
// --shutdown-timeout seconds), exit 0.
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <pthread.h>

#include <fmt/format.h>

#include "commands.h"
#include "moeopt/engine/kv_cache.h"
#include "model_setup.h"
#include "moeopt/engine/engine.h"
#include "moeopt/engine/profile.h"
#include "moeopt/model/model.h"
#include "moeopt/model/model_cache.h"
#include "moeopt/model/sizing.h"
#include "moeopt/model/tensor_specs.h"
#include "moeopt/server/openai_server.h"
#include "moeopt/tokenizer/chat_template.h"
#include "moeopt/tokenizer/tokenizer.h"

namespace moeopt::cli {
namespace {

struct ServeArgs {
  ModelArgs m;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string profile = "conservative";
  std::string api_key;
  std::string served_model_name;
  int32_t num_kv_blocks = 0;
  int64_t kv_cache_mib = 0;  // 0: 1024 on the CPU, the memory budget on the GPU
  int http_threads = 0;
  double shutdown_timeout = 30.0;
  double header_timeout = 10, body_timeout = 30, idle_timeout = 5;
  int max_connections = 4096;
  std::map<std::string, std::string> overrides;  // profile key -> value, from flags
};

// "engine.max_num_seqs" -> "max-num-seqs".
std::string flag_name(const std::string& key) {
  std::string k = key.substr(key.find('.') + 1);
  for (char& c : k)
    if (c == '_') c = '-';
  return k;
}

std::string model_label(const std::string& arg, const std::string& dir) {
  if (arg.empty()) return kDefaultModelName;
  std::string s = arg;
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  auto slash = s.find_last_of('/');
  (void)dir;
  return slash == std::string::npos ? s : s.substr(slash + 1);
}

void print_summary(const ModelConfig& c, const std::string& dir, const std::string& name, const Engine& e,
                   const engine::Profile& prof, const server::ServerOptions& so) {
  std::printf("moeopt serve: %s (%s) from %s\n", name.c_str(), c.model_type.c_str(), dir.c_str());
  std::string params;
  if (auto specs = expected_tensors(c); specs.ok()) {
    ParamCounts pc = count_params(c, *specs);
    params =
        fmt::format(", {:.3g}M params ({:.3g}M active)", double(pc.total) / 1e6, double(pc.active) / 1e6);
  }
  std::printf("  model: %lld layers, hidden %lld, %lld experts (top-%lld), vocab %lld%s\n",
              (long long)c.num_hidden_layers, (long long)c.hidden_size, (long long)c.num_experts,
              (long long)c.num_experts_per_tok, (long long)c.vocab_size, params.c_str());
  const EngineOptions& eo = e.options();
  std::printf(
      "  engine: %s, max_model_len %d, KV %d blocks x %d tokens, max_num_seqs %d, "
      "max_num_batched_tokens %d, prefix caching %s, chunked prefill %s\n",
      eo.device ? "CUDA backend" : "CPU backend", e.max_model_len(), e.blocks().num_blocks(), eo.block_size, eo.max_num_seqs, eo.max_num_batched_tokens,
      eo.enable_prefix_caching ? "on" : "off", eo.enable_chunked_prefill ? "on" : "off");
  std::printf("  %s\n", engine::describe_features(prof, eo.device ? Device::kCuda : Device::kCpu).c_str());
  std::printf("  queue: %d waiting requests beyond the running batch; API key %s\n", so.max_waiting_requests,
              so.api_key.empty() ? "off" : "required");
}

int run_serve(ServeArgs& a) {
  const char* cmd = "serve";
  // Signals go to one waiting thread: block them before any other thread exists.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto prof = engine::load_profile(a.profile, data_root() + "/configs");
  if (!prof.ok()) return report_error(cmd, prof.status());
  for (const auto& [key, value] : a.overrides) {
    Status st = engine::apply_override(*prof, key, value);
    if (!st.ok()) return report_error(cmd, st.with_context("--" + flag_name(key)));
  }
  if (Status st = engine::validate_profile(*prof); !st.ok()) return report_error(cmd, st);
  if (a.port < 0 || a.port > 65535)
    return report_error(
        cmd, make_error(ErrorCode::kInvalidArgument, "--port must be in [0, 65535], got {}", a.port));

  a.m.fp8_weights = prof->features.fp8_weights;    // balanced / aggressive: FP8 W8A8 weights
  a.m.fp8_kv_cache = prof->features.fp8_kv_cache;  // aggressive: FP8 KV cache
  auto lm = load_model_for(a.m, cmd);
  if (!lm.ok()) return report_error(cmd, lm.status());
  const std::string* dir = &lm->tokenizer_dir;
  auto tok = tokenizer::Tokenizer::load(*dir);
  if (!tok.ok()) return report_error(cmd, tok.status().with_context("tokenizer"));
  std::optional<tokenizer::ChatTemplate> chat;
  if (auto ct = tokenizer::ChatTemplate::load(*dir); ct.ok()) {
    chat = std::move(*ct);
  } else {
    std::fprintf(stderr, "moeopt serve: warning: no chat template (%s); /v1/chat/completions answers 400\n",
                 ct.status().message().c_str());
  }

  const engine::EngineKnobs& k = prof->engine;
  EngineOptions eo;
  eo.num_threads = k.cpu_threads;
  eo.block_size = k.kv_block_size;
  eo.num_kv_blocks = a.num_kv_blocks;
  eo.kv_cache_bytes = size_t(a.kv_cache_mib > 0 ? a.kv_cache_mib : 1024) << 20;
  if (lm->backend && a.kv_cache_mib == 0 && a.num_kv_blocks == 0) {
    // The GPU: what gpu_memory_utilization leaves after the weights, minus 2 GiB for the
    // activation arena, the MoE / attention scratch and the CUDA graphs.
    size_t free_b = 0, total_b = 0;
    if (Status st = lm->backend->memory_info(&free_b, &total_b); !st.ok()) return report_error(cmd, st);
    eo.kv_cache_bytes = KvCache::device_budget(free_b, total_b, k.gpu_memory_utilization, size_t(2) << 30);
    if (eo.kv_cache_bytes == 0)
      return report_error(cmd, make_error(ErrorCode::kResourceExhausted,
                                          "no GPU memory left for the KV cache after the weights "
                                          "({:.1f} of {:.1f} GiB free, gpu_memory_utilization {})",
                                          double(free_b) / (1 << 30), double(total_b) / (1 << 30),
                                          k.gpu_memory_utilization));
  }
  eo.max_num_seqs = k.max_num_seqs;
  eo.max_num_batched_tokens = k.max_num_batched_tokens;
  eo.max_model_len = k.max_model_len;
  eo.enable_prefix_caching = k.enable_prefix_caching;
  eo.enable_chunked_prefill = k.enable_chunked_prefill;
  eo.cuda_graphs = prof->features.cuda_graphs;
  eo.cuda_graph_max_batch = k.cuda_graph_max_batch;
  use_device(*lm, eo);
  const ModelConfig cfg = lm->model->config();
  auto engine = Engine::create(std::move(lm->model), eo);
  if (!engine.ok()) return report_error(cmd, engine.status());

  server::ServerOptions so;
  so.host = a.host;
  so.port = a.port;
  so.api_key = a.api_key;
  so.served_model_name = a.served_model_name.empty() ? model_label(a.m.model, *dir) : a.served_model_name;
  so.max_waiting_requests = k.max_waiting_requests;
  so.http_threads = a.http_threads;
  so.shutdown_timeout_s = a.shutdown_timeout;
  so.header_timeout_s = a.header_timeout;
  so.body_timeout_s = a.body_timeout;
  so.idle_timeout_s = a.idle_timeout;
  so.max_connections = a.max_connections;
  so.max_reading_connections = std::max(1, std::min(1024, a.max_connections));
  print_summary(cfg, lm->source, so.served_model_name, **engine, *prof, so);

  auto srv = server::OpenAiServer::create(so, std::move(*engine), std::move(*tok), std::move(chat));
  if (!srv.ok()) return report_error(cmd, srv.status());
  server::OpenAiServer* s = srv->get();
  if (Status st = s->bind(); !st.ok()) return report_error(cmd, st);

  // First SIGINT/SIGTERM: graceful stop (on its own thread, it may wait for requests).
  // A second one: the user insists, exit at once.
  std::thread([sigs, s] {
    int sig = 0;
    if (sigwait(&sigs, &sig) != 0) return;
    std::fprintf(stderr, "moeopt serve: %s received, finishing in-flight requests (again to force)\n",
                 sig == SIGINT ? "SIGINT" : "SIGTERM");
    std::thread([s] { s->shutdown(); }).detach();
    if (sigwait(&sigs, &sig) != 0) return;
    std::fprintf(stderr, "moeopt serve: forced exit\n");
    std::_Exit(130);
  }).detach();

  std::printf("Server running on http://%s:%d\n", a.host.c_str(), s->port());
  std::fflush(stdout);
  Status st = s->run();
  if (!st.ok()) return report_error(cmd, st);
  std::printf("moeopt serve: stopped\n");
  std::fflush(stdout);
  return 0;
}

RunFn setup_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* sub = app.add_subcommand("serve", "OpenAI-compatible HTTP server");
  add_model_flags(sub, &a->m);
  sub->add_option("--host", a->host, "address to listen on (default 127.0.0.1)");
  sub->add_option("--port", a->port, "port (default 8000; 0 = any free port)");
  sub->add_option("--profile", a->profile, "conservative (default), balanced, aggressive or a YAML file");
  sub->add_option("--api-key", a->api_key, "require 'Authorization: Bearer KEY' on /v1 and tokenizer routes");
  sub->add_option("--served-model-name", a->served_model_name,
                  "model id clients use (default: the model's name)");
  sub->add_option("--num-kv-blocks", a->num_kv_blocks, "KV-cache blocks (default: from --kv-cache-mib)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--kv-cache-mib", a->kv_cache_mib,
                  "KV-cache size in MiB (default: 1024 on the CPU; on the GPU what "
                  "gpu_memory_utilization leaves after the weights, minus 2 GiB)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--http-threads", a->http_threads, "HTTP handler threads (default: enough for the queue)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--shutdown-timeout", a->shutdown_timeout,
                  "seconds in-flight requests may take to finish after SIGINT/SIGTERM (default 30)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--header-timeout", a->header_timeout,
                  "seconds a request's head may take to arrive, from its first byte (default 10; then 408)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--body-timeout", a->body_timeout,
                  "seconds a request's body may take to arrive after its head (default 30; then 408)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--idle-timeout", a->idle_timeout, "seconds an idle keep-alive connection stays open (default 5)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-connections", a->max_connections,
                  "open connections in all (default 4096; beyond: 503 and close)")
      ->check(CLI::PositiveNumber);
  // One flag per profile key; values are parsed by the profile's own strict rules.
  for (const std::string& key : engine::profile_keys()) {
    std::string flag = "--" + flag_name(key);
    if (sub->get_option_no_throw(flag)) continue;
    sub->add_option_function<std::string>(
        flag, [a, key](const std::string& v) { a->overrides[key] = v; },
        fmt::format("profile override of {}", key));
  }
  return [a] { return run_serve(*a); };
}

}  // namespace

MOEOPT_REGISTER_COMMAND(setup_serve);

}  // namespace moeopt::cli
