// The op part of `moeopt verify`'s GPU self-test: a few op cases on the CUDA backend against
// the CPU reference on the same bf16 inputs (RMSNorm, a cuBLASLt projection, paged attention
// over shuffled pages, the MoE layer). Only built with MOEOPT_CUDA.
#pragma once

#include <string>

namespace moeopt::cuda {

// Runs the cases on the current device. Returns true when every case is within its bound;
// `detail` names each case and its normalised error (or the first failure).
bool run_op_selftest(std::string* detail);

}  // namespace moeopt::cuda
