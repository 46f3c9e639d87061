// The body of the safetensors header fuzz target, shared with the CI corpus replay
// (tests/unit/model_safetensors_test.cpp) so that both exercise exactly the same calls.
//
// Each input is parsed twice:
//   1. as a whole file image (8-byte length, JSON header, data section);
//   2. as "JSON header text, NUL, data bytes", wrapped with a matching length prefix, so the
//      fuzzer can explore the JSON and offset checks without having to guess the length.
// An accepted header must satisfy the invariants the loader relies on; a violation traps,
// which both libFuzzer and the gtest report as a crash.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "moeopt/model/safetensors.h"

namespace moeopt::fuzz {

inline void check_accepted(const SafetensorsHeader& h, size_t size) {
  bool ok = h.data_offset == 8 + h.header_bytes && h.data_offset + h.data_bytes == size;
  uint64_t expected = 0;
  for (const auto& t : h.tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      ok = ok && d >= 0;
      numel *= uint64_t(d);
    }
    ok = ok && t.data_begin == expected && t.data_end >= t.data_begin &&
         t.nbytes == t.data_end - t.data_begin && t.nbytes == numel * dtype_size(t.dtype) &&
         t.file_offset == h.data_offset + t.data_begin;
    expected = t.data_end;
  }
  ok = ok && expected == h.data_bytes;
  if (!ok) __builtin_trap();
}

// Returns how many of the two parses accepted the input (for tests; libFuzzer ignores it).
inline int run_safetensors_header_input(const uint8_t* data, size_t size) {
  int accepted = 0;
  auto r = parse_safetensors_header(data, size, "fuzz");
  if (r.ok()) {
    check_accepted(*r, size);
    ++accepted;
  } else if (r.status().message().empty()) {
    __builtin_trap();
  }

  const void* nul = size ? std::memchr(data, 0, size) : nullptr;
  size_t json_len = nul ? size_t(static_cast<const uint8_t*>(nul) - data) : size;
  std::vector<uint8_t> file(8);
  for (int i = 0; i < 8; ++i) file[i] = uint8_t(uint64_t(json_len) >> (8 * i));
  file.insert(file.end(), data, data + json_len);
  if (nul) file.insert(file.end(), data + json_len + 1, data + size);
  auto w = parse_safetensors_header(file.data(), file.size(), "fuzz");
  if (w.ok()) {
    check_accepted(*w, file.size());
    ++accepted;
  } else if (w.status().message().empty()) {
    __builtin_trap();
  }
  return accepted;
}

}  // namespace moeopt::fuzz
