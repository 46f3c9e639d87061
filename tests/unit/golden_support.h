// Shared by the engine's golden tests on the CPU (engine_golden_test.cpp) and on the GPU
// (cuda_engine_golden_test.cpp): the tiny configs that have transformers goldens, and the
// greedy requests a golden file describes (tests/reference/make_golden.py).
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/engine/engine.h"

namespace moeopt {

// Names of tests/reference/golden_configs/*.json, sorted.
inline std::vector<std::string> golden_names() {
  const std::filesystem::path dir =
      std::filesystem::path(MOEOPT_SOURCE_DIR) / "tests/reference/golden_configs";
  std::vector<std::string> names;
  for (auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

// One greedy request per golden prompt, generating the golden's number of tokens past EOS
// and keeping the logits at the last prompt position.
inline std::vector<Request> golden_requests(const nlohmann::json& golden) {
  std::vector<Request> reqs;
  for (auto& p : golden["prompts"]) {
    Request r;
    r.prompt = p["ids"].get<std::vector<int32_t>>();
    r.params.temperature = 0;
    r.params.max_tokens = golden["new_tokens"].get<int>();
    r.params.ignore_eos = true;
    r.want_prompt_logits = true;
    reqs.push_back(std::move(r));
  }
  return reqs;
}

}  // namespace moeopt
