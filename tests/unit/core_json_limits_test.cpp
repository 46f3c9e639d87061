// Bounded JSON parsing (core/json_limits.h): deep nesting, value counts, NUL and trailing
// bytes are rejected before anything recursive can touch the value.
#include "moeopt/core/json_limits.h"

#include <string>

#include <gtest/gtest.h>

namespace moeopt {
namespace {

std::string nested(size_t depth, char open = '[', char close = ']') {
  return std::string(depth, open) + std::string(depth, close);
}

TEST(JsonLimits, AcceptsOrdinaryDocuments) {
  auto r = parse_ordered_json(R"({"a": [1, 2, {"b": "x[[[{{"}], "c": null})");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)["a"][2]["b"], "x[[[{{");
  EXPECT_EQ(json_depth(*r), 3u);
  EXPECT_TRUE(parse_json("  42 \n").ok());
  EXPECT_TRUE(parse_json(nested(128)).ok());
}

TEST(JsonLimits, RejectsDeepNestingWithoutRecursion) {
  // 30,000 levels crashed the server through recursive copies; the pre-scan stops at 129.
  for (std::string text : {nested(129), nested(30000), std::string("{\"m\":") + nested(30000) + "}"}) {
    auto r = parse_ordered_json(text);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("deeper than 128"), std::string::npos) << r.status().message();
  }
  // Objects count the same way; brackets inside strings do not count.
  std::string objs;
  for (int i = 0; i < 200; ++i) objs += "{\"k\":";
  objs += "1" + std::string(200, '}');
  EXPECT_FALSE(parse_json(objs).ok());
  EXPECT_TRUE(parse_json("[\"" + std::string(100000, '[') + "\"]").ok());
  EXPECT_TRUE(parse_json("[\"\\\"" + std::string(1000, '[') + "\"]").ok());
  JsonLimits tight;
  tight.max_depth = 2;
  EXPECT_TRUE(parse_json("[[1]]", tight).ok());
  EXPECT_FALSE(parse_json("[[[1]]]", tight).ok());
}

TEST(JsonLimits, RejectsTooManyValues) {
  JsonLimits lim;
  lim.max_values = 1000;
  std::string ok = "[0";
  for (int i = 0; i < 998; ++i) ok += ",0";
  ok += "]";
  EXPECT_TRUE(parse_json(ok, lim).ok());
  std::string big = "[0";
  for (int i = 0; i < 5000; ++i) big += ",0";
  big += "]";
  auto r = parse_json(big, lim);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("more than 1000 values"), std::string::npos) << r.status().message();
}

TEST(JsonLimits, RejectsNulAndTrailingBytes) {
  std::string body = std::string("{\"a\":1}") + '\0' + " garbage";
  auto r = parse_json(body);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("NUL byte at byte 7"), std::string::npos) << r.status().message();
  EXPECT_FALSE(parse_json("{\"a\":1} x").ok());
  EXPECT_FALSE(parse_json("{\"a\":1}{}").ok());
  EXPECT_FALSE(parse_json("").ok());
  EXPECT_FALSE(parse_json("[1,").ok());
  auto bad = parse_json("{\"a\":tru}");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find('\n'), std::string::npos);
  EXPECT_EQ(bad.status().message().rfind("invalid JSON: ", 0), 0u) << bad.status().message();
}

TEST(JsonLimits, DepthOfParsedValues) {
  nlohmann::json j = 5;
  EXPECT_EQ(json_depth(j), 0u);
  j = nlohmann::json::array();
  EXPECT_EQ(json_depth(j), 1u);
  // Built programmatically (not through the parser): depth is measured iteratively.
  nlohmann::ordered_json deep = nlohmann::ordered_json::array();
  for (int i = 0; i < 1000; ++i) deep = nlohmann::ordered_json::array({std::move(deep)});
  EXPECT_EQ(json_depth(deep), 1001u);
  EXPECT_GT(json_depth(deep, 128), 128u);
}

}  // namespace
}  // namespace moeopt
