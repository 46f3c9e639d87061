// `moeopt tokenize --tokenizer DIR [--add-special-tokens]` and
// `moeopt detokenize --tokenizer DIR [--skip-special-tokens] [--stream]`.
//
// tokenize reads one JSON string per line on stdin and writes one JSON array of ids per line.
// detokenize reads one JSON array of ids per line and writes one JSON string per line; with
// --stream it feeds the ids one at a time through the StreamingDetokenizer and writes the
// JSON array of the pieces it produced (the last one from finish()), which shows how text
// would arrive in a streamed response. DIR is a directory with tokenizer.json[.gz] or the
// name of a vendored tokenizer (qwen3, deepseek_v3, llama2, llama3). A bad line stops the
// command with exit code 2 and an error naming the line.
#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "moeopt/core/json_limits.h"
#include "moeopt/tokenizer/streaming_detokenizer.h"
#include "moeopt/tokenizer/tokenizer.h"
#include "moeopt/tokenizer/utf8.h"

namespace moeopt::cli {
namespace {

using nlohmann::json;

struct TokenizeOptions {
  std::string tokenizer;
  bool add_special_tokens = false;
  bool skip_special_tokens = false;
  bool stream = false;
};

Result<tokenizer::Tokenizer> open_tokenizer(const std::string& arg) {
  MOEOPT_ASSIGN_OR_RETURN(std::string dir, tokenizer::resolve_tokenizer_dir(arg, data_root()));
  return tokenizer::Tokenizer::load(dir);
}

void write_out(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

int run_tokenize(const TokenizeOptions& opt) {
  auto tok = open_tokenizer(opt.tokenizer);
  if (!tok.ok()) return report_error("tokenize", tok.status());
  std::string line, out;
  size_t lineno = 0;
  while (std::getline(std::cin, line)) {
    ++lineno;
    auto parsed = parse_json(line);  // nesting and size limits (core/json_limits.h)
    json j = parsed.ok() ? std::move(parsed).value() : json();
    if (!parsed.ok() || !j.is_string())
      return report_error("tokenize", make_error(ErrorCode::kInvalidArgument,
                                                 "stdin line {}: expected a JSON string", lineno));
    auto ids = tok->encode(j.get_ref<const std::string&>(), opt.add_special_tokens);
    if (!ids.ok()) return report_error("tokenize", ids.status().with_context(fmt::format("stdin line {}", lineno)));
    out = "[";
    for (size_t k = 0; k < ids->size(); ++k) {
      if (k) out += ',';
      out += std::to_string((*ids)[k]);
    }
    out += "]\n";
    write_out(out);
  }
  std::fflush(stdout);
  return 0;
}

std::string dump_string(const std::string& s) {
  return json(s).dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::strict);
}

int run_detokenize(const TokenizeOptions& opt) {
  auto tok = open_tokenizer(opt.tokenizer);
  if (!tok.ok()) return report_error("detokenize", tok.status());
  std::string line;
  size_t lineno = 0;
  std::vector<int32_t> ids;
  while (std::getline(std::cin, line)) {
    ++lineno;
    auto parsed = parse_json(line);
    json j = parsed.ok() ? std::move(parsed).value() : json();
    if (!parsed.ok() || !j.is_array())
      return report_error("detokenize", make_error(ErrorCode::kInvalidArgument,
                                                   "stdin line {}: expected a JSON array of ids", lineno));
    ids.clear();
    for (const json& v : j) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX ||
          !tok->id_to_token(static_cast<int32_t>(v.get<int64_t>())))
        return report_error("detokenize", make_error(ErrorCode::kInvalidArgument,
                                                     "stdin line {}: {} is not a token id of this tokenizer", lineno,
                                                     v.dump()));
      ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    if (!opt.stream) {
      write_out(dump_string(tok->decode(ids, opt.skip_special_tokens)) + "\n");
      continue;
    }
    tokenizer::StreamingDetokenizer stream(*tok, opt.skip_special_tokens);
    std::string out = "[";
    bool first = true;
    auto piece = [&](const std::string& p) -> bool {
      // A piece must be complete UTF-8 on its own: that is the streaming guarantee.
      if (!tokenizer::is_valid_utf8(p)) return false;
      if (!first) out += ',';
      first = false;
      out += dump_string(p);
      return true;
    };
    for (int32_t id : ids) {
      if (!piece(stream.feed(id)))
        return report_error("detokenize", make_error(ErrorCode::kInternal,
                                                     "stdin line {}: streaming produced broken UTF-8", lineno));
    }
    if (!piece(stream.finish()))
      return report_error("detokenize", make_error(ErrorCode::kInternal,
                                                   "stdin line {}: streaming produced broken UTF-8", lineno));
    write_out(out + "]\n");
  }
  std::fflush(stdout);
  return 0;
}

RunFn setup_tokenize(CLI::App& app) {
  auto opt = std::make_shared<TokenizeOptions>();
  CLI::App* sub = app.add_subcommand(
      "tokenize", "Encode text: one JSON string per stdin line -> one JSON array of ids per line");
  sub->add_option("--tokenizer", opt->tokenizer, "Directory with tokenizer.json, or qwen3|deepseek_v3|llama2|llama3")
      ->required();
  sub->add_flag("--add-special-tokens", opt->add_special_tokens, "Apply the post-processor (BOS/EOS)");
  return [opt] { return run_tokenize(*opt); };
}

RunFn setup_detokenize(CLI::App& app) {
  auto opt = std::make_shared<TokenizeOptions>();
  CLI::App* sub = app.add_subcommand(
      "detokenize", "Decode ids: one JSON array of ids per stdin line -> one JSON string per line");
  sub->add_option("--tokenizer", opt->tokenizer, "Directory with tokenizer.json, or qwen3|deepseek_v3|llama2|llama3")
      ->required();
  sub->add_flag("--skip-special-tokens", opt->skip_special_tokens, "Leave special tokens out of the text");
  sub->add_flag("--stream", opt->stream,
                "Decode id by id with the streaming detokenizer; print the JSON array of pieces");
  return [opt] { return run_detokenize(*opt); };
}

}  // namespace
}  // namespace moeopt::cli

MOEOPT_REGISTER_COMMAND(moeopt::cli::setup_tokenize);
MOEOPT_REGISTER_COMMAND(moeopt::cli::setup_detokenize);
