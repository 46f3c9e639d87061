// ToolCallParser: Qwen3 / Hermes-style tool calls in generated text -> OpenAI tool_calls.
//
// Qwen3's chat template tells the model to answer a tool request as
//   <tool_call>
//   {"name": "get_weather", "arguments": {"city": "Paris"}}
//   </tool_call>
// one block per call, possibly after some text. The parser splits the text the client sees
// (after stop strings) into content and calls:
//   * text before the first valid call is content, exactly as generated;
//   * a block whose body is a JSON object with a string "name" (and "arguments" or
//     "parameters", any JSON; absent: {}) becomes a call; arguments are sent as JSON text;
//   * a block that is not valid (bad JSON, no name) stays content, tags included, so a
//     confused model never costs a 500;
//   * after the first call, text outside blocks that is only whitespace (the newlines
//     between blocks) is dropped; other text is content;
//   * at the end, an unclosed <tool_call> whose rest is a valid call is a call (as vLLM's
//     hermes parser does); otherwise it is content.
// Streaming and whole responses use the same parser, so a stream's content deltas and calls
// concatenate to the non-streamed answer. Text that may still become "<tool_call>" is held
// back; a block is held until its closing tag.
#pragma once

#include <string>
#include <vector>

namespace moeopt::server {

struct ToolCall {
  std::string id;         // "call_<24 hex>"
  std::string name;
  std::string arguments;  // JSON text
};

struct ToolCallDelta {
  std::string content;          // text to show now
  std::vector<ToolCall> calls;  // calls completed now, in order
};

class ToolCallParser {
 public:
  // Feeds the next piece of generated text.
  ToolCallDelta feed(const std::string& text);
  // End of generation: releases what was held back.
  ToolCallDelta finish();
  // The last piece: feed(text) and finish() as one delta.
  ToolCallDelta feed_last(const std::string& text);
  int num_calls() const { return num_calls_; }

 private:
  void out_text(const std::string& s, ToolCallDelta& d);
  void out_call(ToolCall call, ToolCallDelta& d);

  std::string buf_;      // undecided text (a possible tag start, or a block's body)
  std::string between_;  // after the first call: text outside blocks, held until it is known
                         // to be more than whitespace
  bool in_block_ = false;
  int num_calls_ = 0;
};

// Whole text at once: content (may be empty) and calls.
ToolCallDelta parse_tool_calls(const std::string& text);

// Parses one block body ("{"name": ..., "arguments": ...}", surrounding whitespace allowed).
// False when it is not a valid call.
bool parse_tool_call_body(const std::string& body, ToolCall& out);

// "call_" + 24 random hex digits.
std::string make_tool_call_id();

}  // namespace moeopt::server
