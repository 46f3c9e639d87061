// Whole-file reads for data files (configs, tokenizer.json, goldens). Files ending in ".gz"
// are inflated transparently, so vendored data can stay compressed in the repository.
#pragma once

#include <string>

#include "moeopt/core/status.h"

namespace moeopt {

// Reads `path` (inflating it when it ends in .gz). Refuses files over max_bytes (after
// inflation) so untrusted inputs cannot exhaust memory.
Result<std::string> read_file(const std::string& path, size_t max_bytes = size_t(1) << 31);
// Reads `path` if it exists, else `path` + ".gz".
Result<std::string> read_file_or_gz(const std::string& path, size_t max_bytes = size_t(1) << 31);
// Writes `data` to `path` atomically (temp file + rename).
Status write_file(const std::string& path, const std::string& data);

}  // namespace moeopt
