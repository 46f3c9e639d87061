// Qwen3 / Hermes tool-call parsing of generated text (see tool_call_parser.h).
#include "moeopt/server/tool_call_parser.h"

#include <atomic>
#include <chrono>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "moeopt/core/json_limits.h"

namespace moeopt::server {
namespace {

constexpr std::string_view kOpen = "<tool_call>";
constexpr std::string_view kClose = "</tool_call>";
// Generated text is not trusted to be shallow either (the same limits as request bodies).
constexpr JsonLimits kCallJsonLimits{128, size_t(1) << 20};

bool all_space(const std::string& s) {
  for (char c : s)
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') return false;
  return true;
}

// Length of the longest suffix of `s` that is a proper prefix of `tag`.
size_t partial_tag_suffix(const std::string& s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (std::string_view(s).substr(s.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

}  // namespace

std::string make_tool_call_id() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng(std::random_device{}() ^
                                   uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  return fmt::format("call_{:016x}{:08x}", rng(), uint32_t(rng()) ^ uint32_t(counter.fetch_add(1)));
}

bool parse_tool_call_body(const std::string& body, ToolCall& out) {
  auto parsed = parse_ordered_json(body, kCallJsonLimits);
  if (!parsed.ok()) return false;
  const nlohmann::ordered_json& j = *parsed;
  if (!j.is_object()) return false;
  auto name = j.find("name");
  if (name == j.end() || !name->is_string() || name->get_ref<const std::string&>().empty()) return false;
  auto args = j.find("arguments");
  if (args == j.end()) args = j.find("parameters");
  out.id = make_tool_call_id();
  out.name = name->get<std::string>();
  if (args == j.end() || args->is_null())
    out.arguments = "{}";
  else if (args->is_string())
    out.arguments = args->get<std::string>();  // already JSON text
  else
    out.arguments = args->dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  return true;
}

void ToolCallParser::out_text(const std::string& s, ToolCallDelta& d) {
  if (s.empty()) return;
  if (num_calls_ == 0)
    d.content += s;
  else
    between_ += s;
}

void ToolCallParser::out_call(ToolCall call, ToolCallDelta& d) {
  if (!all_space(between_)) d.content += between_;
  between_.clear();
  d.calls.push_back(std::move(call));
  ++num_calls_;
}

ToolCallDelta ToolCallParser::feed(const std::string& text) {
  ToolCallDelta d;
  buf_ += text;
  for (;;) {
    if (!in_block_) {
      size_t pos = buf_.find(kOpen);
      if (pos == std::string::npos) {
        size_t keep = partial_tag_suffix(buf_, kOpen);
        out_text(buf_.substr(0, buf_.size() - keep), d);
        buf_.erase(0, buf_.size() - keep);
        break;
      }
      out_text(buf_.substr(0, pos), d);
      buf_.erase(0, pos + kOpen.size());
      in_block_ = true;
    } else {
      size_t pos = buf_.find(kClose);
      if (pos == std::string::npos) break;
      std::string body = buf_.substr(0, pos);
      buf_.erase(0, pos + kClose.size());
      in_block_ = false;
      ToolCall call;
      if (parse_tool_call_body(body, call))
        out_call(std::move(call), d);
      else
        out_text(std::string(kOpen) + body + std::string(kClose), d);
    }
  }
  return d;
}

ToolCallDelta ToolCallParser::finish() {
  ToolCallDelta d;
  if (in_block_) {
    ToolCall call;
    if (parse_tool_call_body(buf_, call))
      out_call(std::move(call), d);
    else
      out_text(std::string(kOpen) + buf_, d);
    in_block_ = false;
  } else {
    out_text(buf_, d);
  }
  buf_.clear();
  if (!all_space(between_)) d.content += between_;
  between_.clear();
  return d;
}

ToolCallDelta ToolCallParser::feed_last(const std::string& text) {
  ToolCallDelta d = feed(text);
  ToolCallDelta rest = finish();
  d.content += rest.content;
  for (auto& c : rest.calls) d.calls.push_back(std::move(c));
  return d;
}

ToolCallDelta parse_tool_calls(const std::string& text) { return ToolCallParser().feed_last(text); }

}  // namespace moeopt::server
