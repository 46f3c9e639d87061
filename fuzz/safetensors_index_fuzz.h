// The body of the sharded-index fuzz target (model.safetensors.index.json parser), shared
// with the CI corpus replay in tests/unit/model_safetensors_test.cpp. An accepted index
// must only name plain shard files (the path-traversal guard) and list its shards exactly
// once; a violation traps.
#pragma once

#include <cstdint>
#include <set>
#include <string_view>

#include "moeopt/model/safetensors.h"

namespace moeopt::fuzz {

// Returns 1 when the index was accepted, 0 otherwise.
inline int run_safetensors_index_input(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = parse_safetensors_index(text, "fuzz");
  if (!r.ok()) {
    if (r.status().message().empty()) __builtin_trap();
    return 0;
  }
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : r->weight_map) {
    if (shard.empty() || shard == "." || shard == ".." ||
        shard.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos)
      __builtin_trap();
    shards.insert(shard);
  }
  if (std::set<std::string>(r->shards.begin(), r->shards.end()) != shards ||
      shards.size() != r->shards.size())
    __builtin_trap();
  return 1;
}

}  // namespace moeopt::fuzz
