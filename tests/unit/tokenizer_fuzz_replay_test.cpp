// Replays fuzz/corpus/tokenizer through the tokenizer fuzz target's body
// (fuzz/tokenizer_fuzz.h): encode then decode with the Qwen3 tokenizer, ids in range,
// ASCII round trips; every input must come back. valid-* seeds encode (1), bad-* are
// refused with an error (0, e.g. invalid UTF-8).
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "../../fuzz/tokenizer_fuzz.h"

namespace moeopt {
namespace {

namespace fs = std::filesystem;

TEST(TokenizerFuzzCorpus, Replays) {
  auto tok = tokenizer::Tokenizer::load(std::string(MOEOPT_SOURCE_DIR) + "/models/tokenizers/qwen3");
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  fs::path dir = fs::path(MOEOPT_SOURCE_DIR) / "fuzz" / "corpus" / "tokenizer";
  int n = 0;
  for (const auto& de : fs::directory_iterator(dir)) {
    if (!de.is_regular_file()) continue;
    const std::string name = de.path().filename().string();
    SCOPED_TRACE(name);
    std::ifstream f(de.path(), std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string bytes = ss.str();
    int accepted = fuzz::run_tokenizer_input(*tok, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (name.rfind("valid-", 0) == 0) EXPECT_EQ(accepted, 1);
    if (name.rfind("bad-", 0) == 0) EXPECT_EQ(accepted, 0);
    ++n;
  }
  EXPECT_GE(n, 2);
}

}  // namespace
}  // namespace moeopt
