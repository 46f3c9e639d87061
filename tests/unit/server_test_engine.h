// A small engine for server tests: random weights of the basic Qwen3-MoE golden config on
// the CPU (2 threads, 64 KV blocks of 4 tokens).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "moeopt/engine/engine.h"
#include "moeopt/model/model_cache.h"

namespace moeopt {

inline std::unique_ptr<Engine> small_engine() {
  auto dir = materialize_random_checkpoint(
      (std::filesystem::path(MOEOPT_SOURCE_DIR) / "tests/reference/golden_configs/qwen3_moe_basic.json").string(),
      0, std::nullopt, "");
  EXPECT_TRUE(dir.ok()) << dir.status().message();
  if (!dir.ok()) return nullptr;
  auto model = load_model(*dir);
  EXPECT_TRUE(model.ok()) << model.status().message();
  if (!model.ok()) return nullptr;
  EngineOptions eo;
  eo.num_threads = 2;
  eo.block_size = 4;
  eo.num_kv_blocks = 64;
  auto e = Engine::create(std::move(*model), eo);
  EXPECT_TRUE(e.ok()) << e.status().message();
  return e.ok() ? std::move(*e) : nullptr;
}

}  // namespace moeopt
