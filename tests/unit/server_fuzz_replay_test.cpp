// Replays fuzz/corpus/{http_request,json_body,chat_template} through the fuzz targets' own
// bodies (fuzz/*_fuzz.h), which trap on a wrong acceptance; here every input must come
// back (and under ASan/UBSan builds, cleanly). Hand-written seeds state their outcome in
// their name: valid-* are accepted (1), bad-* refused (0).
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "../../fuzz/chat_template_fuzz.h"
#include "../../fuzz/http_request_fuzz.h"
#include "../../fuzz/json_body_fuzz.h"

namespace moeopt {
namespace {

namespace fs = std::filesystem;

template <typename Fn>
int replay(const char* corpus, Fn run) {
  fs::path dir = fs::path(MOEOPT_SOURCE_DIR) / "fuzz" / "corpus" / corpus;
  EXPECT_TRUE(fs::is_directory(dir)) << dir;
  int n = 0;
  for (const auto& de : fs::directory_iterator(dir)) {
    if (!de.is_regular_file()) continue;
    std::string name = de.path().filename().string();
    SCOPED_TRACE(name);
    std::ifstream f(de.path(), std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string bytes = ss.str();
    int accepted = run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (name.rfind("valid-", 0) == 0) EXPECT_EQ(accepted, 1);
    if (name.rfind("bad-", 0) == 0) EXPECT_EQ(accepted, 0);
    ++n;
  }
  return n;
}

TEST(ServerFuzzCorpus, HttpRequestReplays) {
  EXPECT_GE(replay("http_request", fuzz::run_http_request_input), 4);
}

TEST(ServerFuzzCorpus, JsonBodyReplays) { EXPECT_GE(replay("json_body", fuzz::run_json_body_input), 3); }

TEST(ServerFuzzCorpus, ChatTemplateReplays) {
  auto tmpl = tokenizer::ChatTemplate::load(std::string(MOEOPT_SOURCE_DIR) + "/models/tokenizers/qwen3");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().message();
  EXPECT_GE(replay("chat_template", [&](const uint8_t* d, size_t n) { return fuzz::run_chat_template_input(*tmpl, d, n); }),
            2);
}

}  // namespace
}  // namespace moeopt
