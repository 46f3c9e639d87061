// file_io: plain, gzip and size-less (/proc) files, and the size cap.
#include <gtest/gtest.h>

#include <filesystem>

#include "moeopt/core/file_io.h"

namespace moeopt {

TEST(FileIo, ReadsProcFilesWhoseSizeIsZero) {
  auto r = read_file("/proc/self/status");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_NE(r->find("Name:"), std::string::npos);
  auto capped = read_file("/proc/self/status", 8);
  EXPECT_FALSE(capped.ok());
}

TEST(FileIo, RoundTripAndErrors) {
  auto dir = std::filesystem::temp_directory_path() / "moeopt_file_io_test";
  std::filesystem::create_directories(dir);
  std::string path = (dir / "x.txt").string();
  ASSERT_TRUE(write_file(path, "hello\n").ok());
  EXPECT_EQ(*read_file(path), "hello\n");
  EXPECT_EQ(read_file(path, 3).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(read_file((dir / "missing").string()).status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(read_file(dir.string()).status().code(), ErrorCode::kInvalidArgument);
  // A vendored .gz file inflates transparently (the Qwen3 tokenizer is stored that way).
  auto gz = read_file_or_gz(std::string(MOEOPT_SOURCE_DIR) + "/models/tokenizers/qwen3/tokenizer.json");
  ASSERT_TRUE(gz.ok()) << gz.status().message();
  EXPECT_EQ(gz->front(), '{');
}

}  // namespace moeopt
