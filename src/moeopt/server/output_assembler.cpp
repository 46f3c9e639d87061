// OutputAssembler (see output_assembler.h).
#include "moeopt/server/output_assembler.h"

namespace moeopt::server {

OutputAssembler::OutputAssembler(const tokenizer::Tokenizer& tok, std::vector<std::string> stops,
                                 std::unordered_set<int32_t> hidden_final_ids, bool skip_special_tokens,
                                 bool want_logprobs)
    : detok_(tok, skip_special_tokens),
      stopper_(std::move(stops)),
      hidden_(std::move(hidden_final_ids)),
      want_logprobs_(want_logprobs) {}

void OutputAssembler::emit(OutputDelta& d, const std::string& piece) {
  d.text += piece;
  text_ += piece;
}

OutputDelta OutputAssembler::consume(const StreamEvent& ev) {
  OutputDelta d;
  if (done_) return d;
  for (size_t i = 0; i < ev.tokens.size(); ++i) {
    int32_t id = ev.tokens[i];
    bool last = i + 1 == ev.tokens.size();
    ++tokens_;
    if (want_logprobs_ && i < ev.samples.size()) {
      TokenLogprobEntry e;
      e.token = id;
      e.logprob = ev.samples[i].logprob;
      e.top = ev.samples[i].top;
      e.text_offset = text_.size();
      d.logprobs.push_back(std::move(e));
    }
    bool hidden = last && ev.finished && ev.finish_reason == FinishReason::kStop && hidden_.count(id);
    if (hidden) continue;
    emit(d, stopper_.push(detok_.feed(id)));
    if (stopper_.stopped()) break;
  }
  if (stopper_.stopped()) {
    done_ = true;
    d.finished = true;
    d.finish_reason = "stop";
    return d;
  }
  if (ev.finished) {
    emit(d, stopper_.push(detok_.finish()));
    emit(d, stopper_.flush());
    done_ = true;
    d.finished = true;
    d.finish_reason = stopper_.stopped() || ev.finish_reason == FinishReason::kStop ? "stop"
                      : ev.finish_reason == FinishReason::kLength                   ? "length"
                                                                                    : "abort";
  }
  return d;
}

}  // namespace moeopt::server
