// `moeopt bench ablation [--model DIR|name] [--device cpu|cuda] [--random-weights] [--layers N]
//                        [--batch-sizes 1,64,512] [--input-len 1024] [--output-len 32]
//                        [--prefill-len 4096] [--text FILE] [--rows LIST] [--threads N]
//                        [--json FILE]`
//
// The stage table of the optimisations, each row adding one option to the row above:
//   bf16          the baseline: the checkpoint's weights, bf16 KV cache
//   fp8-weights   + FP8 W8A8 weights (128x128 block scales)
//   fp8-kv-cache  + the FP8 (e4m3) KV cache
//   sparsity-2-4  + routed experts pruned 2:4 by magnitude
// Columns: decode tokens/s and % of the memory roofline at each batch (context --input-len),
// prefill tokens/s and % of the compute roofline at --prefill-len, and the row's quality cost
// against the BF16 baseline on the same tokens (KL, top-1 agreement, perplexity delta).
//
// Every cell comes from the command that measures it on its own, run as a child process of
// this binary with the same model flags: `bench decode`, `bench prefill` and `bench quality
// --lossy <the row's options>` (--text FILE, else its random prompts), each writing JSON
// that this command reads. So a cell here is exactly what that command prints, with its
// checks (a decode step above the card's copy bandwidth is an error there, and here). Rows
// whose option has no kernel that would make it faster say so instead of a number: 2:4 runs
// its pruned experts dense (no sparse grouped GEMM yet), so its speed cells are "no kernel";
// its quality is measured. A child that fails stops the table with its exit code.
// Output: the table, and with --json {model, device, commit, date, columns, rows: [{row,
// options, decode: [{batch, tokens_per_s, pct_of_bound}], prefill: {...}, quality: {...}}]}
// (bench/plot_ablation.py draws it). Test: tests/cli/tests.cmake (cli_bench_ablation_json).
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_commands.h"
#include "model_setup.h"
#include "moeopt/core/file_io.h"

extern char** environ;

namespace moeopt::cli {
namespace {

namespace fs = std::filesystem;

struct AblationArgs {
  ModelArgs m;
  std::string batch_sizes = "1,64,512";
  int64_t input_len = 1024, output_len = 32, prefill_len = 4096;
  std::string text;
  std::vector<std::string> rows{"bf16", "fp8-weights", "fp8-kv-cache", "sparsity-2-4"};
  int threads = 0;
  std::string json;
};

// One row: its name and the lossy options it has (cumulative).
struct Row {
  std::string name;
  bool fp8_weights = false, fp8_kv = false, sparsity = false;
  std::vector<std::string> lossy() const {
    std::vector<std::string> l;
    if (fp8_weights) l.push_back("fp8-weights");
    if (fp8_kv) l.push_back("fp8-kv-cache");
    if (sparsity) l.push_back("sparsity-2-4");
    return l;
  }
};

Result<std::vector<Row>> parse_rows(const std::vector<std::string>& names) {
  static const std::vector<std::string> kOrder{"bf16", "fp8-weights", "fp8-kv-cache", "sparsity-2-4"};
  std::vector<Row> rows;
  Row cur;
  size_t next = 0;
  for (const std::string& n : names) {
    size_t at = next;
    while (at < kOrder.size() && kOrder[at] != n) ++at;
    if (at == kOrder.size())
      return make_error(ErrorCode::kInvalidArgument,
                        "--rows: '{}' is not one of bf16, fp8-weights, fp8-kv-cache, sparsity-2-4 "
                        "(in that order, each once)", n);
    next = at + 1;
    if (n == "fp8-weights") cur.fp8_weights = true;
    if (n == "fp8-kv-cache") cur.fp8_kv = true;
    if (n == "sparsity-2-4") cur.sparsity = true;
    cur.name = n == "bf16" ? "bf16 (baseline)" : "+ " + n;
    rows.push_back(cur);
  }
  if (rows.empty()) return make_error(ErrorCode::kInvalidArgument, "--rows: name at least one row");
  if (names.front() != "bf16")
    return make_error(ErrorCode::kInvalidArgument, "--rows: the first row is the bf16 baseline");
  return rows;
}

std::vector<std::string> model_flags(const ModelArgs& m) {
  std::vector<std::string> f{"--device", m.device};
  if (!m.model.empty()) f.insert(f.end(), {"--model", m.model});
  if (m.layers > 0) f.insert(f.end(), {"--layers", std::to_string(m.layers)});
  if (m.random_weights) f.push_back("--random-weights");
  if (m.seed != 0) f.insert(f.end(), {"--weights-seed", std::to_string(m.seed)});
  return f;
}

// Runs this binary with `args` (its stdout to `stdout_path`, stderr through) and returns its
// exit code, or an error when it could not run.
Result<int> run_self(const std::vector<std::string>& args, const std::string& stdout_path) {
  std::vector<std::string> argv{"moeopt"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (std::string& s : argv) cargv.push_back(s.data());
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, stdout_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return make_error(ErrorCode::kInternal, "cannot start a child moeopt: {}", std::strerror(rc));
  int status = 0;
  if (waitpid(pid, &status, 0) != pid)
    return make_error(ErrorCode::kInternal, "waiting for a child moeopt failed");
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return make_error(ErrorCode::kInternal, "a child moeopt ended by signal {}", WTERMSIG(status));
}

// Runs one measuring command and returns its JSON: written to `path` by `--json path`
// (bench decode / prefill), or printed by `--json` (bench quality: stdout goes to `path`).
Result<nlohmann::json> measure(const std::vector<std::string>& args, const std::string& path,
                               const std::string& what, bool json_on_stdout = false) {
  std::vector<std::string> a = args;
  if (json_on_stdout) a.push_back("--json");
  else a.insert(a.end(), {"--json", path});
  std::string shown = "moeopt";
  for (const std::string& s : a) shown += " " + s;
  std::fprintf(stderr, "bench ablation: %s: %s\n", what.c_str(), shown.c_str());
  MOEOPT_ASSIGN_OR_RETURN(int rc, run_self(a, json_on_stdout ? path : std::string("/dev/null")));
  if (rc != 0)
    return make_error(rc == 2 ? ErrorCode::kInvalidArgument : ErrorCode::kInternal,
                      "{}: `{}` exited with {}", what, shown, rc);
  MOEOPT_ASSIGN_OR_RETURN(std::string body, read_file(path, size_t(16) << 20));
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return make_error(ErrorCode::kInternal, "{}: {} is not JSON", what, path);
  return j;
}

std::string cell(const nlohmann::json& v, const char* fmt_spec) {
  if (!v.is_number()) return "–";
  return fmt::format(fmt::runtime(fmt_spec), v.get<double>());
}

int run_bench_ablation(const AblationArgs& a) {
  const char* cmd = "bench ablation";
  auto rows = parse_rows(a.rows);
  if (!rows.ok()) return report_error(cmd, rows.status());
  std::error_code ec;
  const fs::path tmp = fs::temp_directory_path(ec) / fmt::format("moeopt-ablation-{}", getpid());
  fs::create_directories(tmp, ec);
  if (ec) return report_error(cmd, make_error(ErrorCode::kIoError, "{}: {}", tmp.string(), ec.message()));
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(p, e);
    }
  } cleanup{tmp};
  const std::vector<std::string> mf = model_flags(a.m);
  std::vector<std::string> common = mf;
  if (a.threads > 0) common.insert(common.end(), {"--threads", std::to_string(a.threads)});

  nlohmann::json out = {{"model", a.m.model.empty() ? std::string("(default)") : a.m.model},
                        {"device", a.m.device},
                        {"input_len", a.input_len},
                        {"output_len", a.output_len},
                        {"prefill_len", a.prefill_len},
                        {"quality_tokens", a.text.empty() ? std::string("random prompts") : a.text},
                        {"rows", nlohmann::json::array()}};
  int i = 0;
  for (const Row& r : *rows) {
    nlohmann::json row = {{"row", r.name}, {"options", r.lossy()}};
    const std::string tag = std::to_string(i++);
    if (r.sparsity) {
      row["speed_note"] = "no sparse 2:4 kernel: the pruned experts run dense, speed not measured";
    } else {
      std::vector<std::string> speed = common;
      speed.insert(speed.end(), {"--fp8-weights", r.fp8_weights ? "on" : "off", "--fp8-kv-cache",
                                 r.fp8_kv ? "on" : "off"});
      std::vector<std::string> d{"bench", "decode", "--batch-sizes", a.batch_sizes, "--input-lens",
                                 std::to_string(a.input_len), "--output-len", std::to_string(a.output_len)};
      d.insert(d.end(), speed.begin(), speed.end());
      auto dj = measure(d, (tmp / ("decode" + tag + ".json")).string(), r.name + " decode");
      if (!dj.ok()) return report_error(cmd, dj.status());
      row["decode"] = nlohmann::json::array();
      for (const auto& dr : (*dj)["decode"])
        row["decode"].push_back({{"batch", dr["batch"]}, {"tokens_per_s", dr["decode_tokens_per_s"]},
                                 {"pct_of_bound", dr["pct_of_bound"]}});
      if ((*dj).contains("card")) out["card"] = (*dj)["card"];
      if ((*dj).contains("commit")) out["commit"] = (*dj)["commit"];
      if ((*dj).contains("date") && !out.contains("date")) out["date"] = (*dj)["date"];
      std::vector<std::string> p{"bench", "prefill", "--prompt-lens", std::to_string(a.prefill_len),
                                 "--repeats", "3"};
      p.insert(p.end(), speed.begin(), speed.end());
      auto pj = measure(p, (tmp / ("prefill" + tag + ".json")).string(), r.name + " prefill");
      if (!pj.ok()) return report_error(cmd, pj.status());
      for (const auto& pr : (*pj)["prefill"])
        row["prefill"] = {{"prompt_len", pr["prompt_len"]}, {"tokens_per_s", pr["prefill_tokens_per_s"]},
                          {"pct_of_peak", pr["pct_of_peak"]}};
    }
    if (!r.lossy().empty()) {
      std::string lossy;
      for (const std::string& l : r.lossy()) lossy += (lossy.empty() ? "" : ",") + l;
      std::vector<std::string> q{"bench", "quality", "--lossy", lossy};
      q.insert(q.end(), mf.begin(), mf.end());
      if (!a.text.empty()) q.insert(q.end(), {"--text", a.text});
      auto qj = measure(q, (tmp / ("quality" + tag + ".json")).string(), r.name + " quality",
                        /*json_on_stdout=*/true);
      if (!qj.ok()) return report_error(cmd, qj.status());
      nlohmann::json qual = {{"mean_kl_nats", (*qj)["mean_kl_nats"]},
                             {"top1_agreement", (*qj)["top1_agreement"]},
                             {"positions", (*qj)["positions"]},
                             {"weights", (*qj).value("weights", "")}};
      if ((*qj).contains("test_perplexity") && (*qj)["reference_perplexity"].get<double>() > 0)
        qual["perplexity_delta_pct"] =
            100.0 * ((*qj)["test_perplexity"].get<double>() / (*qj)["reference_perplexity"].get<double>() - 1.0);
      row["quality"] = qual;
    }
    out["rows"].push_back(row);
  }

  // The table: one decode column per batch, then prefill, then quality.
  std::string head = fmt::format("{:<18}", "row");
  const nlohmann::json* first_decode = nullptr;
  for (const auto& row : out["rows"])
    if (row.contains("decode")) {
      first_decode = &row["decode"];
      break;
    }
  if (first_decode)
    for (const auto& d : *first_decode) head += fmt::format(" {:>20}", fmt::format("decode b{} tok/s (%)", d["batch"].get<int64_t>()));
  head += fmt::format(" {:>22} {:>10} {:>7} {:>8}", fmt::format("prefill {} tok/s (%)", a.prefill_len),
                      "KL nats", "top-1", "ppl Δ%");
  const std::string where = out.contains("card") ? out["card"].get<std::string>() : a.m.device;
  std::printf("bench ablation: %s on %s; decode at context %lld, output %lld; quality on %s\n",
              out["model"].get<std::string>().c_str(), where.c_str(),
              (long long)a.input_len, (long long)a.output_len, out["quality_tokens"].get<std::string>().c_str());
  std::printf("%s\n", head.c_str());
  for (const auto& row : out["rows"]) {
    std::string line = fmt::format("{:<18}", row["row"].get<std::string>());
    if (row.contains("decode")) {
      for (const auto& d : row["decode"])
        line += fmt::format(" {:>20}", cell(d["tokens_per_s"], "{:.1f}") + " (" + cell(d["pct_of_bound"], "{:.1f}") + ")");
      line += fmt::format(" {:>22}", cell(row["prefill"]["tokens_per_s"], "{:.0f}") + " (" +
                                         cell(row["prefill"]["pct_of_peak"], "{:.1f}") + ")");
    } else if (first_decode) {
      for (size_t k = 0; k < first_decode->size(); ++k) line += fmt::format(" {:>20}", "no kernel");
      line += fmt::format(" {:>22}", "no kernel");
    }
    if (row.contains("quality")) {
      const auto& q = row["quality"];
      line += fmt::format(" {:>10} {:>7} {:>8}", cell(q["mean_kl_nats"], "{:.3g}"), cell(q["top1_agreement"], "{:.3f}"),
                          q.contains("perplexity_delta_pct") ? cell(q["perplexity_delta_pct"], "{:+.2f}") : "–");
    } else {
      line += fmt::format(" {:>10} {:>7} {:>8}", "0 (ref)", "1 (ref)", "–");
    }
    std::printf("%s\n", line.c_str());
  }
  for (const auto& row : out["rows"])
    if (row.contains("speed_note"))
      std::printf("%s: %s\n", row["row"].get<std::string>().c_str(), row["speed_note"].get<std::string>().c_str());
  if (!a.json.empty()) {
    std::ofstream f(a.json);
    f << out.dump(2) << "\n";
    if (!f) return report_error(cmd, make_error(ErrorCode::kIoError, "{}: write failed", a.json));
  }
  return 0;
}

RunFn setup_bench_ablation(CLI::App& bench) {
  auto a = std::make_shared<AblationArgs>();
  CLI::App* sub = bench.add_subcommand(
      "ablation", "Stage table: BF16 -> + FP8 weights -> + FP8 KV cache -> + 2:4 experts (decode, prefill, quality)");
  add_model_flags(sub, &a->m);
  sub->add_option("--batch-sizes", a->batch_sizes, "decode batches (default 1,64,512)");
  sub->add_option("--input-len", a->input_len, "decode context (default 1024)")->check(CLI::PositiveNumber);
  sub->add_option("--output-len", a->output_len, "decode tokens per sequence (default 32)")->check(CLI::Range(3, 1 << 20));
  sub->add_option("--prefill-len", a->prefill_len, "prefill prompt length (default 4096)")->check(CLI::PositiveNumber);
  sub->add_option("--text", a->text, "quality on this text file (default: bench quality's random prompts)");
  sub->add_option("--rows", a->rows, "rows, in order (default bf16,fp8-weights,fp8-kv-cache,sparsity-2-4)")->delimiter(',');
  sub->add_option("--threads", a->threads, "CPU threads of the speed runs (default: all)");
  sub->add_option("--json", a->json, "also write the table as JSON to FILE");
  return [a] { return run_bench_ablation(*a); };
}

}  // namespace

MOEOPT_REGISTER_BENCH(setup_bench_ablation);

}  // namespace moeopt::cli
