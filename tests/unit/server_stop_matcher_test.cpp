// StopMatcher: stop strings found across streamed pieces, never emitted, nothing lost.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "moeopt/server/stop_matcher.h"

namespace moeopt::server {
namespace {

// Feeds pieces and returns everything emitted (including the final flush).
std::string run(std::vector<std::string> stops, const std::vector<std::string>& pieces, bool* stopped = nullptr) {
  StopMatcher m(std::move(stops));
  std::string out;
  for (const auto& p : pieces) out += m.push(p);
  out += m.flush();
  if (stopped) *stopped = m.stopped();
  return out;
}

TEST(StopMatcher, NoStopsPassesEverythingThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.push("abc"), "abc");
  EXPECT_EQ(m.push(""), "");
  EXPECT_EQ(m.flush(), "");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcher, StopInsideOnePiece) {
  bool stopped = false;
  EXPECT_EQ(run({"END"}, {"hello END world"}, &stopped), "hello ");
  EXPECT_TRUE(stopped);
}

TEST(StopMatcher, StopSpanningPiecesIsHeldBackThenDropped) {
  StopMatcher m({"</s>"});
  EXPECT_EQ(m.push("abc<"), "abc");   // "<" could start the stop string
  EXPECT_EQ(m.push("/"), "");
  EXPECT_EQ(m.push("s>tail"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "</s>");
  EXPECT_EQ(m.push("more"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, FalseStartIsReleased) {
  StopMatcher m({"</s>"});
  EXPECT_EQ(m.push("a</"), "a");
  EXPECT_EQ(m.push("x"), "</x");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcher, HeldTailFlushedAtEnd) {
  bool stopped = true;
  EXPECT_EQ(run({"STOP"}, {"ab", "ST"}, &stopped), "abST");
  EXPECT_FALSE(stopped);
}

TEST(StopMatcher, EarliestOfSeveralStopsWins) {
  EXPECT_EQ(run({"world", "lo w"}, {"hello world"}), "hel");
  EXPECT_EQ(run({"b", "abc"}, {"xxabc"}), "xx");
}

TEST(StopMatcher, EveryPieceSplitGivesTheSameText) {
  const std::string text = "one two three\nfour five";
  for (const std::string stop : {"three", "\nfo", "e f", "zzz"}) {
    std::string want = text.substr(0, text.find(stop) == std::string::npos ? text.size() : text.find(stop));
    for (size_t cut = 0; cut <= text.size(); ++cut)
      for (size_t cut2 = cut; cut2 <= text.size(); cut2 += 3)
        EXPECT_EQ(run({stop}, {text.substr(0, cut), text.substr(cut, cut2 - cut), text.substr(cut2)}), want)
            << "stop '" << stop << "' cuts " << cut << "," << cut2;
  }
}

TEST(StopMatcher, MultibyteTextIsNotSplitInsideACharacter) {
  // "é" is C3 A9; the stop "éx" shares its first character with the text's tail.
  StopMatcher m({"\xC3\xA9x"});
  std::string out = m.push("caf\xC3\xA9");
  EXPECT_EQ(out, "caf");
  EXPECT_EQ(m.push("!"), "\xC3\xA9!");
}

}  // namespace
}  // namespace moeopt::server
