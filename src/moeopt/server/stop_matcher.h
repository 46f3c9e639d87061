// StopMatcher: OpenAI `stop` strings checked on the detokenized output as it streams.
//
// Text arrives in pieces (one per token, from the streaming detokenizer). A piece can
// complete a stop string that began in earlier pieces, so the matcher holds back the
// longest tail of the text that is still the beginning of some stop string; everything
// before it is safe to emit. When a stop string appears, the text before it is released,
// the stop string and anything after it are dropped, and stopped() turns true. Held-back
// text always starts at a UTF-8 character boundary (stop strings are valid UTF-8, so a tail
// that equals a stop string's beginning starts with a lead byte).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace moeopt::server {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds text; returns the text that can be emitted now (may be empty). After a stop string
  // matched, returns "" for everything.
  std::string push(std::string_view text);
  // End of generation: returns the held-back text (no stop string can complete any more).
  std::string flush();
  bool stopped() const { return stopped_; }
  // The stop string that matched ("" if none).
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace moeopt::server
