// `moeopt generate [--model DIR|name] (--prompt-ids 5,17,923 | --prompt TEXT [--chat])
//                  [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P]
//                  [--seed S] [--logits] [--json] [--fp8-weights on|off] ...`
//
// One-off generation through the same engine as bench and serve. Several prompts (repeat
// --prompt-ids or --prompt) run together as one batch. --prompt is encoded with the
// checkpoint's tokenizer (special tokens added as HF does by default); with --chat each
// prompt is one user message rendered through the model's chat template with the
// generation prompt, then encoded without adding special tokens (as transformers'
// apply_chat_template does). Without --model the embedded default (tiny-qwen3-moe) is used.
// --fp8-weights on quantises a BF16 checkpoint to FP8 (128x128 blocks) at load and runs it
// W8A8 (ops/fp8.h); an FP8 checkpoint always runs so.
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "model_setup.h"
#include "moeopt/engine/engine.h"
#include "moeopt/model/model.h"
#include "moeopt/model/model_cache.h"
#include "moeopt/tokenizer/chat_template.h"
#include "moeopt/tokenizer/tokenizer.h"

using moeopt::tokenizer::ChatTemplate;
using moeopt::tokenizer::Tokenizer;

namespace moeopt::cli {
namespace {

struct GenerateArgs {
  ModelArgs m;
  std::vector<std::string> prompt_ids;
  std::vector<std::string> prompts;
  bool chat = false;
  SamplingParams params;
  int threads = 0;
  bool logits = false, json = false;
  std::vector<int32_t> stop_ids;
};

Result<std::vector<int32_t>> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0 || v > INT32_MAX)
      return make_error(ErrorCode::kInvalidArgument, "--prompt-ids: '{}' is not a token id", item);
    ids.push_back(int32_t(v));
  }
  if (ids.empty()) return make_error(ErrorCode::kInvalidArgument, "--prompt-ids is empty");
  return ids;
}

// Encodes --prompt texts (through the chat template with --chat).
Result<std::vector<std::vector<int32_t>>> encode_prompts(const GenerateArgs& a, const Tokenizer& tok,
                                                         const std::string& dir) {
  std::vector<std::vector<int32_t>> out;
  std::optional<ChatTemplate> tmpl;
  if (a.chat) {
    auto t = ChatTemplate::load(dir);
    if (!t.ok()) return t.status();
    tmpl = std::move(*t);
  }
  for (const std::string& text : a.prompts) {
    std::string input = text;
    if (tmpl) {
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      messages.push_back({{"role", "user"}, {"content", text}});
      auto rendered = tmpl->render(messages, nullptr, true, nullptr);
      if (!rendered.ok()) return rendered.status();
      input = std::move(*rendered);
    }
    auto ids = tok.encode(input, /*add_special_tokens=*/!a.chat);
    if (!ids.ok()) return ids.status();
    out.push_back(std::move(*ids));
  }
  return out;
}

int run_generate(GenerateArgs& a) {
  const char* cmd = "generate";
  if (a.prompt_ids.empty() == a.prompts.empty())
    return report_error(cmd, Status(ErrorCode::kInvalidArgument, "give either --prompt-ids or --prompt"));
  if (a.chat && a.prompts.empty())
    return report_error(cmd, Status(ErrorCode::kInvalidArgument, "--chat needs --prompt"));
  auto lm = load_model_for(a.m, cmd);
  if (!lm.ok()) return report_error(cmd, lm.status());
  const std::string* dir = &lm->tokenizer_dir;
  // The tokenizer is needed for text prompts and to print text; id prompts work without one.
  std::optional<Tokenizer> tok;
  if (auto t = Tokenizer::load(*dir); t.ok()) {
    tok = std::move(*t);
  } else if (!a.prompts.empty()) {
    return report_error(cmd, t.status());
  }
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& p : a.prompt_ids) {
    auto ids = parse_ids(p);
    if (!ids.ok()) return report_error(cmd, ids.status());
    prompts.push_back(std::move(*ids));
  }
  if (!a.prompts.empty()) {
    auto enc = encode_prompts(a, *tok, *dir);
    if (!enc.ok()) return report_error(cmd, enc.status());
    prompts = std::move(*enc);
  }
  std::vector<Request> reqs;
  for (auto& ids : prompts) {
    Request r;
    r.prompt = std::move(ids);
    r.params = a.params;
    r.params.stop_token_ids = a.stop_ids;
    r.want_prompt_logits = a.logits;
    reqs.push_back(std::move(r));
  }
  EngineOptions eo;
  eo.num_threads = a.threads;
  use_device(*lm, eo);
  auto engine = Engine::create(std::move(lm->model), eo);
  if (!engine.ok()) return report_error(cmd, engine.status());
  auto t0 = std::chrono::steady_clock::now();
  auto done = run_to_completion(**engine, std::move(reqs));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!done.ok()) return report_error(cmd, done.status());
  size_t generated = 0;
  for (auto& c : *done) generated += c.tokens.size();
  if (a.json) {
    nlohmann::json out = nlohmann::json::array();
    for (auto& c : *done) {
      nlohmann::json o = {{"token_ids", c.tokens}, {"finish_reason", finish_reason_name(c.finish_reason)}};
      if (tok) o["text"] = tok->decode(c.tokens, /*skip_special_tokens=*/true);
      if (a.logits) o["prompt_logits_last"] = c.prompt_logits_last;
      out.push_back(std::move(o));
    }
    // One prompt: one object, as documented; several: an array of them.
    std::printf("%s\n", (done->size() == 1 ? out[0] : out).dump().c_str());
  } else {
    for (size_t i = 0; i < done->size(); ++i) {
      std::string ids;
      for (int32_t t : (*done)[i].tokens) ids += (ids.empty() ? "" : ",") + std::to_string(t);
      std::printf("[%zu] %s (%s)\n", i, ids.c_str(), finish_reason_name((*done)[i].finish_reason));
      if (tok) std::printf("    %s\n", nlohmann::json(tok->decode((*done)[i].tokens, true)).dump().c_str());
    }
    std::fprintf(stderr, "generated %zu tokens in %.2f s (%.1f tokens/s) from %s\n", generated, secs,
                 double(generated) / secs, lm->source.c_str());
  }
  return 0;
}

RunFn setup_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* sub = app.add_subcommand("generate", "Generate tokens for one or more prompts");
  add_model_flags(sub, &a->m);
  sub->add_option("--prompt-ids", a->prompt_ids, "comma-separated token ids; repeat for a batch");
  sub->add_option("--prompt", a->prompts, "prompt text; repeat for a batch");
  sub->add_flag("--chat", a->chat, "render each --prompt as a user message through the chat template");
  sub->add_option("--max-tokens", a->params.max_tokens, "tokens to generate (default 16)");
  sub->add_option("--temperature", a->params.temperature, "0 = greedy (default 1)");
  sub->add_option("--top-k", a->params.top_k, "keep the k most likely tokens (0 = off)");
  sub->add_option("--top-p", a->params.top_p, "nucleus sampling mass (1 = off)");
  sub->add_option("--min-p", a->params.min_p, "drop tokens below min_p * p_max (0 = off)");
  sub->add_option("--repetition-penalty", a->params.repetition_penalty, "HF-style (1 = off)");
  sub->add_option("--presence-penalty", a->params.presence_penalty, "OpenAI-style (0 = off)");
  sub->add_option("--frequency-penalty", a->params.frequency_penalty, "OpenAI-style (0 = off)");
  sub->add_option("--stop-token-ids", a->stop_ids, "stop after any of these ids")->delimiter(',');
  sub->add_flag("--ignore-eos", a->params.ignore_eos, "do not stop at the model's EOS");
  sub->add_option("--seed", a->params.seed, "seed for sampling");
  sub->add_option("--threads", a->threads, "CPU threads (default: all)");
  add_fp8_weights_flag(sub, &a->m);
  add_fp8_kv_cache_flag(sub, &a->m);
  sub->add_flag("--logits", a->logits, "also output the logits at the last prompt position");
  sub->add_flag("--json", a->json, "print JSON: {token_ids, text, finish_reason[, prompt_logits_last]}");
  return [a] { return run_generate(*a); };
}

}  // namespace

MOEOPT_REGISTER_COMMAND(setup_generate);

}  // namespace moeopt::cli
