// Tokenizer encode throughput, one thread: every string of a JSONL corpus (one JSON string
// per line, .gz allowed) encoded without special tokens, repeated; reports bytes/s of input.
// bench/tokenizer_speed.py runs this next to HF `tokenizers` on the same corpus and prints
// the ratio (docs/perf.md).
//
//   bench_tokenizer_encode --tokenizer models/tokenizers/qwen3
//       --corpus tests/data/tokenizer_corpus/corpus.jsonl.gz [benchmark flags]
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/tokenizer/tokenizer.h"

namespace {

using moeopt::tokenizer::Tokenizer;

void encode_corpus(benchmark::State& state, const Tokenizer* tok, const std::vector<std::string>* corpus,
                   size_t bytes) {
  size_t ids = 0;
  for (auto _ : state) {
    for (const std::string& s : *corpus) {
      auto r = tok->encode(s, /*add_special_tokens=*/false);
      if (!r.ok()) {
        state.SkipWithError(r.status().message().c_str());
        return;
      }
      ids += r->size();
    }
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(bytes));
  state.counters["ids_per_pass"] = double(ids) / double(state.iterations());
}

}  // namespace

int main(int argc, char** argv) {
  std::string tok_dir, corpus_path;
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--tokenizer") && i + 1 < argc) tok_dir = argv[++i];
    else if (!std::strcmp(argv[i], "--corpus") && i + 1 < argc) corpus_path = argv[++i];
    else rest.push_back(argv[i]);
  }
  if (tok_dir.empty() || corpus_path.empty()) {
    std::fprintf(stderr, "usage: %s --tokenizer DIR --corpus FILE.jsonl[.gz] [benchmark flags]\n", argv[0]);
    return 2;
  }
  auto tok = Tokenizer::load(tok_dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "error: %s\n", tok.status().message().c_str());
    return 2;
  }
  auto text = moeopt::read_file(corpus_path);
  if (!text.ok()) {
    std::fprintf(stderr, "error: %s\n", text.status().message().c_str());
    return 2;
  }
  std::vector<std::string> corpus;
  size_t bytes = 0;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_string()) continue;
    corpus.push_back(j.get<std::string>());
    bytes += corpus.back().size();
  }
  benchmark::RegisterBenchmark("encode_corpus", encode_corpus, &*tok, &corpus, bytes)
      ->Unit(benchmark::kMillisecond);
  int n = int(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
