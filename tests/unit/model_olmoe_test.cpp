// OLMoE on the CPU reference (the logits against transformers are the olmoe_* goldens of
// engine_golden_test.cpp): what its recipe refuses.
#include <gtest/gtest.h>

#include <filesystem>

#include "moeopt/model/config.h"
#include "moeopt/model/model.h"
#include "moeopt/model/random_init.h"

namespace fs = std::filesystem;

namespace moeopt {
namespace {

// clip_qkv clamps q, k and v in transformers; moeopt does not implement it, so a checkpoint
// that sets it is refused at load in one line naming the field, instead of running without.
TEST(Olmoe, ClipQkvIsRefusedAtLoad) {
  auto cfg = load_model_config(
      (fs::path(MOEOPT_SOURCE_DIR) / "tests/reference/golden_configs/olmoe_basic.json").string());
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  const fs::path dir = fs::path(MOEOPT_BINARY_DIR) / "test-cache" / "olmoe_clip_qkv";
  fs::remove_all(dir);
  ModelConfig clipped = *cfg;
  clipped.clip_qkv = 8.0;
  ASSERT_TRUE(write_random_checkpoint(clipped, dir.string(), RandomInitOptions{}).ok());
  auto m = load_model(dir.string());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), ErrorCode::kUnsupported);
  EXPECT_NE(m.status().message().find("clip_qkv"), std::string::npos) << m.status().message();
  // The same checkpoint without the field loads.
  ASSERT_TRUE(write_random_checkpoint(*cfg, dir.string(), RandomInitOptions{}).ok());
  EXPECT_TRUE(load_model(dir.string()).ok());
}

}  // namespace
}  // namespace moeopt
